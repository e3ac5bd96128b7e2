//! The only unsafe code in ibench: per-thread CPU time. CPU pinning is
//! icx-driver's.

use std::time::Duration;

/// Pins the calling thread to `cpu` (icx-driver's, which the runtime's core
/// threads use too).
pub use icx_driver::affinity::pin_current_thread;

/// User + system CPU time consumed by the calling thread.
pub fn thread_cpu_time() -> Duration {
    // SAFETY: rusage is plain old data; all-zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD asks about the calling thread; `ru` is a live,
    // writable rusage for the call to fill.
    let r = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    if r != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_advances_when_spinning() {
        let a = thread_cpu_time();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(thread_cpu_time() > a);
    }

    #[test]
    fn pinning_to_the_current_cpu_works() {
        // SAFETY: sched_getcpu takes no arguments and only reads state.
        let cpu = unsafe { libc::sched_getcpu() };
        assert!(cpu >= 0);
        pin_current_thread(cpu as usize).unwrap();
        assert!(pin_current_thread(1 << 20).is_err());
    }
}
