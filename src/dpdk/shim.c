/* Hand-written shims for what bindgen cannot wrap: macros and TLS variables.
 * Static inline functions are wrapped by bindgen's wrap_static_fns instead. */
#include "wrapper.h"

int vs_rte_errno(void)
{
	return rte_errno;
}
