/* qcow/jsonname.c - QEMU's json: pseudo-protocol in image and backing names
 *
 * QEMU writes backing names such as
 *   json:{"driver":"qcow2","file":{"driver":"file","filename":"/a/b.qcow2"}}
 * when a chain was assembled from options.  cowpool understands the simple
 * shapes (a format driver over the file protocol, nested or with dotted
 * keys, or the file protocol alone, with options that change nothing cowpool
 * does) and refuses anything else with an error: a json: name is never
 * opened as a file name.
 */
#include "qcow_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"

static int bad(const char *name, const char *why)
{
	return cp_error(-ENOTSUP, "'%s': unsupported json: image name (%s); "
			"cowpool understands {\"driver\": \"qcow2\"|\"raw\", \"file\": "
			"{\"driver\": \"file\", \"filename\": ...}}", name, why);
}

/* Options QEMU accepts on a node that change neither what is read nor how
 * the file is shared (caching, discard and zero-write handling, limits):
 * cowpool ignores them.  Locking and sharing options are not among them. */
static const char *const ignored_node[] = {
	"cache", "cache.direct", "cache.no-flush", "read-only",
	"auto-read-only", "discard", "detect-zeroes", "node-name", NULL,
};
static const char *const ignored_qcow2[] = {
	"lazy-refcounts", "pass-discard-request", "pass-discard-snapshot",
	"pass-discard-other", "overlap-check", "cache-size", "l2-cache-size",
	"l2-cache-entry-size", "refcount-cache-size", "cache-clean-interval",
	NULL,
};
static const char *const ignored_file[] = {
	"aio", "aio-max-batch", "drop-cache", "x-check-cache-dropped", NULL,
};

static bool in_list(const char *const *l, const char *k)
{
	for (; *l; l++)
		if (!strcmp(*l, k))
			return true;
	return false;
}

static bool ignored_key(const char *k, bool file)
{
	return in_list(ignored_node, k) ||
	       in_list(file ? ignored_file : ignored_qcow2, k);
}

static const char *str_member(const cp_json *o, const char *key, bool *wrong)
{
	const cp_json *v = cp_json_get(o, key);
	if (!v)
		return NULL;
	const char *s = cp_json_string(v, NULL);
	if (!s)
		*wrong = true;
	return s;
}

/* the protocol layer: {"driver": "file"|"host_device", "filename": ...} */
static int protocol(const char *name, const char *drv, const char *fn,
		    const char **out)
{
	if (drv && strcmp(drv, "file") && strcmp(drv, "host_device"))
		return bad(name, "protocol driver is not file");
	if (!fn || !*fn)
		return bad(name, "no file name");
	*out = fn;
	return 0;
}

int qc_json_name(const char *name, enum cp_fmt want, char **filename,
		 enum cp_fmt *fmt)
{
	cp_json *root = NULL;
	*filename = NULL;
	*fmt = CP_FMT_AUTO;
	int r = cp_json_parse(name + 5, strlen(name + 5), NULL, &root);
	if (r < 0) {
		cp_clear_error();
		return bad(name, "not valid JSON");
	}
	if (cp_json_type(root) != CP_JSON_OBJECT) {
		cp_json_free(root);
		return bad(name, "not an object");
	}
	bool wrong = false;
	const char *drv = str_member(root, "driver", &wrong);
	const char *fn = str_member(root, "filename", &wrong);
	const char *fdrv = str_member(root, "file.driver", &wrong);
	const char *ffn = str_member(root, "file.filename", &wrong);
	const cp_json *file = cp_json_get(root, "file");
	const char *path = NULL;
	for (size_t i = 0; i < cp_json_count(root); i++) {
		const char *k = cp_json_key_at(root, i);
		bool fk = !strncmp(k, "file.", 5);
		if (strcmp(k, "driver") && strcmp(k, "filename") && strcmp(k, "file") &&
		    strcmp(k, "file.driver") && strcmp(k, "file.filename") &&
		    !ignored_key(fk ? k + 5 : k, fk || cp_json_get(root, "filename"))) {
			cp_json_free(root);
			return bad(name, "options other than driver and file");
		}
	}
	if (file && cp_json_type(file) == CP_JSON_OBJECT) {
		for (size_t i = 0; i < cp_json_count(file); i++) {
			const char *k = cp_json_key_at(file, i);
			if (strcmp(k, "driver") && strcmp(k, "filename") &&
			    !ignored_key(k, true)) {
				cp_json_free(root);
				return bad(name, "file options other than driver and filename");
			}
		}
		fdrv = str_member(file, "driver", &wrong);
		ffn = str_member(file, "filename", &wrong);
	} else if (file) {
		/* in QEMU, "file": "name" refers to a node by its name */
		cp_json_free(root);
		return bad(name, "file refers to a block node");
	}
	if (wrong) {
		cp_json_free(root);
		return bad(name, "a member is not a string");
	}
	if (fn && !ffn && !fdrv) {
		/* the protocol alone: {"driver": "file", "filename": ...} is
		 * the file's bytes (QEMU's "file" format: raw here); a format
		 * asked for besides makes QEMU look for a "file" child */
		if (!drv) /* as QEMU */
			r = bad(name, "must specify either driver or file");
		else
			r = protocol(name, drv, fn, &path);
		if (r >= 0 && want != CP_FMT_AUTO)
			r = cp_error(-EINVAL, "'%s': names the file protocol alone "
				     "and cannot be opened as %s (as in QEMU: "
				     "\"A block device must be specified for "
				     "\"file\"\")", name,
				     want == CP_FMT_RAW ? "raw" : "qcow2");
		else
			*fmt = CP_FMT_RAW;
	} else {
		if (fn)
			r = bad(name, "both filename and file");
		else if (drv && strcmp(drv, "raw") && strcmp(drv, "qcow2"))
			r = cp_error(-ENOTSUP, "'%s': image format '%s' is not supported "
				     "(cowpool reads raw and qcow2)", name, drv);
		else
			r = protocol(name, fdrv, ffn, &path);
		if (r >= 0 && drv)
			*fmt = !strcmp(drv, "raw") ? CP_FMT_RAW : CP_FMT_QCOW2;
		/* as QEMU: the format asked for (-f, or the overlay's
		 * backing format) wins over the name's driver */
		if (want != CP_FMT_AUTO)
			*fmt = want;
	}
	if (r >= 0) {
		*filename = strdup(path);
		if (!*filename)
			r = -ENOMEM;
	}
	cp_json_free(root);
	return r;
}
