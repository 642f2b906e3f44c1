/* nbd/export.c - an export: its references (the server's table and each
 * connection hold one) and its client count.  server.c adds, lists and
 * removes exports; conn.c attaches its connection to one.  Both use this
 * file, which uses neither, so the two do not call each other in a circle.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "nbd_int.h"

void nbd_export_free(struct nbd_export *e)
{
	if (e->release)
		e->release(e->opaque, e->img);
	free(e->name);
	free(e->description);
	free(e);
}

struct nbd_export *nbd_export_get(cp_nbd_server *s, const char *name)
{
	struct nbd_export *e;

	pthread_mutex_lock(&s->lock);
	for (e = s->exports; e; e = e->next)
		if (strcmp(e->name, name) == 0)
			break;
	if (e)
		e->refs++;
	pthread_mutex_unlock(&s->lock);
	return e;
}

void nbd_export_put(cp_nbd_server *s, struct nbd_export *e)
{
	bool last;

	pthread_mutex_lock(&s->lock);
	last = --e->refs == 0;
	pthread_mutex_unlock(&s->lock);
	if (last)
		nbd_export_free(e);
}

int nbd_export_attach(cp_nbd_server *s, struct nbd_export *e,
		      struct nbd_conn *c)
{
	int ret = 0;

	pthread_mutex_lock(&s->lock);
	if (e->removed) {
		ret = -ESHUTDOWN;
	} else {
		e->clients++;
		c->exp = e; /* with clients, under the lock: see remove */
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

void nbd_export_detach(cp_nbd_server *s, struct nbd_export *e)
{
	pthread_mutex_lock(&s->lock);
	e->clients--;
	pthread_mutex_unlock(&s->lock);
}
