//! What the cores and the application share, and the wake-up protocol
//! between them.

use super::stats::{CoreSnapshot, Counters};
use crossbeam_utils::CachePadded;
use icx_core::Wake;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;

/// What cores and the application share about one core.
pub(super) struct CoreShared {
    /// The core is about to block (or is blocked) in `backend.wait`.
    pub(super) parked: AtomicBool,
    pub(super) waker: OnceLock<Option<Arc<dyn Wake>>>,
    /// The core has delivered its last event and is exiting.
    pub(super) done: AtomicBool,
    pub(super) counters: Counters,
    pub(super) last: Mutex<Option<CoreSnapshot>>,
}

impl CoreShared {
    /// Wakes the core if it is (about to be) asleep. Call after making
    /// work visible (a ring push): the fence pairs with the core's fence
    /// between setting `parked` and re-checking its rings, so either the
    /// core sees the work or this sees `parked`.
    pub(super) fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::SeqCst) {
            if let Some(Some(w)) = self.waker.get() {
                w.wake();
            }
        }
    }
}

pub(super) struct Shared {
    pub(super) cores: Box<[CachePadded<CoreShared>]>,
    pub(super) stop: AtomicBool,
    pub(super) app_parked: AtomicBool,
    pub(super) app_thread: Mutex<Option<Thread>>,
    /// Set by an [`AppWaker`]: [`Runtime::wait_event`](super::Runtime::wait_event)
    /// returns at once, with no event, when it finds it set.
    pub(super) app_kicked: AtomicBool,
}

impl Shared {
    /// Unparks the application if it waits for events; pairs with the
    /// fence in [`Runtime::wait_event`] as [`CoreShared::wake`] does.
    pub(super) fn wake_app(&self) {
        fence(Ordering::SeqCst);
        if self.app_parked.load(Ordering::Relaxed) && self.app_parked.swap(false, Ordering::SeqCst)
        {
            if let Some(t) = lock(&self.app_thread).as_ref() {
                t.unpark();
            }
        }
    }
}

/// Wakes the application thread out of
/// [`Runtime::wait_event`](super::Runtime::wait_event) from any thread: for
/// input that does not come from the cores (voting-file completions, admin
/// commands, signals), so the application can wait on one thing.
#[derive(Clone)]
pub struct AppWaker(pub(super) Arc<Shared>);

impl AppWaker {
    /// Makes the current or next `wait_event` return (with no event if
    /// none is waiting). Call after making the input visible.
    pub fn wake(&self) {
        self.0.app_kicked.store(true, Ordering::SeqCst);
        // Unpark whether or not the application is parked: a token left by
        // an early unpark makes its next park return at once, so a kick
        // that races with `wait_event` going to sleep is never lost.
        if let Some(t) = lock(&self.0.app_thread).as_ref() {
            t.unpark();
        }
    }
}

impl std::fmt::Debug for AppWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppWaker")
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
