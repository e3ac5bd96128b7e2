//! An eventfd that interrupts a backend's `ppoll` from another thread: the
//! [`icx_core::Wake`] hook of [`SocketBackend`](crate::SocketBackend).
//!
//! The eventfd's counter latches wake-ups: a `wake` before the `ppoll` makes
//! it return at once, and any number of wakes before one drain coalesce.

use crate::sys;
use icx_core::Wake;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A non-blocking, close-on-exec eventfd used as a latched wake-up flag.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall with constant arguments; no pointers involved.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(sys::last_error());
        }
        // SAFETY: `fd` was just returned by eventfd(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EventFd { fd })
    }

    /// Adds one to the counter, making the fd readable.
    pub(crate) fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of a live u64, as eventfd(2) requires.
        // EAGAIN (counter at its maximum) still leaves the fd readable, so
        // every outcome is acceptable and the result is ignored.
        let _ = unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// Resets the counter; returns whether a wake-up was pending.
    pub fn drain(&self) -> bool {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64. EAGAIN means no
        // wake-up was pending.
        let r = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut v as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        r == std::mem::size_of::<u64>() as isize
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Wake for EventFd {
    fn wake(&self) {
        self.signal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latches_and_coalesces() {
        let e = EventFd::new().unwrap();
        assert!(!e.drain());
        e.wake();
        e.wake();
        assert!(e.drain());
        assert!(!e.drain());
    }
}
