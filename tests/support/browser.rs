//! Headless Chromium for the page tests, driven over the Chrome DevTools protocol.
//!
//! The browser is Debian's `chromium` (installed by `scripts/test` where apt is available;
//! `MESHSTACK_CHROMIUM` names another binary). It starts with a fresh profile, no sync, no
//! component updates, no background networking, and every request that would leave the
//! machine sent to a proxy that does not exist; each page then also runs with the network
//! emulated offline. [`Browser::load`] records what a person would worry about: console
//! errors, uncaught exceptions, and every request besides the page itself (a self-contained
//! page makes none).
//!
//! When no browser can be found the test fails, naming what it looked for — unless
//! `MESHSTACK_NO_BROWSER=1` is set on purpose, and then [`Browser::start`] returns `None`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const NAMES: [&str; 5] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "headless_shell",
];
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A running browser, killed on drop.
pub struct Browser {
    child: Child,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Events read while waiting for a reply, oldest first.
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

/// What loading one page showed.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Console messages of level error (and warnings), uncaught exceptions, log errors.
    pub console_errors: Vec<String>,
    /// Requests other than the page's own document, and failed loads.
    pub requests: Vec<String>,
}

/// The browser binary: `MESHSTACK_CHROMIUM`, else the first of [`NAMES`] on the PATH.
fn find() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("MESHSTACK_CHROMIUM") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in NAMES {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "no headless browser found (looked for {} on the PATH, and MESHSTACK_CHROMIUM): \
         install Debian's `chromium` (scripts/test does it where apt is available), point \
         MESHSTACK_CHROMIUM at a Chromium binary, or set MESHSTACK_NO_BROWSER=1 to skip the \
         browser checks on purpose",
        NAMES.join(", ")
    ))
}

impl Browser {
    /// Starts the browser; `None` only when none is installed and `MESHSTACK_NO_BROWSER=1`.
    /// Panics, saying why, when one cannot be found or started otherwise.
    pub async fn start() -> Option<Browser> {
        let binary = match find() {
            Ok(b) => b,
            Err(why) if std::env::var("MESHSTACK_NO_BROWSER").as_deref() == Ok("1") => {
                eprintln!("skipping the browser checks (MESHSTACK_NO_BROWSER=1): {why}");
                return None;
            }
            Err(why) => panic!("{why}"),
        };
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                // Anything that tries to leave the machine goes to a closed local port.
                "--proxy-server=127.0.0.1:9",
                "--proxy-bypass-list=<-loopback>",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        // The browser writes its DevTools port and path into the profile once it listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break format!("ws://127.0.0.1:{port}{path}");
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{} exited at start ({status})", binary.display());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not open its DevTools port within 60 s",
                binary.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the browser at {url}: {e}"));
        Some(Browser {
            child,
            ws,
            next_id: 0,
            events: Vec::new(),
            _profile: profile,
        })
    }

    /// Sends `method` (to the page `session`, or to the browser) and waits for its result.
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(message.to_string()))
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let reply = self.read(deadline, method).await;
            if reply.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(error) = reply.get("error") {
                    panic!("{method} failed: {error}");
                }
                return reply["result"].clone();
            }
            self.events.push(reply);
        }
    }

    /// The next message from the browser, or a panic naming `what` at `deadline`.
    async fn read(&mut self, deadline: Instant, what: &str) -> Value {
        let left = deadline.saturating_duration_since(Instant::now());
        loop {
            let message = tokio::time::timeout(left, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer from the browser to {what}"))
                .unwrap_or_else(|| panic!("the browser closed the connection during {what}"))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            if let Message::Text(text) = message {
                return serde_json::from_str(text.as_str()).expect("DevTools speaks JSON");
            }
        }
    }

    /// Waits for event `method` of `session` (one already read counts), removing it.
    async fn event(&mut self, session: &str, method: &str) -> Value {
        let deadline = Instant::now() + CALL_TIMEOUT;
        let is = |e: &Value| e["method"] == method && e["sessionId"] == session;
        loop {
            if let Some(i) = self.events.iter().position(is) {
                return self.events.remove(i);
            }
            let e = self.read(deadline, method).await;
            self.events.push(e);
        }
    }

    /// Loads `file` in a fresh tab `width` CSS pixels wide with the network offline, waits
    /// for its load event, runs `probe` (a JavaScript expression whose value is returned as
    /// JSON) and writes a screenshot of the whole page to `screenshot`.
    pub async fn load(
        &mut self,
        file: &Path,
        width: u32,
        probe: &str,
        screenshot: &Path,
    ) -> (Loaded, Value) {
        let target = self
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        let session = attached["sessionId"].as_str().unwrap().to_string();
        let s = Some(session.as_str());
        for domain in [
            "Page.enable",
            "Runtime.enable",
            "Log.enable",
            "Network.enable",
        ] {
            self.call(s, domain, json!({})).await;
        }
        self.call(
            s,
            "Network.emulateNetworkConditions",
            json!({"offline": true, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}),
        )
        .await;
        self.call(
            s,
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        let url = format!("file://{}", file.canonicalize().unwrap().display());
        let navigated = self.call(s, "Page.navigate", json!({"url": url})).await;
        assert!(
            navigated.get("errorText").is_none(),
            "{url}: {}",
            navigated["errorText"]
        );
        self.event(&session, "Page.loadEventFired").await;

        let value = self
            .call(
                s,
                "Runtime.evaluate",
                json!({"expression": probe, "returnByValue": true}),
            )
            .await;
        assert!(
            value.get("exceptionDetails").is_none(),
            "the probe failed: {}",
            value["exceptionDetails"]
        );
        let probed = value["result"]["value"].clone();

        // The whole page, not only the first screen.
        let metrics = self.call(s, "Page.getLayoutMetrics", json!({})).await;
        let height = metrics["cssContentSize"]["height"]
            .as_f64()
            .unwrap_or(800.0);
        self.call(
            s,
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height.ceil() as u64, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        let shot = self
            .call(s, "Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        if let Some(dir) = screenshot.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(screenshot, png).unwrap();

        let mut loaded = Loaded::default();
        for e in std::mem::take(&mut self.events) {
            if e["sessionId"] != session.as_str() {
                self.events.push(e);
                continue;
            }
            let p = &e["params"];
            match e["method"].as_str().unwrap_or("") {
                "Runtime.consoleAPICalled"
                    if matches!(p["type"].as_str(), Some("error" | "warning" | "assert")) =>
                {
                    loaded
                        .console_errors
                        .push(format!("console.{}: {}", p["type"], p["args"]))
                }
                "Runtime.exceptionThrown" => loaded
                    .console_errors
                    .push(format!("exception: {}", p["exceptionDetails"])),
                "Log.entryAdded"
                    if matches!(p["entry"]["level"].as_str(), Some("error" | "warning")) =>
                {
                    loaded
                        .console_errors
                        .push(format!("log: {}", p["entry"]["text"]))
                }
                "Network.requestWillBeSent" if p["request"]["url"] != url.as_str() => loaded
                    .requests
                    .push(format!("request: {}", p["request"]["url"])),
                "Network.loadingFailed" => loaded
                    .requests
                    .push(format!("failed: {} {}", p["requestId"], p["errorText"])),
                _ => {}
            }
        }
        self.call(None, "Target.closeTarget", json!({"targetId": target_id}))
            .await;
        (loaded, probed)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
