/* Headers bindgen turns into src/dpdk/ffi.rs (via build.rs). */
#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_log.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_dev.h>
#include <rte_bus.h>
#include <rte_mempool.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_version.h>
#include <rte_eth_vhost.h>
#include <rte_vhost.h>

/* rte_errno is a per-lcore TLS variable bindgen cannot express. */
int vs_rte_errno(void);

/* Routes DPDK's log to cb (level, logtype, text, length); see shim.c. */
typedef void (*vs_log_fn)(int level, int logtype, const char *msg, size_t len);
int vs_route_log(vs_log_fn cb);
