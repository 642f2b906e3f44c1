/* cli/cmd_nbd.c - `cowpool nbd`: serve one image over NBD with qemu-nbd's
 * flags (see docs/cowpool.md).  Options are parsed in one self-contained
 * function (nbd_parse) until they move to the shared parser table.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "nbd.h"

struct nbd_args {
	enum cp_fmt fmt;
	const char *socket, *bind, *port;
	const char *name, *desc;
	bool readonly, persistent, fork, alloc_depth;
	long shared;
	const char *pid_file;
	enum cp_cache cache;
	enum cp_aio aio;
	bool aio_set;
	bool unmap;
	enum cp_nbd_detect_zeroes dz;
	const char *tls_creds, *tls_psk;
	bool tls_off;
	unsigned handshake_ms;
	const char *image;
};

static int nbd_opt_shared(struct cli_parser *p, const struct cli_opt *o,
			  const char *arg)
{
	char *end;
	long *shared = o->dst;
	(void)p;
	errno = 0;
	*shared = strtol(arg, &end, 0);
	if (errno || *end || end == arg || *shared < 0) {
		cli_error("nbd: invalid --shared value '%s'", arg);
		return -EINVAL;
	}
	return 0;
}

/* -n: qemu-nbd's old spelling of --cache=none */
static int nbd_opt_nocache(struct cli_parser *p, const struct cli_opt *o,
			   const char *arg)
{
	(void)p;
	(void)arg;
	*(enum cp_cache *)o->dst = CP_CACHE_NONE;
	return 0;
}

static int nbd_opt_discard(struct cli_parser *p, const struct cli_opt *o,
			   const char *arg)
{
	bool *unmap = o->dst;
	(void)p;
	if (!strcmp(arg, "ignore") || !strcmp(arg, "off")) {
		*unmap = false;
	} else if (!strcmp(arg, "unmap") || !strcmp(arg, "on")) {
		*unmap = true;
	} else {
		cli_error("nbd: invalid discard option '%s' (ignore or unmap)",
			  arg);
		return -EINVAL;
	}
	return 0;
}

static int nbd_opt_detect_zeroes(struct cli_parser *p, const struct cli_opt *o,
				 const char *arg)
{
	enum cp_nbd_detect_zeroes *dz = o->dst;
	(void)p;
	if (!strcmp(arg, "off")) {
		*dz = CP_NBD_DETECT_ZEROES_OFF;
	} else if (!strcmp(arg, "on")) {
		*dz = CP_NBD_DETECT_ZEROES_ON;
	} else if (!strcmp(arg, "unmap")) {
		*dz = CP_NBD_DETECT_ZEROES_UNMAP;
	} else {
		cli_error("nbd: invalid detect-zeroes option '%s' (off, on or "
			  "unmap)", arg);
		return -EINVAL;
	}
	return 0;
}

static int nbd_opt_seconds(struct cli_parser *p, const struct cli_opt *o,
			   const char *arg)
{
	char *end;
	unsigned *ms = o->dst;
	(void)p;
	errno = 0;
	unsigned long v = strtoul(arg, &end, 10);
	if (errno || *end || end == arg || *arg == '-' || v > UINT_MAX / 1000) {
		cli_error("nbd: invalid --handshake-limit '%s'", arg);
		return -EINVAL;
	}
	*ms = (unsigned)v * 1000u;
	return 0;
}

/* --tls=off: serve plain TCP (without it, TCP needs TLS credentials) */
static int nbd_opt_tls(struct cli_parser *p, const struct cli_opt *o,
		       const char *arg)
{
	bool *off = o->dst;
	(void)p;
	if (!strcmp(arg, "off")) {
		*off = true;
	} else if (!strcmp(arg, "on")) {
		*off = false;
	} else {
		cli_error("nbd: invalid --tls value '%s' (on or off)", arg);
		return -EINVAL;
	}
	return 0;
}

/* qemu-nbd 7.2's options; the help lines are printed by --help. */
static int nbd_parse(int argc, char **argv, struct nbd_args *a)
{
	memset(a, 0, sizeof(*a));
	a->name = "";
	a->shared = 1;
	a->cache = CP_CACHE_WRITEBACK;
	a->handshake_ms = 10000;
	const struct cli_opt table[] = {
	    CLI_O_FN('f', "format", "fmt", cli_opt_fmt, &a->fmt,
		     "image format (probed if omitted)"),
	    CLI_O_VAL('k', "socket", "SOCKET", &a->socket,
		      "listen on this unix socket"),
	    CLI_O_VAL('b', "bind", "ADDR", &a->bind,
		      "TCP address (default 127.0.0.1; plain TCP only\n"
		      "on loopback addresses)"),
	    CLI_O_VAL('p', "port", "PORT", &a->port,
		      "TCP port (default 10809)"),
	    CLI_O_VAL('x', "export-name", "NAME", &a->name,
		      "export name (default \"\")"),
	    CLI_O_VAL('D', "description", "DESC", &a->desc,
		      "export description"),
	    CLI_O_FLAG('r', "read-only", &a->readonly, "read-only export"),
	    CLI_O_FN('e', "shared", "SHARED", nbd_opt_shared, &a->shared,
		     "concurrent clients (default 1, 0 = unlimited)"),
	    CLI_O_FLAG('t', "persistent", &a->persistent,
		       "persistent: do not exit after the last client"),
	    CLI_O_FN('n', "nocache", NULL, nbd_opt_nocache, &a->cache,
		     "same as --cache=none"),
	    CLI_O_FLAG('A', "allocation-depth", &a->alloc_depth,
		       "offer the qemu:allocation-depth context"),
	    CLI_O_NOP('v', "verbose", CLI_H_NOP),
	    CLI_O_FLAG(0, "fork", &a->fork,
		       "return once the socket accepts connections"),
	    CLI_O_VAL(0, "pid-file", "F", &a->pid_file,
		      "write the server's pid to F"),
	    CLI_O_FN(0, "cache", "MODE", cli_opt_cache, &a->cache,
		     "none, writeback (default), writethrough,\n"
		     "directsync, unsafe"),
	    {.name = "aio", .arg = "MODE", .fn = cli_opt_aio, .dst = &a->aio,
	     .seen = &a->aio_set, .help = CLI_H_AIO},
	    CLI_O_FN(0, "discard", "M", nbd_opt_discard, &a->unmap,
		     "ignore (default) or unmap"),
	    CLI_O_FN(0, "detect-zeroes", "M", nbd_opt_detect_zeroes, &a->dz,
		     "off (default), on or unmap"),
	    CLI_O_FN(0, "handshake-limit", "N", nbd_opt_seconds,
		     &a->handshake_ms,
		     "drop clients still negotiating after N\n"
		     "seconds (default 10, 0 = never)"),
	    CLI_O_VAL(0, "tls-creds", "DIR", &a->tls_creds,
		      "TLS with DIR/server-cert.pem and server-key.pem;\n"
		      "with DIR/ca-cert.pem, clients must show a\n"
		      "certificate it signed"),
	    CLI_O_VAL(0, "tls-psk", "FILE", &a->tls_psk,
		      "TLS with pre-shared keys (identity:hexkey lines)"),
	    CLI_O_FN(0, "tls", "on|off", nbd_opt_tls, &a->tls_off,
		     "off: serve TCP without TLS (on, the default,\n"
		     "needs --tls-creds or --tls-psk for TCP)"),
	    CLI_OPT_END,
	};
	struct cli_parser p = {.cmd = "nbd", .opts = table};
	int r = cli_parse(&p, argc, argv);
	if (r)
		return r == CLI_PARSE_HELP ? 1 : -EINVAL;
	if (p.npos != 1) {
		cli_error("nbd: expected one image file name");
		return -EINVAL;
	}
	a->image = p.pos[0];
	if (a->socket && (a->bind || a->port)) {
		cli_error("nbd: -k cannot be combined with -b or -p");
		return -EINVAL;
	}
	if (a->dz == CP_NBD_DETECT_ZEROES_UNMAP && !a->unmap) {
		/* qemu: detect-zeroes=unmap needs discard=unmap */
		cli_error("nbd: --detect-zeroes=unmap needs --discard=unmap");
		return -EINVAL;
	}
	if (!a->socket && !a->bind)
		a->bind = "127.0.0.1";
	if (!a->socket && !a->port)
		a->port = "10809";
	return 0;
}

/* Read a whole small file as a string (caller frees); NULL if missing. */
static char *slurp(const char *path, int *err)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0, cap = 0;

	*err = 0;
	if (!f) {
		*err = -errno;
		return NULL;
	}
	for (;;) {
		if (cap - len < 4097) {
			char *nb = realloc(buf, cap + 65536);
			if (!nb) {
				*err = -ENOMEM;
				break;
			}
			buf = nb;
			cap += 65536;
		}
		size_t n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
		if (n == 0)
			break;
		if (len > (1u << 20)) {
			*err = -EFBIG;
			break;
		}
	}
	fclose(f);
	if (*err) {
		free(buf);
		return NULL;
	}
	buf[len] = '\0';
	return buf;
}

struct nbd_tls_files {
	char *cert, *key, *ca, *psk;
};

/* --tls-creds DIR: server-cert.pem and server-key.pem, and ca-cert.pem
 * when present (clients must then show a certificate it signed);
 * --tls-psk FILE: qemu's keys.psk format (FILE may be a directory holding
 * keys.psk). */
static int nbd_tls_load(const struct nbd_args *a, struct nbd_tls_files *f,
			struct cp_nbd_tls_opts *to, char *msg, size_t msglen)
{
	char path[4096];
	int err;

	cp_nbd_tls_opts_init(to);
	if (a->tls_creds) {
		snprintf(path, sizeof(path), "%s/server-cert.pem", a->tls_creds);
		f->cert = slurp(path, &err);
		if (!f->cert)
			goto fail;
		snprintf(path, sizeof(path), "%s/server-key.pem", a->tls_creds);
		f->key = slurp(path, &err);
		if (!f->key)
			goto fail;
		snprintf(path, sizeof(path), "%s/ca-cert.pem", a->tls_creds);
		f->ca = slurp(path, &err);
		if (!f->ca && err != -ENOENT)
			goto fail;
		to->cert_pem = f->cert;
		to->key_pem = f->key;
		to->ca_pem = f->ca;
		to->verify_peer = f->ca != NULL;
	}
	if (a->tls_psk) {
		snprintf(path, sizeof(path), "%s", a->tls_psk);
		f->psk = slurp(path, &err);
		if (!f->psk && err == -EISDIR) {
			snprintf(path, sizeof(path), "%s/keys.psk", a->tls_psk);
			f->psk = slurp(path, &err);
		}
		if (!f->psk)
			goto fail;
		to->psk = f->psk;
	}
	return 0;
fail:
	snprintf(msg, msglen, "%s: %s", path, strerror(-err));
	return err;
}

static void nbd_tls_free(struct nbd_tls_files *f)
{
	free(f->cert);
	if (f->key)
		explicit_bzero(f->key, strlen(f->key));
	free(f->key);
	free(f->ca);
	if (f->psk)
		explicit_bzero(f->psk, strlen(f->psk));
	free(f->psk);
}

static void release_image(void *opaque, cp_image *img)
{
	(void)opaque;
	(void)img; /* closed by nbd_serve after the server is gone */
}

/* Report setup failure to the waiting parent (fork) or stderr. */
static int nbd_fail(int ready_fd, const char *fmt, ...) CP_PRINTF(2, 3);
static int nbd_fail(int ready_fd, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (ready_fd >= 0) {
		ssize_t r = write(ready_fd, msg, strlen(msg));
		(void)r;
		close(ready_fd);
	} else {
		cli_error("%s", msg);
	}
	return 1;
}

static int nbd_serve(struct nbd_args *a, int ready_fd)
{
	struct cp_open_opts oo;
	struct cp_nbd_server_opts so;
	struct cp_nbd_export_opts eo;
	struct cp_nbd_tls_opts to;
	struct nbd_tls_files tls_files = { NULL, NULL, NULL, NULL };
	cp_nbd_server *srv = NULL;
	cp_image *img = NULL;
	sigset_t mask;
	int sfd, r, status = 0;

	/* Signals are taken through a signalfd: block them before any
	 * thread exists so that every thread inherits the mask. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (sfd < 0)
		return nbd_fail(ready_fd, "nbd: signalfd: %s", strerror(errno));

	cp_open_opts_init(&oo);
	oo.format = a->fmt;
	oo.readonly = a->readonly;
	oo.cache = a->cache;
	if (a->aio_set)
		oo.aio = a->aio;
	r = cp_image_open(a->image, &oo, &img);
	if (r < 0) {
		return nbd_fail(ready_fd, "%s", cp_error_msg(r));
	}
	cp_nbd_server_opts_init(&so);
	if (a->tls_creds || a->tls_psk) {
		char msg[4200];
		if (nbd_tls_load(a, &tls_files, &to, msg, sizeof(msg)) < 0) {
			nbd_tls_free(&tls_files);
			cp_image_close(img);
			return nbd_fail(ready_fd, "%s", msg);
		}
		so.tls = &to;
	}
	so.max_clients = (unsigned)a->shared;
	so.oneshot = !a->persistent;
	so.handshake_timeout_ms = a->handshake_ms;
	r = cp_nbd_server_create(&so, &srv);
	nbd_tls_free(&tls_files); /* the server copied what it needs */
	if (r < 0)
		goto fail;
	cp_nbd_export_opts_init(&eo);
	eo.name = a->name;
	eo.description = a->desc;
	eo.img = img;
	eo.readonly = a->readonly;
	eo.unmap = a->unmap;
	eo.detect_zeroes = a->dz;
	eo.allocation_depth = a->alloc_depth;
	eo.release = release_image;
	r = cp_nbd_server_add_export(srv, &eo);
	if (r < 0)
		goto fail;
	if (a->socket)
		r = cp_nbd_server_listen_unix(srv, a->socket);
	else
		r = cp_nbd_server_listen_tcp(srv, a->bind, a->port);
	if (r < 0)
		goto fail;
	r = cp_nbd_server_start(srv);
	if (r < 0)
		goto fail;
	if (a->pid_file) {
		FILE *f = fopen(a->pid_file, "w");
		if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f)) {
			r = cp_error(-errno, "%s: cannot write pid file: %s",
				     a->pid_file, strerror(errno));
			goto fail;
		}
	}
	/* Ready: the socket accepts connections. */
	if (ready_fd >= 0) {
		int devnull = open("/dev/null", O_RDWR);
		ssize_t w = write(ready_fd, "", 1);
		(void)w;
		close(ready_fd);
		if (devnull >= 0) {
			dup2(devnull, 0);
			dup2(devnull, 1);
			dup2(devnull, 2);
			close(devnull);
		}
	}
	for (;;) {
		struct pollfd pfd[2] = {
			{ .fd = sfd, .events = POLLIN },
			{ .fd = cp_nbd_server_done_fd(srv), .events = POLLIN },
		};
		if (poll(pfd, 2, -1) < 0 && errno != EINTR)
			break;
		if (pfd[0].revents || pfd[1].revents)
			break;
	}
	cp_nbd_server_destroy(srv);
	if (cp_image_close(img) < 0)
		status = 1;
	/* Last: a script that waits for the pid file to go can open the
	 * image at once (its locks are gone). */
	if (a->pid_file)
		unlink(a->pid_file);
	close(sfd);
	return status;
fail:
	{
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", cp_error_msg(r));
		cp_nbd_server_destroy(srv);
		cp_image_close(img);
		return nbd_fail(ready_fd, "%s", msg);
	}
}

int cli_cmd_nbd(int argc, char **argv)
{
	struct nbd_args a;
	int pfd[2];
	pid_t pid;
	int r;

	r = nbd_parse(argc, argv, &a);
	if (r)
		return r < 0 ? CLI_EXIT_USAGE : 0;
	if (!a.socket && !a.tls_creds && !a.tls_psk && !a.tls_off)
		return cli_error("nbd: plain TCP on '%s' is refused: give "
				 "--tls-creds or --tls-psk, -k SOCKET, or "
				 "--tls=off", a.bind);
	if (a.tls_off && (a.tls_creds || a.tls_psk))
		return cli_error("nbd: --tls=off cannot be combined with "
				 "--tls-creds or --tls-psk");
	if (!a.fork)
		return nbd_serve(&a, -1);

	/* --fork: the child opens the image and listens; the parent returns
	 * once the child says the socket accepts connections. */
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return cli_error("nbd: pipe: %s", strerror(errno));
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		return cli_error("nbd: fork: %s", strerror(errno));
	if (pid == 0) {
		close(pfd[0]);
		setsid();
		exit(nbd_serve(&a, pfd[1])); /* exit: LSan and stdio run */
	}
	close(pfd[1]);
	{
		char msg[1024];
		size_t n = 0;
		ssize_t got;
		while (n < sizeof(msg) - 1 &&
		       (got = read(pfd[0], msg + n, sizeof(msg) - 1 - n)) != 0) {
			if (got < 0) {
				if (errno == EINTR)
					continue;
				break;
			}
			n += (size_t)got;
			if (msg[n - 1] == '\0')
				break;
		}
		close(pfd[0]);
		msg[n] = '\0';
		if (n == 1 && msg[0] == '\0')
			return 0;
		if (n == 0) {
			int st;
			waitpid(pid, &st, 0);
			return cli_error("nbd: server exited during setup");
		}
		waitpid(pid, NULL, 0);
		return cli_error("%s", msg);
	}
}
