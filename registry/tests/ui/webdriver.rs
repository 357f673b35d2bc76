//! A small W3C WebDriver client over chromedriver and Debian's headless Chromium: just the
//! commands the UI tests use (navigate, find, click, type, keys, scripts, screenshots).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running chromedriver with one browser session; both end on drop.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    driver: Child,
}

/// Whether chromedriver and Chromium are installed (./setup installs both).
pub fn available() -> bool {
    ["/usr/bin/chromedriver", "/usr/bin/chromium"].iter().all(|p| std::path::Path::new(p).exists())
}

/// An element of the current page.
#[derive(Clone, Debug)]
pub struct El(String);

impl Browser {
    /// Starts chromedriver on a free port and opens a headless browser at `width`x`height`.
    pub async fn start(width: u32, height: u32) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::new();
        let root = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{root}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--disable-extensions", format!("--window-size={width},{height}")
        ]}}}});
        let resp = json_of(
            http.post(format!("{root}/session")).header("content-type", "application/json").body(caps.to_string()),
        )
        .await;
        let id = resp["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {resp}")).to_owned();
        let mut b = Browser { http, base: format!("{root}/session/{id}"), driver };
        b.viewport(width, height).await;
        b
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = json_of(req).await;
        if let Some(err) = resp["value"].get("error") {
            panic!("webdriver {path}: {err}: {}", resp["value"]["message"]);
        }
        resp["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Sets the page's viewport exactly (as a phone or a desktop would have it).
    pub async fn viewport(&mut self, width: u32, height: u32) {
        let params = json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600});
        self.post("/goog/cdp/execute", json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": params})).await;
    }

    /// Opens a URL and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None).await.as_str().unwrap_or_default().to_owned()
    }

    /// The first element matching a CSS selector; panics when there is none.
    pub async fn find(&self, css: &str) -> El {
        let v = self.post("/element", json!({"using": "css selector", "value": css})).await;
        El(v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}")).to_owned())
    }

    /// Every element matching a CSS selector.
    pub async fn find_all(&self, css: &str) -> Vec<El> {
        let v = self.post("/elements", json!({"using": "css selector", "value": css})).await;
        v.as_array().unwrap().iter().map(|e| El(e[ELEMENT].as_str().unwrap().to_owned())).collect()
    }

    /// Clicks a link or a submit button and waits until the page it leads to has loaded.
    pub async fn click(&self, el: &El) {
        self.script("window.__leaving = true;").await;
        self.post(&format!("/element/{}/click", el.0), json!({})).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let done = self.script("return window.__leaving === undefined && document.readyState === 'complete'").await;
            if done == Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < deadline, "the click led nowhere within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Types into an element.
    pub async fn type_into(&self, el: &El, text: &str) {
        self.post(&format!("/element/{}/value", el.0), json!({ "text": text })).await;
    }

    /// An element's visible text.
    pub async fn text(&self, el: &El) -> String {
        self.call(reqwest::Method::GET, &format!("/element/{}/text", el.0), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// The text of the whole page body.
    pub async fn body_text(&self) -> String {
        self.script("return document.body.innerText").await.as_str().unwrap_or("").to_owned()
    }

    /// Runs a script in the page and returns its result.
    pub async fn script(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": []})).await
    }

    /// Runs a script that returns a list of strings.
    pub async fn strings(&self, script: &str) -> Vec<String> {
        let v = self.script(script).await;
        v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
    }

    /// Presses one key (a WebDriver key code such as `\u{E004}` for Tab).
    pub async fn press(&self, key: &str) {
        let acts = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]});
        self.post("/actions", acts).await;
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap()).unwrap()
    }
}

async fn json_of(req: reqwest::RequestBuilder) -> Value {
    let bytes = req.send().await.unwrap().bytes().await.unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("webdriver answered {e}: {}", String::from_utf8_lossy(&bytes)))
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes Chromium; killing chromedriver alone could leave it behind.
        let url = self.base.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async { reqwest::Client::new().delete(url).send().await.map(|_| ()) })
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
