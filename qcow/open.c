/* qcow/open.c - opening and closing qcow2 images: the metadata device,
 * the header, the caches, the file geometry, the persistent bitmaps
 * (bitmap.c); at a read-write open the autoclear bits other than the
 * bitmaps' are dropped, a dirty (lazy refcounts) image is repaired and the
 * bitmaps are marked in use; at close the bitmaps are stored, then the
 * flush sequence, the lazy refcounts, the dirty bit and the space grown
 * ahead are settled.
 */
#include "qcow_int.h"

#include <errno.h>
#include <inttypes.h>

static void qc_free(struct qcow *q)
{
	if (q->own_mdev)
		cp_bdev_close(q->dev);
	qc_cache_destroy(&q->l2c);
	qc_cache_destroy(&q->rbc);
	cp_bdev_free_buf(q->l1);
	cp_bdev_free_buf(q->reftable);
	for (size_t i = 0; i < q->exts.len; i++)
		free(q->exts.ptr[i].data);
	qc_ext_vec_reset(&q->exts);
	qc_free_vec_reset(&q->pending_free);
	qc_bitmaps_free(q);
	free(q->backing_file);
	free(q->backing_format);
	pthread_mutex_destroy(&q->lock);
	pthread_cond_destroy(&q->inflight_cond);
	pthread_mutex_destroy(&q->gp_lock);
	pthread_cond_destroy(&q->gp_cond);
	free(q);
}

int qc_open(cp_image *img, struct qcow **out, const struct cp_open_opts *o)
{
	struct qcow *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->img = img;
	q->meta_prealloc = -1;
	q->dev = q->ddev = img->dev;
	if (img->own_dev) {
		struct cp_bdev_opts bo;
		cp_bdev_opts_init(&bo);
		bo.readonly = cp_bdev_readonly(img->dev);
		bo.aio = cp_bdev_aio(img->dev);
		bo.cache = cp_bdev_cache(img->dev);
		bo.queue_depth = 32;
		if (cp_bdev_open(img->filename, &bo, &q->dev) == 0)
			q->own_mdev = true;
		else
			q->dev = img->dev; /* works, minus the async fast paths */
		cp_clear_error();
	}
	q->name = img->filename;
	q->readonly = img->readonly;
	q->for_check = o->for_check;
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->inflight_cond, NULL);
	pthread_mutex_init(&q->gp_lock, NULL);
	pthread_cond_init(&q->gp_cond, NULL);
	int r = qc_header_read(q);
	if (r < 0)
		goto fail;
	if (q->corrupt && !q->readonly && !o->for_check) {
		r = cp_error(-EROFS, "%s: image is marked corrupt; it cannot be opened read-write (repair it with 'cowpool check -r all')",
			     q->name);
		goto fail;
	}
	if (!o->for_check) {
		/* as QEMU, which reads the table at every open (check reports
		 * what is wrong with it and repairs it) */
		struct qc_snaps sn;
		r = qc_snapshots_read(q, false, &sn, NULL, NULL);
		qc_snapshots_free(&sn);
		if (r < 0)
			goto fail;
	}
	if (q->nb_snapshots && !q->readonly && !o->for_check) {
		r = cp_error(-ENOTSUP, "%s: image has %u internal snapshot(s); cowpool opens such images read-only",
			     q->name, q->nb_snapshots);
		goto fail;
	}
	uint32_t slice = o->l2_cache_entry_size ? o->l2_cache_entry_size : 4096;
	if (!cp_is_pow2(slice) || slice < 512) {
		r = cp_error(-EINVAL, "%s: L2 cache entry size %u must be a power of two >= 512",
			     q->name, slice);
		goto fail;
	}
	if (slice > q->cluster_size)
		slice = q->cluster_size;
	q->slice_size = slice;
	q->slice_entries = slice / q->l2_entry_size;
	uint64_t l2bytes = o->l2_cache_size;
	if (!l2bytes) {
		uint64_t need = CP_DIV_ROUND_UP(q->size, q->cluster_size) * q->l2_entry_size;
		l2bytes = CP_MIN(need, 32ull << 20);
	}
	uint64_t l2n = CP_MAX(4, CP_DIV_ROUND_UP(l2bytes, slice));
	uint64_t rcbytes = o->refcount_cache_size ? o->refcount_cache_size : (1u << 20);
	uint64_t rcn = CP_MAX(4, rcbytes / q->cluster_size);
	r = qc_cache_init(&q->l2c, "L2", (unsigned)CP_MIN(l2n, 1u << 20), slice);
	if (r >= 0)
		r = qc_cache_init(&q->rbc, "refcount", (unsigned)CP_MIN(rcn, 1u << 16),
				  q->cluster_size);
	if (r < 0)
		goto fail;
	uint64_t fs = cp_bdev_size(q->dev);
	q->host_end = fs;
	q->file_end = fs;
	q->open_end = CP_ALIGN_UP(fs, q->cluster_size);
	q->alloc_end = CP_ALIGN_UP(fs, q->cluster_size);
	q->grow_ahead = q->own_mdev && !q->readonly && !cp_bdev_is_blockdev(q->dev);
	q->known_zero_from = cp_bdev_is_blockdev(q->dev)
				     ? UINT64_MAX
				     : CP_ALIGN_UP(fs, q->cluster_size);
	/* as QEMU, every open (check's too) loads the bitmaps, and one
	 * that breaks the spec's constraints fails it */
	r = qc_bitmaps_load(q);
	if (r < 0)
		goto fail;
	*out = q;
	img->q = q;
	if (!q->readonly) {
		pthread_mutex_lock(&q->lock);
		/* bit 0 (bitmaps) stays when they were loaded: bitmap.c keeps
		 * them consistent */
		uint64_t keep = q->nb_bm ? 1ull : 0;
		if ((q->autoclear & ~keep) && !o->for_check) {
			/* we do not maintain what the other bits vouch for */
			q->autoclear &= keep;
			r = qc_header_update_locked(q);
			if (r >= 0)
				r = cp_bdev_flush(q->dev);
		}
		pthread_mutex_unlock(&q->lock);
		if (r < 0)
			goto fail;
		if ((q->incompat & QC_INCOMPAT_DIRTY) && !o->for_check) {
			struct cp_check_result res;
			r = qc_check(q, CP_CHECK_REPAIR_ALL, &res, NULL, NULL);
			if (r >= 0 && (res.corruptions || (q->incompat & QC_INCOMPAT_DIRTY)))
				r = cp_error(-EUCLEAN, "%s: repairing the refcounts of a dirty image failed (%" PRIu64 " corruptions left)",
					     q->name, res.corruptions);
			if (r < 0)
				goto fail;
		}
		q->dirty_set = (q->incompat & QC_INCOMPAT_DIRTY) != 0;
		if (!o->for_check) {
			pthread_mutex_lock(&q->lock);
			r = qc_bitmaps_start_locked(q);
			pthread_mutex_unlock(&q->lock);
			if (r < 0)
				goto fail;
		}
	}
	return 0;
fail:
	img->q = NULL;
	*out = NULL;
	qc_free(q);
	return r;
}

int qc_close(struct qcow *q)
{
	int r = 0;
	if (!q)
		return 0;
	if (!q->readonly) {
		pthread_mutex_lock(&q->lock);
		r = qc_bitmaps_store_locked(q);
		int r2 = qc_flush_locked(q);
		if (r >= 0)
			r = r2;
		if (r >= 0 && q->lazy) {
			r = qc_cache_writeback(q, &q->rbc);
			if (r >= 0)
				r = cp_bdev_flush(q->dev);
		}
		if (r >= 0 && q->dirty_set)
			r = qc_header_set_incompat_locked(q, 0, QC_INCOMPAT_DIRTY);
		/* give back what grew ahead of the last allocated cluster */
		if (r >= 0 && q->grow_ahead && q->file_end > q->alloc_end &&
		    cp_bdev_size(q->dev) == q->file_end) {
			if (cp_bdev_truncate(q->dev, q->alloc_end) < 0)
				cp_clear_error();
		}
		pthread_mutex_unlock(&q->lock);
	}
	qc_free(q);
	return r;
}
