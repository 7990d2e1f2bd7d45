//! A thin W3C WebDriver client over reqwest (the protocol is HTTP + JSON) driving the system's
//! headless Chromium through `chromedriver`, started per browser on a free port.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The element reference key of the W3C protocol.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    base: String,
    client: reqwest::Client,
    driver: Child,
    _profile: TempDir,
}

/// A fresh Chromium profile directory, removed afterwards.
struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

impl Browser {
    /// A headless Chromium, or `None` (with a message) when Chromium is not installed and this is
    /// not CI. In CI (`CI` set) a missing Chromium fails the test.
    pub async fn start() -> Option<Browser> {
        let (Some(driver), Some(chromium)) = (which("chromedriver"), which("chromium")) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "chromium and chromium-driver must be installed in CI (scripts/test installs them)"
            );
            eprintln!("SKIPPED: browser test needs chromium and chromium-driver (scripts/test installs them; CI is unset)");
            return None;
        };
        let port = crate::helpers::free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile =
            TempDir(std::env::temp_dir().join(format!("iace-chromium-{}", uuid::Uuid::new_v4())));
        let mut browser = Browser {
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            driver: child,
            _profile: profile,
        };
        crate::helpers::wait_until(Duration::from_secs(30), "chromedriver ready", || async {
            let res = browser
                .client
                .get(format!("{}/status", browser.base))
                .send()
                .await
                .ok()?;
            let body: Value = res.json().await.ok()?;
            (body["value"]["ready"] == true).then_some(())
        })
        .await;
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", browser._profile.0.display()),
                ]
            }
        }}});
        let res: Value = browser
            .client
            .post(format!("{}/session", browser.base))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .unwrap();
        let id = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {res}"))
            .to_owned();
        browser.base = format!("{}/session/{id}", browser.base);
        Some(browser)
    }

    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res: Value = req
            .send()
            .await
            .expect("webdriver request")
            .json()
            .await
            .unwrap();
        match res["value"]["error"].as_str() {
            Some(err) => Err(format!(
                "webdriver {path}: {err}: {}",
                res["value"]["message"]
            )),
            None => Ok(res["value"].clone()),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Ends the session (Chromium exits); the driver goes on drop.
    pub async fn quit(&self) {
        let _ = self.client.delete(&self.base).send().await;
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `arguments` as given) in the page and returns its value.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Waits until `script` returns a truthy value; returns it.
    pub async fn wait_js(&self, what: &str, script: &str, args: Value) -> Value {
        crate::helpers::wait_until(Duration::from_secs(90), what, || async {
            let v = self.js(script, args.clone()).await;
            let truthy = !(v.is_null() || v == false || v == "" || v == 0);
            truthy.then_some(v)
        })
        .await
    }

    /// The element `css`, waited for; on timeout the panic shows the page as it was.
    async fn find(&self, css: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let found = self
                .try_call(
                    reqwest::Method::POST,
                    "/element",
                    Some(json!({ "using": "css selector", "value": css })),
                )
                .await;
            if let Some(id) = found
                .ok()
                .and_then(|v| v[ELEMENT].as_str().map(str::to_owned))
            {
                return id;
            }
            if tokio::time::Instant::now() > deadline {
                let page = self
                    .try_call(
                        reqwest::Method::POST,
                        "/execute/sync",
                        Some(json!({ "script": "return location.href + '\\n' + document.documentElement.outerHTML", "args": [] })),
                    )
                    .await;
                panic!("timed out waiting for element {css}; page: {page:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element `css` (waiting for it) as a user would. The live page re-renders as
    /// events arrive, so an element replaced between finding and clicking is found again.
    pub async fn click(&self, css: &str) {
        for _ in 0..20 {
            let id = self.find(css).await;
            match self
                .try_call(
                    reqwest::Method::POST,
                    &format!("/element/{id}/click"),
                    Some(json!({})),
                )
                .await
            {
                Ok(_) => return,
                Err(e) if e.contains("stale element") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("{css} kept being replaced before it could be clicked");
    }

    /// Types `text` into the element `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Saves a PNG of the page as target/screenshots/{name}.png.
    pub async fn screenshot(&self, name: &str) {
        use base64::Engine;
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .expect("PNG");
        let dir = crate::helpers::project_dir().join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }

    /// Logs in through the page's form at `app_url` and waits for the Live page.
    pub async fn log_in(&self, app_url: &str, email: &str, password: &str) {
        self.goto(app_url).await;
        self.type_into("input[name=email]", email).await;
        self.type_into("input[name=password]", password).await;
        self.click("form.login button[type=submit]").await;
        self.wait_js(
            "the Live page",
            "return document.querySelector('#live-calls') !== null && !document.getElementById('nav').hidden",
            json!([]),
        )
        .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session goes with its driver (chromedriver ends its Chromium when killed).
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
