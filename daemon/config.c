/* daemon/config.c - cowpoold's configuration: one typed struct, defaults <
 * config file < command line.
 *
 * The file is INI-like: `key = value` lines, `#` starts a comment line,
 * blank lines are skipped, whitespace around key and value is trimmed.
 * file_root and lvm_device may be given several times.  An unknown key or
 * a bad value is an error naming file:line and the key.  A flag that sets
 * a list (--file-root, --lvm-device) replaces the file's list.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cowpoold.h"

static const char dmn_usage[] =
    "usage: cowpoold [options]\n"
    "  -c, --config PATH        configuration file (key = value lines)\n"
    "  --host-id N              this host's id, 1..2000 (required)\n"
    "  --socket PATH            API socket (default\n"
    "                           $COWPOOL_RUN_DIR/cowpoold.sock or\n"
    "                           /run/cowpool/cowpoold.sock)\n"
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

/* Set key to value.  where is "FILE:LINE" or "--flag"; errors printed. */
static int cfg_set(struct dmn_config *cfg, const char *key, const char *value,
		   const char *where)
{
	uint64_t u;
	if (!strcmp(key, "host_id")) {
		if (cfg_parse_uint(value, 1, CP_LEASE_MAX_HOST_ID, &u) < 0)
			goto bad;
		cfg->host_id = u;
	} else if (!strcmp(key, "socket")) {
		if (!*value)
			goto bad;
		free(cfg->socket);
		cfg->socket = cfg_strdup(value);
	} else if (!strcmp(key, "nbd_socket")) {
		if (!*value)
			goto bad;
		free(cfg->nbd_socket);
		cfg->nbd_socket = cfg_strdup(value);
	} else if (!strcmp(key, "file_root") || !strcmp(key, "lvm_device")) {
		char **list = key[0] == 'f' ? cfg->file_roots : cfg->lvm_devices;
		size_t n = 0;
		if (!*value)
			goto bad;
		while (list[n])
			n++;
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
	} else if (!strcmp(key, "monitor_interval")) {
		if (cfg_parse_uint(value, 1, 3600, &u) < 0)
			goto bad;
		cfg->monitor_interval = (unsigned)u;
	} else if (!strcmp(key, "sanlock")) {
		if (cfg_parse_bool(value, &cfg->sanlock) < 0)
			goto bad;
	} else if (!strcmp(key, "disk_owner") || !strcmp(key, "disk_group")) {
		/* a user / group name or a number: owner and group of the
		 * files of file domains (spm: cp_pool_opts.disk_uid/gid) */
		bool grp = key[5] == 'g';
		struct passwd *pw = NULL;
		struct group *gr = NULL;
		if (cfg_parse_uint(value, 1, UINT32_MAX - 1, &u) < 0) {
			if (grp ? !(gr = getgrnam(value)) : !(pw = getpwnam(value))) {
				fprintf(stderr, "cowpoold: %s: %s: unknown %s "
					"'%s'\n", where, key,
					grp ? "group" : "user", value);
				return -EINVAL;
			}
			u = grp ? gr->gr_gid : pw->pw_uid;
		}
		*(grp ? &cfg->disk_gid : &cfg->disk_uid) = (uint32_t)u;
	} else if (!strcmp(key, "log_level")) {
		int l = dmn_log_parse_level(value);
		if (l < 0)
			goto bad;
		cfg->log_level = (enum dmn_log_level)l;
	} else {
		fprintf(stderr, "cowpoold: %s: unknown key '%s'\n", where, key);
		return -EINVAL;
	}
	return 0;
bad:
	fprintf(stderr, "cowpoold: %s: invalid value '%s' for %s%s\n", where,
		value, key,
		!strcmp(key, "host_id")          ? " (expected 1..2000)"
		: !strcmp(key, "monitor_interval") ? " (expected 1..3600 seconds)"
		: !strcmp(key, "sanlock")          ? " (expected yes or no)"
		: !strcmp(key, "log_level")
		    ? " (expected error, warn, info or debug)"
		    : "");
	return -EINVAL;
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
	cfg->sanlock = true;
	cfg->log_level = DMN_LOG_INFO;
	cfg->ready_fd = -1;
}

void dmn_config_free(struct dmn_config *cfg)
{
	free(cfg->socket);
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
	    {"nbd-socket", required_argument, NULL, OPT_NBD_SOCKET},
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
	if (config_path && cfg_load_file(cfg, config_path) < 0)
		return -EINVAL;
	bool roots_reset = false, devs_reset = false;
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
		if (cfg_set(cfg, flags[i].key, flags[i].value, where) < 0)
			return -EINVAL;
	}
	if (!cfg->host_id) {
		fprintf(stderr, "cowpoold: host_id is required (--host-id or "
			"host_id in the config file)\n");
		return -EINVAL;
	}
	if (!cfg->socket) {
		const char *run = getenv("COWPOOL_RUN_DIR");
		char buf[4096];
		snprintf(buf, sizeof(buf), "%s/cowpoold.sock",
			 run && *run ? run : "/run/cowpool");
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
