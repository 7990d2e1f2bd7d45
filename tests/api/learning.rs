//! Learning from calls: the Gemini embeddings client against its simulator, the local
//! fallback, patterns and caller memory kept per organization, the durable post-call jobs
//! (retries, failure, restart) and retrieval for a live turn within its budget.

use crate::helpers::{respawn_app_with, spawn_app_with, wait_until, TestApp};
use iace::config::{GeminiSettings, Secret, Settings};
use iace::domain::embedding::{Embedding, LOCAL_MODEL};
use iace::domain::role::Role;
use iace::learning::{enqueue_post_call, Embedder};
use iace::providers::gemini::GeminiClient;
use iace::providers::ProviderError;
use iace::sim::gemini::{GeminiFaults, GeminiSim, GeminiSimConfig};
use iace::sim::groq::{GroqFaults, GroqSim, GroqSimConfig};
use iace::store::jobs::JobRow;
use iace::store::memory::{self, NewMemorySnapshot};
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(15);
pub const GEMINI_KEY: &str = "gemini-test-key";

pub fn gemini_settings(sim: &GeminiSim, batch_size: usize) -> GeminiSettings {
    GeminiSettings {
        api_key: Secret::new(GEMINI_KEY),
        base_url: sim.base_url(),
        model: "gemini-embedding-001".into(),
        request_timeout_ms: 2000,
        batch_size,
    }
}

pub fn start_gemini() -> GeminiSim {
    GeminiSim::start(GeminiSimConfig {
        api_key: Some(GEMINI_KEY.into()),
        latency: Duration::from_millis(1),
    })
    .expect("gemini simulator starts")
}

/// An app whose Gemini and Groq are simulators (returned for faults and inspection).
pub async fn learning_app(tweak: impl FnOnce(&mut Settings)) -> (TestApp, GeminiSim, GroqSim) {
    let gemini = start_gemini();
    let groq = GroqSim::start(GroqSimConfig {
        time_to_first_token: Duration::from_millis(5),
        ..GroqSimConfig::default()
    })
    .expect("groq simulator starts");
    let app = spawn_app_with(|s| {
        s.gemini = gemini_settings(&gemini, 100);
        s.groq.base_url = groq.base_url();
        s.learning.workers = 2;
        tweak(s);
    })
    .await;
    (app, gemini, groq)
}

fn norm(values: &[f32]) -> f32 {
    values.iter().map(|v| v * v).sum::<f32>().sqrt()
}

/// An ended call of `org` from `from` with `outcome` and a transcript alternating as given.
pub async fn seed_call(
    app: &TestApp,
    org: Uuid,
    from: &str,
    outcome: &str,
    lines: &[(&str, &str)],
) -> Uuid {
    let call = crate::helpers::SeededCall {
        from,
        to: "+15550009999",
        outcome: Some(outcome),
        ended: true,
        utterances: lines
            .iter()
            .map(|(who, text)| (*who, *text, None))
            .collect(),
        ..Default::default()
    };
    crate::helpers::seed_call(app, org, call).await
}

async fn call_jobs(app: &TestApp, org: Uuid, call_id: Uuid) -> Vec<JobRow> {
    let mut conn = app.state.db.get().await.unwrap();
    iace::store::jobs::list_for_call(&mut conn, org, call_id)
        .await
        .unwrap()
}

/// Waits until every job of the call has stopped running and `kinds` all exist; returns them.
pub async fn settled_jobs(app: &TestApp, org: Uuid, call_id: Uuid, kinds: &[&str]) -> Vec<JobRow> {
    wait_until(WAIT, "the call's jobs to settle", || async {
        let jobs = call_jobs(app, org, call_id).await;
        let all_there = kinds.iter().all(|k| jobs.iter().any(|j| j.kind == *k));
        let settled = jobs
            .iter()
            .all(|j| j.status == "succeeded" || j.status == "failed");
        (all_there && settled).then_some(jobs)
    })
    .await
}

pub const RESOLVED_CALL: &[(&str, &str)] = &[
    ("agent", "Hello, thanks for calling. How can I help?"),
    (
        "caller",
        "Hi, my name is Dana and my internet connection keeps dropping every evening.",
    ),
    ("agent", "I'm sorry to hear that. Let's look at your router."),
    (
        "agent",
        "Please restart the router, then update its firmware from the settings page and switch the wifi channel to 6.",
    ),
    ("caller", "Great, that works now. Thank you!"),
];

#[actix_web::test]
async fn embeddings_client_batches_normalises_and_names_the_model() {
    let sim = start_gemini();
    let client = GeminiClient::new(&gemini_settings(&sim, 100));
    let texts: Vec<String> = (0..250)
        .map(|i| format!("router number {i} keeps rebooting"))
        .collect();
    let docs = client
        .embed_documents(&texts)
        .await
        .expect("documents embed");
    assert_eq!(docs.len(), 250);
    for doc in &docs {
        assert_eq!(doc.model, "gemini-embedding-001");
        assert_eq!(doc.values.len(), 768);
        assert!((norm(&doc.values) - 1.0).abs() < 1e-4, "normalised");
    }
    let batches: Vec<_> = sim.requests();
    assert_eq!(batches.len(), 3, "250 texts in batches of at most 100");
    assert!(batches.iter().all(|r| r.method == "batchEmbedContents"));
    assert_eq!(
        batches.iter().map(|r| r.texts()).collect::<Vec<_>>(),
        vec![100, 100, 50]
    );
    let item = &batches[0].body["requests"][0];
    assert_eq!(item["taskType"], "RETRIEVAL_DOCUMENT");
    assert_eq!(item["outputDimensionality"], 768);
    assert_eq!(item["model"], "models/gemini-embedding-001");

    let query = client
        .embed_query("my router keeps rebooting")
        .await
        .expect("query embeds");
    let last = sim.requests().pop().unwrap();
    assert_eq!(last.method, "embedContent");
    assert_eq!(last.body["taskType"], "RETRIEVAL_QUERY");
    assert!((norm(&query.values) - 1.0).abs() < 1e-4);
    let unrelated = client
        .embed_query("change my billing address")
        .await
        .unwrap();
    assert!(
        query.similarity(&docs[0]).unwrap() > query.similarity(&unrelated).unwrap() + 0.3,
        "texts sharing words lie closer"
    );

    let wrong_key = GeminiClient::new(&GeminiSettings {
        api_key: Secret::new("wrong"),
        ..gemini_settings(&sim, 100)
    });
    let err = wrong_key.embed_query("hello there").await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    sim.set_faults(GeminiFaults {
        rate_limit_next: 1,
        ..GeminiFaults::default()
    });
    let err = client.embed_query("router").await.unwrap_err();
    assert!(matches!(err, ProviderError::RateLimited { .. }), "{err}");
}

#[actix_web::test]
async fn the_local_embedder_serves_when_gemini_is_down_or_unconfigured() {
    let sim = start_gemini();
    let embedder = Embedder::new(&gemini_settings(&sim, 100));
    assert_eq!(embedder.preferred_model(), "gemini-embedding-001");
    assert_eq!(
        embedder.embed_query("router reboots").await.model,
        "gemini-embedding-001"
    );
    // A 5xx: a query falls back at once, documents are left to the job's retry.
    sim.set_faults(GeminiFaults {
        fail_next: 2,
        ..GeminiFaults::default()
    });
    assert_eq!(
        embedder.embed_query("router reboots").await.model,
        LOCAL_MODEL
    );
    assert!(embedder
        .embed_documents(&["router reboots".to_owned()])
        .await
        .is_err());

    sim.stop().await;
    let query = embedder.embed_query("router reboots").await;
    assert_eq!(query.model, LOCAL_MODEL);
    assert!((norm(&query.values) - 1.0).abs() < 1e-4);
    let docs = embedder
        .embed_documents(&["router reboots".to_owned(), "billing".to_owned()])
        .await
        .expect("the local embedder serves documents while Gemini is down");
    assert!(docs.iter().all(|d| d.model == LOCAL_MODEL));
    assert!(query.similarity(&docs[0]).unwrap() > 0.99);

    let unconfigured = Embedder::new(&GeminiSettings {
        api_key: Secret::new(""),
        base_url: "https://generativelanguage.googleapis.com/v1beta".into(),
        model: "gemini-embedding-001".into(),
        request_timeout_ms: 1000,
        batch_size: 100,
    });
    assert_eq!(unconfigured.preferred_model(), LOCAL_MODEL);
    assert_eq!(
        unconfigured.embed_query("anything").await.model,
        LOCAL_MODEL
    );
}

#[actix_web::test]
async fn organization_a_never_retrieves_organization_b_patterns_or_memories() {
    let (app, _gemini, _groq) = learning_app(|_| {}).await;
    let (org_a, org_b) = (app.create_org("a").await, app.create_org("b").await);
    let (token_a, token_b) = (
        app.token_for(org_a, Role::Admin).await,
        app.token_for(org_b, Role::Admin).await,
    );
    let pair = json!({"pairs": [{"problem": "Router keeps rebooting at night",
                                 "resolution": "Replace the power adapter"}]});
    let res = app
        .post_as(&token_b, "/api/v1/patterns/import", &pair)
        .await;
    assert_eq!(res.status(), 200);
    let b_pattern = res.json::<Value>().await.unwrap()["results"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Org A has nothing: B's pattern is invisible to search, list, read, edit and delete.
    let (status, found) = app
        .get_json(
            &token_a,
            "/api/v1/patterns/search?q=router%20rebooting&min_similarity=-1",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(found["data"], json!([]));
    let (_, list) = app.get_json(&token_a, "/api/v1/patterns").await;
    assert_eq!(list["data"], json!([]));
    let path = format!("/api/v1/patterns/{b_pattern}");
    assert_eq!(app.get_as(&token_a, &path).await.status(), 404);
    let patch = app
        .patch_as(&token_a, &path, &json!({"resolution": "hijacked"}))
        .await;
    assert_eq!(patch.status(), 404);
    let delete = app
        .send_as(reqwest::Method::DELETE, &token_a, &path, &json!({}))
        .await;
    assert_eq!(delete.status(), 404);
    // Org B still sees its own.
    let (_, found) = app
        .get_json(&token_b, "/api/v1/patterns/search?q=router%20rebooting")
        .await;
    assert_eq!(found["data"][0]["id"], b_pattern);
    assert_eq!(found["data"][0]["resolution"], "Replace the power adapter");

    // The same caller number in both organizations: each sees only its own memory.
    let number = "+15550004444";
    let mut conn = app.state.db.get().await.unwrap();
    let snapshot = NewMemorySnapshot::new(
        org_b,
        number,
        None,
        "Prefers email",
        &["my plan is gold".to_owned()],
        iace::domain::embedding::local_embedding("Prefers email"),
    );
    memory::insert(&mut conn, &snapshot).await.unwrap();
    drop(conn);
    let memory_path = format!("/api/v1/callers/{number}/memory");
    assert_eq!(app.get_as(&token_a, &memory_path).await.status(), 404);
    let (status, memory_b) = app.get_json(&token_b, &memory_path).await;
    assert_eq!(status, 200);
    assert_eq!(memory_b["summary"], "Prefers email");

    let retriever = &app.state.learning.retriever;
    let budget = Duration::from_secs(2);
    let a = retriever
        .context_for_turn(org_a, number, "my router keeps rebooting", budget)
        .await;
    assert!(
        a.patterns.is_empty() && a.memory.is_none() && !a.timed_out,
        "{a:?}"
    );
    assert_eq!(a.prompt_section(), "");
    let b = retriever
        .context_for_turn(org_b, number, "my router keeps rebooting", budget)
        .await;
    assert_eq!(b.patterns.len(), 1);
    assert_eq!(b.memory.as_ref().unwrap().summary, "Prefers email");
}

#[actix_web::test]
async fn importing_a_near_duplicate_reinforces_the_existing_pattern() {
    let (app, gemini, _groq) = learning_app(|_| {}).await;
    let org = app.create_org("kb").await;
    let token = app.token_for(org, Role::Agent).await;
    let first = json!({"pairs": [
        {"problem": "The router keeps rebooting", "resolution": "Replace the power adapter"},
        {"problem": "Invoice shows a double charge", "resolution": "Refund the duplicate"}
    ]});
    let res = app.post_as(&token, "/api/v1/patterns/import", &first).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (body["inserted"].clone(), body["reinforced"].clone()),
        (json!(2), json!(0))
    );
    let router_id = body["results"][0]["id"].clone();

    let again = json!({"pairs": [
        {"problem": "router keeps REBOOTING!", "resolution": "Swap the adapter"}
    ]});
    let body: Value = app
        .post_as(&token, "/api/v1/patterns/import", &again)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["results"][0],
        json!({"action": "reinforced", "id": router_id})
    );
    let (_, list) = app.get_json(&token, "/api/v1/patterns").await;
    let list = list["data"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "no duplicate inserted");
    let router = list.iter().find(|p| p["id"] == router_id).unwrap();
    assert_eq!(router["success_count"], 2);
    assert_eq!(router["resolution"], "Replace the power adapter");
    assert_eq!(router["embedding_model"], "gemini-embedding-001");
    assert!(gemini
        .requests()
        .iter()
        .all(|r| r.method == "batchEmbedContents"));

    // Editing the problem re-embeds it; deleting needs an admin.
    let path = format!("/api/v1/patterns/{}", router_id.as_str().unwrap());
    let res = app
        .patch_as(
            &token,
            &path,
            &json!({"problem": "Modem restarts by itself"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let (_, found) = app
        .get_json(&token, "/api/v1/patterns/search?q=modem%20restarts")
        .await;
    assert_eq!(found["data"][0]["id"], router_id);
    let delete = app
        .send_as(reqwest::Method::DELETE, &token, &path, &json!({}))
        .await;
    assert_eq!(delete.status(), 403);
}

#[actix_web::test]
async fn a_failing_job_is_retried_and_then_succeeds() {
    let (app, _gemini, groq) = learning_app(|_| {}).await;
    let org = app.create_org("retry").await;
    let token = app.token_for(org, Role::Viewer).await;
    let call = seed_call(&app, org, "+15550002222", "escalated", RESOLVED_CALL).await;
    groq.set_faults(GroqFaults {
        fail_next: 2,
        ..GroqFaults::default()
    });
    let mut conn = app.state.db.get().await.unwrap();
    assert!(enqueue_post_call(&mut conn, org, call).await.unwrap());
    assert!(
        !enqueue_post_call(&mut conn, org, call).await.unwrap(),
        "queued once per call"
    );
    drop(conn);
    let jobs = settled_jobs(&app, org, call, &["summarize_call", "write_memory"]).await;
    let summarize = jobs.iter().find(|j| j.kind == "summarize_call").unwrap();
    assert_eq!(summarize.status, "succeeded");
    assert_eq!(summarize.attempts, 3, "two 503s, then success");
    assert!(
        !jobs.iter().any(|j| j.kind == "extract_patterns"),
        "an escalated call teaches no pattern"
    );
    let (status, summary) = app
        .get_json(&token, &format!("/api/v1/calls/{call}/summary"))
        .await;
    assert_eq!(status, 200);
    assert!(summary["summary"]
        .as_str()
        .unwrap()
        .contains("internet connection"));
    assert_eq!(
        summary["outcome"], "escalated",
        "the call's own outcome is kept"
    );
    let (status, listed) = app
        .get_json(&token, &format!("/api/v1/calls/{call}/jobs"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
}

#[actix_web::test]
async fn a_job_that_always_fails_ends_failed_with_its_error() {
    let (app, _gemini, groq) = learning_app(|_| {}).await;
    let org = app.create_org("doomed").await;
    let call = seed_call(&app, org, "+15550003333", "resolved", RESOLVED_CALL).await;
    groq.set_faults(GroqFaults {
        fail_next: 1000,
        ..GroqFaults::default()
    });
    let mut conn = app.state.db.get().await.unwrap();
    enqueue_post_call(&mut conn, org, call).await.unwrap();
    drop(conn);
    let jobs = settled_jobs(&app, org, call, &["summarize_call"]).await;
    assert_eq!(jobs.len(), 1, "nothing follows a failed summary");
    let job = &jobs[0];
    assert_eq!(job.status, "failed");
    assert_eq!(job.attempts, job.max_attempts);
    let error = job.last_error.as_deref().unwrap();
    assert!(error.contains("groq") && error.contains("503"), "{error}");
    let token = app.token_for(org, Role::Viewer).await;
    let (_, listed) = app
        .get_json(&token, &format!("/api/v1/calls/{call}/jobs"))
        .await;
    assert_eq!(listed["data"][0]["status"], "failed");
    assert!(listed["data"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("503"));
}

#[actix_web::test]
async fn jobs_are_deferred_while_the_post_call_groq_breaker_is_open_then_succeed() {
    let (app, _gemini, groq) = learning_app(|s| {
        s.breakers.failures_to_open = 2;
        s.breakers.open_ms = 1000;
        s.breakers.open_max_ms = 2000;
    })
    .await;
    let org = app.create_org("deferred").await;
    groq.set_faults(GroqFaults {
        down: true,
        ..GroqFaults::default()
    });
    let mut calls = Vec::new();
    for (i, number) in ["+15550012221", "+15550012222", "+15550012223"]
        .into_iter()
        .enumerate()
    {
        let call = seed_call(&app, org, number, "resolved", RESOLVED_CALL).await;
        let mut conn = app.state.db.get().await.unwrap();
        assert!(
            enqueue_post_call(&mut conn, org, call).await.unwrap(),
            "{i}"
        );
        calls.push(call);
    }
    // Groq answers 500 to everything: two failures open the post-call breaker, and the jobs
    // refused by it come back later instead of spending their attempts.
    let breaker = &app.state.breakers.groq_post_call;
    wait_until(WAIT, "the post-call breaker to open", || async {
        (breaker.snapshot().last_trip.is_some()).then_some(())
    })
    .await;
    let deferred = || async {
        let text = app.ops_get("/metrics").await.text().await.unwrap();
        text.lines()
            .filter(|l| {
                l.starts_with("iace_learning_jobs_total{") && l.contains("result=\"deferred\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    wait_until(Duration::from_secs(30), "four deferrals", || async {
        (deferred().await >= 4.0).then_some(())
    })
    .await;
    // Through the deferrals (and a half-open probe or two) no job has failed, and the attempts
    // counted are the requests Groq really got: a deferral gives its attempt back.
    let mut jobs = Vec::new();
    for call in &calls {
        jobs.extend(call_jobs(&app, org, *call).await);
    }
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| j.status != "failed"), "{jobs:?}");
    let running = jobs.iter().filter(|j| j.status == "running").count();
    let attempts: i32 = jobs.iter().map(|j| j.attempts).sum();
    let served = groq.requests().len();
    assert!(
        usize::try_from(attempts).unwrap() <= served + running,
        "attempts {attempts} > Groq requests {served} + running {running}"
    );
    assert!(
        jobs.iter().any(|j| j
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("circuit breaker is open"))),
        "{jobs:?}"
    );

    // Groq is back: the next probe closes the breaker and every job succeeds.
    groq.set_faults(GroqFaults::default());
    let token = app.token_for(org, Role::Viewer).await;
    for call in &calls {
        let jobs = settled_jobs(&app, org, *call, &["summarize_call"]).await;
        let summarize = jobs.iter().find(|j| j.kind == "summarize_call").unwrap();
        assert_eq!(summarize.status, "succeeded", "{summarize:?}");
        let (status, summary) = app
            .get_json(&token, &format!("/api/v1/calls/{call}/summary"))
            .await;
        assert_eq!(status, 200);
        assert!(summary["summary"].is_string(), "{summary}");
    }
}

#[actix_web::test]
async fn jobs_pending_at_shutdown_run_after_a_restart() {
    let (first, gemini, groq) = learning_app(|s| s.learning.workers = 0).await;
    let org = first.create_org("restart").await;
    let pending = seed_call(&first, org, "+15550005555", "resolved", RESOLVED_CALL).await;
    let lost = seed_call(&first, org, "+15550006666", "abandoned", RESOLVED_CALL).await;
    let mut conn = first.state.db.get().await.unwrap();
    enqueue_post_call(&mut conn, org, pending).await.unwrap();
    enqueue_post_call(&mut conn, org, lost).await.unwrap();
    // The second one was running on a worker that died with its instance an hour ago.
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(
            "UPDATE jobs SET status = 'running', attempts = 1, locked_by = 'dead:1', \
             locked_at = now() - interval '1 hour' WHERE call_id = $1",
        )
        .bind::<diesel::sql_types::Uuid, _>(lost),
        &mut conn,
    )
    .await
    .unwrap();
    drop(conn);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(call_jobs(&first, org, pending)
        .await
        .iter()
        .all(|j| j.status == "pending"));
    first.shutdown.shutdown().await;

    let second = respawn_app_with(&first, |s| {
        s.gemini = gemini_settings(&gemini, 100);
        s.groq.base_url = groq.base_url();
        s.learning.workers = 2;
        s.learning.lease_secs = 1;
    })
    .await;
    let jobs = settled_jobs(
        &second,
        org,
        pending,
        &["summarize_call", "extract_patterns", "write_memory"],
    )
    .await;
    assert!(jobs.iter().all(|j| j.status == "succeeded"), "{jobs:?}");
    let reclaimed = settled_jobs(&second, org, lost, &["summarize_call", "write_memory"]).await;
    let summarize = reclaimed
        .iter()
        .find(|j| j.kind == "summarize_call")
        .unwrap();
    assert_eq!(summarize.status, "succeeded");
    assert_eq!(summarize.attempts, 2, "the lost attempt counts");
}

#[actix_web::test]
async fn a_resolved_call_teaches_a_pattern_and_a_memory_that_a_later_turn_retrieves() {
    // Served at once: waiting for a confirmation is tested in security.rs.
    let (app, _gemini, groq) = learning_app(|s| s.learning.confirm_patterns = false).await;
    let org = app.create_org("learn").await;
    let token = app.token_for(org, Role::Viewer).await;
    let caller = "+15550001111";
    let call = seed_call(&app, org, caller, "resolved", RESOLVED_CALL).await;
    let mut conn = app.state.db.get().await.unwrap();
    enqueue_post_call(&mut conn, org, call).await.unwrap();
    drop(conn);
    let jobs = settled_jobs(
        &app,
        org,
        call,
        &["summarize_call", "extract_patterns", "write_memory"],
    )
    .await;
    assert!(jobs.iter().all(|j| j.status == "succeeded"), "{jobs:?}");

    let prompts: Vec<String> = groq
        .requests()
        .iter()
        .filter_map(|r| r.chat()?.system_prompt().map(str::to_owned))
        .collect();
    for marker in [
        "Summarise this call",
        "Extract problem and resolution pairs",
        "caller memory",
    ] {
        assert!(prompts.iter().any(|p| p.contains(marker)), "{marker} asked");
    }

    let (_, patterns) = app.get_json(&token, "/api/v1/patterns").await;
    let learnt = &patterns["data"][0];
    assert_eq!(learnt["source_call_id"], call.to_string());
    assert!(learnt["resolution"].as_str().unwrap().contains("firmware"));
    let (status, memory) = app
        .get_json(&token, &format!("/api/v1/callers/{caller}/memory"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(memory["call_id"], call.to_string());
    assert!(
        memory["facts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().contains("Dana")),
        "{memory}"
    );

    // A later call from the same number, with a similar question.
    let context = app
        .state
        .learning
        .retriever
        .context_for_turn(
            org,
            caller,
            "my internet keeps dropping in the evening",
            Duration::from_secs(2),
        )
        .await;
    assert!(!context.timed_out);
    assert_eq!(context.patterns.len(), 1, "{context:?}");
    assert!(context.patterns[0].similarity >= 0.5);
    let prompt = context.prompt_section();
    assert!(prompt.contains("update its firmware"), "{prompt}");
    assert!(prompt.contains("Dana"), "{prompt}");
    // An unrelated question from a new caller gets neither.
    let other = app
        .state
        .learning
        .retriever
        .context_for_turn(
            org,
            "+15550007777",
            "how do I change my billing address",
            Duration::from_secs(2),
        )
        .await;
    assert!(
        other.patterns.is_empty() && other.memory.is_none(),
        "{other:?}"
    );
}

#[actix_web::test]
async fn retrieval_with_embeddings_stalled_returns_within_the_budget() {
    let (app, gemini, _groq) = learning_app(|s| s.gemini.request_timeout_ms = 5000).await;
    let org = app.create_org("stall").await;
    let caller = "+15550008888";
    let mut conn = app.state.db.get().await.unwrap();
    let snapshot = NewMemorySnapshot::new(
        org,
        caller,
        None,
        "Called twice about slow wifi",
        &[],
        Embedding::new(LOCAL_MODEL, vec![1.0; 768]),
    );
    memory::insert(&mut conn, &snapshot).await.unwrap();
    drop(conn);
    gemini.set_faults(GeminiFaults {
        stall: Some(Duration::from_secs(3)),
        ..GeminiFaults::default()
    });
    let started = std::time::Instant::now();
    let context = app
        .state
        .learning
        .retriever
        .context_for_turn(
            org,
            caller,
            "the wifi is slow again",
            Duration::from_millis(200),
        )
        .await;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(600), "took {elapsed:?}");
    assert!(context.timed_out);
    assert!(context.patterns.is_empty());
    assert_eq!(
        context.memory.map(|m| m.summary).as_deref(),
        Some("Called twice about slow wifi"),
        "what was ready in time is kept"
    );
    let metrics = app.ops_get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("iace_retrieval_duration_seconds_count{result=\"timed_out\"} 1"),
        "{metrics}"
    );
}
