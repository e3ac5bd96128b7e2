//! The alert log: every CRS-/ICX- line the membership raises, and cache
//! fusion's reconfiguration and recovery lines (no code, as in Oracle's
//! database alert log), appended to
//! `alert_<node name>.log` in the node's log directory, in Oracle's layout
//! (`2026-12-01 22:04:09.123 [FUSION(4242)]CRS-1612: ...`, UTC), and
//! echoed to stderr through `tracing`.

use icx_membership::Alert;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[derive(Debug)]
pub struct AlertLog {
    path: PathBuf,
    file: Option<File>,
    /// Lines that could not be written (a full disk): counted, reported
    /// once per run of failures, never fatal to the node.
    pub write_errors: u64,
    failing: bool,
}

impl AlertLog {
    /// Opens (creating) `dir/alert_<name>.log` for appending.
    pub fn open(dir: &Path, name: &str) -> io::Result<AlertLog> {
        let path = dir.join(format!("alert_{name}.log"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(AlertLog {
            path,
            file: Some(file),
            write_errors: 0,
            failing: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line (timestamped now) and logs it.
    pub fn write(&mut self, alert: &Alert) {
        tracing::warn!(target: "alert", "{}", alert.text);
        self.append(&alert.text);
    }

    /// A line of the database side, as Oracle's alert log has them without
    /// a code ("Reconfiguration started (old inc 4, new inc 6)").
    pub fn write_line(&mut self, text: &str) {
        tracing::info!(target: "alert", "{text}");
        self.append(text);
    }

    fn append(&mut self, text: &str) {
        let line = format!(
            "{} [FUSION({})]{}\n",
            timestamp(SystemTime::now()),
            std::process::id(),
            text
        );
        // One write per line on an O_APPEND file: lines from a restart of
        // the same node never interleave mid-line.
        let r = match self.file.as_mut() {
            Some(f) => f.write_all(line.as_bytes()),
            None => Err(io::Error::other("closed")),
        };
        match r {
            Ok(()) => self.failing = false,
            Err(e) => {
                self.write_errors += 1;
                if !self.failing {
                    tracing::error!("alert log {}: {e}", self.path.display());
                }
                self.failing = true;
            }
        }
    }
}

/// `2026-12-01 22:04:09.123` (UTC): Oracle's alert-log timestamp layout.
pub fn timestamp(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_millis(t).to_string();
    s.trim_end_matches('Z').replacen('T', " ", 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn oracle_timestamp_layout() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_162_649_123);
        assert_eq!(timestamp(t), "2026-12-01 22:04:09.123");
    }

    #[test]
    fn lines_are_appended() {
        let dir = std::env::temp_dir().join(format!("icx-alert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = icx_membership::alert::cannot_communicate();
        for _ in 0..2 {
            let mut log = AlertLog::open(&dir, "rac1").unwrap();
            log.write(&a);
        }
        let text = std::fs::read_to_string(dir.join("alert_rac1.log")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for l in lines {
            assert!(
                l.contains(&format!("[FUSION({})]CRS-1609: ", std::process::id())),
                "{l}"
            );
        }
    }
}
