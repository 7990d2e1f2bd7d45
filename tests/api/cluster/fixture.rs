//! The cluster fixture: `iace serve` processes (the benchmark's `EngineProcess`) on their own
//! ports, sharing one test database and one Redis key prefix, behind the front proxy, with every
//! provider simulated (the `SimSuite`: Telnyx starts a simulated caller on each media stream).

use super::front_proxy::{FrontProxy, ProxyMode};
use crate::helpers::{drop_database, fresh_database, project_dir, test_settings, with_database};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use iace::bench::engine::{EngineOptions, EngineProcess};
use iace::domain::Role;
use iace::sim::caller::{CallerOutcome, CallerScript, CallerScripts};
use iace::sim::groq::GroqRule;
use iace::sim::suite::{SimSuite, SimSuiteConfig, SimSuiteHandle};
use iace::store::agents::{self, AgentProfileForm};
use std::time::Duration;

/// The number every simulated call dials.
pub const OUR_NUMBER: &str = "+15550170000";
/// What each caller says, and what the simulated LLM answers.
pub const CALLER_LINE: &str = "Could you tell me when my order will arrive?";
pub const AGENT_REPLY: &str = "Your order arrives on Friday.";

/// How the cluster is started.
pub struct ClusterOptions {
    pub instances: usize,
    /// `fly-replay` behind the replaying proxy, or `forward` behind a plain load balancer with a
    /// public URL per instance for media.
    pub routing: &'static str,
    pub max_live_per_instance: usize,
    pub drain_timeout_secs: u64,
    /// The callers' script.
    pub script: CallerScript,
    /// The agent profile's human number (orphans mid-conversation are transferred there).
    pub escalation_number: Option<String>,
    /// More `IACE__…` settings for every instance.
    pub env: Vec<(String, String)>,
}

impl ClusterOptions {
    pub fn new(routing: &'static str) -> Self {
        Self {
            instances: 3,
            routing,
            max_live_per_instance: 0,
            drain_timeout_secs: 30,
            script: one_turn(),
            escalation_number: None,
            env: Vec::new(),
        }
    }
}

/// Greeting, one question, its answer, goodbye.
pub fn one_turn() -> CallerScript {
    CallerScript::new()
        .wait_for_agent(15_000)
        .say(CALLER_LINE)
        .wait_for_agent(15_000)
        .hang_up()
}

/// A caller who listens to the greeting, asks, then stays on the line (silence) for `ms`.
pub fn lingering(ms: u32) -> CallerScript {
    CallerScript::new()
        .wait_for_agent(15_000)
        .say(CALLER_LINE)
        .wait_for_agent(15_000)
        .silence(ms)
        .hang_up()
}

pub struct TestCluster {
    pub db_name: String,
    pub database_url: String,
    pub organization_id: uuid::Uuid,
    pub sims: SimSuiteHandle,
    pub proxy: FrontProxy,
    /// `None` once killed or stopped.
    pub engines: Vec<Option<EngineProcess>>,
    pub ids: Vec<String>,
}

impl TestCluster {
    /// Starts the simulators, the proxy and the instances (in parallel), and seeds one
    /// organization whose agent profile answers [`OUR_NUMBER`]. Must run inside an actix system.
    pub async fn start(o: ClusterOptions) -> Self {
        let db_name = fresh_database();
        let settings = test_settings();
        let database_url = with_database(settings.database.url.expose(), &db_name);
        let organization_id = seed(&database_url, o.escalation_number.clone()).await;

        let mut sim = SimSuiteConfig::ephemeral(CallerScripts::new(o.script.clone()));
        sim.sync_deepgram_script = false;
        sim.deepgram.script = vec![CALLER_LINE.to_owned()];
        sim.deepgram.repeat_script = true;
        sim.deepgram.keep_audio = false;
        sim.groq.rules = vec![GroqRule::new("order", AGENT_REPLY)];
        sim.caller.connect_timeout = Duration::from_secs(20);
        sim.caller.deadline = Duration::from_secs(180);
        let sims = SimSuite::start(sim).await.expect("simulators start");

        let fly = o.routing == "fly-replay";
        let proxy = FrontProxy::start(if fly {
            ProxyMode::FlyReplay
        } else {
            ProxyMode::Plain
        });
        let prefix = format!("iace-test:{db_name}");
        let ids: Vec<String> = (0..o.instances).map(|i| format!("node-{i}")).collect();
        let starts = ids.iter().map(|id| {
            let mut e = EngineOptions::new(
                project_dir().join("config"),
                &database_url,
                settings.redis.url.expose(),
            )
            .expect("engine options");
            e.exe = env!("CARGO_BIN_EXE_iace").into();
            e.log_path = std::env::temp_dir().join(format!("iace-{db_name}-{id}.log"));
            e.set("IACE__CLUSTER__INSTANCE_ID", id.clone())
                .set("IACE__CLUSTER__ROUTING", o.routing)
                .set("IACE__CLUSTER__HEARTBEAT_INTERVAL_MS", "500")
                .set("IACE__CLUSTER__HEARTBEAT_TTL_MS", "3000")
                .set("IACE__CLUSTER__LEASE_RENEW_INTERVAL_MS", "1000")
                .set("IACE__CLUSTER__LEASE_TTL_MS", "5000")
                .set("IACE__CLUSTER__SWEEP_INTERVAL_MS", "1000")
                .set("IACE__REDIS__KEY_PREFIX", prefix.clone())
                .set("IACE__SERVER__WORKERS", "1")
                .set(
                    "IACE__SERVER__DRAIN_TIMEOUT_SECS",
                    o.drain_timeout_secs.to_string(),
                )
                .set("IACE__SERVER__SHUTDOWN_TIMEOUT_SECS", "5")
                .set("IACE__CALLS__REGISTRY_SHARDS", "1")
                .set("IACE__CALLS__HANGUP_CONFIRM_TIMEOUT_SECS", "2")
                // As in config/test.toml: lingering callers stay silent longer than the limit.
                .set("IACE__CALLS__SILENCE_LIMIT_SECS", "0")
                .set("IACE__CALLS__STALL_LIMIT_SECS", "0")
                .set(
                    "IACE__CALLS__MAX_LIVE_PER_INSTANCE",
                    o.max_live_per_instance.to_string(),
                )
                .set("IACE__DATABASE__POOL_MAX_SIZE", "8")
                .set(
                    "IACE__AUTH__SIGNING_KEY",
                    settings.auth.signing_key.expose(),
                )
                .set("IACE__AUTH__KID", settings.auth.kid.clone())
                .set("IACE__AUTH__PASSWORD_MEMORY_KIB", "1024")
                .set("IACE__AUTH__PASSWORD_ITERATIONS", "1")
                .set("IACE__TELNYX__BASE_URL", sims.telnyx.base_url())
                .set(
                    "IACE__TELNYX__WEBHOOK_PUBLIC_KEY",
                    sims.telnyx.public_key_b64(),
                )
                .set("IACE__DEEPGRAM__BASE_URL", sims.deepgram.base_url())
                .set("IACE__CARTESIA__BASE_URL", sims.cartesia.base_url())
                .set("IACE__GROQ__BASE_URL", sims.groq.base_url())
                // Nothing listens there: retrieval fails fast and the turn goes on without it.
                .set("IACE__GEMINI__BASE_URL", "http://127.0.0.1:9/v1beta")
                .set("IACE__LEARNING__WORKERS", "0")
                .set("IACE__LOG__LEVEL", "warn,iace=info");
            if fly {
                // One public hostname for every instance, as on Fly.
                e.set("IACE__SERVER__PUBLIC_URL", proxy.url());
            }
            for (k, v) in &o.env {
                e.set(k, v.clone());
            }
            async move { EngineProcess::start(&e).await.expect("an instance starts") }
        });
        let engines: Vec<EngineProcess> = futures_util::future::join_all(starts).await;
        proxy.set_upstreams(
            ids.iter()
                .zip(&engines)
                .map(|(id, e)| (id.clone(), addr_of(e.base_url())))
                .collect(),
        );
        sims.telnyx
            .set_webhook_url(&format!("{}/webhooks/telnyx", proxy.url()));
        let cluster = TestCluster {
            db_name,
            database_url,
            organization_id,
            sims,
            proxy,
            engines: engines.into_iter().map(Some).collect(),
            ids,
        };
        cluster.wait_for_directory(o.instances).await;
        cluster
    }

    /// Waits until every instance's heartbeat is in the directory.
    async fn wait_for_directory(&self, n: usize) {
        let redis = deadpool_redis::Config::from_url(test_settings().redis.url.expose())
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .unwrap();
        let directory =
            iace::cluster::Directory::new(redis, &format!("iace-test:{}", self.db_name), 3000);
        crate::helpers::wait_until(
            Duration::from_secs(30),
            "every instance registered",
            || async {
                let all = directory.list().await.ok()?;
                (all.len() == n).then_some(())
            },
        )
        .await;
    }

    pub fn index_of(&self, id: &str) -> usize {
        self.ids
            .iter()
            .position(|i| i == id)
            .expect("known instance")
    }

    /// Places an inbound call from a distinct number; returns Telnyx's call control id.
    pub fn place_call(&self, n: usize) -> String {
        self.sims
            .telnyx
            .place_inbound_call(&format!("+1555{:07}", n), OUR_NUMBER)
    }

    pub async fn db(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.database_url)
            .await
            .expect("test database")
    }

    /// Every call row: (call_control_id, status, end_reason, outcome, owner_instance).
    pub async fn rows(&self) -> Vec<CallRowView> {
        diesel::sql_query(
            "SELECT id, call_control_id, status, end_reason, outcome, owner_instance, \
             (SELECT count(*) FROM utterances u WHERE u.call_id = calls.id) AS utterances \
             FROM calls ORDER BY created_at",
        )
        .load(&mut self.db().await)
        .await
        .expect("call rows")
    }

    /// Waits for `n` callers to finish.
    pub async fn outcomes(&self, n: usize, timeout: Duration) -> Vec<CallerOutcome> {
        let outcomes = self.sims.callers.wait_for_outcomes(n, timeout).await;
        assert_eq!(outcomes.len(), n, "callers finished: {}", self.logs_hint());
        outcomes
    }

    /// Where each instance's log is, for failure messages.
    pub fn logs_hint(&self) -> String {
        self.engines
            .iter()
            .flatten()
            .map(|e| e.log_path().display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// An access token of a new agent user (created in the database, logged in through the
    /// proxy).
    pub async fn agent_token(&self) -> String {
        let hasher = iace::auth::password::PasswordHasher::new(1024, 1).unwrap();
        let email = format!("agent-{}@example.test", uuid::Uuid::new_v4().simple());
        let password = "a long enough password";
        iace::auth::accounts::create_user(
            &mut self.db().await,
            &hasher,
            self.organization_id,
            &email,
            Role::Agent,
            password,
        )
        .await
        .expect("user created");
        let res = reqwest::Client::new()
            .post(format!("{}/api/v1/auth/login", self.proxy.url()))
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("login sent");
        let body: serde_json::Value = res.json().await.expect("login body");
        body["access_token"]
            .as_str()
            .expect("access token")
            .to_owned()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Instances are killed on drop (kill_on_drop) before their database goes.
        self.engines.clear();
        drop_database(&self.db_name);
    }
}

#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct CallRowView {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub id: uuid::Uuid,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub call_control_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub status: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub end_reason: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub outcome: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub owner_instance: Option<String>,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub utterances: i64,
}

fn addr_of(base_url: &str) -> std::net::SocketAddr {
    base_url
        .trim_start_matches("http://")
        .parse()
        .expect("engine address")
}

/// An organization whose agent profile answers [`OUR_NUMBER`].
async fn seed(database_url: &str, escalation_number: Option<String>) -> uuid::Uuid {
    let mut conn = AsyncPgConnection::establish(database_url).await.unwrap();
    let org = iace::auth::accounts::create_org(&mut conn, "cluster")
        .await
        .expect("organization");
    let form = AgentProfileForm {
        name: "cluster support".into(),
        system_prompt: "You are a helpful support agent.".into(),
        greeting: "Hello, how can I help?".into(),
        voice_id: String::new(),
        language: String::new(),
        stt_model: String::new(),
        escalation_threshold: -0.6,
        escalation_number,
        spoken_lines: serde_json::json!({}),
    };
    iace::store::numbers::assign(&mut conn, org.id, OUR_NUMBER)
        .await
        .expect("number assigned");
    agents::create(&mut conn, org.id, &form, &[OUR_NUMBER.to_owned()])
        .await
        .expect("agent profile");
    org.id
}
