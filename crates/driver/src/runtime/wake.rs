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

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
