/* common/common.h - small helpers shared by every cowpool module.
 *
 * Error rule (docs/hacking.md): functions return int, >= 0 on success and
 * -errno on failure.  A human-readable message goes to a per-thread "last
 * error", stored with its errno, set with cp_error() or cp_error_prefix()
 * and read with cp_error_msg(err).
 */
#ifndef CP_COMMON_H
#define CP_COMMON_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdlib.h>

#define CP_EXPORT __attribute__((visibility("default")))
#define CP_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define CP_UNUSED __attribute__((unused))

#define CP_MIN(a, b) ((a) < (b) ? (a) : (b))
#define CP_MAX(a, b) ((a) > (b) ? (a) : (b))
#define CP_DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
#define CP_ALIGN_UP(n, a) (((n) + (a) - 1) / (a) * (a))
#define CP_ALIGN_DOWN(n, a) ((n) / (a) * (a))
#define CP_IS_ALIGNED(n, a) (((n) % (a)) == 0)
#define CP_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
/* Append item to the singly linked FIFO head..tail (lvalues; NULL when
 * empty) whose items link through ->next. */
#define CP_FIFO_PUSH(head, tail, item)                                         \
	do {                                                                   \
		(item)->next = NULL;                                           \
		if (tail)                                                      \
			(tail)->next = (item);                                 \
		else                                                           \
			(head) = (item);                                       \
		(tail) = (item);                                               \
	} while (0)

/* Errors (docs/hacking.md, Errors).  The calling thread keeps one last
 * error: the -errno a function failed with and the message it recorded for
 * that errno, stored together.
 *
 * cp_error() records a message for err (a -errno value) and returns err so
 * callers can write `return cp_error(-EINVAL, "...")`; errno is preserved. */
int cp_error(int err, const char *fmt, ...) CP_PRINTF(2, 3);
/* Same, but puts "prefix: " in front of the message a callee recorded for
 * the same err (strerror(-err) when the stored message belongs to another
 * errno or there is none). */
int cp_error_prefix(int err, const char *fmt, ...) CP_PRINTF(2, 3);
/* The message for err, the value a call just returned: the stored message
 * when it was recorded for err, else strerror(-err).  Never NULL; valid until
 * the next error on this thread.  This is how callers read errors. */
const char *cp_error_msg(int err);
/* The errno the stored message belongs to (0 when none). */
int cp_last_errno(void);
/* The stored message whatever its errno ("" when none); for tests. */
const char *cp_last_error(void);
/* Forget the stored error. */
void cp_clear_error(void);

/* Every public function of blockcore.h, qcow.h, spm.h and nbd.h that can
 * fail starts with CP_API_ENTER(): the outermost one on the thread clears
 * the stored error, so what a caller reads after a failure was recorded
 * during that call.  Public functions called from inside the libraries do
 * not clear it (a caller may be about to prefix a message it or a callee
 * recorded).  GNU C (cleanup attribute): only for .c files. */
#define CP_API_ENTER()                                                   \
	unsigned cp_api_depth_                                           \
	    __attribute__((cleanup(cp_api_leave), unused)) = cp_api_enter()
unsigned cp_api_enter(void);
void cp_api_leave(unsigned *depth);

/* Big-endian load/store (QCOW2 is big-endian on disk). */
static inline uint16_t cp_be16(const void *p)
{
	const uint8_t *b = p;
	return (uint16_t)((b[0] << 8) | b[1]);
}
static inline uint32_t cp_be32(const void *p)
{
	const uint8_t *b = p;
	return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) |
	       ((uint32_t)b[2] << 8) | b[3];
}
static inline uint64_t cp_be64(const void *p)
{
	return ((uint64_t)cp_be32(p) << 32) | cp_be32((const uint8_t *)p + 4);
}
static inline void cp_put_be16(void *p, uint16_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t)(v >> 8);
	b[1] = (uint8_t)v;
}
static inline void cp_put_be32(void *p, uint32_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t)(v >> 24);
	b[1] = (uint8_t)(v >> 16);
	b[2] = (uint8_t)(v >> 8);
	b[3] = (uint8_t)v;
}
static inline void cp_put_be64(void *p, uint64_t v)
{
	cp_put_be32(p, (uint32_t)(v >> 32));
	cp_put_be32((uint8_t *)p + 4, (uint32_t)v);
}

static inline bool cp_is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/* True if all len bytes of buf are zero. */
bool cp_is_zero(const void *buf, size_t len);

/* UTF-8, strictly as RFC 3629 defines it (no overlong forms, no surrogates,
 * nothing above U+10FFFF); common/utf8.c is the only decoder in cowpool.
 * cp_utf8_decode() decodes the sequence at s (n bytes left): it returns the
 * code point and sets *len to the sequence's length, or returns -1 with
 * *len = 1 when the sequence is invalid or cut short by n.  NUL decodes as
 * code point 0. */
int32_t cp_utf8_decode(const void *s, size_t n, size_t *len);
/* Encode cp (at most U+10FFFF, not a surrogate) into out, which has room
 * for 4 bytes; returns the number of bytes written (1..4). */
size_t cp_utf8_encode(char *out, uint32_t cp);
/* True if the n bytes at s are a sequence of valid UTF-8 characters. */
bool cp_utf8_valid(const void *s, size_t n);

/* Parse a size in qemu-img's grammar: decimal (a fraction needs a suffix)
 * or 0x hex, optional suffix (k, M, G, T, P, E; powers of 1024; b/B and
 * KiB/KB spellings); a plain number is bytes.  Returns 0 or -EINVAL. */
int cp_parse_size(const char *s, uint64_t *out);

/* sock.c: send all len bytes of buf on the stream socket fd (MSG_NOSIGNAL:
 * a closed peer is -EPIPE, not SIGPIPE; EINTR is retried).  0 or -errno. */
int cp_send_all(int fd, const void *buf, size_t len);

/* thread.c: start fn(arg) on a detached thread (stack_size bytes of
 * stack; 0: the default).  0 or -errno (no message). */
int cp_thread_start_detached(void *(*fn)(void *), void *arg,
			     size_t stack_size);

/* Waiting for asynchronous requests from another thread: a waiter made
 * with CP_WAITER_INIT(n) expects n completions; cp_waiter_add() expects
 * one more (before its request is submitted); cp_waiter_done() is the
 * completion callback (opaque: the waiter; ret: 0 or -errno), also to
 * call for a request that could not be submitted; cp_waiter_wait() returns
 * once every expected completion came: 0, or the first error. */
struct cp_waiter {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned pending;
	int err;
};
#define CP_WAITER_INIT(n)                                                      \
	{PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, (n), 0}
void cp_waiter_add(struct cp_waiter *w);
void cp_waiter_done(void *opaque, int ret);
int cp_waiter_wait(struct cp_waiter *w);

#endif
