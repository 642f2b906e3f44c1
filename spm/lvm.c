/* spm/lvm.c - LVM volume groups and logical volumes through the lvm2
 * commands, with activation off; LV extent maps (see spm.h, "lvm.c").
 *
 * One runner (lvm_run) starts `lvm <cmd> --config <cfg> args...`: the
 * binary is resolved in PATH and the environment built in the parent, so
 * the child does only async-signal-safe work between fork() and execve()
 * (dup2, close_range, sigprocmask) - this library runs in threaded
 * programs.  The parent polls both pipes until EOF or the timeout, with
 * bounded buffers, then reaps the child.
 *
 * Failures are mapped to -errno from LVM's stderr (lvm_fail): the first
 * line that is not a WARNING is LVM's error line and goes into the
 * message.  LVM's exit codes say little (5 for nearly everything), its
 * messages are stable across 2.02/2.03 and LC_ALL=C keeps them English.
 *
 * Device-mapper: on a host that has it, the normal way to reach an LV is
 * activation (`lvchange -ay`, later `lvchange --refresh` after an extend)
 * and /dev/VG/LV; cp_lvm_open_lv() uses /dev/VG/LV whenever the LV is
 * active there.  Without device-mapper (this project's CI machines) the
 * LV is reached through its extent map as a blockcore linear device, which
 * is what dm-linear would do in the kernel.  Both are one cp_bdev.
 */
#include "spm.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "common.h"
#include "json.h"
#include "vector.h"

extern char **environ;

#define LVM_NAME_MAX 127
#define LVM_TAG_MAX 1024
/* Arguments of one command: at most 2 x 2 x LVM_MAX_TAGS for tags (add +
 * delete), LVM_MAX_DEVICES devices and a dozen fixed ones, so an argument
 * vector never overflows. */
#define LVM_MAX_ARGS 256
#define LVM_MAX_TAGS 32
#define LVM_MAX_DEVICES 64
#define LVM_OUT_MAX (16u << 20) /* stdout bytes kept */
#define LVM_ERR_MAX (64u << 10) /* stderr bytes kept */
#define LVM_TIMEOUT_DEFAULT 120000u

void cp_lvm_opts_init(struct cp_lvm_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->size = sizeof(*opts);
	opts->lvm_path = "lvm";
	opts->timeout_ms = LVM_TIMEOUT_DEFAULT;
}

static int lvm_check_device(const char *dev);

/* Devices of opts.devices become anchored regexes of the filter: refuse
 * the characters that would make them match something else. */
static int lvm_check_filter(const char *const *devices)
{
	for (size_t i = 0; devices && devices[i]; i++) {
		int r = lvm_check_device(devices[i]);
		if (r < 0)
			return r;
		const char *bad = strpbrk(devices[i], "+*?()[]{}^$");
		if (bad)
			return cp_error(-EINVAL,
					"device filter '%s': character '%c' "
					"is not supported",
					devices[i], *bad);
		if (i >= 1024)
			return cp_error(-EINVAL, "device filter: too many "
						 "devices");
	}
	return 0;
}

static int lvm_opts_copy(const struct cp_lvm_opts *uo, struct cp_lvm_opts *o)
{
	cp_lvm_opts_init(o);
	if (!uo)
		return 0;
	if (uo->size < sizeof(size_t) || uo->size > sizeof(*o))
		return cp_error(-EINVAL,
				"lvm: options not initialised (size %zu)",
				uo->size);
	memcpy(o, uo, uo->size);
	if (!o->lvm_path || !*o->lvm_path)
		o->lvm_path = "lvm";
	if (!o->timeout_ms)
		o->timeout_ms = LVM_TIMEOUT_DEFAULT;
	return lvm_check_filter(o->devices);
}

/* ---- validation ---------------------------------------------------------- */

static int lvm_check_name(const char *what, const char *name)
{
	size_t n = name ? strlen(name) : 0;
	if (n == 0 || n > LVM_NAME_MAX)
		return cp_error(-EINVAL,
				"invalid %s name '%s': must be 1-%d "
				"characters",
				what, name ? name : "", LVM_NAME_MAX);
	if (name[0] == '-' || !strcmp(name, ".") || !strcmp(name, ".."))
		return cp_error(-EINVAL, "invalid %s name '%s'", what, name);
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '+' || c == '_' ||
		      c == '.' || c == '-'))
			return cp_error(-EINVAL,
					"invalid %s name '%s': character '%c' "
					"(allowed: A-Z a-z 0-9 + _ . -)",
					what, name, c);
	}
	return 0;
}

static int lvm_check_tags(const char *const *tags)
{
	for (size_t i = 0; tags && tags[i]; i++) {
		const char *t = tags[i];
		size_t n = strlen(t);
		if (n == 0 || n > LVM_TAG_MAX)
			return cp_error(-EINVAL,
					"invalid tag '%.64s': must be 1-%d "
					"characters",
					t, LVM_TAG_MAX);
		for (size_t k = 0; k < n; k++) {
			char c = t[k];
			if (!((c >= 'a' && c <= 'z') ||
			      (c >= 'A' && c <= 'Z') ||
			      (c >= '0' && c <= '9') ||
			      strchr("_+.-/=!:#&", c)))
				return cp_error(
				    -EINVAL,
				    "invalid tag '%.64s': character 0x%02x "
				    "(allowed: A-Z a-z 0-9 _ + . - / = ! : # "
				    "&)",
				    t, (unsigned char)c);
		}
		if (i >= LVM_MAX_TAGS)
			return cp_error(-EINVAL, "more than %d tags",
					LVM_MAX_TAGS);
	}
	return 0;
}

static int lvm_check_device(const char *dev)
{
	if (!dev || dev[0] != '/' || strlen(dev) >= PATH_MAX)
		return cp_error(-EINVAL,
				"invalid device '%s': not an absolute "
				"path",
				dev ? dev : "");
	for (const char *p = dev; *p; p++) {
		if ((unsigned char)*p < 0x20 || strchr("\"|\\'", *p))
			return cp_error(-EINVAL,
					"invalid device '%s': character 0x%02x",
					dev, (unsigned char)*p);
	}
	return 0;
}

static int lvm_check_vg_lv(const char *vg, const char *lv)
{
	int r = lvm_check_name("VG", vg);
	if (r == 0 && lv)
		r = lvm_check_name("LV", lv);
	return r;
}

/* The start of every call on a VG (or an LV of it, lv not NULL): the
 * caller's options copied, the names checked. */
static int lvm_begin(const struct cp_lvm_opts *uo, struct cp_lvm_opts *o,
		     const char *vg, const char *lv)
{
	int r = lvm_opts_copy(uo, o);
	return r < 0 ? r : lvm_check_vg_lv(vg, lv);
}

/* ---- running commands ---------------------------------------------------- */

CP_VECTOR(lvm_str_vec, char *);

struct lvm_buf {
	char *p;
	size_t len, cap, max;
	bool truncated;
};

struct lvm_result {
	struct lvm_buf out, err;
	int status; /* exit status, or 128 + signal */
};

static void lvm_result_free(struct lvm_result *res)
{
	free(res->out.p);
	free(res->err.p);
	memset(res, 0, sizeof(*res));
}

/* Append n bytes; beyond max they are dropped and `truncated` set. */
static int lvm_buf_add(struct lvm_buf *b, const char *data, size_t n)
{
	if (b->len + n > b->max) {
		n = b->max - b->len;
		b->truncated = true;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p)
			return -ENOMEM;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

/* Resolve prog in PATH (prog with a '/' is used as is). */
static int lvm_find_binary(const char *prog, char *out, size_t outlen)
{
	if (strchr(prog, '/')) {
		if (access(prog, X_OK) < 0)
			return cp_error(-errno, "lvm: %s: %s", prog,
					strerror(errno));
		snprintf(out, outlen, "%s", prog);
		return 0;
	}
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
		       "/sbin:/bin";
	/* root's PATH may lack sbin; lvm lives there. */
	char search[4096];
	snprintf(search, sizeof(search), "%s:/usr/sbin:/sbin", path);
	for (char *save = NULL, *dir = strtok_r(search, ":", &save); dir;
	     dir = strtok_r(NULL, ":", &save)) {
		if (snprintf(out, outlen, "%s/%s", *dir ? dir : ".", prog) >=
		    (int)outlen)
			continue;
		if (access(out, X_OK) == 0)
			return 0;
	}
	return cp_error(-ENOENT,
			"lvm: '%s' not found in PATH (is lvm2 "
			"installed?)",
			prog);
}

/* The child's environment: ours minus what we set. */
static char **lvm_build_env(const struct cp_lvm_opts *o, lvm_str_vec *own)
{
	static const char *const drop[] = {
	    "LVM_SYSTEM_DIR=", "LVM_SUPPRESS_FD_WARNINGS=", "LC_ALL=", NULL};
	size_t n = 0;
	for (char **e = environ; e && *e; e++)
		n++;
	char **env = calloc(n + 4, sizeof(*env));
	if (!env)
		return NULL;
	size_t k = 0;
	for (char **e = environ; e && *e; e++) {
		bool skip = false;
		for (int d = 0; drop[d]; d++) {
			if (!strncmp(*e, drop[d], strlen(drop[d])))
				skip = true;
		}
		/* keep the inherited LVM_SYSTEM_DIR if we set none */
		if (skip && !o->system_dir &&
		    !strncmp(*e, "LVM_SYSTEM_DIR=", 15))
			skip = false;
		if (!skip)
			env[k++] = *e;
	}
	env[k++] = (char *)"LVM_SUPPRESS_FD_WARNINGS=1";
	env[k++] = (char *)"LC_ALL=C";
	if (o->system_dir) {
		char *s = NULL;
		if (asprintf(&s, "LVM_SYSTEM_DIR=%s", o->system_dir) < 0 ||
		    lvm_str_vec_append(own, s) < 0) {
			free(s);
			free(env);
			return NULL;
		}
		env[k++] = s;
	}
	env[k] = NULL;
	return env;
}

/* --config value: activation off (unless for_activation) and the device
 * filter of opts. */
static char *lvm_build_config(const struct cp_lvm_opts *o, bool activation)
{
	struct lvm_buf b = {.max = 1u << 20};
	const char *g = activation ? "" : "global{activation=0}";
	int r = lvm_buf_add(&b, g, strlen(g));
	if (o->devices && r == 0) {
		const char *h = " devices{filter=[";
		r = lvm_buf_add(&b, h, strlen(h));
		for (size_t i = 0; o->devices[i] && r == 0; i++) {
			char item[PATH_MAX + 16];
			int n = snprintf(item, sizeof(item), "\"a|^%s$|\",",
					 o->devices[i]);
			r = lvm_buf_add(&b, item, (size_t)n);
		}
		const char *t = "\"r|.*|\"] use_devicesfile=0}";
		if (r == 0)
			r = lvm_buf_add(&b, t, strlen(t));
	}
	if (r < 0 || b.truncated) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

static void lvm_child(const char *bin, char *const *argv, char *const *env,
		      int in, int out, int err) __attribute__((noreturn));

static void lvm_child(const char *bin, char *const *argv, char *const *env,
		      int in, int out, int err)
{
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
		_exit(126);
#ifdef SYS_close_range
	syscall(SYS_close_range, 3u, ~0u, 0u);
#endif
	execve(bin, argv, env);
	_exit(127);
}

static uint64_t lvm_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Run `lvm args[0] --config CFG args[1..]`.  Returns 0 when the command
 * ran (whatever its exit status, in res->status), -errno if it could not
 * be run or timed out (message set). */
static int lvm_exec(const struct cp_lvm_opts *o, bool activation,
		    const char *const *args, struct lvm_result *res)
{
	char bin[PATH_MAX];
	const char *argv[LVM_MAX_ARGS + 8];
	lvm_str_vec own = {0};
	char **env = NULL;
	char *cfg = NULL;
	int pin = -1, pout[2] = {-1, -1}, perr[2] = {-1, -1};
	pid_t pid = -1;
	int r;

	memset(res, 0, sizeof(*res));
	res->out.max = LVM_OUT_MAX;
	res->err.max = LVM_ERR_MAX;
	r = lvm_find_binary(o->lvm_path, bin, sizeof(bin));
	if (r < 0)
		return r;
	size_t na = 0;
	while (args[na])
		na++;
	if (na == 0 || na > LVM_MAX_ARGS)
		return cp_error(-EINVAL, "lvm: too many arguments");
	cfg = lvm_build_config(o, activation);
	env = lvm_build_env(o, &own);
	if (!cfg || !env) {
		r = cp_error(-ENOMEM, "lvm %s: out of memory", args[0]);
		goto out;
	}
	size_t k = 0;
	argv[k++] = o->lvm_path;
	argv[k++] = args[0];
	argv[k++] = "--config";
	argv[k++] = cfg;
	for (size_t i = 1; i < na; i++)
		argv[k++] = args[i];
	argv[k] = NULL;

	pin = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (pin < 0 || pipe2(pout, O_CLOEXEC) < 0 ||
	    pipe2(perr, O_CLOEXEC) < 0) {
		r = cp_error(-errno, "lvm %s: %s", args[0], strerror(errno));
		goto out;
	}
	pid = fork();
	if (pid < 0) {
		r = cp_error(-errno, "lvm %s: fork: %s", args[0],
			     strerror(errno));
		goto out;
	}
	if (pid == 0)
		lvm_child(bin, (char *const *)argv, env, pin, pout[1], perr[1]);
	close(pout[1]);
	close(perr[1]);
	pout[1] = perr[1] = -1;

	uint64_t deadline = lvm_now_ms() + o->timeout_ms;
	struct pollfd pf[2] = {{pout[0], POLLIN, 0}, {perr[0], POLLIN, 0}};
	struct lvm_buf *bufs[2] = {&res->out, &res->err};
	bool timed_out = false;
	while (pf[0].fd >= 0 || pf[1].fd >= 0) {
		uint64_t now = lvm_now_ms();
		if (now >= deadline) {
			timed_out = true;
			break;
		}
		int n = poll(pf, 2, (int)CP_MIN(deadline - now, 1000u));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = cp_error(-errno, "lvm %s: poll: %s", args[0],
				     strerror(errno));
			break;
		}
		for (int i = 0; i < 2; i++) {
			if (pf[i].fd < 0 || !pf[i].revents)
				continue;
			char chunk[8192];
			ssize_t got = read(pf[i].fd, chunk, sizeof(chunk));
			if (got < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (got <= 0) {
				close(pf[i].fd);
				pf[i].fd = -1;
				continue;
			}
			if (lvm_buf_add(bufs[i], chunk, (size_t)got) < 0) {
				r = cp_error(-ENOMEM, "lvm %s: out of memory",
					     args[0]);
				timed_out = true; /* kill it */
				break;
			}
		}
		if (r < 0)
			break;
	}
	pout[0] = pf[0].fd;
	perr[0] = pf[1].fd;
	if (timed_out || r < 0)
		kill(pid, SIGKILL);
	int st;
	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR) {
			if (r == 0)
				r = cp_error(-errno, "lvm %s: waitpid: %s",
					     args[0], strerror(errno));
			st = 0;
			break;
		}
	}
	if (r == 0 && timed_out)
		r = cp_error(-ETIMEDOUT,
			     "lvm %s: no answer after %u ms (killed)", args[0],
			     o->timeout_ms);
	if (r == 0) {
		if (WIFEXITED(st))
			res->status = WEXITSTATUS(st);
		else
			res->status =
			    128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
		if (res->status == 127 || res->status == 126)
			r = cp_error(-ENOEXEC, "lvm %s: could not execute %s",
				     args[0], bin);
	}
out:
	if (pin >= 0)
		close(pin);
	for (int i = 0; i < 2; i++) {
		if (pout[i] >= 0)
			close(pout[i]);
		if (perr[i] >= 0)
			close(perr[i]);
	}
	for (size_t i = 0; i < own.len; i++)
		free(own.ptr[i]);
	lvm_str_vec_reset(&own);
	free(env);
	free(cfg);
	if (r < 0)
		lvm_result_free(res);
	return r;
}

/* LVM's error line: the first stderr line that is not a warning. */
static void lvm_error_line(const struct lvm_result *res, char *out,
			   size_t outlen)
{
	const char *p = res->err.p ? res->err.p : "";
	out[0] = '\0';
	while (*p) {
		const char *e = strchr(p, '\n');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		const char *s = p;
		while (n && (*s == ' ' || *s == '\t')) {
			s++;
			n--;
		}
		while (n && (s[n - 1] == ' ' || s[n - 1] == '\r'))
			n--;
		if (n && strncmp(s, "WARNING", 7) &&
		    strncmp(s, "File descriptor", 15)) {
			snprintf(out, outlen, "%.*s", (int)CP_MIN(n, 1000u), s);
			return;
		}
		p = e ? e + 1 : p + strlen(p);
	}
	snprintf(out, outlen, "exit status %d", res->status);
}

static bool lvm_has(const struct lvm_result *res, const char *needle)
{
	return res->err.p && strcasestr(res->err.p, needle);
}

/* Map a failed command to -errno with a message.  what names the command
 * and its object ("lvextend vg0/lv1 to 1073741824 bytes"); vg names the
 * VG for the ENOSPC message. */
static int lvm_fail(const struct lvm_result *res, const char *vg,
		    const char *what)
{
	char line[1024];
	lvm_error_line(res, line, sizeof(line));
	if (lvm_has(res, "insufficient free space") ||
	    lvm_has(res, "insufficient suitable") ||
	    lvm_has(res, "insufficient free extents"))
		return cp_error(-ENOSPC,
				"VG %s: insufficient free space (%s: %s)",
				vg ? vg : "?", what, line);
	if (lvm_has(res, "already exists") ||
	    lvm_has(res, "is already in volume group") ||
	    lvm_has(res, "already in volume group"))
		return cp_error(-EEXIST, "%s: %s", what, line);
	if (lvm_has(res, "not found") || lvm_has(res, "failed to find") ||
	    lvm_has(res, "no such file") || lvm_has(res, "doesn't exist") ||
	    lvm_has(res, "does not exist") ||
	    lvm_has(res, "cannot process volume group"))
		return cp_error(-ENOENT, "%s: %s", what, line);
	if (lvm_has(res, "can't get lock") || lvm_has(res, "lock failed") ||
	    lvm_has(res, "unable to obtain"))
		return cp_error(-EBUSY, "%s: %s", what, line);
	if (res->status == 3 || lvm_has(res, "invalid") ||
	    lvm_has(res, "error during parsing"))
		return cp_error(-EINVAL, "%s: %s", what, line);
	return cp_error(-EIO, "%s: %s", what, line);
}

/* Run a command that must succeed. */
static int lvm_run(const struct cp_lvm_opts *o, const char *const *args,
		   const char *vg, const char *what, struct lvm_result *res)
{
	int r = lvm_exec(o, false, args, res);
	if (r < 0)
		return cp_error_prefix(r, "%s", what);
	if (res->status != 0) {
		r = lvm_fail(res, vg, what);
		lvm_result_free(res);
		return r;
	}
	return 0;
}

static int lvm_run_simple(const struct cp_lvm_opts *o, const char *const *args,
			  const char *vg, const char *what)
{
	struct lvm_result res;
	int r = lvm_run(o, args, vg, what, &res);
	if (r == 0)
		lvm_result_free(&res);
	return r;
}

/* ---- reports ------------------------------------------------------------- */

struct lvm_report {
	cp_json *root;
	const cp_json *rows; /* array of objects */
};

static void lvm_report_free(struct lvm_report *rep)
{
	cp_json_free(rep->root);
	rep->root = NULL;
}

/* Run a report command (args without the report options) and find
 * report[0].<kind>. */
static int lvm_report(const struct cp_lvm_opts *o, const char *const *args,
		      const char *kind, const char *vg, const char *what,
		      struct lvm_report *rep)
{
	const char *full[LVM_MAX_ARGS + 8];
	size_t k = 0;
	full[k++] = args[0];
	full[k++] = "--reportformat";
	full[k++] = "json";
	full[k++] = "--units";
	full[k++] = "b";
	full[k++] = "--nosuffix";
	for (size_t i = 1; args[i] && k < LVM_MAX_ARGS; i++)
		full[k++] = args[i];
	full[k] = NULL;

	struct lvm_result res;
	memset(rep, 0, sizeof(*rep));
	int r = lvm_run(o, full, vg, what, &res);
	if (r < 0)
		return r;
	if (res.out.truncated) {
		lvm_result_free(&res);
		return cp_error(-E2BIG, "%s: report larger than %u bytes", what,
				LVM_OUT_MAX);
	}
	r = cp_json_parse(res.out.p ? res.out.p : "", res.out.len, NULL,
			  &rep->root);
	lvm_result_free(&res);
	if (r < 0)
		return cp_error(-EPROTO, "%s: report: %s", what,
				cp_error_msg(r));
	const cp_json *rows =
	    cp_json_get(cp_json_at(cp_json_get(rep->root, "report"), 0), kind);
	if (!rows || cp_json_type(rows) != CP_JSON_ARRAY) {
		lvm_report_free(rep);
		return cp_error(-EPROTO, "%s: report has no \"%s\" array", what,
				kind);
	}
	for (size_t i = 0; i < cp_json_count(rows); i++) {
		if (cp_json_type(cp_json_at(rows, i)) != CP_JSON_OBJECT) {
			lvm_report_free(rep);
			return cp_error(-EPROTO,
					"%s: report row %zu is not an "
					"object",
					what, i);
		}
	}
	rep->rows = rows;
	return 0;
}

static int lvm_field_str(const cp_json *row, const char *field,
			 const char *what, const char **out)
{
	const char *s = cp_json_string(cp_json_get(row, field), NULL);
	if (!s)
		return cp_error(-EPROTO, "%s: report row has no field %s", what,
				field);
	*out = s;
	return 0;
}

/* Numbers come as strings of digits with --units b --nosuffix. */
static int lvm_parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		unsigned d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

static int lvm_field_u64(const cp_json *row, const char *field,
			 const char *what, uint64_t *out)
{
	const cp_json *v = cp_json_get(row, field);
	const char *s = cp_json_string(v, NULL);
	if (!s && cp_json_u64(v, out) == 0)
		return 0; /* a JSON number (other LVM versions) */
	if (!s || lvm_parse_u64(s, out) < 0)
		return cp_error(-EPROTO,
				"%s: report field %s is not a number "
				"('%s')",
				what, field, s ? s : "");
	return 0;
}

static void lvm_tags_free(char **tags)
{
	for (size_t i = 0; tags && tags[i]; i++)
		free(tags[i]);
	free(tags);
}

/* Split LVM's "a,b,c" into a NULL-terminated array. */
static int lvm_tags_parse(const char *s, char ***out, size_t *n)
{
	size_t cnt = 0;
	if (*s)
		cnt = 1;
	for (const char *p = s; *p; p++)
		cnt += *p == ',';
	char **tags = calloc(cnt + 1, sizeof(*tags));
	if (!tags)
		return -ENOMEM;
	size_t k = 0;
	for (const char *p = s; *s && k < cnt; k++) {
		const char *e = strchr(p, ',');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		tags[k] = strndup(p, l);
		if (!tags[k]) {
			lvm_tags_free(tags);
			return -ENOMEM;
		}
		p = e ? e + 1 : p + l;
	}
	*out = tags;
	*n = cnt;
	return 0;
}

/* ---- volume groups ------------------------------------------------------- */

/* args vector under construction */
struct lvm_args {
	const char *v[LVM_MAX_ARGS + 1];
	size_t n;
	char nums[4][32];
	unsigned nnums;
};

static void lvm_arg(struct lvm_args *a, const char *s)
{
	if (a->n < LVM_MAX_ARGS)
		a->v[a->n++] = s;
	a->v[a->n] = NULL;
}

static const char *lvm_bytes_arg(struct lvm_args *a, uint64_t bytes)
{
	char *s = a->nums[a->nnums++ % 4];
	snprintf(s, 32, "%" PRIu64 "b", bytes);
	return s;
}

static void lvm_tag_args(struct lvm_args *a, const char *opt,
			 const char *const *tags)
{
	for (size_t i = 0; tags && tags[i]; i++) {
		lvm_arg(a, opt);
		lvm_arg(a, tags[i]);
	}
}

int cp_lvm_vg_create(const struct cp_lvm_opts *uo, const char *vg,
		     const char *const *devices, const char *const *tags,
		     uint64_t extent_size)
{
	CP_API_ENTER();
	struct cp_lvm_opts o;
	struct lvm_args a = {0};
	int r = lvm_begin(uo, &o, vg, NULL);
	if (r == 0)
		r = lvm_check_tags(tags);
	if (r < 0)
		return r;
	if (!devices || !devices[0])
		return cp_error(-EINVAL, "vgcreate %s: no devices", vg);
	if (extent_size && (!cp_is_pow2(extent_size) || extent_size < 1024))
		return cp_error(-EINVAL,
				"vgcreate %s: extent size %" PRIu64
				" is not a power of two >= 1024",
				vg, extent_size);
	lvm_arg(&a, "vgcreate");
	if (extent_size) {
		lvm_arg(&a, "-s");
		lvm_arg(&a, lvm_bytes_arg(&a, extent_size));
	}
	lvm_tag_args(&a, "--addtag", tags);
	lvm_arg(&a, "--");
	lvm_arg(&a, vg);
	for (size_t i = 0; devices[i]; i++) {
		r = lvm_check_device(devices[i]);
		if (r < 0)
			return r;
		if (i >= LVM_MAX_DEVICES)
			return cp_error(-EINVAL,
					"vgcreate %s: more than %d "
					"devices",
					vg, LVM_MAX_DEVICES);
		lvm_arg(&a, devices[i]);
	}
	char what[256];
	snprintf(what, sizeof(what), "vgcreate %s", vg);
	return lvm_run_simple(&o, a.v, vg, what);
}

int cp_lvm_vg_extend(const struct cp_lvm_opts *uo, const char *vg,
		     const char *device)
{
	CP_API_ENTER();
	struct cp_lvm_opts o;
	int r = lvm_begin(uo, &o, vg, NULL);
	if (r == 0)
		r = lvm_check_device(device);
	if (r < 0)
		return r;
	const char *args[] = {"vgextend", "--", vg, device, NULL};
	char what[PATH_MAX + 256];
	snprintf(what, sizeof(what), "vgextend %s %s", vg, device);
	return lvm_run_simple(&o, args, vg, what);
}

int cp_lvm_vg_remove(const struct cp_lvm_opts *uo, const char *vg)
{
	CP_API_ENTER();
	struct cp_lvm_opts o;
	int r = lvm_begin(uo, &o, vg, NULL);
	if (r < 0)
		return r;
	/* -f: its LVs too (never active: activation is off here) */
	const char *args[] = {"vgremove", "-f", "--", vg, NULL};
	char what[256];
	snprintf(what, sizeof(what), "vgremove %s", vg);
	return lvm_run_simple(&o, args, vg, what);
}

/* vgchange (lv NULL) or lvchange of the tags of vg or vg/lv: del removed
 * and add added in one metadata commit. */
static int lvm_change_tags(const struct cp_lvm_opts *uo, const char *vg,
			   const char *lv, const char *const *add,
			   const char *const *del)
{
	struct cp_lvm_opts o;
	struct lvm_args a = {0};
	const char *cmd = lv ? "lvchange" : "vgchange";
	char target[2 * LVM_NAME_MAX + 2], what[300];
	int r = lvm_begin(uo, &o, vg, lv);
	if (r == 0)
		r = lvm_check_tags(add);
	if (r == 0)
		r = lvm_check_tags(del);
	if (r < 0)
		return r;
	if ((!add || !add[0]) && (!del || !del[0]))
		return 0;
	if (lv)
		snprintf(target, sizeof(target), "%s/%s", vg, lv);
	else
		snprintf(target, sizeof(target), "%s", vg);
	snprintf(what, sizeof(what), "%s tags of %s", cmd, target);
	lvm_arg(&a, cmd);
	lvm_tag_args(&a, "--deltag", del);
	lvm_tag_args(&a, "--addtag", add);
	lvm_arg(&a, "--");
	lvm_arg(&a, target);
	return lvm_run_simple(&o, a.v, vg, what);
}

int cp_lvm_vg_change_tags(const struct cp_lvm_opts *uo, const char *vg,
			  const char *const *add, const char *const *del)
{
	CP_API_ENTER();
	return lvm_change_tags(uo, vg, NULL, add, del);
}

void cp_lvm_vg_info_clear(struct cp_lvm_vg_info *info)
{
	lvm_tags_free(info->tags);
	memset(info, 0, sizeof(*info));
}

int cp_lvm_vg_info(const struct cp_lvm_opts *uo, const char *vg,
		   struct cp_lvm_vg_info *out)
{
	CP_API_ENTER();
	struct cp_lvm_opts o;
	struct lvm_report rep;
	memset(out, 0, sizeof(*out));
	int r = lvm_begin(uo, &o, vg, NULL);
	if (r < 0)
		return r;
	const char *args[] = {
	    "vgs", "-o", "vg_name,vg_extent_size,vg_size,vg_free,vg_tags",
	    "--",  vg,	 NULL};
	char what[256];
	snprintf(what, sizeof(what), "vgs %s", vg);
	r = lvm_report(&o, args, "vg", vg, what, &rep);
	if (r < 0)
		return r;
	const cp_json *row = NULL;
	for (size_t i = 0; i < cp_json_count(rep.rows); i++) {
		const char *name = NULL;
		lvm_field_str(cp_json_at(rep.rows, i), "vg_name", what, &name);
		if (name && !strcmp(name, vg))
			row = cp_json_at(rep.rows, i);
	}
	const char *tags = NULL;
	if (!row)
		r = cp_error(-ENOENT, "VG %s: not found", vg);
	if (r == 0)
		r = lvm_field_u64(row, "vg_extent_size", what,
				  &out->extent_size);
	if (r == 0)
		r = lvm_field_u64(row, "vg_size", what, &out->size);
	if (r == 0)
		r = lvm_field_u64(row, "vg_free", what, &out->free);
	if (r == 0)
		r = lvm_field_str(row, "vg_tags", what, &tags);
	if (r == 0 && lvm_tags_parse(tags, &out->tags, &out->ntags) < 0)
		r = cp_error(-ENOMEM, "%s: out of memory", what);
	lvm_report_free(&rep);
	if (r == 0 && !out->extent_size)
		r = cp_error(-EPROTO, "%s: extent size 0", what);
	if (r < 0)
		cp_lvm_vg_info_clear(out);
	return r;
}

int cp_lvm_vg_list(const struct cp_lvm_opts *uo, const char *tag, char ***out,
		   size_t *n)
{
	CP_API_ENTER();
	struct cp_lvm_opts o;
	struct lvm_report rep;
	char **names = NULL;
	size_t cnt = 0;
	int r = lvm_opts_copy(uo, &o);

	*out = NULL;
	*n = 0;
	if (r < 0)
		return r;
	const char *args[] = {"vgs", "-o", "vg_name,vg_tags", NULL};
	r = lvm_report(&o, args, "vg", NULL, "vgs", &rep);
	if (r < 0)
		return r;
	names = calloc(cp_json_count(rep.rows) + 1, sizeof(char *));
	if (!names) {
		lvm_report_free(&rep);
		return cp_error(-ENOMEM, "vgs: out of memory");
	}
	for (size_t i = 0; i < cp_json_count(rep.rows) && r == 0; i++) {
		const cp_json *row = cp_json_at(rep.rows, i);
		const char *name = NULL, *tags = NULL;
		char **tv = NULL;
		size_t nt = 0;
		bool want = !tag;

		if ((r = lvm_field_str(row, "vg_name", "vgs", &name)) < 0 ||
		    (r = lvm_field_str(row, "vg_tags", "vgs", &tags)) < 0)
			break;
		if (tag) {
			if (lvm_tags_parse(tags, &tv, &nt) < 0) {
				r = cp_error(-ENOMEM, "vgs: out of memory");
				break;
			}
			for (size_t k = 0; k < nt; k++)
				if (!strcmp(tv[k], tag))
					want = true;
			lvm_tags_free(tv);
		}
		if (want && !(names[cnt++] = strdup(name)))
			r = cp_error(-ENOMEM, "vgs: out of memory");
	}
	lvm_report_free(&rep);
	if (r < 0) {
		cp_lvm_names_free(names);
		return r;
	}
	*out = names;
	*n = cnt;
	return 0;
}

void cp_lvm_names_free(char **names)
{
	if (!names)
		return;
	for (char **p = names; *p; p++)
		free(*p);
	free(names);
}

/* ---- logical volumes ----------------------------------------------------- */

/* Current size of VG/LV in bytes. */
static int lvm_lv_size(const struct cp_lvm_opts *o, const char *vg,
		       const char *lv, uint64_t *size)
{
	struct lvm_report rep;
	char target[2 * LVM_NAME_MAX + 2], what[300];
	snprintf(target, sizeof(target), "%s/%s", vg, lv);
	snprintf(what, sizeof(what), "lvs %s", target);
	const char *args[] = {"lvs", "-o",   "lv_name,lv_size",
			      "--",  target, NULL};
	int r = lvm_report(o, args, "lv", vg, what, &rep);
	if (r < 0)
		return r;
	if (cp_json_count(rep.rows) < 1)
		r = cp_error(-ENOENT, "LV %s: not found", target);
	else
		r = lvm_field_u64(cp_json_at(rep.rows, 0), "lv_size", what,
				  size);
	lvm_report_free(&rep);
	return r;
}

int cp_lvm_lv_create(const struct cp_lvm_opts *uo, const char *vg,
		     const char *lv, uint64_t size, const char *const *tags)
{
	CP_API_ENTER();
	struct cp_lvm_opts o;
	struct lvm_args a = {0};
	int r = lvm_begin(uo, &o, vg, lv);
	if (r == 0)
		r = lvm_check_tags(tags);
	if (r < 0)
		return r;
	if (size == 0 || size > INT64_MAX)
		return cp_error(-EINVAL,
				"lvcreate %s/%s: invalid size %" PRIu64, vg, lv,
				size);
	lvm_arg(&a, "lvcreate");
	lvm_arg(&a, "-an");
	lvm_arg(&a, "-Zn");
	lvm_arg(&a, "-n");
	lvm_arg(&a, lv);
	lvm_arg(&a, "-L");
	lvm_arg(&a, lvm_bytes_arg(&a, CP_ALIGN_UP(size, 512)));
	lvm_tag_args(&a, "--addtag", tags);
	lvm_arg(&a, "--");
	lvm_arg(&a, vg);
	char what[400];
	snprintf(what, sizeof(what), "lvcreate %s/%s of %" PRIu64 " bytes", vg,
		 lv, size);
	return lvm_run_simple(&o, a.v, vg, what);
}

static int lvm_lv_resize(const struct cp_lvm_opts *uo, const char *vg,
			 const char *lv, uint64_t size, uint64_t *new_size,
			 bool grow)
{
	struct cp_lvm_opts o;
	const char *cmd = grow ? "lvextend" : "lvreduce";
	char target[2 * LVM_NAME_MAX + 2], what[400];
	uint64_t cur = 0;
	int r = lvm_begin(uo, &o, vg, lv);
	if (r < 0)
		return r;
	if (size == 0 || size > INT64_MAX)
		return cp_error(-EINVAL, "%s %s/%s: invalid size %" PRIu64, cmd,
				vg, lv, size);
	snprintf(target, sizeof(target), "%s/%s", vg, lv);
	snprintf(what, sizeof(what), "%s %s to %" PRIu64 " bytes", cmd, target,
		 size);
	r = lvm_lv_size(&o, vg, lv, &cur);
	if (r < 0)
		return r;
	bool done = false;
	if (grow) {
		done = cur >= size;
	} else {
		/* LVM rounds up to whole extents: only shrink when at least
		 * one extent would go. */
		struct cp_lvm_vg_info vi;
		r = cp_lvm_vg_info(&o, vg, &vi);
		if (r < 0)
			return r;
		done = cur <= CP_ALIGN_UP(size, vi.extent_size);
		cp_lvm_vg_info_clear(&vi);
	}
	if (!done) {
		struct lvm_args a = {0};
		lvm_arg(&a, cmd);
		if (!grow)
			lvm_arg(&a, "-f");
		lvm_arg(&a, "-L");
		lvm_arg(&a, lvm_bytes_arg(&a, CP_ALIGN_UP(size, 512)));
		lvm_arg(&a, "--");
		lvm_arg(&a, target);
		r = lvm_run_simple(&o, a.v, vg, what);
		if (r < 0) {
			/* Lost a race with another resize to the same goal? */
			char msg[1024];
			snprintf(msg, sizeof(msg), "%s", cp_last_error());
			int e = grow ? lvm_lv_size(&o, vg, lv, &cur) : -1;
			if (e < 0 || cur < size) {
				cp_error(r, "%s", msg);
				return r;
			}
			r = 0;
		}
		if (r == 0 && !new_size)
			return 0;
		r = lvm_lv_size(&o, vg, lv, &cur);
		if (r < 0)
			return r;
	}
	if (new_size)
		*new_size = cur;
	return 0;
}

int cp_lvm_lv_extend(const struct cp_lvm_opts *opts, const char *vg,
		     const char *lv, uint64_t size, uint64_t *new_size)
{
	CP_API_ENTER();
	return lvm_lv_resize(opts, vg, lv, size, new_size, true);
}

int cp_lvm_lv_reduce(const struct cp_lvm_opts *opts, const char *vg,
		     const char *lv, uint64_t size, uint64_t *new_size)
{
	CP_API_ENTER();
	return lvm_lv_resize(opts, vg, lv, size, new_size, false);
}

int cp_lvm_lv_remove(const struct cp_lvm_opts *uo, const char *vg,
		     const char *lv)
{
	CP_API_ENTER();
	struct cp_lvm_opts o;
	char target[2 * LVM_NAME_MAX + 2], what[300];
	int r = lvm_begin(uo, &o, vg, lv);
	if (r < 0)
		return r;
	snprintf(target, sizeof(target), "%s/%s", vg, lv);
	snprintf(what, sizeof(what), "lvremove %s", target);
	/* No -f: an active LV is refused (stdin is /dev/null, so LVM's
	 * question is answered no). */
	const char *args[] = {"lvremove", "--", target, NULL};
	return lvm_run_simple(&o, args, vg, what);
}

int cp_lvm_lv_change_tags(const struct cp_lvm_opts *uo, const char *vg,
			  const char *lv, const char *const *add,
			  const char *const *del)
{
	CP_API_ENTER();
	return lvm_change_tags(uo, vg, lv, add, del);
}

void cp_lvm_lv_list_free(struct cp_lvm_lv_info *lvs, size_t n)
{
	for (size_t i = 0; lvs && i < n; i++) {
		free(lvs[i].name);
		lvm_tags_free(lvs[i].tags);
	}
	free(lvs);
}

static int lvm_cmp_lv(const void *a, const void *b)
{
	const struct cp_lvm_lv_info *x = a, *y = b;
	return strcmp(x->name, y->name);
}

int cp_lvm_lv_list(const struct cp_lvm_opts *uo, const char *vg,
		   struct cp_lvm_lv_info **out, size_t *n)
{
	CP_API_ENTER();
	struct cp_lvm_opts o;
	struct lvm_report rep;
	*out = NULL;
	*n = 0;
	int r = lvm_begin(uo, &o, vg, NULL);
	if (r < 0)
		return r;
	char what[256];
	snprintf(what, sizeof(what), "lvs %s", vg);
	const char *args[] = {"lvs", "-o", "lv_name,lv_size,lv_tags",
			      "--",  vg,   NULL};
	r = lvm_report(&o, args, "lv", vg, what, &rep);
	if (r < 0)
		return r;
	size_t cnt = cp_json_count(rep.rows);
	struct cp_lvm_lv_info *lvs = calloc(cnt ? cnt : 1, sizeof(*lvs));
	if (!lvs)
		r = cp_error(-ENOMEM, "%s: out of memory", what);
	size_t k = 0;
	for (size_t i = 0; r == 0 && i < cnt; i++, k++) {
		const cp_json *row = cp_json_at(rep.rows, i);
		const char *name = NULL, *tags = NULL;
		r = lvm_field_str(row, "lv_name", what, &name);
		if (r == 0)
			r = lvm_field_u64(row, "lv_size", what, &lvs[k].size);
		if (r == 0)
			r = lvm_field_str(row, "lv_tags", what, &tags);
		if (r == 0 &&
		    (!(lvs[k].name = strdup(name)) ||
		     lvm_tags_parse(tags, &lvs[k].tags, &lvs[k].ntags) < 0))
			r = cp_error(-ENOMEM, "%s: out of memory", what);
	}
	lvm_report_free(&rep);
	if (r < 0) {
		cp_lvm_lv_list_free(lvs, cnt);
		return r;
	}
	qsort(lvs, cnt, sizeof(*lvs), lvm_cmp_lv);
	*out = lvs;
	*n = cnt;
	return 0;
}

/* ---- extent maps --------------------------------------------------------- */

void cp_lvm_map_free(struct cp_linear_map *map)
{
	for (size_t i = 0; map->segs && i < map->nsegs; i++)
		free((char *)map->segs[i].pv_path);
	free(map->segs);
	map->segs = NULL;
	map->nsegs = 0;
}

/* "PATH:FIRST-LAST" (one range: linear segments). */
static int lvm_parse_pe_range(const char *s, char **path, uint64_t *first,
			      uint64_t *last)
{
	const char *colon = strrchr(s, ':');
	if (!colon || colon == s || strchr(s, ' '))
		return -EINVAL;
	const char *dash = strchr(colon + 1, '-');
	if (!dash)
		return -EINVAL;
	char a[32], b[32];
	size_t la = (size_t)(dash - colon - 1), lb = strlen(dash + 1);
	if (!la || la >= sizeof(a) || !lb || lb >= sizeof(b))
		return -EINVAL;
	memcpy(a, colon + 1, la);
	a[la] = '\0';
	memcpy(b, dash + 1, lb);
	b[lb] = '\0';
	if (lvm_parse_u64(a, first) < 0 || lvm_parse_u64(b, last) < 0 ||
	    *last < *first)
		return -EINVAL;
	*path = strndup(s, (size_t)(colon - s));
	return *path ? 0 : -ENOMEM;
}

struct lvm_pv {
	const char *name;
	uint64_t pe_start;
};
CP_VECTOR(lvm_pv_vec, struct lvm_pv);

int cp_lvm_lv_map(const struct cp_lvm_opts *uo, const char *vg, const char *lv,
		  struct cp_linear_map *out)
{
	CP_API_ENTER();
	struct cp_lvm_opts o;
	struct lvm_report lvr = {0}, pvr = {0};
	struct cp_lvm_vg_info vi = {0};
	lvm_pv_vec pvs = {0};
	char target[2 * LVM_NAME_MAX + 2], what[300];
	uint64_t lv_size = 0, total = 0;

	out->nsegs = 0;
	out->segs = NULL;
	int r = lvm_begin(uo, &o, vg, lv);
	if (r < 0)
		return r;
	snprintf(target, sizeof(target), "%s/%s", vg, lv);
	snprintf(what, sizeof(what), "lvs %s", target);

	const char *largs[] = {
	    "lvs",
	    "-o",
	    "lv_name,lv_size,seg_start_pe,seg_size_pe,seg_pe_ranges,lv_tags,"
	    "segtype",
	    "--",
	    target,
	    NULL};
	r = lvm_report(&o, largs, "lv", vg, what, &lvr);
	if (r == 0)
		r = cp_lvm_vg_info(&o, vg, &vi);
	const char *pargs[] = {"pvs", "-o", "pv_name,pe_start,vg_name", NULL};
	char pwhat[300];
	snprintf(pwhat, sizeof(pwhat), "pvs (for %s)", target);
	if (r == 0)
		r = lvm_report(&o, pargs, "pv", vg, pwhat, &pvr);
	for (size_t i = 0; r == 0 && i < cp_json_count(pvr.rows); i++) {
		const cp_json *row = cp_json_at(pvr.rows, i);
		struct lvm_pv pv = {NULL, 0};
		const char *pvvg = NULL;
		r = lvm_field_str(row, "vg_name", pwhat, &pvvg);
		if (r == 0 && strcmp(pvvg, vg))
			continue;
		if (r == 0)
			r = lvm_field_str(row, "pv_name", pwhat, &pv.name);
		if (r == 0)
			r = lvm_field_u64(row, "pe_start", pwhat, &pv.pe_start);
		if (r == 0 && lvm_pv_vec_append(&pvs, pv) < 0)
			r = cp_error(-ENOMEM, "%s: out of memory", what);
	}
	size_t n = r == 0 ? cp_json_count(lvr.rows) : 0;
	if (r == 0 && n == 0)
		r = cp_error(-ENOENT, "LV %s: not found", target);
	if (r == 0) {
		out->segs = calloc(n, sizeof(*out->segs));
		if (!out->segs)
			r = cp_error(-ENOMEM, "%s: out of memory", what);
	}
	const uint64_t ext = vi.extent_size;
	for (size_t i = 0; r == 0 && i < n; i++) {
		const cp_json *row = cp_json_at(lvr.rows, i);
		const char *name = NULL, *segtype = NULL, *ranges = NULL;
		uint64_t start_pe = 0, size_pe = 0, first = 0, last = 0;
		char *path = NULL;
		r = lvm_field_str(row, "lv_name", what, &name);
		if (r == 0 && strcmp(name, lv))
			r = cp_error(-EPROTO, "%s: report row for LV %s", what,
				     name);
		if (r == 0)
			r = lvm_field_str(row, "segtype", what, &segtype);
		if (r == 0)
			r = lvm_field_str(row, "seg_pe_ranges", what, &ranges);
		/* A one-stripe "striped" segment is linear too. */
		if (r == 0 && strcmp(segtype, "linear") &&
		    (strcmp(segtype, "striped") || strchr(ranges, ' ')))
			r = cp_error(-ENOTSUP,
				     "LV %s: segment %zu is %s; only linear "
				     "LVs can be mapped without device-mapper",
				     target, i, segtype);
		if (r == 0)
			r = lvm_field_u64(row, "lv_size", what, &lv_size);
		if (r == 0)
			r = lvm_field_u64(row, "seg_start_pe", what, &start_pe);
		if (r == 0)
			r = lvm_field_u64(row, "seg_size_pe", what, &size_pe);
		if (r == 0 && lvm_parse_pe_range(ranges, &path, &first, &last))
			r = cp_error(-EPROTO,
				     "%s: cannot read segment %zu extents '%s'",
				     what, i, ranges);
		if (r == 0 && last - first + 1 != size_pe)
			r = cp_error(-EPROTO,
				     "%s: segment %zu: %" PRIu64
				     " extents but range '%s'",
				     what, i, size_pe, ranges);
		const struct lvm_pv *pv = NULL;
		for (size_t k = 0; r == 0 && k < pvs.len; k++) {
			if (!strcmp(pvs.ptr[k].name, path))
				pv = &pvs.ptr[k];
		}
		if (r == 0 && !pv)
			r = cp_error(
			    -ENODEV,
			    "LV %s: segment %zu is on %s, which is not "
			    "a PV of VG %s here (missing device?)",
			    target, i, path, vg);
		if (r == 0 && (size_pe > UINT64_MAX / ext ||
			       start_pe > UINT64_MAX / ext ||
			       last >= (UINT64_MAX - pv->pe_start) / ext))
			r = cp_error(-EPROTO, "%s: segment %zu out of range",
				     what, i);
		if (r < 0) {
			free(path);
			break;
		}
		out->segs[i] =
		    (struct cp_linear_seg){start_pe * ext, size_pe * ext, path,
					   pv->pe_start + first * ext};
		out->nsegs = i + 1;
		total += size_pe * ext;
	}
	if (r == 0 && total != lv_size)
		r = cp_error(-EPROTO,
			     "%s: segments cover %" PRIu64
			     " bytes but the LV has %" PRIu64,
			     what, total, lv_size);
	lvm_pv_vec_reset(&pvs);
	lvm_report_free(&lvr);
	lvm_report_free(&pvr);
	cp_lvm_vg_info_clear(&vi);
	if (r < 0)
		cp_lvm_map_free(out);
	return r;
}

/* ---- opening LVs --------------------------------------------------------- */

bool cp_lvm_activation_available(void)
{
	/* The node can exist without the driver: open() says ENODEV. */
	int fd = open("/dev/mapper/control", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* /dev/VG/LV if the LV is active on this host. */
static bool lvm_active_path(const char *vg, const char *lv, char *path,
			    size_t len)
{
	struct stat st;
	if (!cp_lvm_activation_available())
		return false;
	snprintf(path, len, "/dev/%s/%s", vg, lv);
	return stat(path, &st) == 0 && S_ISBLK(st.st_mode);
}

int cp_lvm_open_lv(const struct cp_lvm_opts *uo, const char *vg, const char *lv,
		   const struct cp_bdev_opts *bo, cp_bdev **out)
{
	CP_API_ENTER();
	struct cp_lvm_opts o;
	struct cp_linear_map map;
	char path[2 * LVM_NAME_MAX + 8];
	*out = NULL;
	int r = lvm_begin(uo, &o, vg, lv);
	if (r < 0)
		return r;
	/* With device-mapper: the activated LV (activation itself is the
	 * caller's decision, `lvchange -ay`). */
	if (lvm_active_path(vg, lv, path, sizeof(path)))
		return cp_bdev_open(path, bo, out);
	/* Without: the extent map, as dm-linear would load it. */
	r = cp_lvm_lv_map(&o, vg, lv, &map);
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "%s/%s", vg, lv);
	r = cp_bdev_open_linear(path, &map, bo, out);
	cp_lvm_map_free(&map);
	return r;
}

int cp_lvm_refresh_lv(const struct cp_lvm_opts *uo, const char *vg,
		      const char *lv, cp_bdev *dev)
{
	CP_API_ENTER();
	struct cp_lvm_opts o;
	struct cp_linear_map map;
	char target[2 * LVM_NAME_MAX + 2];
	int r = lvm_begin(uo, &o, vg, lv);
	if (r < 0)
		return r;
	snprintf(target, sizeof(target), "%s/%s", vg, lv);
	if (!cp_bdev_is_linear(dev)) {
		/* An activated LV: reload its device-mapper table; the block
		 * device then reports the new size. */
		struct lvm_result res;
		char what[300];
		snprintf(what, sizeof(what), "lvchange --refresh %s", target);
		const char *args[] = {"lvchange", "--refresh", "--", target,
				      NULL};
		r = lvm_exec(&o, true, args, &res);
		if (r < 0)
			return cp_error_prefix(r, "%s", what);
		if (res.status != 0)
			r = lvm_fail(&res, vg, what);
		lvm_result_free(&res);
		return r;
	}
	r = cp_lvm_lv_map(&o, vg, lv, &map);
	if (r < 0)
		return r;
	r = cp_bdev_linear_remap(dev, &map);
	cp_lvm_map_free(&map);
	return r;
}
