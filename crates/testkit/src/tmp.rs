//! Scratch directories and filesystems for tests of real file I/O, cleaned
//! up on drop, failures included.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `icx-<tag>-<pid>-<n>`: unique per call, so tests of one binary can
    /// run in parallel.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("icx-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A filesystem mounted on a fresh temp dir (root only), unmounted on drop
/// (lazily when busy, as when a detached I/O worker still holds a file).
#[derive(Debug)]
pub struct Mount {
    pub at: PathBuf,
    // Dropped after `Drop::drop` unmounted it.
    _dir: TempDir,
}

impl Mount {
    /// `mount -t fstype [-o options]`; `Err(why)` when it cannot be
    /// mounted here.
    pub fn new(fstype: &str, options: &str) -> Result<Mount, String> {
        if !crate::lab::is_root() {
            return Err(format!("not root: mounting {fstype} needs root"));
        }
        let dir = TempDir::new(fstype);
        let at = dir.path("mnt");
        std::fs::create_dir(&at).map_err(|e| format!("mkdir: {e}"))?;
        let mut cmd = Command::new("mount");
        cmd.args(["-t", fstype]);
        if !options.is_empty() {
            cmd.args(["-o", options]);
        }
        let out = cmd
            .arg(fstype)
            .arg(&at)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t {fstype} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Mount { at, _dir: dir })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.at.join(name)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        }
    }
}
