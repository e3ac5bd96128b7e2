//! Tests that need the lab: root, network namespaces, veth, af_packet, and
//! the `ip`/`nft`/`ethtool` tools (`hw/netns-lab.sh`).
//!
//! Where the lab is missing such a test skips and prints why, so
//! `cargo test` passes on a laptop. Where the lab must be there (as root,
//! `tests/run.sh` sets [`REQUIRE_ENV`]`=1`), a missing prerequisite fails
//! the test instead of letting it pass without running.
//!
//! A prerequisite that is not the lab (a kernel that refuses io_uring, a
//! sysctl already raised) is reported with [`run_or_skip`], which only
//! prints.

use std::fmt::Display;
use std::process::{Command, Stdio};

/// With this variable set to `1`, a lab test whose prerequisites are missing
/// fails instead of skipping.
pub const REQUIRE_ENV: &str = "ICX_REQUIRE_LAB";

/// Whether [`REQUIRE_ENV`] is `1`.
pub fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// For a lab test: `why_not` is the reason it cannot run here, or `None`.
/// Returns true when it can. Otherwise prints `SKIPPED: why` and returns
/// false (the caller returns, passing), or panics with the reason when
/// [`REQUIRE_ENV`]`=1`.
pub fn require_or_skip(why_not: Option<impl Display>) -> bool {
    let Some(why) = why_not else {
        return true;
    };
    if required() {
        panic!("{REQUIRE_ENV}=1 but the lab is not available: {why}");
    }
    eprintln!("SKIPPED: {why} (set {REQUIRE_ENV}=1 to make this a failure)");
    false
}

/// For a prerequisite that is not the lab: returns true when `why_not` is
/// `None`, else prints `SKIPPED: why` and returns false, whatever
/// [`REQUIRE_ENV`] says.
pub fn run_or_skip(why_not: Option<impl Display>) -> bool {
    match why_not {
        None => true,
        Some(why) => {
            eprintln!("SKIPPED: {why}");
            false
        }
    }
}

/// Whether the process's effective user is root (from `/proc/self/status`,
/// so no `unsafe` `geteuid` call; false where it cannot be read).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let uids = s.lines().find_map(|l| l.strip_prefix("Uid:"))?;
            // real, effective, saved, filesystem
            uids.split_whitespace().nth(1).map(|e| e == "0")
        })
        .unwrap_or(false)
}

/// Whether `cmd` is on the PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why the namespace lab cannot run here, or `None`: not root, or one of
/// `tools` (command, Debian package) missing.
pub fn unavailable(needs: &str, tools: &[(&str, &str)]) -> Option<String> {
    if !is_root() {
        return Some(format!("not root: {needs} need root"));
    }
    tools
        .iter()
        .find(|(cmd, _)| !have(cmd))
        .map(|(cmd, pkg)| format!("`{cmd}` missing (apt-get install {pkg})"))
}

/// [`require_or_skip`] of [`unavailable`]: true when the lab test can run.
pub fn ready(needs: &str, tools: &[(&str, &str)]) -> bool {
    require_or_skip(unavailable(needs, tools))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_matches_the_kernel() {
        // The status file and the directory's owner agree on who we are.
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata("/proc/self").unwrap().uid();
        assert_eq!(is_root(), owner == 0);
    }

    #[test]
    fn nothing_missing_runs() {
        assert!(require_or_skip(None::<&str>));
        assert!(run_or_skip(None::<&str>));
        assert!(!run_or_skip(Some("kernel says no")));
        assert!(have("sh"));
        assert!(!have("icx-no-such-command"));
    }

    #[test]
    fn missing_lab_skips_or_fails_as_required() {
        // Run in a child process, so the environment of this one is left
        // alone: the same test binary, this test only, the variable set.
        if std::env::var("ICX_LAB_CHILD").is_ok() {
            require_or_skip(Some("no lab in this child"));
            return;
        }
        let me = std::env::current_exe().unwrap();
        let run = |require: &str| {
            Command::new(&me)
                .args([
                    "--exact",
                    "lab::tests::missing_lab_skips_or_fails_as_required",
                ])
                .args(["--nocapture", "--test-threads", "1"])
                .env("ICX_LAB_CHILD", "1")
                .env(REQUIRE_ENV, require)
                .output()
                .unwrap()
        };
        let text = |o: &std::process::Output| {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        };
        let skipped = run("0");
        assert!(skipped.status.success(), "{}", text(&skipped));
        assert!(text(&skipped).contains("SKIPPED: no lab in this child"));
        let failed = run("1");
        assert!(!failed.status.success(), "{}", text(&failed));
        assert!(text(&failed).contains("the lab is not available: no lab in this child"));
    }
}
