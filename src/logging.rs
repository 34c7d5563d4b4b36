//! Logging setup shared by every baton command. Logs go to stderr (stdout carries only
//! protocol messages), or to `$BATON_LOG_FILE`; the filter comes from `$BATON_LOG`.

/// Install the global subscriber with `default` as the filter unless `$BATON_LOG` is set.
pub fn init(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BATON_LOG").unwrap_or_else(|_| default.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
    let file = std::env::var_os("BATON_LOG_FILE").and_then(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).ok());
    let _ = match file {
        Some(file) => builder.with_writer(std::sync::Mutex::new(file)).try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}
