//! Headless Chromium (Debian's `chromium`) driven over the DevTools protocol: one tab,
//! commands over a websocket, page loads and DOM conditions awaited as events.

use super::{PATIENCE, stop_child};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Flags that keep Chromium to this machine and this test.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
    "--remote-debugging-port=0",
];

pub struct Browser {
    child: Option<Child>,
    _profile: tempfile::TempDir,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    session: String,
    /// Events read while waiting for a command's answer.
    events: VecDeque<Value>,
}

/// The Chromium binary, installing Debian's package first when running under CI.
fn chromium() -> Option<String> {
    let found = || {
        ["chromium", "chromium-browser"].into_iter().find(|name| {
            Command::new("sh").args(["-c", &format!("command -v {name}")]).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
        })
    };
    if let Some(name) = found() {
        return Some(name.to_string());
    }
    // Outside CI a missing browser skips the test; CI installs it.
    std::env::var_os("CI")?;
    eprintln!("installing Debian's chromium for the browser test");
    let installed = Command::new("sh")
        .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(installed, "CI could not install chromium");
    found().map(str::to_string)
}

impl Browser {
    /// Start headless Chromium, or `None` (saying SKIPPED) when it is missing outside CI.
    pub fn launch() -> Option<Browser> {
        let Some(binary) = chromium() else {
            eprintln!("SKIPPED: chromium is not installed (apt-get install chromium; CI installs it)");
            return None;
        };
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(binary)
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so nothing it starts outlives the test.
            .process_group(0)
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep reading to the end, so Chromium never blocks on a full pipe.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ws://") {
                    let _ = tx.send(line[at..].trim().to_string());
                }
            }
        });
        let Ok(address) = rx.recv_timeout(PATIENCE) else {
            stop_child(child, "-KILL");
            panic!("chromium did not open its DevTools port");
        };
        let (socket, _) = tungstenite::connect(address.as_str()).expect("connect to DevTools");
        if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
            stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        }
        let mut browser =
            Browser { child: Some(child), _profile: profile, socket, next_id: 0, session: String::new(), events: VecDeque::new() };
        let target = browser.send("Target.createTarget", json!({"url": "about:blank"}), false);
        let attached = browser.send("Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true}), false);
        browser.session = attached["sessionId"].as_str().expect("a session").to_string();
        browser.command("Page.enable", json!({}));
        browser.command("Runtime.enable", json!({}));
        Some(browser)
    }

    /// A command to the tab.
    pub fn command(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, true)
    }

    fn send(&mut self, method: &str, params: Value, to_tab: bool) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if to_tab {
            message["sessionId"] = json!(self.session);
        }
        self.socket.send(Message::text(message.to_string())).expect("send to chromium");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let message = self.read(deadline).unwrap_or_else(|| panic!("no answer to {method} in time"));
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    panic!("{method} failed: {error}");
                }
                return message["result"].clone();
            }
            if message.get("method").is_some() {
                self.events.push_back(message);
            }
        }
    }

    /// The next message, or `None` at the deadline.
    fn read(&mut self, deadline: Instant) -> Option<Value> {
        while Instant::now() < deadline {
            match self.socket.read() {
                Ok(Message::Text(text)) => return serde_json::from_str(text.as_str()).ok(),
                Ok(_) => {}
                // A signal (SIGCHLD from the owner and browser children) interrupts the
                // read; tungstenite keeps what it had read of the frame, so reading again is safe.
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => panic!("DevTools connection failed: {e}"),
            }
        }
        None
    }

    /// Wait for the tab's event `method` (one already received counts).
    pub fn wait_event(&mut self, method: &str) -> Value {
        if let Some(at) = self.events.iter().position(|e| e["method"] == method) {
            return self.events.remove(at).unwrap_or_default();
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let message = self.read(deadline).unwrap_or_else(|| panic!("no {method} in time"));
            if message["method"] == method {
                return message;
            }
        }
    }

    /// Load `url` and wait until it has loaded.
    pub fn navigate(&mut self, url: &str) {
        self.events.retain(|e| e["method"] != "Page.loadEventFired");
        let answer = self.command("Page.navigate", json!({"url": url}));
        assert!(answer.get("errorText").is_none(), "loading {url} failed: {answer}");
        self.wait_event("Page.loadEventFired");
    }

    /// Run `script` (which may cause a navigation) and wait for the next page to load.
    pub fn and_wait_for_load(&mut self, script: &str) {
        self.events.retain(|e| e["method"] != "Page.loadEventFired");
        self.eval(script);
        self.wait_event("Page.loadEventFired");
    }

    /// Evaluate JavaScript in the page (awaiting a promise) and return its value.
    pub fn eval(&mut self, script: &str) -> Value {
        let answer = self.command("Runtime.evaluate", json!({"expression": script, "returnByValue": true, "awaitPromise": true}));
        if let Some(exception) = answer.get("exceptionDetails") {
            panic!("script failed: {script}\n{exception}");
        }
        answer["result"]["value"].clone()
    }

    /// A script whose promise resolves, with the milliseconds it waited, once `condition`
    /// (a JavaScript expression) holds: checked now and at every change of the document.
    pub fn until(condition: &str, timeout_ms: u64) -> String {
        format!(
            r#"new Promise((resolve, reject) => {{
                const started = performance.now();
                const holds = () => {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }};
                const observer = new MutationObserver(() => {{ if (holds()) done(); }});
                const timer = setTimeout(() => {{ observer.disconnect(); reject(new Error({what})); }}, {timeout_ms});
                const done = () => {{ observer.disconnect(); clearTimeout(timer); resolve(performance.now() - started); }};
                if (holds()) done(); else observer.observe(document, {{subtree: true, childList: true, characterData: true, attributes: true}});
            }})"#,
            what = serde_json::to_string(&format!("timed out waiting for: {condition}")).unwrap()
        )
    }

    /// Save a PNG of the whole page.
    pub fn screenshot(&mut self, path: &Path) {
        let metrics = self.command("Page.getLayoutMetrics", json!({}));
        let height = metrics["cssContentSize"]["height"].as_f64().unwrap_or(900.0).clamp(600.0, 4000.0).ceil();
        let size = json!({"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": false});
        self.command("Emulation.setDeviceMetricsOverride", size);
        let shot = self.command("Page.captureScreenshot", json!({"format": "png"}));
        self.command("Emulation.clearDeviceMetricsOverride", json!({}));
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap_or_default()).expect("a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let close = json!({"id": u64::MAX / 2, "method": "Browser.close"});
        let _ = self.socket.send(Message::text(close.to_string()));
        if let Some(child) = self.child.take() {
            let group = child.id();
            stop_child(child, "-TERM");
            // Anything left of its process group (renderers, zygote) goes with it.
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).stderr(Stdio::null()).status();
        }
    }
}
