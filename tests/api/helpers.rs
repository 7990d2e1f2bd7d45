//! Test harness: `spawn_app()` builds the application exactly as `main` does, on port 0, with a
//! database cloned from a migrated template (fast), dropped when the `TestApp` goes away.

#![allow(dead_code)] // shared by every test file; not each uses all of it

use diesel::{Connection, PgConnection, RunQueryDsl};
use iace::config::{Environment, Settings};
use iace::domain::Role;
use iace::sim::caller::{CallerHook, CallerOptions, CallerScripts};
use iace::sim::cartesia::{CartesiaSim, CartesiaSimConfig};
use iace::sim::deepgram::{DeepgramSim, DeepgramSimConfig};
use iace::sim::groq::{GroqSim, GroqSimConfig};
use iace::sim::telnyx::{StreamHook, TelnyxSim, TelnyxSimConfig, TelnyxSimHandle};
use iace::startup::ShutdownHandle;
use iace::Application;
use serde_json::Value;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use uuid::Uuid;

pub struct TestApp {
    pub address: String,
    /// The ops listener (`/metrics`, `/admin/*`).
    pub ops_address: String,
    pub port: u16,
    pub settings: Settings,
    pub db_name: String,
    pub client: reqwest::Client,
    pub shutdown: ShutdownHandle,
    pub state: iace::http::AppState,
    /// The Telnyx simulator this app's webhooks come from and its commands go to.
    pub telnyx: TelnyxSimHandle,
    /// False for an app started on another app's database (that app drops it).
    pub owns_database: bool,
    /// The speech and language simulators and the simulated callers, for voice tests.
    pub voice: Option<VoiceSims>,
}

/// Deepgram, Cartesia and Groq simulators plus the callers the Telnyx simulator starts.
pub struct VoiceSims {
    pub deepgram: DeepgramSim,
    pub cartesia: CartesiaSim,
    pub groq: GroqSim,
    pub callers: CallerHook,
}

/// What a voice test's world looks like: who calls, what they say, what the LLM answers.
pub struct VoiceSetup {
    pub scripts: CallerScripts,
    pub groq: GroqSimConfig,
    /// False: the Telnyx simulator starts no caller (a test connects its own).
    pub callers_on_stream: bool,
}

impl VoiceSetup {
    pub fn new(scripts: CallerScripts) -> Self {
        Self {
            scripts,
            groq: GroqSimConfig::default(),
            callers_on_stream: true,
        }
    }
}

pub fn project_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `iace bench <args>` (test configuration, from the project folder), requires success,
/// and returns its report (the last line of its output, JSON) and its whole output.
pub fn run_bench(args: &[&str]) -> (serde_json::Value, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iace"))
        .current_dir(project_dir())
        .env("APP_ENV", "test")
        .env_remove("RUST_LOG")
        .arg("bench")
        .args(args)
        .output()
        .expect("run iace bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let last = stdout.lines().last().expect("a JSON line");
    let report = serde_json::from_str(last).expect("the last line is JSON");
    (report, stdout)
}

/// The test layer of the configuration, with the environment's overrides (the database and
/// Redis URLs that `scripts/test` exports).
pub fn test_settings() -> Settings {
    Settings::load_for(&project_dir().join("config"), Environment::Test)
        .expect("test configuration loads")
}

/// Replaces the database name of a Postgres URL.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("database url has a path");
    format!("{base}/{db}")
}

/// Connection to the maintenance database, for CREATE/DROP DATABASE.
pub fn admin_connection() -> PgConnection {
    let url = with_database(test_settings().database.url.expose(), "postgres");
    PgConnection::establish(&url).expect("connect to the local Postgres (is scripts/services up?)")
}

static TEMPLATE: Mutex<Option<String>> = Mutex::new(None);

/// Held by the tests that load every core on purpose (a burst of real argon2 hashes) and by
/// the ones that compare timings, so the first never skews the second.
pub static CPU_HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Name of the migrated template database, created once per migration set. An advisory lock
/// keeps concurrent test processes from building it twice.
fn template_database() -> String {
    let mut guard = TEMPLATE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(name) = guard.as_ref() {
        return name.clone();
    }
    let name = format!("iace_tpl_{:016x}", migrations_fingerprint());
    let mut admin = admin_connection();
    diesel::sql_query("SELECT pg_advisory_lock(727274)")
        .execute(&mut admin)
        .expect("lock");
    let exists: bool = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
        "EXISTS (SELECT 1 FROM pg_database WHERE datname = '{name}')"
    )))
    .get_result(&mut admin)
    .expect("query pg_database");
    if !exists {
        let building = format!("{name}_building");
        diesel::sql_query(format!("DROP DATABASE IF EXISTS {building}"))
            .execute(&mut admin)
            .unwrap();
        diesel::sql_query(format!("CREATE DATABASE {building}"))
            .execute(&mut admin)
            .unwrap();
        let url = with_database(test_settings().database.url.expose(), &building);
        iace::store::migrations::run_pending(&url).expect("migrations apply to the template");
        diesel::sql_query(format!("ALTER DATABASE {building} RENAME TO {name}"))
            .execute(&mut admin)
            .unwrap();
    }
    diesel::sql_query("SELECT pg_advisory_unlock(727274)")
        .execute(&mut admin)
        .expect("unlock");
    *guard = Some(name.clone());
    name
}

/// Changes whenever a migration file changes, so a stale template is never reused.
fn migrations_fingerprint() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut files: Vec<PathBuf> = std::fs::read_dir(project_dir().join("migrations"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .collect();
    files.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        f.to_string_lossy().hash(&mut hasher);
        std::fs::read(&f).unwrap().hash(&mut hasher);
    }
    hasher.finish()
}

/// A new database cloned from the migrated template.
pub fn fresh_database() -> String {
    let template = template_database();
    let name = format!("iace_test_{}", uuid::Uuid::new_v4().simple());
    diesel::sql_query(format!("CREATE DATABASE {name} TEMPLATE {template}"))
        .execute(&mut admin_connection())
        .expect("clone the template database");
    name
}

/// An empty database (no migrations), for migration tests.
pub fn empty_database() -> String {
    let name = format!("iace_test_{}", uuid::Uuid::new_v4().simple());
    diesel::sql_query(format!("CREATE DATABASE {name}"))
        .execute(&mut admin_connection())
        .expect("create database");
    name
}

pub fn drop_database(name: &str) {
    let name = name.to_owned();
    // Drop runs on a plain thread: it may be called from inside the test's async runtime.
    let _ = std::thread::spawn(move || {
        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin_connection())
    })
    .join();
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// An app whose calls talk: every speech simulator is up and the Telnyx simulator starts a
/// simulated caller (speaking `setup.scripts`) on each media stream.
pub async fn spawn_voice_app(setup: VoiceSetup, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    // Deepgram "hears" the callers' sentences in the order they speak them.
    let mut heard = setup.scripts.default.utterances();
    for script in setup.scripts.by_number.values() {
        heard.extend(script.utterances());
    }
    let deepgram = DeepgramSim::start(DeepgramSimConfig {
        script: heard,
        ..Default::default()
    })
    .expect("deepgram simulator");
    let cartesia = CartesiaSim::start(CartesiaSimConfig::default()).expect("cartesia simulator");
    let groq = GroqSim::start(setup.groq).expect("groq simulator");
    let callers = CallerHook::start(setup.scripts, CallerOptions::default(), None);
    let hook = setup.callers_on_stream.then(|| callers.stream_hook());
    let (dg, ca, gr) = (deepgram.base_url(), cartesia.base_url(), groq.base_url());
    let mut app = spawn_app_on(fresh_database(), true, hook, |s| {
        s.deepgram.base_url = dg;
        s.cartesia.base_url = ca;
        s.groq.base_url = gr;
        tweak(s);
    })
    .await;
    app.voice = Some(VoiceSims {
        deepgram,
        cartesia,
        groq,
        callers,
    });
    app
}

/// Starts the application with settings adjusted by `tweak` (after the test database and port 0
/// are set, so a test can still point anything elsewhere).
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on(fresh_database(), true, None, tweak).await
}

/// Starts another application on the database of `earlier` (a restart, as far as the data
/// knows). `earlier` keeps owning the database and drops it.
pub async fn respawn_app_with(earlier: &TestApp, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on(earlier.db_name.clone(), false, None, tweak).await
}

async fn spawn_app_on(
    db_name: String,
    owns_database: bool,
    stream_hook: Option<StreamHook>,
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    if std::env::var("TEST_LOG").is_ok() {
        let mut s = test_settings();
        s.log.level = "debug".into();
        iace::telemetry::init(&s);
    }
    let mut settings = test_settings();
    settings.database.url =
        iace::config::Secret::new(with_database(settings.database.url.expose(), &db_name));
    // Bind first: the Telnyx simulator must know where to deliver webhooks.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let port = listener.local_addr().unwrap().port();
    settings.server.port = port;
    settings.server.public_url = format!("http://127.0.0.1:{port}");
    let telnyx = TelnyxSim::start(TelnyxSimConfig {
        webhook_url: format!("http://127.0.0.1:{port}/webhooks/telnyx"),
        api_key: "test-telnyx-key".into(),
        answer_delay_ms: 50,
        webhook_retry_backoff_ms: 50,
        on_stream_started: stream_hook,
        ..TelnyxSimConfig::default()
    })
    .await
    .expect("telnyx simulator starts");
    settings.telnyx.base_url = telnyx.base_url();
    settings.telnyx.api_key = iace::config::Secret::new("test-telnyx-key");
    settings.telnyx.webhook_public_key = telnyx.public_key_b64();
    // Redis is shared by every test (and every engineer's tests): keys of this app stay apart.
    settings.redis.key_prefix = format!("iace-test:{db_name}");
    // Each app its own spill file (a fresh one: a leftover would be replayed into this app).
    settings.recorder.spill_file = std::env::temp_dir()
        .join(format!(
            "iace-test-spill-{}.jsonl",
            uuid::Uuid::new_v4().simple()
        ))
        .display()
        .to_string();
    tweak(&mut settings);
    let app = Application::build_with_listener(settings.clone(), listener)
        .await
        .expect("application builds");
    let port = app.port();
    let ops_port = app.ops_port();
    let shutdown = app.shutdown_handle();
    let state = app.state().clone();
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        ops_address: format!("http://127.0.0.1:{ops_port}"),
        port,
        settings,
        db_name,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        shutdown,
        state,
        telnyx,
        voice: None,
        owns_database,
    }
}

/// Polls `check` every 25 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// `GET` on the ops listener.
    pub async fn ops_get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.ops_address))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }
}

/// A user created by `TestApp::create_user`, with the password in clear for logging in.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: uuid::Uuid,
    pub org: uuid::Uuid,
    pub email: String,
    pub password: String,
    pub role: Role,
}

/// The token pair a login or refresh returned.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

impl Tokens {
    fn from_body(body: &serde_json::Value) -> Self {
        Tokens {
            access: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            refresh: body["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_owned(),
        }
    }
}

impl TestApp {
    /// A new organization (through the same store function `iace admin create-org` uses).
    pub async fn create_org(&self, name: &str) -> uuid::Uuid {
        let mut conn = self.state.db.get().await.expect("database connection");
        iace::auth::accounts::create_org(&mut conn, name)
            .await
            .expect("organization created")
            .id
    }

    /// A new user of `org` with a random email and password.
    pub async fn create_user(&self, org: uuid::Uuid, role: Role) -> TestUser {
        let email = format!("user-{}@example.test", uuid::Uuid::new_v4().simple());
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let mut conn = self.state.db.get().await.expect("database connection");
        let user = iace::auth::accounts::create_user(
            &mut conn,
            self.state.auth.passwords(),
            org,
            &email,
            role,
            &password,
        )
        .await
        .expect("user created");
        TestUser {
            id: user.id,
            org,
            email,
            password,
            role,
        }
    }

    /// `POST /api/v1/auth/login` with the user's credentials; panics unless it answers 200.
    pub async fn login(&self, user: &TestUser) -> Tokens {
        let res = self
            .post_json(
                "/api/v1/auth/login",
                &serde_json::json!({ "email": user.email, "password": user.password }),
            )
            .await;
        let status = res.status();
        let body: serde_json::Value = res.json().await.expect("login body is JSON");
        assert_eq!(status, 200, "login failed: {body}");
        Tokens::from_body(&body)
    }

    /// `POST /api/v1/auth/login` for `user`: status, `Retry-After` (0 when absent) and the
    /// error code (empty on success).
    pub async fn login_response(&self, user: &TestUser) -> (u16, u64, String) {
        let res = self
            .post_json(
                "/api/v1/auth/login",
                &serde_json::json!({ "email": user.email, "password": user.password }),
            )
            .await;
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        let body: Value = res.json().await.unwrap_or(Value::Null);
        let code = body["code"].as_str().unwrap_or_default().to_owned();
        (status, retry_after, code)
    }

    /// `POST /api/v1/auth/refresh`, returning the raw response.
    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.post_json(
            "/api/v1/auth/refresh",
            &serde_json::json!({ "refresh_token": refresh_token }),
        )
        .await
    }

    /// A refresh that must succeed, returning the new pair.
    pub async fn refreshed(&self, refresh_token: &str) -> Tokens {
        let res = self.refresh(refresh_token).await;
        let status = res.status();
        let body: serde_json::Value = res.json().await.expect("refresh body is JSON");
        assert_eq!(status, 200, "refresh failed: {body}");
        Tokens::from_body(&body)
    }

    /// An access token for a new user of `org` with `role` (created, then logged in).
    pub async fn token_for(&self, org: uuid::Uuid, role: Role) -> String {
        let user = self.create_user(org, role).await;
        self.login(&user).await.access
    }

    /// `GET path` with `Authorization: Bearer token`.
    pub async fn get_as(&self, token: &str, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    /// `POST path` with a JSON body and `Authorization: Bearer token`.
    pub async fn post_as(
        &self,
        token: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.send_as(reqwest::Method::POST, token, path, body).await
    }

    /// `PATCH path` with a JSON body and `Authorization: Bearer token`.
    pub async fn patch_as(
        &self,
        token: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.send_as(reqwest::Method::PATCH, token, path, body)
            .await
    }

    /// Any method with a JSON body and `Authorization: Bearer token`.
    pub async fn send_as(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }
}

/// An organization with an admin token and an agent profile answering one number.
pub struct Tenant {
    pub org: Uuid,
    pub token: String,
    pub agent_id: Uuid,
}

/// How long the calls helpers wait for a call to show up or change.
const CALL_WAIT: Duration = Duration::from_secs(10);

/// Tenants, agent profiles and calls, through the API as a client would drive it.
impl TestApp {
    /// Assigns `number` to `org`, as an operator does (the store call behind
    /// `iace admin assign-number` and the operator API).
    pub async fn assign_number(&self, org: Uuid, number: &str) {
        let mut conn = self.state.db.get().await.expect("database connection");
        let done = iace::store::numbers::assign(&mut conn, org, number)
            .await
            .expect("number assigned");
        assert_ne!(
            done,
            iace::store::numbers::Assignment::HeldByAnother,
            "{number}"
        );
    }

    /// A new organization owning `number`, with an admin token and a "Support" agent profile
    /// answering it (escalating to +15557770000).
    pub async fn create_tenant(&self, number: &str) -> Tenant {
        let agent = serde_json::json!({
            "name": "Support",
            "system_prompt": "You help callers with their internet service.",
            "greeting": "Hello, how can I help?",
            "voice_id": "voice-1",
            "phone_numbers": [number],
            "escalation_number": "+15557770000"
        });
        self.create_tenant_with_agent(number, &agent).await
    }

    /// A new organization owning `number`, with an admin token and the agent profile `agent`
    /// (a `POST /api/v1/agents` body) answering it.
    pub async fn create_tenant_with_agent(&self, number: &str, agent: &Value) -> Tenant {
        let org = self.create_org(&format!("org-{number}")).await;
        self.assign_number(org, number).await;
        let token = self.token_for(org, Role::Admin).await;
        let res = self.create_agent(&token, agent).await;
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
        let agent: Value = res.json().await.unwrap();
        Tenant {
            org,
            token,
            agent_id: agent["id"].as_str().unwrap().parse().unwrap(),
        }
    }

    /// `GET /api/v1/calls/{id}` once the recorder has written everything queued so far (the
    /// transcript is written off the call's path).
    pub async fn recorded_call(&self, t: &Tenant, id: Uuid) -> Value {
        self.state
            .recorder
            .send(iace::actors::recorder::Flush)
            .await
            .expect("recorder flushes");
        self.get_json(&t.token, &format!("/api/v1/calls/{id}"))
            .await
            .1
    }

    /// `POST /api/v1/agents`.
    pub async fn create_agent(&self, token: &str, body: &Value) -> reqwest::Response {
        self.post_as(token, "/api/v1/agents", body).await
    }

    /// `GET path` as `token`: the status and the JSON body (`Null` when there is none).
    pub async fn get_json(&self, token: &str, path: &str) -> (u16, Value) {
        let res = self.get_as(token, path).await;
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// `POST /api/v1/calls`: dial out.
    pub async fn place_call(&self, token: &str, body: &Value) -> reqwest::Response {
        self.post_as(token, "/api/v1/calls", body).await
    }

    /// `GET /api/v1/calls/{id}`.
    pub async fn get_call(&self, token: &str, id: Uuid) -> reqwest::Response {
        self.get_as(token, &format!("/api/v1/calls/{id}")).await
    }

    /// `POST /api/v1/calls/{id}/hangup`.
    pub async fn hang_up(&self, token: &str, id: Uuid) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/api/v1/calls/{id}/hangup")))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    /// `POST /api/v1/calls/{id}/transfer` to `to`.
    pub async fn transfer(&self, token: &str, id: Uuid, to: &str) -> reqwest::Response {
        self.post_as(
            token,
            &format!("/api/v1/calls/{id}/transfer"),
            &serde_json::json!({ "to": to }),
        )
        .await
    }

    /// Waits for the one call with this Telnyx id to show up in the org's list; returns its id.
    pub async fn call_id_for(&self, t: &Tenant, ccid: &str) -> Uuid {
        wait_until(CALL_WAIT, "the call to appear in the API", || async {
            let (_, page) = self.get_json(&t.token, "/api/v1/calls?limit=200").await;
            page["data"]
                .as_array()?
                .iter()
                .find(|c| c["call_control_id"] == ccid)?["id"]
                .as_str()?
                .parse()
                .ok()
        })
        .await
    }

    /// Waits for call `id` to reach `status`; returns the call as the API shows it then.
    /// Waits for the scripted caller of a voice app to finish its script (it must succeed),
    /// then hangs the call up at Telnyx and returns the ended call.
    pub async fn finish_scripted_call(&self, t: &Tenant, ccid: &str, id: Uuid) -> Value {
        let voice = self.voice.as_ref().expect("a voice app");
        let outcomes = voice
            .callers
            .wait_for_outcomes(1, Duration::from_secs(90))
            .await;
        assert!(outcomes.into_iter().all(|o| o.is_ok()), "the caller ran");
        self.telnyx.caller_hangs_up(ccid);
        self.wait_for_status(t, id, "ended").await
    }

    pub async fn wait_for_status(&self, t: &Tenant, id: Uuid, status: &str) -> Value {
        wait_until(
            CALL_WAIT,
            &format!("call {id} to reach {status}"),
            || async {
                let (_, call) = self
                    .get_json(&t.token, &format!("/api/v1/calls/{id}"))
                    .await;
                (call["status"] == status).then_some(call)
            },
        )
        .await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.state.registry.stop();
        if self.owns_database {
            drop_database(&self.db_name);
        }
    }
}

/// Asserts the status and the error code of an error response, and returns its message.
pub async fn assert_error(res: reqwest::Response, status: u16, code: &str) -> String {
    let actual = res.status().as_u16();
    let body: serde_json::Value = res.json().await.expect("error body is JSON");
    assert_eq!(actual, status, "status (body: {body})");
    assert_eq!(body["code"], code, "error code (body: {body})");
    body["message"]
        .as_str()
        .expect("message is a string")
        .to_owned()
}

/// Serves the routes `configure` registers, on one worker and a free loopback port, for the rest
/// of the test: a stand-in peer (a webhook receiver, a fake engine). Returns the port.
pub fn serve_routes<F>(configure: F) -> u16
where
    F: Fn(&mut actix_web::web::ServiceConfig) + Send + Clone + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server =
        actix_web::HttpServer::new(move || actix_web::App::new().configure(configure.clone()))
            .workers(1)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run();
    actix_web::rt::spawn(server);
    port
}

/// A port nothing listens on right now.
/// Bodies a [`start_body_sink`] server received, in order.
pub type ReceivedBodies = std::sync::Arc<Mutex<Vec<actix_web::web::Bytes>>>;

/// A real HTTP server on a loopback port that answers `POST {route}` with `{}` and keeps the
/// bodies (stands in for a Sentry DSN or an OTLP collector). Returns its port.
pub fn start_body_sink(route: &str) -> (u16, ReceivedBodies) {
    use actix_web::{web, App, HttpServer};
    let received = ReceivedBodies::default();
    let sink = received.clone();
    let route = route.to_owned();
    let server = HttpServer::new(move || {
        let sink = sink.clone();
        App::new().route(
            &route,
            web::post().to(move |body: web::Bytes| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push(body);
                    "{}"
                }
            }),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let port = server.addrs()[0].port();
    actix_web::rt::spawn(server.run());
    (port, received)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A blocking `GET` over a plain socket (for tests that drive the binary from a sync thread):
/// returns the status and the body, or None when nothing answers.
pub fn blocking_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// A call written straight to the database (no actor, no Telnyx) for the tests that read calls
/// back: an ended inbound call unless changed, with its utterances.
pub struct SeededCall<'a> {
    pub agent: Option<Uuid>,
    pub from: &'a str,
    pub to: &'a str,
    /// Both `started_at` and `created_at` (the time axis of lists and dashboards).
    pub at: chrono::DateTime<chrono::Utc>,
    pub outcome: Option<&'a str>,
    /// `sentiment_avg`.
    pub sentiment: Option<f32>,
    /// `ended_at` is set (to now).
    pub ended: bool,
    /// `(speaker, text, latency_ms)` in order, one every 3 s, each 2.5 s long.
    pub utterances: Vec<(&'a str, &'a str, Option<i32>)>,
}

impl Default for SeededCall<'_> {
    fn default() -> Self {
        Self {
            agent: None,
            from: "+15554000000",
            to: "+15554000001",
            at: chrono::Utc::now(),
            outcome: None,
            sentiment: None,
            ended: false,
            utterances: Vec::new(),
        }
    }
}

/// Writes `call` for `org` (see [`SeededCall`]) and returns its id.
pub async fn seed_call(app: &TestApp, org: Uuid, call: SeededCall<'_>) -> Uuid {
    use diesel::sql_types::{Float, Nullable, Text, Timestamptz, Uuid as SqlUuid};
    use iace::store::{calls, utterances};
    let mut conn = app.state.db.get().await.unwrap();
    let id = Uuid::now_v7();
    let row = calls::NewCall {
        id,
        organization_id: org,
        agent_profile_id: call.agent,
        direction: "inbound".into(),
        from_number: call.from.into(),
        to_number: call.to.into(),
        call_control_id: None,
        call_leg_id: None,
        call_session_id: None,
        status: "ended".into(),
        started_at: call.at,
        owner_instance: None,
    };
    calls::insert(&mut conn, &row).await.unwrap();
    let update = diesel::sql_query(
        "UPDATE calls SET created_at = $1, outcome = $2, sentiment_avg = $3, ended_at = $4 \
         WHERE id = $5",
    )
    .bind::<Timestamptz, _>(call.at)
    .bind::<Nullable<Text>, _>(call.outcome)
    .bind::<Nullable<Float>, _>(call.sentiment)
    .bind::<Nullable<Timestamptz>, _>(call.ended.then(chrono::Utc::now))
    .bind::<SqlUuid, _>(id);
    diesel_async::RunQueryDsl::execute(update, &mut *conn)
        .await
        .unwrap();
    let rows: Vec<utterances::NewUtterance> = call
        .utterances
        .iter()
        .enumerate()
        .map(|(i, (speaker, text, latency))| utterances::NewUtterance {
            organization_id: org,
            call_id: id,
            seq: i as i32,
            speaker: (*speaker).into(),
            text: (*text).into(),
            started_ms: i as i64 * 3000,
            ended_ms: i as i64 * 3000 + 2500,
            sentiment_score: None,
            sentiment_label: None,
            rolling_sentiment: None,
            interrupted: false,
            latency_ms: *latency,
        })
        .collect();
    if !rows.is_empty() {
        utterances::insert_many(&mut conn, &rows).await.unwrap();
    }
    id
}
