//! Bad arguments and bad configurations: exit code 2 and a message that
//! names the file and the key; never a panic. And `--check` on a good one.

use std::path::PathBuf;
use std::process::Command;

const GOOD: &str = r#"
cluster_name = "lab"
cluster_id = 7
heartbeat_interval = "100ms"
misscount = "3s"
voting_files = []

[[node]]
id = 1
name = "rac1"
interconnect = ["127.0.0.1:47471"]
client = "127.0.0.1:46381"

[[node]]
id = 2
name = "rac2"
interconnect = ["127.0.0.1:47472"]
client = "127.0.0.1:46382"
"#;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("icx-node-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn write(&self, text: &str) -> PathBuf {
        let p = self.0.join("cluster.toml");
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fusion-node"))
        .args(args)
        .output()
        .unwrap();
    let err =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!err.contains("panicked"), "{err}");
    (out.status.code().unwrap_or(-1), err)
}

#[test]
fn check_accepts_a_good_config() {
    let d = Dir::new("good");
    let p = d.write(GOOD);
    let (code, out) = run(&["--config", p.to_str().unwrap(), "--node", "2", "--check"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("cluster lab (id 7), 2 nodes, 0 voting files: ok"),
        "{out}"
    );
}

#[test]
fn bad_arguments_exit_2() {
    let d = Dir::new("args");
    let p = d.write(GOOD);
    let p = p.to_str().unwrap();
    for (args, needle) in [
        (vec!["--node", "1"], "--config"),
        (vec!["--config", p], "--node"),
        (vec!["--config", p, "--node", "zero"], "invalid value"),
        (vec!["--config", p, "--node", "0"], "invalid value"),
        (
            vec!["--config", p, "--node", "3"],
            "--node 3: not configured",
        ),
        (vec!["--config", p, "--node", "1", "--bogus"], "--bogus"),
        (
            vec!["--config", "/nonexistent/x.toml", "--node", "1"],
            "/nonexistent/x.toml: cannot read",
        ),
    ] {
        let (code, out) = run(&args);
        assert_eq!(code, 2, "{args:?}: {out}");
        assert!(out.contains(needle), "{args:?}: {out}");
    }
}

#[test]
fn bad_configs_exit_2_naming_the_key() {
    let d = Dir::new("cfg");
    for (text, needle) in [
        (
            GOOD.replace("id = 2", "id = 1"),
            "node[1].id: duplicate node id 1",
        ),
        (
            GOOD.replace("id = 2", "id = 256"),
            "node[1].id: 256 is outside 1..=255",
        ),
        (
            GOOD.replace("misscount = \"3s\"", "misscount = \"soon\""),
            "misscount: \"soon\" is not a duration",
        ),
        (
            GOOD.replace("voting_files = []", "voting_files = [\"a\", \"b\"]"),
            "voting_files: 2 files",
        ),
        (
            GOOD.replace("cluster_id = 7", "cluster_id = \"seven\""),
            "cluster_id",
        ),
        (
            GOOD.replace("cluster_id = 7", "cluster_id = 7\nheartbeat = \"1s\""),
            "heartbeat",
        ),
        (
            GOOD.replace("127.0.0.1:47472", "localhost"),
            "node[1].interconnect[0]",
        ),
        ("\u{0}\u{1}garbage[[[".to_string(), "cluster.toml"),
        (String::new(), "cluster.toml"),
    ] {
        let p = d.write(&text);
        let (code, out) = run(&["--config", p.to_str().unwrap(), "--node", "1"]);
        assert_eq!(code, 2, "{needle}: {out}");
        assert!(out.contains("cluster.toml"), "names the file: {out}");
        assert!(out.contains(needle), "{needle}: {out}");
    }
}

#[test]
fn an_address_in_use_is_a_clear_start_error() {
    let d = Dir::new("inuse");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let p = d.write(&GOOD.replace("127.0.0.1:46381", &format!("127.0.0.1:{port}")));
    let (code, out) = run(&["--config", p.to_str().unwrap(), "--node", "1"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("client address 127.0.0.1:{port}")),
        "{out}"
    );
}

/// Redis's protected mode at start: with no password, a client address
/// that is not loopback (any node's) is refused with exit 2, saying what to
/// set, before anything is bound. `0.0.0.0` only with `--check`; the start
/// uses a 10.x address that is not this host's, so a broken check would
/// fail the bind (exit 1) rather than serve.
#[test]
fn protected_mode_refuses_other_hosts_without_a_password() {
    let d = Dir::new("protected");
    for (addr, args) in [
        ("0.0.0.0:46382", &["--node", "1", "--check"][..]),
        ("10.255.0.1:46381", &["--node", "1"][..]),
    ] {
        let from = if addr.ends_with("46382") {
            "127.0.0.1:46382"
        } else {
            "127.0.0.1:46381"
        };
        let text = GOOD.replace(from, addr);
        let p = d.write(&text);
        let mut argv = vec!["--config", p.to_str().unwrap()];
        argv.extend_from_slice(args);
        let (code, out) = run(&argv);
        assert_eq!(code, 2, "{addr}: {out}");
        assert!(
            out.contains(&format!(
                "client: {addr} is not a loopback address, and protected mode is on"
            )),
            "{out}"
        );
        assert!(out.contains("set requirepass"), "{out}");
        assert!(out.contains("protected_mode = false"), "{out}");
        // With a password it is a good config.
        let p = d.write(&text.replace("voting_files", "requirepass = \"pw\"\nvoting_files"));
        let (code, out) = run(&["--config", p.to_str().unwrap(), "--node", "1", "--check"]);
        assert_eq!(code, 0, "{addr}: {out}");
    }
    // A password file others can read is refused too.
    let pw = d.0.join("pw");
    std::fs::write(&pw, "hunter2\n").unwrap();
    let readable = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    std::fs::set_permissions(&pw, readable).unwrap();
    let p = d.write(&GOOD.replace("voting_files", "requirepass_file = \"pw\"\nvoting_files"));
    let (code, out) = run(&["--config", p.to_str().unwrap(), "--node", "1", "--check"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("requirepass_file: "), "{out}");
    assert!(out.contains("must be 0600 or stricter"), "{out}");
}

#[test]
fn bad_cluster_key_settings_exit_2_naming_the_key() {
    use std::os::unix::fs::PermissionsExt;
    let d = Dir::new("keys");
    let key = |name: &str, body: &str, mode: u32| {
        let p = d.0.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p.display().to_string()
    };
    let hex = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let good = key("good.key", hex, 0o600);
    let open = key("open.key", hex, 0o644);
    let short = key("short.key", "abc", 0o600);
    let with =
        |extra: &str| GOOD.replace("voting_files = []", &format!("voting_files = []\n{extra}"));
    for (text, needle) in [
        (
            with(&format!("cluster_key_file = \"{open}\"")),
            "cluster_key_file: cluster key file",
        ),
        (with(&format!("cluster_key_file = \"{open}\"")), "chmod 600"),
        (with(&format!("cluster_key_file = \"{short}\"")), "32 bytes"),
        (
            with(&format!("cluster_key_file = \"{}\"", d.0.join("none").display())),
            "cluster_key_file",
        ),
        (with("encrypt = true"), "encrypt: needs cluster_key_file"),
        (
            with(&format!("cluster_key_file = \"{good}\"\ncluster_cipher = \"rot13\"")),
            "cluster_cipher",
        ),
        (
            with(&format!(
                "cluster_key_file = \"{good}\"\ncluster_next_key_file = \"{good}\"\ncluster_next_key_id = 2"
            )),
            "cluster_next_key_file: cluster key file",
        ),
        (
            with(&format!("cluster_key_file = \"{good}\"\ncluster_key_id = 300")),
            "cluster_key_id",
        ),
    ] {
        let p = d.write(&text);
        let (code, out) = run(&["--config", p.to_str().unwrap(), "--node", "1", "--check"]);
        assert_eq!(code, 2, "{needle}: {out}");
        assert!(out.contains(needle), "{needle}: {out}");
        assert!(!out.contains(hex), "a key in a message: {out}");
    }
    let p = d.write(&with(&format!(
        "cluster_key_file = \"{good}\"\nencrypt = true"
    )));
    let (code, out) = run(&["--config", p.to_str().unwrap(), "--node", "1", "--check"]);
    assert_eq!(code, 0, "{out}");
}
