/* daemon/params.c - checking a call's params against its entry in the
 * method table (api/methods.def), and reading them back in handlers.
 *
 * Every call's params are checked here before its handler runs: unknown
 * names, then each param in table order (missing, type, value); the first
 * bad one is the -32602 error.  Handlers read the values with the
 * dmn_arg_*() accessors, by name.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cowpoold.h"

int dmn_call_error(struct dmn_call *c, int code, const char *param,
		   const char *fmt, ...)
{
	va_list ap;
	c->rpc_code = code;
	va_start(ap, fmt);
	vsnprintf(c->rpc_msg, sizeof(c->rpc_msg), fmt, ap);
	va_end(ap);
	snprintf(c->rpc_param, sizeof(c->rpc_param), "%s", param ? param : "");
	return DMN_RPC_ERROR;
}

static int param_type_error(struct dmn_call *c, const char *name,
			    const char *want, const cp_json *v)
{
	return dmn_call_error(c, DMN_EINVALID_PARAMS, name,
			      "invalid params: '%s' must be %s, not %s", name,
			      want, cp_json_type_name(cp_json_type(v)));
}

static int param_one(struct dmn_call *c, const struct cp_api_param *p,
		     const cp_json *v, struct dmn_arg *a)
{
	const char *s;
	switch (p->type) {
	case CP_API_STR:
		s = cp_json_string(v, NULL);
		if (!s)
			return param_type_error(c, p->name, "a string", v);
		a->v.s = s;
		return 0;
	case CP_API_UUID: {
		s = cp_json_string(v, NULL);
		if (!s)
			return param_type_error(c, p->name,
						"a UUID string", v);
		if (!cp_uuid_valid(s))
			return dmn_call_error(
			    c, DMN_EINVALID_PARAMS, p->name,
			    "invalid params: '%s': bad UUID '%.80s' (expected "
			    "8-4-4-4-12 hex digits)", p->name, s);
		for (size_t i = 0; i <= CP_UUID_STR_LEN; i++)
			a->uuid[i] = (char)(s[i] >= 'A' && s[i] <= 'F'
						? s[i] - 'A' + 'a' : s[i]);
		return 0;
	}
	case CP_API_SIZE: {
		uint64_t *out = &a->v.u;
		s = NULL;
		if (cp_json_type(v) == CP_JSON_NUMBER) {
			if (cp_json_u64(v, out) < 0 || *out > INT64_MAX)
				goto bad_size;
			return 0;
		}
		s = cp_json_string(v, NULL);
		if (!s)
			return param_type_error(
			    c, p->name, "a size (an integer, or a string "
			    "such as \"10G\")", v);
		if (cp_parse_size(s, out) < 0 || *out > INT64_MAX)
			goto bad_size;
		return 0;
	bad_size:
		return dmn_call_error(
		    c, DMN_EINVALID_PARAMS, p->name,
		    "invalid params: '%s': invalid size %s%.40s%s (expected "
		    "bytes below 2^63 as an integer, or a string with a k, M, "
		    "G, T, P or E suffix)", p->name,
		    s ? "'" : "", s ? s : cp_json_number_text(v), s ? "'" : "");
	}
	case CP_API_U64: {
		uint64_t *out = &a->v.u, max = p->max ? p->max : UINT64_MAX;
		if (cp_json_type(v) != CP_JSON_NUMBER)
			return param_type_error(c, p->name, "an integer", v);
		if (cp_json_u64(v, out) < 0 || *out > max)
			return dmn_call_error(
			    c, DMN_EINVALID_PARAMS, p->name,
			    "invalid params: '%s': %s is not an integer in "
			    "0..%" PRIu64, p->name, cp_json_number_text(v),
			    max);
		return 0;
	}
	case CP_API_BOOL:
		if (cp_json_bool(v, &a->v.b) < 0)
			return param_type_error(c, p->name, "a boolean", v);
		return 0;
	case CP_API_NUM:
		if (cp_json_double(v, &a->v.n) < 0)
			return param_type_error(c, p->name, "a number", v);
		return 0;
	case CP_API_ENUM: {
		char list[256] = "";
		s = cp_json_string(v, NULL);
		for (size_t i = 0; p->choices[i]; i++) {
			if (s && !strcmp(s, p->choices[i])) {
				a->v.e = (int)i;
				return 0;
			}
			snprintf(list + strlen(list), sizeof(list) - strlen(list),
				 "%s\"%s\"", i ? ", " : "", p->choices[i]);
		}
		if (!s)
			return dmn_call_error(
			    c, DMN_EINVALID_PARAMS, p->name,
			    "invalid params: '%s' must be one of %s, not %s",
			    p->name, list, cp_json_type_name(cp_json_type(v)));
		return dmn_call_error(c, DMN_EINVALID_PARAMS, p->name,
				      "invalid params: '%s' must be one of %s, "
				      "not '%.80s'", p->name, list, s);
	}
	case CP_API_STRV: {
		if (cp_json_type(v) != CP_JSON_ARRAY)
			return param_type_error(c, p->name,
						"an array of strings", v);
		size_t n = cp_json_count(v);
		const char **arr = calloc(n + 1, sizeof(*arr));
		if (!arr)
			return -ENOMEM;
		for (size_t i = 0; i < n; i++) {
			arr[i] = cp_json_string(cp_json_at(v, i), NULL);
			if (!arr[i]) {
				free(arr);
				return dmn_call_error(
				    c, DMN_EINVALID_PARAMS, p->name,
				    "invalid params: '%s' must be an array of "
				    "strings (element %zu is %s)", p->name, i,
				    cp_json_type_name(
					cp_json_type(cp_json_at(v, i))));
			}
		}
		a->v.strv = arr;
		return 0;
	}
	}
	return -EINVAL;
}

int dmn_params_parse(struct dmn_call *c)
{
	const struct cp_api_method *m = c->api;
	const cp_json *params = c->params;
	memset(c->args, 0, sizeof(c->args));
	for (size_t i = 0; i < cp_json_count(params); i++) {
		const char *k = cp_json_key_at(params, i);
		if (cp_api_param(m, k))
			continue;
		char list[400] = "";
		for (size_t j = 0; j < m->nparams; j++)
			snprintf(list + strlen(list), sizeof(list) - strlen(list),
				 "%s%s", j ? ", " : "", m->params[j].name);
		return dmn_call_error(
		    c, DMN_EINVALID_PARAMS, k,
		    "invalid params: unknown param '%.64s' (%s takes %s)", k,
		    m->name, m->nparams ? list : "no params");
	}
	for (size_t j = 0; j < m->nparams; j++) {
		const struct cp_api_param *p = &m->params[j];
		const cp_json *v = cp_json_get(params, p->name);
		if (!v) {
			if (p->required)
				return dmn_call_error(
				    c, DMN_EINVALID_PARAMS, p->name,
				    "invalid params: '%s' is missing",
				    p->name);
			continue;
		}
		int r = param_one(c, p, v, &c->args[j]);
		if (r)
			return r;
		c->args[j].given = true;
	}
	return 0;
}

void dmn_params_free(struct dmn_call *c)
{
	if (!c->api)
		return;
	for (size_t j = 0; j < c->api->nparams; j++) {
		if (c->api->params[j].type == CP_API_STRV) {
			free(c->args[j].v.strv);
			c->args[j].v.strv = NULL;
		}
	}
}

/* The parsed value of the param called name, which must be in the call's
 * table entry with one of the types given (a handler that asks for
 * another is a bug: the daemon aborts, and every test of the method
 * shows it). */
static const struct dmn_arg *arg(const struct dmn_call *c, const char *name,
				 enum cp_api_type t1, enum cp_api_type t2)
{
	const struct cp_api_param *p = cp_api_param(c->api, name);
	if (!p || (p->type != t1 && p->type != t2)) {
		dmn_err("internal error: %s has no param '%s' of the type its "
			"handler reads (api/methods.def)", c->api->name, name);
		abort();
	}
	return &c->args[p - c->api->params];
}

bool dmn_arg_given(const struct dmn_call *c, const char *name)
{
	const struct cp_api_param *p = cp_api_param(c->api, name);
	return p && c->args[p - c->api->params].given;
}

const char *dmn_arg_str(const struct dmn_call *c, const char *name)
{
	const struct dmn_arg *a = arg(c, name, CP_API_STR, CP_API_STR);
	return a->given ? a->v.s : NULL;
}

const char *dmn_arg_uuid(const struct dmn_call *c, const char *name)
{
	return arg(c, name, CP_API_UUID, CP_API_UUID)->uuid;
}

uint64_t dmn_arg_u64(const struct dmn_call *c, const char *name)
{
	const struct dmn_arg *a = arg(c, name, CP_API_U64, CP_API_SIZE);
	return a->given ? a->v.u : 0;
}

bool dmn_arg_bool(const struct dmn_call *c, const char *name)
{
	const struct dmn_arg *a = arg(c, name, CP_API_BOOL, CP_API_BOOL);
	return a->given && a->v.b;
}

double dmn_arg_num(const struct dmn_call *c, const char *name, double dflt)
{
	const struct dmn_arg *a = arg(c, name, CP_API_NUM, CP_API_NUM);
	return a->given ? a->v.n : dflt;
}

int dmn_arg_enum(const struct dmn_call *c, const char *name)
{
	const struct dmn_arg *a = arg(c, name, CP_API_ENUM, CP_API_ENUM);
	return a->given ? a->v.e : 0;
}

const char **dmn_arg_strv(const struct dmn_call *c, const char *name)
{
	const struct dmn_arg *a = arg(c, name, CP_API_STRV, CP_API_STRV);
	return a->given ? a->v.strv : NULL;
}

void dmn_params_summary(const struct dmn_call *c, char *buf, size_t size)
{
	size_t n = 0;
	buf[0] = 0;
	for (size_t i = 0; i < cp_json_count(c->params) && n + 1 < size; i++) {
		const char *k = cp_json_key_at(c->params, i);
		const cp_json *v = cp_json_at(c->params, i);
		const char *s = cp_json_string(v, NULL);
		bool b;
		int m;
		if (s)
			m = snprintf(buf + n, size - n, "%s%.40s=\"%.80s%s\"",
				     i ? ", " : "", k, s,
				     strlen(s) > 80 ? "..." : "");
		else if (cp_json_type(v) == CP_JSON_NUMBER)
			m = snprintf(buf + n, size - n, "%s%.40s=%.40s",
				     i ? ", " : "", k, cp_json_number_text(v));
		else if (cp_json_bool(v, &b) == 0)
			m = snprintf(buf + n, size - n, "%s%.40s=%s",
				     i ? ", " : "", k, b ? "true" : "false");
		else if (cp_json_type(v) == CP_JSON_ARRAY)
			m = snprintf(buf + n, size - n, "%s%.40s=[%zu]",
				     i ? ", " : "", k, cp_json_count(v));
		else
			m = snprintf(buf + n, size - n, "%s%.40s=<%s>",
				     i ? ", " : "", k,
				     cp_json_type_name(cp_json_type(v)));
		if (m < 0)
			break;
		n = CP_MIN(n + (size_t)m, size - 1);
	}
}
