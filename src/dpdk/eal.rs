//! EAL initialisation and teardown.

use std::ffi::CString;
use std::os::raw::c_char;

use super::ffi;

/// EAL came up; dropping it runs `rte_eal_cleanup` (releases hugepages).
pub struct Eal {
    _private: (),
}

/// EAL refused to start.
#[derive(Debug, thiserror::Error)]
#[error("DPDK EAL initialisation failed: {reason} (EAL arguments: {args})")]
pub struct EalError {
    /// rte_errno's message.
    pub reason: String,
    /// The arguments, for the operator.
    pub args: String,
}

impl Eal {
    /// Runs `rte_eal_init` with `args` (args[0] is the program name). EAL can
    /// be initialised once per process.
    pub fn init(args: &[String]) -> Result<Eal, EalError> {
        let owned: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_str()).expect("EAL arguments come from validated config"))
            .collect();
        // EAL may permute argv, so it gets its own array of pointers.
        let mut argv: Vec<*mut c_char> = owned.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        // SAFETY: argv points at NUL-terminated strings that outlive the call;
        // EAL only reorders the pointer array.
        let rc = unsafe { ffi::rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
        if rc < 0 {
            return Err(EalError {
                reason: super::strerror(super::errno()),
                args: args.join(" "),
            });
        }
        Ok(Eal { _private: () })
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: EAL was initialised by `init`; all lcores have returned
        // (the daemon waits for them before dropping Eal).
        unsafe { ffi::rte_eal_cleanup() };
    }
}
