//! Sending one notification: a command with the event's JSON as its last argument, a JSON
//! POST over http or https (a minimal HTTP/1.1 client: one request per connection), or a
//! desktop notification through `notify-send`.

use crate::error::{BatonError, BatonResult};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest a delivery may take before it counts as failed (and is retried).
const TIMEOUT: Duration = Duration::from_secs(10);

/// A webhook's address.
pub struct Url {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

impl Url {
    pub fn parse(text: &str) -> BatonResult<Url> {
        let bad = |why: &str| {
            BatonError::invalid("webhooks", format!("webhook `{}`: {why}", Url::shown(text)), "Give an http:// or https:// URL.")
        };
        let (tls, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad("not an http:// or https:// URL"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(bad("user information in the URL is not supported"));
        }
        let default_port = if tls { 443 } else { 80 };
        // `[::1]:8080`, `[::1]`, `host:8080`, `host`.
        let (host, port) = match authority.rsplit_once(':') {
            _ if authority.starts_with('[') && authority.ends_with(']') => (authority, default_port),
            Some((host, port)) => (host, port.parse().map_err(|_| bad("the port is not a number"))?),
            None => (authority, default_port),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Url { tls, host: host.trim_matches(['[', ']']).to_string(), port, path: path.to_string() })
    }

    /// The URL without its path: webhook paths (Slack's) are secrets.
    pub fn shown(text: &str) -> String {
        let scheme_end = text.find("://").map_or(0, |i| i + 3);
        match text[scheme_end..].find('/') {
            Some(i) => format!("{}/…", &text[..scheme_end + i]),
            None => text.to_string(),
        }
    }
}

/// POST `event` as JSON to `url`; a 2xx answer is success.
pub async fn post_json(url: &str, event: &Value) -> Result<(), String> {
    let parsed = Url::parse(url).map_err(|e| e.message)?;
    let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
    match tokio::time::timeout(TIMEOUT, post(&parsed, &body)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {TIMEOUT:?}")),
    }
}

async fn post(url: &Url, body: &[u8]) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect((url.host.as_str(), url.port)).await.map_err(|e| format!("cannot connect: {e}"))?;
    if !url.tls {
        return exchange(stream, url, body).await;
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(url.host.clone()).map_err(|e| format!("bad host name: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, stream).await.map_err(|e| format!("TLS: {e}"))?;
    exchange(stream, url, body).await
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, url: &Url, body: &[u8]) -> Result<(), String> {
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nUser-Agent: baton/{}\r\nConnection: close\r\n\r\n",
        url.path,
        url.host,
        body.len(),
        env!("CARGO_PKG_VERSION")
    );
    stream.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
    stream.write_all(body).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    // The status line is all that matters.
    while !answer.windows(2).any(|w| w == b"\r\n") && answer.len() < 8192 {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    let status = text.lines().next().unwrap_or("").to_string();
    match status.split_whitespace().nth(1).and_then(|code| code.parse::<u16>().ok()) {
        Some(code) if (200..300).contains(&code) => Ok(()),
        Some(_) => Err(format!("answered `{status}`")),
        None => Err("no HTTP answer".into()),
    }
}

/// Run `argv` with the event's JSON added as the last argument; exit status 0 is success.
pub async fn run_command(argv: &[String], event: &Value) -> Result<(), String> {
    let json = serde_json::to_string(event).map_err(|e| e.to_string())?;
    run_with(argv, json).await
}

async fn run_with(argv: &[String], last: String) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else { return Err("empty command".into()) };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .arg(last)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    match tokio::time::timeout(TIMEOUT, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("{program} exited with {status}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("{program} did not finish within {TIMEOUT:?}")),
    }
}

/// A desktop notification with `notify-send`, where there is a desktop.
pub async fn desktop(event: &Value) -> Result<(), String> {
    let text = event["text"].as_str().unwrap_or("baton").to_string();
    run_with(&["notify-send".into(), "--app-name=baton".into(), "baton".into()], text).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_hide_their_path() {
        let url = Url::parse("https://hooks.slack.com/services/T/B/secret").unwrap();
        assert!(url.tls && url.port == 443 && url.host == "hooks.slack.com" && url.path == "/services/T/B/secret");
        let url = Url::parse("http://127.0.0.1:8080").unwrap();
        assert!(!url.tls && url.port == 8080 && url.path == "/");
        assert!(Url::parse("ftp://x").is_err() && Url::parse("http://:80/").is_err());
        let url = Url::parse("http://[::1]:8080/x").unwrap();
        assert!(url.host == "::1" && url.port == 8080);
        assert_eq!(Url::parse("https://[::1]").unwrap().port, 443);
        assert_eq!(Url::shown("https://hooks.slack.com/services/T/B/secret"), "https://hooks.slack.com/…");
    }
}
