//! Running a scenario over many seeds, and replaying the one that failed.

use std::panic::{self, AssertUnwindSafe};

/// Set to one seed (or a comma-separated list; decimal or `0x` hex) to run
/// only those instead of a test's defaults.
pub const SEED_ENV: &str = "ICX_SIM_SEED";

/// The seeds to run: those in `ICX_SIM_SEED` if it is set, else `default`.
///
/// # Panics
/// If `ICX_SIM_SEED` is set but not a list of seeds: silently running the
/// defaults instead would hide that the replay did not happen.
pub fn seeds_from_env(default: &[u64]) -> Vec<u64> {
    let var = std::env::var(SEED_ENV).ok();
    match parse_seeds(var.as_deref()) {
        Ok(Some(seeds)) => seeds,
        Ok(None) => default.to_vec(),
        Err(bad) => panic!(
            "{SEED_ENV}={var:?}: {bad:?} is not a seed",
            var = var.unwrap_or_default()
        ),
    }
}

/// Runs `f` once per seed (see [`seeds_from_env`]). When a run panics, says
/// which seed to replay and passes the panic on.
pub fn run_seeds(default_seeds: &[u64], f: impl Fn(u64)) {
    for seed in seeds_from_env(default_seeds) {
        if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(|| f(seed))) {
            eprintln!("simulation failed with seed {seed}; replay with {SEED_ENV}={seed}");
            panic::resume_unwind(panic);
        }
    }
}

/// `Ok(None)`: unset or blank. `Err`: the first item that is not a seed.
fn parse_seeds(var: Option<&str>) -> Result<Option<Vec<u64>>, String> {
    let Some(var) = var.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    var.split(',')
        .map(|s| {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.map_err(|_| s.to_string())
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seed_lists() {
        assert_eq!(parse_seeds(None), Ok(None));
        assert_eq!(parse_seeds(Some("  ")), Ok(None));
        assert_eq!(parse_seeds(Some("42")), Ok(Some(vec![42])));
        assert_eq!(
            parse_seeds(Some("1, 0x10,18446744073709551615")),
            Ok(Some(vec![1, 16, u64::MAX]))
        );
        assert_eq!(parse_seeds(Some("1,x")), Err("x".to_string()));
        assert_eq!(parse_seeds(Some("-1")), Err("-1".to_string()));
    }

    #[test]
    fn run_seeds_runs_every_seed_and_passes_panics_on() {
        // Only meaningful when the environment does not override the seeds.
        if std::env::var(SEED_ENV).is_ok() {
            return;
        }
        let seen = std::cell::RefCell::new(Vec::new());
        run_seeds(&[3, 1, 2], |s| seen.borrow_mut().push(s));
        assert_eq!(*seen.borrow(), vec![3, 1, 2]);

        let seen = std::cell::RefCell::new(Vec::new());
        let r = panic::catch_unwind(AssertUnwindSafe(|| {
            run_seeds(&[5, 6, 7], |s| {
                seen.borrow_mut().push(s);
                assert_ne!(s, 6, "boom");
            })
        }));
        let msg = r.expect_err("the panic must propagate");
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("boom"), "{msg}");
        assert_eq!(*seen.borrow(), vec![5, 6], "stops at the failing seed");
    }
}
