//! `BATON_DATABASE_URL`: parsing, the defaults baton adds, TLS, and redaction.
//!
//! The URL is a secret (it may carry a password), so it is never shown as given: messages
//! name the server by [`DatabaseUrl::place`] (`host:port/db`), which is rebuilt from the
//! parsed parts and has no password in it, and every driver message passes through
//! [`DatabaseUrl::redact`] before it reaches an error or a log line.

use crate::error::{BatonError, BatonResult, ErrorCode};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The environment variable that selects PostgreSQL.
pub const ENV: &str = "BATON_DATABASE_URL";

/// Session settings baton needs on every connection: acknowledged means flushed
/// (`synchronous_commit`), and a session stalled inside a transaction (a stopped client)
/// releases its row locks within seconds instead of blocking every other client.
const SESSION_OPTIONS: &str = "-c synchronous_commit=on -c idle_in_transaction_session_timeout=10s -c statement_timeout=30s";

/// A parsed database URL.
#[derive(Clone)]
pub struct DatabaseUrl {
    pub config: tokio_postgres::Config,
    /// `host:port/dbname`, for messages: never the password.
    pub place: String,
    /// The password as given (raw and percent-decoded), to scrub from any message.
    secrets: Vec<String>,
    /// A CA certificate file (`sslrootcert=`) to trust beside the system's roots.
    root_cert: Option<PathBuf>,
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", self.place)
    }
}

/// Whether `text` names a PostgreSQL database (rather than a sled directory).
pub fn is_postgres_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

impl DatabaseUrl {
    /// Parse `postgres://user[:password]@host[:port]/dbname?param=value...`. Besides the
    /// driver's parameters (`sslmode`, `host=/socket/dir`, `options`, `connect_timeout`,
    /// `application_name`, ...) it takes `sslrootcert=/path/ca.pem`, and
    /// `sslmode=verify-full`/`verify-ca` (baton always verifies the server certificate
    /// when it uses TLS, so these mean `require`).
    pub fn parse(text: &str) -> BatonResult<DatabaseUrl> {
        let text = text.trim();
        let mut secrets = Vec::new();
        if let Some(password) = raw_password(text) {
            secrets.push(password.to_string());
            if let Ok(decoded) = percent_decode(password) {
                secrets.push(decoded);
            }
        }
        if !is_postgres_url(text) {
            return Err(bad_url("it does not start with postgres:// or postgresql://"));
        }
        let (base, query) = text.split_once('?').unwrap_or((text, ""));
        let mut kept = Vec::new();
        let mut root_cert = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value_text =
                percent_decode(value).map_err(|_| bad_url(&format!("the value of `{key}` is not valid percent-encoded UTF-8")))?;
            match key {
                "sslrootcert" => root_cert = Some(PathBuf::from(value_text)),
                "sslmode" if value_text == "verify-full" || value_text == "verify-ca" => kept.push("sslmode=require".to_string()),
                "password" => {
                    secrets.push(value.to_string());
                    secrets.push(value_text);
                    kept.push(pair.to_string());
                }
                _ => kept.push(pair.to_string()),
            }
        }
        let rebuilt = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        let mut config: tokio_postgres::Config = rebuilt.parse().map_err(|e: tokio_postgres::Error| {
            // The driver's parse errors name an option or a value kind, never the URL.
            bad_url(&scrub(&e.to_string(), &secrets))
        })?;
        if config.get_dbname().is_none() {
            return Err(bad_url("it names no database (…/DBNAME at the end of the path)"));
        }
        if config.get_hosts().is_empty() {
            return Err(bad_url("it names no host (a name, an address, or host=/socket/directory)"));
        }
        if config.get_application_name().is_none() {
            config.application_name("baton");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.keepalives_idle(Duration::from_secs(30));
        let options = match config.get_options() {
            Some(given) if !given.trim().is_empty() => format!("{given} {SESSION_OPTIONS}"),
            _ => SESSION_OPTIONS.to_string(),
        };
        config.options(&options);
        secrets.retain(|s| s.len() >= 3);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        let place = place_of(&config);
        Ok(DatabaseUrl { config, place, secrets, root_cert })
    }

    /// The URL from `BATON_DATABASE_URL`, if set (and not empty).
    pub fn from_env() -> Option<BatonResult<DatabaseUrl>> {
        let text = std::env::var(ENV).ok().filter(|v| !v.trim().is_empty())?;
        Some(DatabaseUrl::parse(&text))
    }

    /// `text` with every form of the password replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        scrub(text, &self.secrets)
    }

    /// The TLS connector: rustls with the system's root certificates and `sslrootcert`.
    /// Roots are loaded only when a TCP host may use TLS.
    pub fn tls(&self) -> BatonResult<MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let may_use_tls =
            self.config.get_ssl_mode() != SslMode::Disable && self.config.get_hosts().iter().any(|h| matches!(h, Host::Tcp(_)));
        if may_use_tls {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if let Some(path) = &self.root_cert {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| tls_setup(&format!("cannot read the CA certificates in {} (sslrootcert): {e}", path.display())))?;
                if certs.is_empty() {
                    return Err(tls_setup(&format!("{} (sslrootcert) holds no PEM certificate", path.display())));
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| tls_setup(&format!("a certificate in {} is not usable: {e}", path.display())))?;
                }
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_setup(&e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }
}

/// `host:port/dbname` (hosts joined by commas; a socket directory as its path).
fn place_of(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
            }
        })
        .collect();
    format!("{}/{}", hosts.join(","), config.get_dbname().unwrap_or_default())
}

/// The password part of a URL's user info, as written.
fn raw_password(text: &str) -> Option<&str> {
    let rest = text.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    if userinfo.contains('/') {
        return None;
    }
    userinfo.split_once(':').map(|(_, password)| password).filter(|p| !p.is_empty())
}

fn percent_decode(text: &str) -> Result<String, ()> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or(())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

fn scrub(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_string();
    for secret in secrets {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), "***");
        }
    }
    text
}

fn bad_url(why: &str) -> BatonError {
    BatonError::invalid(
        ENV,
        format!("{ENV} is not a usable PostgreSQL URL: {why}"),
        "Use postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE (or ?host=/socket/dir for a Unix socket), with ?sslmode=require&sslrootcert=/path/ca.pem for TLS to a private CA.",
    )
}

fn tls_setup(why: &str) -> BatonError {
    BatonError::new(
        ErrorCode::Unavailable,
        format!("cannot set up TLS for PostgreSQL: {why}"),
        "Point sslrootcert= at a readable PEM file holding the CA that signed the server's certificate.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows_and_baton_settings_are_added() {
        let url =
            DatabaseUrl::parse("postgres://team:s3cr%40t!@db.example.com:6543/baton?sslmode=verify-full&sslrootcert=/etc/ca.pem").unwrap();
        assert_eq!(url.place, "db.example.com:6543/baton");
        assert_eq!(url.config.get_password(), Some(&b"s3cr@t!"[..]));
        assert_eq!(url.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(url.root_cert.as_deref(), Some(std::path::Path::new("/etc/ca.pem")));
        assert!(url.config.get_options().unwrap().contains("synchronous_commit=on"));
        assert_eq!(url.config.get_application_name(), Some("baton"));
        assert_eq!(url.redact("auth failed for s3cr@t! and s3cr%40t!"), "auth failed for *** and ***");
        assert!(!format!("{url:?}").contains("s3cr"));

        let socket = DatabaseUrl::parse("postgresql://me@/runs?host=/tmp/pg&port=5433&options=-c%20search_path%3Dbaton").unwrap();
        assert_eq!(socket.place, "/tmp/pg/.s.PGSQL.5433/runs");
        assert!(socket.config.get_options().unwrap().starts_with("-c search_path=baton -c synchronous_commit=on"));

        let err = DatabaseUrl::parse("postgres://u:hunter22@h/db?sslmode=sometimes").unwrap_err();
        assert_eq!(err.field.as_deref(), Some(ENV));
        assert!(!err.message.contains("hunter22"), "{err}");
        let err = DatabaseUrl::parse("mysql://u:hunter22@h/db").unwrap_err();
        assert!(!err.to_string().contains("hunter22"), "{err}");
        assert!(DatabaseUrl::parse("postgres://u@h").unwrap_err().message.contains("no database"));
    }
}
