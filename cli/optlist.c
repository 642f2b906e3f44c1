/* cli/optlist.c - "-o key=value,key=value" option lists, as qemu-img
 * parses them (",," stands for a literal comma; a bare key means on).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cli_optlist_append(char **acc, const char *s)
{
	size_t old = *acc ? strlen(*acc) : 0;
	char *p = realloc(*acc, old + strlen(s) + 2);
	if (!p)
		return -ENOMEM;
	if (old)
		p[old++] = ',';
	strcpy(p + old, s);
	*acc = p;
	return 0;
}

int cli_optlist_split(const char *s, char **bufp, struct cli_kv **kvp)
{
	size_t n = strlen(s);
	char *buf = malloc(n + 1);
	/* At most one pair per comma, plus one. */
	size_t max = 1;
	for (const char *p = s; *p; p++)
		max += *p == ',';
	struct cli_kv *kv = calloc(max, sizeof(*kv));
	if (!buf || !kv) {
		free(buf);
		free(kv);
		cli_error("out of memory");
		return -ENOMEM;
	}

	int count = 0;
	char *out = buf;
	const char *p = s;
	while (*p) {
		char *start = out;
		char *eq = NULL;
		for (; *p; p++) {
			if (*p == ',') {
				if (p[1] == ',') {
					*out++ = *p++;
					continue;
				}
				p++;
				break;
			}
			if (*p == '=' && !eq) {
				*out++ = 0;
				eq = out;
				continue;
			}
			*out++ = *p;
		}
		*out++ = 0;
		if (!*start) {
			if (!eq && !*p)
				break; /* trailing comma */
			cli_error("invalid option list '%s': empty option name",
				  s);
			free(buf);
			free(kv);
			return -EINVAL;
		}
		kv[count].key = start;
		kv[count].val = eq ? eq : (char *)"on";
		count++;
	}
	*bufp = buf;
	*kvp = kv;
	return count;
}

int cli_parse_bool(const char *key, const char *val, bool *out)
{
	if (!strcmp(val, "on") || !strcmp(val, "true") || !strcmp(val, "yes"))
		*out = true;
	else if (!strcmp(val, "off") || !strcmp(val, "false") ||
		 !strcmp(val, "no"))
		*out = false;
	else {
		cli_error("parameter '%s' expects 'on' or 'off', not '%s'", key,
			  val);
		return -EINVAL;
	}
	return 0;
}

bool cli_optlist_wants_help(const char *optstr)
{
	char *buf;
	struct cli_kv *kv;
	bool help = false;
	int n = cli_optlist_split(optstr, &buf, &kv);
	for (int i = 0; i < n; i++) {
		if (!strcmp(kv[i].key, "help") || !strcmp(kv[i].key, "?"))
			help = true;
	}
	if (n >= 0) {
		free(buf);
		free(kv);
	}
	return help;
}
