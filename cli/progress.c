/* cli/progress.c - the -p progress display of commit, rebase, convert and
 * amend.
 *
 * Two shapes:
 *  - qemu-img's: "    (12.34/100%)\r", redrawn in place, then a newline
 *    when the operation ends;
 *  - JSON lines, chosen with --output=json when stdout is not a terminal
 *    (a daemon relaying progress):
 *    {"progress": 12.34, "done": 1048576, "total": 8388608}
 *
 * The engine calls cli_progress_update() from its worker threads; printing
 * is serialised by p->lock and limited to one line per
 * CLI_PROGRESS_INTERVAL seconds, except the first line and the final 100%,
 * which are always printed, once.
 */
#include <inttypes.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define CLI_PROGRESS_INTERVAL 0.1 /* seconds: at most ~10 lines a second */

static double progress_now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

void cli_progress_init(struct cli_progress *p, bool enabled, bool json)
{
	pthread_mutex_init(&p->lock, NULL);
	p->enabled = enabled;
	p->json = json && !isatty(STDOUT_FILENO);
	p->printed = false;
	p->finished = false;
	p->last_time = 0;
	p->done = p->total = 0;
}

/* Print one line; p->lock held. */
static void progress_print_locked(struct cli_progress *p)
{
	double pct = p->total ? (double)p->done * 100.0 / (double)p->total
			      : 100.0;
	if (p->json)
		printf("{\"progress\": %.2f, \"done\": %" PRIu64
		       ", \"total\": %" PRIu64 "}\n",
		       pct, p->done, p->total);
	else
		printf("    (%3.2f/100%%)\r", pct);
	fflush(stdout);
	p->printed = true;
	p->last_time = progress_now();
}

void cli_progress_update(void *opaque, uint64_t done, uint64_t total)
{
	struct cli_progress *p = opaque;
	if (!p->enabled)
		return;
	pthread_mutex_lock(&p->lock);
	if (p->finished)
		goto out;
	p->done = done;
	p->total = total;
	if (done >= total) {
		p->done = total;
		p->finished = true;
		progress_print_locked(p);
	} else if (!p->printed ||
		   progress_now() - p->last_time >= CLI_PROGRESS_INTERVAL) {
		progress_print_locked(p);
	}
out:
	pthread_mutex_unlock(&p->lock);
}

void cli_progress_end(struct cli_progress *p, bool success)
{
	if (p->enabled) {
		pthread_mutex_lock(&p->lock);
		if (success && !p->finished) {
			p->done = p->total;
			p->finished = true;
			progress_print_locked(p);
		}
		/* qemu-img ends the redrawn line, success or not. */
		if (p->printed && !p->json) {
			putchar('\n');
			fflush(stdout);
		}
		pthread_mutex_unlock(&p->lock);
	}
	pthread_mutex_destroy(&p->lock);
}

int cli_progress_finish(struct cli_progress *p, int r, const char *file)
{
	cli_progress_end(p, r >= 0);
	if (r < 0)
		cli_error_image(file, r);
	return r;
}
