/* Hand-written shims for what bindgen cannot wrap: macros and TLS variables.
 * Static inline functions are wrapped by bindgen's wrap_static_fns instead. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* fopencookie */
#endif
#include <stdio.h>
#include "wrapper.h"

int vs_rte_errno(void)
{
	return rte_errno;
}

/* DPDK's log as a stream whose writes go to vs_log_cb with the level and
 * type of the message being written (rte_vlog flushes after each one):
 * fopencookie is a glibc extension the libc crate does not bind. */
static vs_log_fn vs_log_cb;

static ssize_t vs_log_write(void *cookie, const char *buf, size_t size)
{
	(void)cookie;
	if (vs_log_cb)
		vs_log_cb(rte_log_cur_msg_loglevel(), rte_log_cur_msg_logtype(), buf, size);
	return (ssize_t)size;
}

int vs_route_log(vs_log_fn cb)
{
	cookie_io_functions_t io = { .write = vs_log_write };
	FILE *f = fopencookie(NULL, "w", io);

	if (f == NULL)
		return -1;
	vs_log_cb = cb;
	return rte_openlog_stream(f);
}
