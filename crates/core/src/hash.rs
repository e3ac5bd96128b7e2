//! A fixed, cheap hash for maps keyed by ids the process chose itself
//! (node ids, message ids): no one outside can pick keys to collide, so a
//! keyed (random-state) hash buys nothing, and a fixed one keeps seeded
//! simulations hashing the same on every run.

use std::hash::{BuildHasherDefault, Hasher};

/// FxHash's multiply-rotate over the words written.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A `HashMap` over [`IdHasher`].
pub type IdMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<IdHasher>>;
