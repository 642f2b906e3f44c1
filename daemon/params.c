/* daemon/params.c - checking a call's params against a spec: unknown
 * names, missing required ones, types and values; the first bad one is
 * the -32602 error.
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

static int param_one(struct dmn_call *c, const struct dmn_param *p,
		     const cp_json *v)
{
	const char *s;
	switch (p->type) {
	case P_STR:
		s = cp_json_string(v, NULL);
		if (!s)
			return param_type_error(c, p->name, "a string", v);
		*(const char **)p->out = s;
		return 0;
	case P_UUID: {
		s = cp_json_string(v, NULL);
		if (!s)
			return param_type_error(c, p->name,
						"a UUID string", v);
		if (!cp_uuid_valid(s))
			return dmn_call_error(
			    c, DMN_EINVALID_PARAMS, p->name,
			    "invalid params: '%s': bad UUID '%.80s' (expected "
			    "8-4-4-4-12 hex digits)", p->name, s);
		char *out = p->out;
		for (size_t i = 0; i <= CP_UUID_STR_LEN; i++)
			out[i] = (char)(s[i] >= 'A' && s[i] <= 'F'
					    ? s[i] - 'A' + 'a' : s[i]);
		return 0;
	}
	case P_SIZE: {
		uint64_t *out = p->out;
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
	case P_U64: {
		uint64_t *out = p->out, max = p->max ? p->max : UINT64_MAX;
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
	case P_BOOL:
		if (cp_json_bool(v, p->out) < 0)
			return param_type_error(c, p->name, "a boolean", v);
		return 0;
	case P_NUM:
		if (cp_json_double(v, p->out) < 0)
			return param_type_error(c, p->name, "a number", v);
		return 0;
	case P_ENUM: {
		char list[256] = "";
		s = cp_json_string(v, NULL);
		for (size_t i = 0; p->choices[i]; i++) {
			if (s && !strcmp(s, p->choices[i])) {
				*(int *)p->out = (int)i;
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
	case P_STRV: {
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
		*(const char ***)p->out = arr;
		return 0;
	}
	}
	return -EINVAL;
}

int dmn_params_parse(struct dmn_call *c, const struct dmn_param *spec,
			size_t n)
{
	const cp_json *params = c->params;
	for (size_t i = 0; i < cp_json_count(params); i++) {
		const char *k = cp_json_key_at(params, i);
		bool known = false;
		for (size_t j = 0; j < n && !known; j++)
			known = !strcmp(k, spec[j].name);
		if (!known) {
			char list[400] = "";
			for (size_t j = 0; j < n; j++)
				snprintf(list + strlen(list),
					 sizeof(list) - strlen(list), "%s%s",
					 j ? ", " : "", spec[j].name);
			return dmn_call_error(
			    c, DMN_EINVALID_PARAMS, k,
			    "invalid params: unknown param '%.64s' (%s takes "
			    "%s)", k, c->method, n ? list : "no params");
		}
	}
	for (size_t j = 0; j < n; j++) {
		const struct dmn_param *p = &spec[j];
		const cp_json *v = cp_json_get(params, p->name);
		if (p->given)
			*p->given = v != NULL;
		if (!v) {
			if (p->required)
				return dmn_call_error(
				    c, DMN_EINVALID_PARAMS, p->name,
				    "invalid params: '%s' is missing",
				    p->name);
			continue;
		}
		int r = param_one(c, p, v);
		if (r)
			return r;
	}
	return 0;
}
