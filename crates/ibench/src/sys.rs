//! Thread facts ibench uses: icx-driver's (the runtime's core threads use
//! the same), re-exported here.

pub use icx_driver::affinity::{pin_current_thread, thread_cpu_time};

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
