/* daemon/config.c - cowpoold's configuration: one typed struct, defaults <
 * config file < command line.
 *
 * The file is INI-like: `key = value` lines, `#` starts a comment line,
 * blank lines are skipped, whitespace around key and value is trimmed.
 * file_root, lvm_device, allowed_uids and allowed_gids may be given
 * several times; any other key given twice in the file is an error.  An
 * unknown key, a bad value, a number outside its documented range, a
 * file_root that is not an absolute path of a directory, an lvm_device
 * that does not exist: an error naming file:line (or the flag) and the
 * key.  A flag that sets a list (--file-root, --lvm-device) replaces the
 * file's list.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cowpoold.h"

static const char dmn_usage[] =
    "usage: cowpoold [options]\n"
    "  -c, --config PATH        configuration file (key = value lines)\n"
    "  --host-id N              this host's id, 1..2000 (required)\n"
    "  --run-dir DIR            the host id's lock file (default\n"
    "                           $COWPOOL_RUN_DIR, else /run/cowpool)\n"
    "  --socket PATH            API socket (default cowpoold.sock in the\n"
    "                           run directory)\n"
    "  --nbd-socket PATH        NBD exports' socket (default nbd.sock in\n"
    "                           the API socket's directory)\n"
    "  --file-root DIR          directory holding file domains (repeatable)\n"
    "  --lvm-device DEV         device LVM may see for block domains\n"
    "                           (repeatable)\n"
    "  --lvm-system-dir DIR     LVM_SYSTEM_DIR for the lvm commands\n"
    "  --pool UUID              serve only this pool\n"
    "  --monitor-interval SEC   domain monitoring period (default 10)\n"
    "  --sanlock yes|no         use sanlock (default yes; no: no leases,\n"
    "                           no SPM role - for tests and inspection)\n"
    "  --log-level LEVEL        error, warn, info (default), debug\n"
    "  --log-file PATH          log there instead of stderr (SIGHUP\n"
    "                           reopens it)\n"
    "  --socket-group GROUP     the socket's group (mode 0660)\n"
    "  --allowed-uids U,...     users that may call (besides root)\n"
    "  --allowed-gids G,...     groups whose members may call\n"
    "  --io-timeout SEC         domain.create's default, 1..255 (10)\n"
    "  --max-connections N      open connections at most (64)\n"
    "  --request-timeout SEC    to a connection's first request (10)\n"
    "  --idle-timeout SEC       between requests, 0: none (600)\n"
    "  --max-request BYTES      one request line at most (1M)\n"
    "  --max-answer BYTES       one answer line at most (4M)\n"
    "  --ready-fd N             write \"ready\\n\" to fd N once the socket\n"
    "                           accepts connections, then close it\n"
    "  --foreground             stay in the foreground (the default; the\n"
    "                           daemon never forks)\n"
    "  -h, --help               this text\n"
    "  -V, --version            the version\n";

static char *cfg_strdup(const char *s)
{
	char *p = strdup(s);
	if (!p) {
		fprintf(stderr, "cowpoold: out of memory\n");
		exit(1);
	}
	return p;
}

static int cfg_parse_uint(const char *s, uint64_t min, uint64_t max,
			  uint64_t *out)
{
	char *end;
	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static int cfg_parse_bool(const char *s, bool *out)
{
	if (!strcmp(s, "yes") || !strcmp(s, "true") || !strcmp(s, "on") ||
	    !strcmp(s, "1"))
		*out = true;
	else if (!strcmp(s, "no") || !strcmp(s, "false") ||
		 !strcmp(s, "off") || !strcmp(s, "0"))
		*out = false;
	else
		return -EINVAL;
	return 0;
}

static void cfg_list_clear(char **list)
{
	for (size_t i = 0; list[i]; i++) {
		free(list[i]);
		list[i] = NULL;
	}
}

static int cfg_id(const char *name, bool group, uint32_t *id);

/* A uid/gid list entry: a name or a number, several per value separated by
 * commas or blanks. */
static int cfg_id_list(const char *key, const char *value, uint32_t *list,
		       unsigned *n, const char *where)
{
	char buf[1024];
	snprintf(buf, sizeof(buf), "%s", value);
	bool uid = !strcmp(key, "allowed_uids");
	char *save = NULL;
	for (char *t = strtok_r(buf, ", \t", &save); t;
	     t = strtok_r(NULL, ", \t", &save)) {
		uint32_t id;
		if (cfg_id(t, !uid, &id) < 0) {
			fprintf(stderr, "cowpoold: %s: %s: no %s '%s'\n", where,
				key, uid ? "user" : "group", t);
			return -EINVAL;
		}
		if (*n == DMN_MAX_LIST) {
			fprintf(stderr, "cowpoold: %s: too many %s entries "
				"(at most %d)\n", where, key, DMN_MAX_LIST);
			return -EINVAL;
		}
		list[(*n)++] = id;
	}
	return 0;
}

/* A user or group: a number or a name.  0, or -ENOENT. */
static int cfg_id(const char *name, bool group, uint32_t *id)
{
	uint64_t u;
	if (cfg_parse_uint(name, 0, UINT32_MAX - 1, &u) == 0) {
		*id = (uint32_t)u;
		return 0;
	}
	struct passwd *pw = group ? NULL : getpwnam(name);
	struct group *gr = group ? getgrnam(name) : NULL;
	if (!pw && !gr)
		return -ENOENT;
	*id = gr ? gr->gr_gid : pw->pw_uid;
	return 0;
}

int dmn_config_gid(const char *name, uint32_t *gid)
{
	return cfg_id(name, true, gid);
}

/* Numeric keys: name, range, unit (for the message), where it goes. */
struct cfg_num {
	const char *key;
	uint64_t min, max;
	const char *unit;
};

static const struct cfg_num cfg_nums[] = {
    {"host_id", 1, CP_LEASE_MAX_HOST_ID, ""},
    {"monitor_interval", 1, 3600, " seconds"},
    {"io_timeout", 1, 255, " seconds"},
    {"max_connections", 1, 10000, ""},
    {"idle_timeout", 0, 86400, " seconds; 0: none"},
    {"request_timeout", 1, 3600, " seconds"},
    {"max_request", 4096, 64u << 20, " bytes"},
    {"max_answer", 65536, 1u << 30, " bytes"},
};

static void cfg_num_store(struct dmn_config *cfg, const char *key, uint64_t u)
{
	if (!strcmp(key, "host_id"))
		cfg->host_id = u;
	else if (!strcmp(key, "monitor_interval"))
		cfg->monitor_interval = (unsigned)u;
	else if (!strcmp(key, "io_timeout"))
		cfg->io_timeout = (unsigned)u;
	else if (!strcmp(key, "max_connections"))
		cfg->lim.max_connections = (unsigned)u;
	else if (!strcmp(key, "idle_timeout"))
		cfg->lim.idle_timeout = (unsigned)u;
	else if (!strcmp(key, "request_timeout"))
		cfg->lim.request_timeout = (unsigned)u;
	else if (!strcmp(key, "max_request"))
		cfg->lim.max_request = (size_t)u;
	else if (!strcmp(key, "max_answer"))
		cfg->lim.max_answer = (size_t)u;
}

/* Set key to value.  where is "FILE:LINE" or "--flag"; errors printed. */
static int cfg_set(struct dmn_config *cfg, const char *key, const char *value,
		   const char *where)
{
	for (size_t i = 0; i < CP_ARRAY_SIZE(cfg_nums); i++) {
		const struct cfg_num *k = &cfg_nums[i];
		uint64_t u;
		if (strcmp(key, k->key))
			continue;
		/* sizes may have a suffix */
		bool size = !strncmp(key, "max_r", 5) || !strcmp(key, "max_answer");
		int r = size ? cp_parse_size(value, &u) : cfg_parse_uint(value, 0, UINT64_MAX, &u);
		if (r < 0 || u < k->min || u > k->max) {
			fprintf(stderr, "cowpoold: %s: invalid value '%s' for "
				"%s (expected %" PRIu64 "..%" PRIu64 "%s)\n",
				where, value, key, k->min, k->max, k->unit);
			return -EINVAL;
		}
		cfg_num_store(cfg, key, u);
		return 0;
	}
	if (!strcmp(key, "socket")) {
		if (!*value)
			goto bad;
		free(cfg->socket);
		cfg->socket = cfg_strdup(value);
	} else if (!strcmp(key, "nbd_socket")) {
		if (!*value)
			goto bad;
		free(cfg->nbd_socket);
		cfg->nbd_socket = cfg_strdup(value);
	} else if (!strcmp(key, "socket_group")) {
		uint32_t gid;
		if (!*value)
			goto bad;
		if (dmn_config_gid(value, &gid) < 0) {
			fprintf(stderr, "cowpoold: %s: socket_group: no group "
				"'%s'\n", where, value);
			return -EINVAL;
		}
		free(cfg->socket_group);
		cfg->socket_group = cfg_strdup(value);
	} else if (!strcmp(key, "log_file") || !strcmp(key, "run_dir")) {
		char **dst = key[0] == 'l' ? &cfg->log_file : &cfg->run_dir;
		if (value[0] != '/') {
			fprintf(stderr, "cowpoold: %s: %s: '%s' is not an "
				"absolute path\n", where, key, value);
			return -EINVAL;
		}
		free(*dst);
		*dst = cfg_strdup(value);
	} else if (!strcmp(key, "allowed_uids")) {
		return cfg_id_list(key, value, cfg->lim.allowed_uids,
				   &cfg->lim.n_uids, where);
	} else if (!strcmp(key, "allowed_gids")) {
		return cfg_id_list(key, value, cfg->lim.allowed_gids,
				   &cfg->lim.n_gids, where);
	} else if (!strcmp(key, "file_root") || !strcmp(key, "lvm_device")) {
		bool root = key[0] == 'f';
		char **list = root ? cfg->file_roots : cfg->lvm_devices;
		size_t n = 0;
		struct stat st;
		if (!*value)
			goto bad;
		if (root && value[0] != '/') {
			fprintf(stderr, "cowpoold: %s: file_root: '%s' is not "
				"an absolute path\n", where, value);
			return -EINVAL;
		}
		if (stat(value, &st) < 0) {
			fprintf(stderr, "cowpoold: %s: %s: %s: %s\n", where,
				key, value, strerror(errno));
			return -EINVAL;
		}
		if (root && !S_ISDIR(st.st_mode)) {
			fprintf(stderr, "cowpoold: %s: file_root: %s is not a "
				"directory\n", where, value);
			return -EINVAL;
		}
		if (!root && !S_ISBLK(st.st_mode)) {
			fprintf(stderr, "cowpoold: %s: lvm_device: %s is not "
				"a block device\n", where, value);
			return -EINVAL;
		}
		while (list[n]) {
			if (!strcmp(list[n], value)) {
				fprintf(stderr, "cowpoold: %s: %s: %s is "
					"given twice\n", where, key, value);
				return -EINVAL;
			}
			n++;
		}
		if (n == DMN_MAX_LIST) {
			fprintf(stderr, "cowpoold: %s: too many %s entries "
				"(at most %d)\n", where, key, DMN_MAX_LIST);
			return -EINVAL;
		}
		list[n] = cfg_strdup(value);
	} else if (!strcmp(key, "lvm_system_dir")) {
		free(cfg->lvm_system_dir);
		cfg->lvm_system_dir = *value ? cfg_strdup(value) : NULL;
	} else if (!strcmp(key, "pool")) {
		if (!cp_uuid_valid(value)) {
			fprintf(stderr, "cowpoold: %s: %s: bad UUID '%s' "
				"(expected 8-4-4-4-12 hex digits)\n",
				where, key, value);
			return -EINVAL;
		}
		free(cfg->pool);
		cfg->pool = cfg_strdup(value);
	} else if (!strcmp(key, "sanlock")) {
		if (cfg_parse_bool(value, &cfg->sanlock) < 0)
			goto bad;
	} else if (!strcmp(key, "disk_owner") || !strcmp(key, "disk_group")) {
		/* a user / group name or a number: owner and group of the
		 * files of file domains (spm: cp_pool_opts.disk_uid/gid) */
		bool grp = key[5] == 'g';
		uint32_t id;
		if (!*value || cfg_id(value, grp, &id) < 0) {
			fprintf(stderr, "cowpoold: %s: %s: unknown %s '%s'\n",
				where, key, grp ? "group" : "user", value);
			return -EINVAL;
		}
		*(grp ? &cfg->disk_gid : &cfg->disk_uid) = id;
	} else if (!strcmp(key, "log_level")) {
		int l = dmn_log_parse_level(value);
		if (l < 0)
			goto bad;
		cfg->lim.log_level = (enum dmn_log_level)l;
	} else {
		fprintf(stderr, "cowpoold: %s: unknown key '%s'\n", where, key);
		return -EINVAL;
	}
	return 0;
bad:
	fprintf(stderr, "cowpoold: %s: invalid value '%s' for %s%s\n", where,
		value, key,
		!strcmp(key, "sanlock")          ? " (expected yes or no)"
		: !strcmp(key, "log_level")
		    ? " (expected error, warn, info or debug)"
		    : "");
	return -EINVAL;
}

/* Keys that may be given several times in the file. */
static bool cfg_repeatable(const char *key)
{
	return !strcmp(key, "file_root") || !strcmp(key, "lvm_device") ||
	       !strcmp(key, "allowed_uids") || !strcmp(key, "allowed_gids");
}

static char *cfg_trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n && isspace((unsigned char)s[n - 1]))
		s[--n] = 0;
	return s;
}

static int cfg_load_file(struct dmn_config *cfg, const char *path)
{
	FILE *f = fopen(path, "re");
	if (!f) {
		fprintf(stderr, "cowpoold: cannot open config file %s: %s\n",
			path, strerror(errno));
		return -errno;
	}
	char *line = NULL;
	size_t cap = 0;
	unsigned lineno = 0;
	int ret = 0;
	struct {
		char key[32];
		unsigned line;
	} seen[64];
	size_t nseen = 0;
	while (getline(&line, &cap, f) >= 0) {
		lineno++;
		char where[4200];
		snprintf(where, sizeof(where), "%s:%u", path, lineno);
		char *s = cfg_trim(line);
		if (!*s || *s == '#')
			continue;
		char *eq = strchr(s, '=');
		if (!eq) {
			fprintf(stderr, "cowpoold: %s: expected 'key = value', "
				"not '%s'\n", where, s);
			ret = -EINVAL;
			break;
		}
		*eq = 0;
		char *key = cfg_trim(s), *value = cfg_trim(eq + 1);
		if (!*key) {
			fprintf(stderr, "cowpoold: %s: empty key\n", where);
			ret = -EINVAL;
			break;
		}
		if (!cfg_repeatable(key)) {
			size_t i;
			for (i = 0; i < nseen; i++)
				if (!strcmp(seen[i].key, key))
					break;
			if (i < nseen) {
				fprintf(stderr, "cowpoold: %s: duplicate key "
					"'%s' (first set on line %u)\n",
					where, key, seen[i].line);
				ret = -EINVAL;
				break;
			}
			if (nseen < CP_ARRAY_SIZE(seen) &&
			    strlen(key) < sizeof(seen[0].key)) {
				snprintf(seen[nseen].key, sizeof(seen[0].key),
					 "%s", key);
				seen[nseen++].line = lineno;
			}
		}
		ret = cfg_set(cfg, key, value, where);
		if (ret < 0)
			break;
	}
	if (!ret && ferror(f)) {
		fprintf(stderr, "cowpoold: error reading %s\n", path);
		ret = -EIO;
	}
	free(line);
	fclose(f);
	return ret;
}

static void cfg_defaults(struct dmn_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->monitor_interval = 10;
	cfg->io_timeout = 10;
	cfg->sanlock = true;
	cfg->lim.log_level = DMN_LOG_INFO;
	cfg->lim.max_connections = 64;
	cfg->lim.idle_timeout = 600;
	cfg->lim.request_timeout = 10;
	cfg->lim.max_request = DMN_MAX_REQUEST;
	cfg->lim.max_answer = 4u << 20;
	cfg->ready_fd = -1;
}

void dmn_config_free(struct dmn_config *cfg)
{
	free(cfg->socket);
	free(cfg->run_dir);
	free(cfg->socket_group);
	free(cfg->log_file);
	free(cfg->config_path);
	free(cfg->nbd_socket);
	cfg_list_clear(cfg->file_roots);
	cfg_list_clear(cfg->lvm_devices);
	free(cfg->lvm_system_dir);
	free(cfg->pool);
	cfg_defaults(cfg);
}

int dmn_config_load(struct dmn_config *cfg, int argc, char **argv)
{
	enum {
		OPT_HOST_ID = 256, OPT_SOCKET, OPT_FILE_ROOT, OPT_LVM_DEVICE,
		OPT_LVM_SYSDIR, OPT_POOL, OPT_MONITOR, OPT_FOREGROUND,
		OPT_LOG_LEVEL, OPT_READY_FD, OPT_SANLOCK, OPT_NBD_SOCKET,
		OPT_LOG_FILE,
		OPT_KEY, /* --a-key: the key a_key */
	};
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"host-id", required_argument, NULL, OPT_HOST_ID},
	    {"socket", required_argument, NULL, OPT_SOCKET},
	    {"file-root", required_argument, NULL, OPT_FILE_ROOT},
	    {"lvm-device", required_argument, NULL, OPT_LVM_DEVICE},
	    {"lvm-system-dir", required_argument, NULL, OPT_LVM_SYSDIR},
	    {"pool", required_argument, NULL, OPT_POOL},
	    {"monitor-interval", required_argument, NULL, OPT_MONITOR},
	    {"foreground", no_argument, NULL, OPT_FOREGROUND},
	    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
	    {"ready-fd", required_argument, NULL, OPT_READY_FD},
	    {"sanlock", required_argument, NULL, OPT_SANLOCK},
	    {"log-file", required_argument, NULL, OPT_LOG_FILE},
	    {"socket-group", required_argument, NULL, OPT_KEY},
	    {"allowed-uids", required_argument, NULL, OPT_KEY},
	    {"allowed-gids", required_argument, NULL, OPT_KEY},
	    {"io-timeout", required_argument, NULL, OPT_KEY},
	    {"max-connections", required_argument, NULL, OPT_KEY},
	    {"idle-timeout", required_argument, NULL, OPT_KEY},
	    {"request-timeout", required_argument, NULL, OPT_KEY},
	    {"max-request", required_argument, NULL, OPT_KEY},
	    {"max-answer", required_argument, NULL, OPT_KEY},
	    {"disk-owner", required_argument, NULL, OPT_KEY},
	    {"disk-group", required_argument, NULL, OPT_KEY},
	    {"nbd-socket", required_argument, NULL, OPT_NBD_SOCKET},
	    {"run-dir", required_argument, NULL, OPT_KEY},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	/* Flags are collected first and applied after the file. */
	struct {
		const char *key, *value, *flag;
	} flags[2 * DMN_MAX_LIST + 16];
	size_t nflags = 0;
	const char *config_path = NULL;
	int c, longidx;

	cfg_defaults(cfg);
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":c:hV", longopts, &longidx)) !=
	       -1) {
		const char *key = NULL;
		switch (c) {
		case 'c':
			config_path = optarg;
			continue;
		case 'h':
			fputs(dmn_usage, stdout);
			return 1;
		case 'V':
			printf("cowpoold version %s\n", CP_VERSION);
			return 1;
		case OPT_FOREGROUND:
			continue;
		case OPT_READY_FD: {
			uint64_t fd;
			if (cfg_parse_uint(optarg, 0, 65535, &fd) < 0) {
				fprintf(stderr, "cowpoold: --ready-fd: invalid "
					"file descriptor '%s'\n", optarg);
				return -EINVAL;
			}
			cfg->ready_fd = (int)fd;
			continue;
		}
		case OPT_HOST_ID: key = "host_id"; break;
		case OPT_SOCKET: key = "socket"; break;
		case OPT_FILE_ROOT: key = "file_root"; break;
		case OPT_LVM_DEVICE: key = "lvm_device"; break;
		case OPT_LVM_SYSDIR: key = "lvm_system_dir"; break;
		case OPT_POOL: key = "pool"; break;
		case OPT_MONITOR: key = "monitor_interval"; break;
		case OPT_LOG_LEVEL: key = "log_level"; break;
		case OPT_SANLOCK: key = "sanlock"; break;
		case OPT_LOG_FILE: key = "log_file"; break;
		case OPT_KEY: {
			/* one per option */
			static char keys[CP_ARRAY_SIZE(longopts)][32];
			char *k = keys[longidx];
			snprintf(k, sizeof(keys[0]), "%s",
				 longopts[longidx].name);
			for (char *p = k; *p; p++)
				if (*p == '-')
					*p = '_';
			key = k;
			break;
		}
		case OPT_NBD_SOCKET: key = "nbd_socket"; break;
		case ':':
			fprintf(stderr, "cowpoold: option '%s' requires an "
				"argument\n", argv[optind - 1]);
			return -EINVAL;
		default:
			fprintf(stderr, "cowpoold: unrecognized option '%s' "
				"(try --help)\n", argv[optind - 1]);
			return -EINVAL;
		}
		if (nflags == CP_ARRAY_SIZE(flags)) {
			fprintf(stderr, "cowpoold: too many options\n");
			return -EINVAL;
		}
		flags[nflags].key = key;
		flags[nflags].value = optarg;
		flags[nflags].flag = longopts[longidx].name;
		nflags++;
	}
	if (optind < argc) {
		fprintf(stderr, "cowpoold: unexpected argument '%s' (try "
			"--help)\n", argv[optind]);
		return -EINVAL;
	}
	if (config_path) {
		cfg->config_path = cfg_strdup(config_path);
		if (cfg_load_file(cfg, config_path) < 0)
			return -EINVAL;
	}
	bool roots_reset = false, devs_reset = false, uids_reset = false,
	     gids_reset = false;
	for (size_t i = 0; i < nflags; i++) {
		char where[64];
		snprintf(where, sizeof(where), "--%s", flags[i].flag);
		if (!strcmp(flags[i].key, "file_root") && !roots_reset) {
			cfg_list_clear(cfg->file_roots);
			roots_reset = true;
		}
		if (!strcmp(flags[i].key, "lvm_device") && !devs_reset) {
			cfg_list_clear(cfg->lvm_devices);
			devs_reset = true;
		}
		if (!strcmp(flags[i].key, "allowed_uids") && !uids_reset) {
			cfg->lim.n_uids = 0;
			uids_reset = true;
		}
		if (!strcmp(flags[i].key, "allowed_gids") && !gids_reset) {
			cfg->lim.n_gids = 0;
			gids_reset = true;
		}
		if (cfg_set(cfg, flags[i].key, flags[i].value, where) < 0)
			return -EINVAL;
	}
	if (!cfg->host_id) {
		fprintf(stderr, "cowpoold: host_id is required (--host-id or "
			"host_id in the config file)\n");
		return -EINVAL;
	}
	if (!cfg->run_dir) {
		const char *run = getenv("COWPOOL_RUN_DIR");
		cfg->run_dir = cfg_strdup(run && *run == '/' ? run
							    : "/run/cowpool");
	}
	if (!cfg->socket) {
		char buf[4096];
		snprintf(buf, sizeof(buf), "%s/cowpoold.sock", cfg->run_dir);
		cfg->socket = cfg_strdup(buf);
	}
	if (!cfg->nbd_socket) {
		/* nbd.sock beside the API socket */
		const char *slash = strrchr(cfg->socket, '/');
		size_t dir = slash ? (size_t)(slash - cfg->socket) + 1 : 0;
		char buf[4096];
		snprintf(buf, sizeof(buf), "%.*snbd.sock", (int)dir,
			 cfg->socket);
		cfg->nbd_socket = cfg_strdup(buf);
	}
	return 0;
}

/* ---- running daemon --------------------------------------------------------- */

void dmn_limits_get(struct dmn *d, struct dmn_limits *out)
{
	pthread_mutex_lock(&d->lim_lock);
	*out = d->cfg.lim;
	pthread_mutex_unlock(&d->lim_lock);
}

static bool str_differs(const char *a, const char *b)
{
	return (a == NULL) != (b == NULL) || (a && strcmp(a, b));
}

static bool list_differs(char *const *a, char *const *b)
{
	size_t i;
	for (i = 0; a[i] && b[i]; i++)
		if (strcmp(a[i], b[i]))
			return true;
	return a[i] || b[i];
}

void dmn_config_reload(struct dmn *d)
{
	struct dmn_config n;
	const char *log_file = d->cfg.log_file;
	if (log_file) {
		int r = dmn_log_open(log_file);
		if (r < 0)
			dmn_err("SIGHUP: cannot reopen the log file %s: %s",
				log_file, strerror(-r));
		else
			dmn_info("SIGHUP: log file %s reopened", log_file);
	}
	/* The same flags and file as at start-up; errors go to the log. */
	int r = dmn_config_load(&n, d->argc, d->argv);
	if (r < 0) {
		dmn_err("SIGHUP: the configuration has errors (above); the "
			"running one stays");
		dmn_config_free(&n);
		return;
	}
	pthread_mutex_lock(&d->lim_lock);
	d->cfg.lim = n.lim;
	pthread_mutex_unlock(&d->lim_lock);
	dmn_log_set_level(n.lim.log_level);
	const char *restart[8];
	size_t k = 0;
	if (n.host_id != d->cfg.host_id)
		restart[k++] = "host_id";
	if (str_differs(n.socket, d->cfg.socket) ||
	    str_differs(n.run_dir, d->cfg.run_dir))
		restart[k++] = "socket/run_dir";
	if (str_differs(n.socket_group, d->cfg.socket_group))
		restart[k++] = "socket_group";
	if (str_differs(n.log_file, d->cfg.log_file))
		restart[k++] = "log_file";
	if (list_differs(n.file_roots, d->cfg.file_roots) ||
	    list_differs(n.lvm_devices, d->cfg.lvm_devices))
		restart[k++] = "file_root/lvm_device";
	if (n.sanlock != d->cfg.sanlock || str_differs(n.pool, d->cfg.pool))
		restart[k++] = "sanlock/pool";
	if (n.monitor_interval != d->cfg.monitor_interval ||
	    n.io_timeout != d->cfg.io_timeout)
		restart[k++] = "monitor_interval/io_timeout";
	for (size_t i = 0; i < k; i++)
		dmn_warn("SIGHUP: %s changed: it takes effect at the next "
			 "start", restart[i]);
	dmn_info("SIGHUP: configuration reloaded (log_level, allowed_uids, "
		 "allowed_gids, max_connections, idle_timeout, "
		 "request_timeout, max_request, max_answer)");
	dmn_config_free(&n);
}
