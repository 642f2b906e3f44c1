/* qcow/jsonname.c - QEMU's json: pseudo-protocol in image and backing names
 *
 * QEMU writes backing names such as
 *   json:{"driver":"qcow2","file":{"driver":"file","filename":"/a/b.qcow2"}}
 * when a chain was assembled from options.  cowpool understands the simple
 * shapes (a format driver over the file protocol, nested or with dotted
 * keys, or the file protocol alone) and refuses anything else with an error:
 * a json: name is never opened as a file name.
 */
#include "qcow_int.h"

#include <stdlib.h>
#include <string.h>

#include "common/json.h"

static int bad(const char *name, const char *why)
{
	return cp_error(-ENOTSUP, "'%s': unsupported json: image name (%s); "
			"cowpool understands {\"driver\": \"qcow2\"|\"raw\", \"file\": "
			"{\"driver\": \"file\", \"filename\": ...}}", name, why);
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

int qc_json_name(const char *name, char **filename, enum cp_fmt *fmt)
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
		if (strcmp(k, "driver") && strcmp(k, "filename") && strcmp(k, "file") &&
		    strcmp(k, "file.driver") && strcmp(k, "file.filename")) {
			cp_json_free(root);
			return bad(name, "options other than driver and file");
		}
	}
	if (file && cp_json_type(file) == CP_JSON_OBJECT) {
		for (size_t i = 0; i < cp_json_count(file); i++) {
			const char *k = cp_json_key_at(file, i);
			if (strcmp(k, "driver") && strcmp(k, "filename")) {
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
		/* the protocol alone: {"driver": "file", "filename": ...} */
		r = protocol(name, drv, fn, &path);
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
	}
	if (r >= 0) {
		*filename = strdup(path);
		if (!*filename)
			r = -ENOMEM;
	}
	cp_json_free(root);
	return r;
}
