/* api/gendoc.c - docs/api.md's parameter tables from api/methods.def.
 *
 *   api-gendoc                 print every method's block
 *   api-gendoc --check FILE    exit 1 when FILE's blocks and the table
 *                              disagree (the api-doc test)
 *   api-gendoc --update FILE   rewrite FILE's blocks from the table
 *
 * A block is the text between a line "<!-- api-params METHOD ... -->" and
 * a line "<!-- /api-params -->".  FILE must hold exactly one block per
 * method of the table, and none for a method the table does not have.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

#define BEGIN "<!-- api-params "
#define END "<!-- /api-params -->\n"

struct buf {
	char *p;
	size_t len, cap;
};

static void put(struct buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->p = realloc(b->p, b->cap);
		if (!b->p) {
			perror("api-gendoc");
			exit(2);
		}
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = 0;
}

static void puts_(struct buf *b, const char *s)
{
	put(b, s, strlen(s));
}

static void type_text(struct buf *b, const struct cp_api_param *p)
{
	static const char *const names[] = {
	    [CP_API_STR] = "string", [CP_API_UUID] = "UUID",
	    [CP_API_SIZE] = "size", [CP_API_U64] = "integer",
	    [CP_API_BOOL] = "bool", [CP_API_NUM] = "number",
	    [CP_API_STRV] = "array of strings",
	};
	char tmp[64];
	if (p->type != CP_API_ENUM) {
		puts_(b, names[p->type]);
		if (p->type == CP_API_U64 && p->max) {
			snprintf(tmp, sizeof(tmp), " 0..%" PRIu64, p->max);
			puts_(b, tmp);
		}
		return;
	}
	for (size_t i = 0; p->choices[i]; i++) {
		puts_(b, i ? " \\| `\"" : "`\"");
		puts_(b, p->choices[i]);
		puts_(b, "\"`");
	}
}

static void cli_text(struct buf *b, const struct cp_api_param *p)
{
	char tmp[64];
	if (p->pos) {
		snprintf(tmp, sizeof(tmp), "argument %d", p->pos);
		puts_(b, tmp);
	} else if (p->opt && p->flag_value) {
		snprintf(tmp, sizeof(tmp), "`--%s` (`%s`)", p->opt,
			 p->flag_value);
		puts_(b, tmp);
	} else if (p->opt) {
		snprintf(tmp, sizeof(tmp), "`--%s`", p->opt);
		puts_(b, tmp);
	} else {
		puts_(b, "—");
	}
}

/* The block's text, without the marker lines. */
static void gen(struct buf *b, const struct cp_api_method *m)
{
	puts_(b, "**`");
	puts_(b, m->name);
	puts_(b, "`**");
	if (m->flags & CP_API_TASK) {
		puts_(b, " (SPM; a task: `");
		puts_(b, cp_task_type_name(m->task_type));
		puts_(b, "`)");
	} else if (m->flags & CP_API_SPM) {
		puts_(b, " (SPM)");
	}
	puts_(b, ": ");
	puts_(b, m->summary);
	if (!m->nparams) {
		puts_(b, "  Params: none.\n");
		return;
	}
	puts_(b, "\n\n| param | type | | CLI |\n|---|---|---|---|\n");
	for (size_t i = 0; i < m->nparams; i++) {
		const struct cp_api_param *p = &m->params[i];
		puts_(b, "| `");
		puts_(b, p->name);
		puts_(b, "` | ");
		type_text(b, p);
		puts_(b, " | ");
		if (p->required)
			puts_(b, p->doc ? "required, " : "required");
		if (p->doc)
			puts_(b, p->doc);
		puts_(b, " | ");
		cli_text(b, p);
		puts_(b, " |\n");
	}
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "r");
	struct buf b = {0};
	char chunk[65536];
	size_t n;
	if (!f) {
		fprintf(stderr, "api-gendoc: %s: %s\n", path, strerror(errno));
		exit(2);
	}
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		put(&b, chunk, n);
	fclose(f);
	*len = b.len;
	return b.p ? b.p : calloc(1, 1);
}

/* Check or update path; returns the number of problems found. */
static int process(const char *path, bool update)
{
	size_t len;
	char *text = read_file(path, &len);
	struct buf out = {0};
	unsigned seen[CP_API_N] = {0};
	int bad = 0, line = 1;
	const char *p = text;
	while (*p) {
		const char *eol = strchr(p, '\n');
		size_t n = eol ? (size_t)(eol - p) + 1 : strlen(p);
		if (strncmp(p, BEGIN, strlen(BEGIN))) {
			put(&out, p, n);
			p += n;
			line++;
			continue;
		}
		/* the method's name */
		const char *name = p + strlen(BEGIN);
		size_t nl = strcspn(name, " \n");
		char mname[128];
		snprintf(mname, sizeof(mname), "%.*s", (int)nl, name);
		int start = line;
		put(&out, p, n);
		p += n;
		line++;
		const char *end = strstr(p, END);
		if (!end) {
			fprintf(stderr, "%s:%d: block of %s not closed by %s",
				path, start, mname, END);
			free(text);
			return bad + 1;
		}
		const struct cp_api_method *m = cp_api_lookup(mname);
		if (!m) {
			fprintf(stderr, "%s:%d: %s: no such method in "
				"api/methods.def\n", path, start, mname);
			bad++;
			put(&out, p, (size_t)(end - p));
		} else {
			struct buf g = {0};
			gen(&g, m);
			seen[m - cp_api_methods]++;
			if ((size_t)(end - p) != g.len ||
			    memcmp(p, g.p, g.len)) {
				if (!update) {
					fprintf(stderr, "%s:%d: the params of %s "
						"differ from api/methods.def; "
						"expected:\n%s", path, start,
						mname, g.p);
					bad++;
				}
				put(&out, g.p, g.len);
			} else {
				put(&out, p, (size_t)(end - p));
			}
			free(g.p);
		}
		for (const char *q = p; q < end; q++)
			line += *q == '\n';
		p = end;
	}
	for (size_t i = 0; i < CP_API_N; i++) {
		if (seen[i] != 1) {
			fprintf(stderr, "%s: %s: %u blocks \"%s%s ...\" (expected "
				"one)\n", path, cp_api_methods[i].name, seen[i],
				BEGIN, cp_api_methods[i].name);
			bad++;
		}
	}
	if (update && (out.len != len || memcmp(out.p, text, len))) {
		FILE *f = fopen(path, "w");
		if (!f || fwrite(out.p, 1, out.len, f) != out.len ||
		    fclose(f)) {
			fprintf(stderr, "api-gendoc: %s: %s\n", path,
				strerror(errno));
			bad++;
		} else {
			fprintf(stderr, "api-gendoc: %s updated\n", path);
		}
	}
	free(out.p);
	free(text);
	return bad;
}

int main(int argc, char **argv)
{
	if (argc == 3 && (!strcmp(argv[1], "--check") ||
			  !strcmp(argv[1], "--update"))) {
		int bad = process(argv[2], !strcmp(argv[1], "--update"));
		return bad ? 1 : 0;
	}
	if (argc != 1) {
		fprintf(stderr, "usage: api-gendoc [--check|--update FILE]\n");
		return 2;
	}
	for (size_t i = 0; i < CP_API_N; i++) {
		struct buf g = {0};
		gen(&g, &cp_api_methods[i]);
		printf("%s%s -->\n%s%s\n", BEGIN, cp_api_methods[i].name, g.p,
		       END);
		free(g.p);
	}
	return 0;
}
