//! EAL initialisation: once per process, as DPDK requires.

use crate::config::EalArgs;
use crate::error::{eal_hint, DpdkError};
use icx_dpdk_sys as sys;
use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::sync::Mutex;

/// The arguments of this process's one `rte_eal_init` and its outcome.
type EalState = Option<(Vec<String>, Result<(), DpdkError>)>;
static EAL: Mutex<EalState> = Mutex::new(None);

/// The message DPDK has for `errno`.
pub(crate) fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string for any errno.
    let p = unsafe { sys::rte_strerror(errno) };
    if p.is_null() {
        return format!("error {errno}");
    }
    // SAFETY: non-null, NUL-terminated, valid until the next call on this thread.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// rte_errno of this thread.
pub(crate) fn errno() -> i32 {
    // SAFETY: reads a thread-local int.
    unsafe { sys::icx_rte_errno() }
}

/// Initialises the EAL with `args` the first time; later calls return the
/// first outcome when the arguments are the same, else an error.
///
/// EAL pins the calling thread to its first lcore; this restores the
/// thread's previous CPU affinity afterwards, so threads the application
/// spawns later are not all crowded onto that core (the per-core runtime
/// pins its own threads).
pub fn init(args: &EalArgs) -> Result<(), DpdkError> {
    let mut g = EAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((first, res)) = g.as_ref() {
        if *first != args.0 {
            return Err(DpdkError::EalArgsDiffer {
                first: first.clone(),
                now: args.0.clone(),
            });
        }
        return res.clone();
    }
    let res = init_once(&args.0);
    *g = Some((args.0.clone(), res.clone()));
    res
}

fn init_once(args: &[String]) -> Result<(), DpdkError> {
    let mut owned = Vec::with_capacity(args.len() + 1);
    owned.push(CString::new("icx").expect("no NUL"));
    for a in args {
        owned.push(
            CString::new(a.as_str()).map_err(|_| {
                DpdkError::Config(format!("EAL argument {a:?} contains a NUL byte"))
            })?,
        );
    }
    // EAL may keep pointers into argv (and permutes it): leak both, once
    // per process.
    let owned: &'static [CString] = Box::leak(owned.into_boxed_slice());
    let argv: &'static mut [*mut c_char] = Box::leak(
        owned
            .iter()
            .map(|c| c.as_ptr() as *mut c_char)
            .chain(std::iter::once(std::ptr::null_mut()))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let uses_hugepages = !args.iter().any(|a| a == "--no-huge" || a == "--in-memory");
    if uses_hugepages && !args.iter().any(|a| a.starts_with("--huge-unlink")) {
        tracing::warn!("icx-dpdk: EAL with hugepages but without --huge-unlink: a crashed process would leave its hugepage files holding memory");
    }
    let saved = affinity::get();
    tracing::info!(args = ?args, "icx-dpdk: initialising the DPDK EAL");
    // SAFETY: argv holds argc valid NUL-terminated strings plus a NULL, all
    // leaked so they outlive the EAL; this runs at most once per process
    // (guarded by EAL's mutex).
    let r = unsafe { sys::rte_eal_init(owned.len() as i32, argv.as_mut_ptr()) };
    if let Some(set) = &saved {
        affinity::set(set);
    }
    if r < 0 {
        let e = errno();
        return Err(DpdkError::Eal {
            errno: e,
            message: strerror(e),
            hint: eal_hint(e, args),
        });
    }
    Ok(())
}

mod affinity {
    pub(super) fn get() -> Option<libc::cpu_set_t> {
        // SAFETY: cpu_set_t is plain data; zero is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: passes the size of the set it points at.
        let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
        (r == 0).then_some(set)
    }

    pub(super) fn set(set: &libc::cpu_set_t) {
        // SAFETY: passes the size of the set it points at.
        let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(set), set) };
        if r != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "icx-dpdk: could not restore CPU affinity after EAL init"
            );
        }
    }
}
