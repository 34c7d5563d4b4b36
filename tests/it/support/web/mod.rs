//! Helpers for testing `baton ui`: the server as a child process, a small HTTP client
//! (plain HTTP/1.1 on loopback, one request per connection) and, in `cdp`, headless
//! Chromium driven over its DevTools protocol.

pub mod cdp;

use super::{BATON, OWNER_IDLE};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest any single step of these tests may wait.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A running `baton ui`.
pub struct UiServer {
    child: Option<Child>,
    pub port: u16,
    pub token: String,
    stdout: Option<BufReader<ChildStdout>>,
}

impl UiServer {
    /// Start `baton ui` on `home` (with `env` added, e.g. the database URL) and read the
    /// address it prints.
    pub fn start(home: &Path, env: Vec<(&'static str, String)>) -> UiServer {
        let mut child = Command::new(BATON)
            .args(["ui", "--port", "0"])
            .env("BATON_HOME", home)
            .env("BATON_LOG", "warn")
            .env("BATON_OWNER_IDLE", OWNER_IDLE)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start baton ui");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut line = String::new();
            let _ = stdout.read_line(&mut line);
            let _ = tx.send(line);
            stdout
        });
        let line = rx.recv_timeout(PATIENCE).expect("baton ui printed its address in time");
        let stdout = reader.join().ok();
        let url = line.trim().to_string();
        let rest = url.strip_prefix("http://127.0.0.1:").unwrap_or_else(|| panic!("unexpected address line: {url:?}"));
        let (port, token) = rest.split_once("/?token=").unwrap_or_else(|| panic!("no token in {url:?}"));
        UiServer { port: port.parse().unwrap(), token: token.to_string(), child: Some(child), stdout }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/?token={}", self.port, self.token)
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stop it with SIGTERM (as Ctrl-C would) and return what else it printed on stdout.
    pub fn stop(mut self) -> String {
        self.terminate()
    }

    fn terminate(&mut self) -> String {
        if let Some(child) = self.child.take() {
            stop_child(child, "-TERM");
        }
        let mut rest = String::new();
        if let Some(mut out) = self.stdout.take() {
            let _ = out.read_to_string(&mut rest);
        }
        rest
    }
}

/// Send `signal` to a child we started and wait for it to exit (killing it if it will
/// not within [`PATIENCE`]).
pub fn stop_child(mut child: Child, signal: &str) {
    let pid = child.id();
    let _ = Command::new("kill").args([signal, &pid.to_string()]).status();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    if rx.recv_timeout(PATIENCE).is_err() {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    let _ = waiter.join();
}

impl Drop for UiServer {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Send one request to 127.0.0.1:`port` (`Host` is added unless given) and read the answer.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to baton ui");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!("Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    parse_answer(&raw)
}

fn parse_answer(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_string(), v.trim().to_string())).collect();
    let chunked = headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_string() };
    Answer { status, headers, body }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A browser session bought with the token: its cookie and the CSRF token of its forms.
pub struct Login {
    pub cookie: String,
    pub csrf: String,
}

impl Login {
    pub fn new(ui: &UiServer) -> Login {
        let answer = http(ui.port, "GET", &format!("/?token={}", ui.token), &[], None);
        assert_eq!(answer.status, 303, "the token is exchanged for a cookie: {answer:?}");
        let set_cookie = answer.header("set-cookie").expect("a session cookie").to_string();
        assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"), "{set_cookie}");
        let cookie = set_cookie.split(';').next().unwrap().to_string();
        let page = http(ui.port, "GET", "/", &[("Cookie", &cookie)], None);
        assert_eq!(page.status, 200, "{page:?}");
        let csrf = between(&page.body, "name=\"csrf\" value=\"", "\"").expect("a CSRF token in the page's forms").to_string();
        Login { cookie, csrf }
    }

    pub fn get(&self, ui: &UiServer, path: &str) -> Answer {
        http(ui.port, "GET", path, &[("Cookie", &self.cookie)], None)
    }

    /// POST a form from the server's own origin, with this session's CSRF token.
    pub fn post(&self, ui: &UiServer, path: &str, fields: &[(&str, &str)]) -> Answer {
        let body = form(&[&[("csrf", self.csrf.as_str())], fields].concat());
        http(ui.port, "POST", path, &[("Cookie", &self.cookie), ("Origin", &ui.origin())], Some(&body))
    }
}

/// URL-encode form fields.
pub fn form(fields: &[(&str, &str)]) -> String {
    fields.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// The text between `start` and the next `end`.
pub fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let to = text[from..].find(end)? + from;
    Some(&text[from..to])
}

/// The counters a server-sent event stream carries, read as they arrive.
pub struct EventStream {
    reader: BufReader<TcpStream>,
}

impl EventStream {
    pub fn open(port: u16, cookie: &str) -> EventStream {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let request = format!("GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        EventStream { reader: BufReader::new(stream) }
    }

    /// The next `change` event's counter, if one comes before `deadline`.
    pub fn next_change(&mut self, deadline: Instant) -> Option<u64> {
        let mut line = String::new();
        while Instant::now() < deadline {
            match self.reader.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) if line.ends_with('\n') => {
                    if let Some(counter) = line.trim().strip_prefix("data:") {
                        return counter.trim().parse().ok();
                    }
                    line.clear();
                }
                // A part of a line, or nothing yet: keep what was read and wait on.
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return None,
            }
        }
        None
    }
}
