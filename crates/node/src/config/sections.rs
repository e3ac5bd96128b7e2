//! The cache-fusion and client sections of the config file, with their
//! defaults and checks.

use super::*;

/// The data keys of `raw`, with their defaults, checked against one
/// another (a datafile holds whole blocks, a cache at least a scan).
pub(super) fn data_config(
    raw: &RawConfig,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<DataConfig, ConfigError> {
    use icx_fusion::block::BLOCK_SIZES;
    let d = DataConfig::default();
    let size = |key: &str, v: &Option<RawSize>, default: u64| match v {
        None => Ok(default),
        Some(s) => s.bytes().map_err(|m| err(key, m)),
    };
    let dur = |key: &str, v: &Option<String>, default: Duration| match v {
        None => Ok(default),
        Some(s) => parse_duration(s).map_err(|m| err(key, m)),
    };
    let block_size = size("block_size", &raw.block_size, d.block_size as u64)?;
    if !BLOCK_SIZES.iter().any(|&b| b as u64 == block_size) {
        return Err(err(
            "block_size",
            format!("{block_size} B: use 8K, 16K or 32K"),
        ));
    }
    let bs = block_size;
    let datafile_size = size("datafile_size", &raw.datafile_size, d.datafile_size)?;
    let max_file = bs * u64::from(u32::MAX);
    if !datafile_size.is_multiple_of(bs) || datafile_size < bs * 16 || datafile_size > max_file {
        return Err(err(
            "datafile_size",
            format!(
                "{} is not a whole number of {}-byte blocks from 16 blocks to {}",
                format_size(datafile_size),
                bs,
                format_size(max_file)
            ),
        ));
    }
    let datafile_count = raw.datafile_count.unwrap_or(d.datafile_count);
    if datafile_count == 0 || datafile_count > 999 {
        return Err(err(
            "datafile_count",
            format!("{datafile_count}: use 1 to 999"),
        ));
    }
    let cache_size = size("cache_size", &raw.cache_size, d.cache_size)?;
    let multiblock_read_count = raw.multiblock_read_count.unwrap_or(d.multiblock_read_count);
    let chunk = icx_fusion::grd::CHUNK;
    if multiblock_read_count == 0 || multiblock_read_count > chunk {
        return Err(err(
            "multiblock_read_count",
            format!("{multiblock_read_count}: use 1 to {chunk}"),
        ));
    }
    if cache_size < bs * 64 {
        return Err(err(
            "cache_size",
            format!("{} holds fewer than 64 blocks", format_size(cache_size)),
        ));
    }
    let fairness_threshold = raw.fairness_threshold.unwrap_or(d.fairness_threshold);
    if fairness_threshold == 0 {
        return Err(err("fairness_threshold", "must be 1 or more".into()));
    }
    let gc_request_timeout = dur(
        "gc_request_timeout",
        &raw.gc_request_timeout,
        d.gc_request_timeout,
    )?;
    if gc_request_timeout < Duration::from_millis(10) {
        return Err(err(
            "gc_request_timeout",
            format!("{} is below 10ms", format_duration(gc_request_timeout)),
        ));
    }
    let checkpoint_interval = dur(
        "checkpoint_interval",
        &raw.checkpoint_interval,
        d.checkpoint_interval,
    )?;
    if checkpoint_interval.is_zero() {
        return Err(err("checkpoint_interval", "must be positive".into()));
    }
    let gc_recovery_wait = dur(
        "gc_recovery_wait",
        &raw.gc_recovery_wait,
        d.gc_recovery_wait,
    )?;
    if gc_recovery_wait > Duration::from_secs(3600) {
        return Err(err(
            "gc_recovery_wait",
            format!("{} is over an hour", format_duration(gc_recovery_wait)),
        ));
    }
    let gc_remaster_threshold = raw.gc_remaster_threshold.unwrap_or(d.gc_remaster_threshold);
    let gc_remaster_window = dur(
        "gc_remaster_window",
        &raw.gc_remaster_window,
        d.gc_remaster_window,
    )?;
    if gc_remaster_window.is_zero() && gc_remaster_threshold > 0 {
        return Err(err(
            "gc_remaster_window",
            "must be positive (gc_remaster_threshold = 0 turns remastering off)".into(),
        ));
    }
    Ok(DataConfig {
        block_size: bs as usize,
        datafile_size,
        datafile_count,
        cache_size,
        multiblock_read_count,
        fairness_threshold,
        gc_request_timeout,
        checkpoint_interval,
        gc_recovery_wait,
        gc_remaster_threshold,
        gc_remaster_window,
    })
}

/// The client keys of `raw`, with their defaults (Redis's names and
/// meanings; `dir` is where a relative `requirepass_file` is).
pub(super) fn client_limits(
    raw: &RawConfig,
    dir: &Path,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let max_clients = raw.maxclients.unwrap_or(d.max_clients);
    if max_clients == 0 {
        return Err(err("maxclients", "must be 1 or more".into()));
    }
    let max_request_bytes = match &raw.client_query_buffer_limit {
        None => d.max_request_bytes,
        Some(s) => {
            let key = "client_query_buffer_limit";
            let b = s.bytes().map_err(|m| err(key, m))?;
            if b < MIN_QUERY_BUFFER {
                return Err(err(
                    key,
                    format!(
                        "{} is below {}",
                        format_size(b),
                        format_size(MIN_QUERY_BUFFER)
                    ),
                ));
            }
            usize::try_from(b).map_err(|_| err(key, format!("{} is too large", format_size(b))))?
        }
    };
    let idle_timeout = match &raw.timeout {
        None => d.idle_timeout,
        Some(s) => {
            let t = parse_duration(s).map_err(|m| err("timeout", m))?;
            if !t.is_zero() && t < Duration::from_secs(1) {
                return Err(err(
                    "timeout",
                    format!("{}: use 0 (never) or 1s or more", format_duration(t)),
                ));
            }
            Some(t).filter(|t| !t.is_zero())
        }
    };
    let requirepass = match (&raw.requirepass, &raw.requirepass_file) {
        (Some(_), Some(_)) => {
            return Err(err(
                "requirepass_file",
                "set requirepass or requirepass_file, not both".into(),
            ))
        }
        (Some(p), None) => Some(password(p.as_bytes().to_vec()).map_err(|m| {
            err(
                "requirepass",
                format!("{m}: leave the key out for no password"),
            )
        })?),
        (None, Some(f)) if f.is_empty() => {
            return Err(err("requirepass_file", "empty path".into()))
        }
        (None, Some(f)) => {
            Some(read_password_file(&dir.join(f)).map_err(|m| err("requirepass_file", m))?)
        }
        (None, None) => None,
    };
    Ok(Limits {
        max_clients,
        max_request_bytes,
        max_args: d.max_args,
        idle_timeout,
        requirepass,
        protected_mode: raw.protected_mode.unwrap_or(d.protected_mode),
    })
}

/// The password in `path`: the whole file but one final line ending. The
/// file must be the owner's alone (mode 0600 or stricter), as ssh wants
/// of a private key: a password others can read protects nothing.
fn read_password_file(path: &Path) -> Result<Password, String> {
    use std::io::Read;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let shown = path.display();
    // The mode of the file opened, not of whatever the path names later;
    // non-blocking, so a FIFO named by mistake is refused, not waited on.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("{shown}: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown}: not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{shown} has mode {mode:04o}, open to group or others: a password file must be 0600 or stricter (chmod 600 {shown})"
        ));
    }
    let mut bytes = Vec::new();
    // Past the longest password and its line ending there is no need to
    // read on (nor to hold a huge file in memory).
    f.take(AUTH_MAX_BULK as u64 + 3)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{shown}: {e}"))?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    password(bytes).map_err(|m| format!("{shown}: {m}"))
}

/// A password must be something, and short enough for `AUTH` to carry it
/// before the connection is authenticated ([`AUTH_MAX_BULK`]).
fn password(bytes: Vec<u8>) -> Result<Password, String> {
    if bytes.len() > AUTH_MAX_BULK {
        return Err(format!(
            "longer than {AUTH_MAX_BULK} bytes, more than AUTH takes before authentication"
        ));
    }
    Password::new(bytes).ok_or_else(|| "empty".to_string())
}
