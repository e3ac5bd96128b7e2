# Sourced by the hw/ scripts: `need_root NAME [WHY]` returns when running as
# root; otherwise it says so and exits 77 (skipped), or 1 (failed) when
# ICX_REQUIRE_LAB=1, the setting under which a missing lab is an error
# (tests/run.sh sets it as root; crates/testkit/src/lab.rs does the same for
# the Rust lab tests).
need_root() {
  [ "$(id -u)" = 0 ] && return 0
  echo "$1: needs root${2:+ ($2)}" >&2
  if [ "${ICX_REQUIRE_LAB:-}" = 1 ]; then exit 1; fi
  exit 77
}
