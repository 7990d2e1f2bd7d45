//! Admission control's CPU watermark (`calls.max_cpu_percent`): while the process is busy above
//! it, `POST /api/v1/calls` answers 503 `at_capacity`; once it cools down, calls are placed again.
//! The engine runs in this process, so threads spinning here are its CPU use.

use crate::helpers::{spawn_app_with, wait_until};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const NUMBER: &str = "+15550311004";

#[actix_web::test]
async fn above_the_cpu_watermark_new_calls_are_refused_and_placed_again_once_it_cools() {
    let _exclusive = super::process_exclusive().await;
    let app = spawn_app_with(|s| {
        s.calls.max_cpu_percent = 25;
        s.cluster.heartbeat_interval_ms = 250;
    })
    .await;
    let t = app.create_tenant(NUMBER).await;
    let body = json!({ "to": "+15558880004", "from": NUMBER, "agent_profile_id": t.agent_id });

    // Two spinning threads per core: far above a quarter of the machine.
    let spin = Arc::new(AtomicBool::new(true));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spinners: Vec<_> = (0..cores * 2)
        .map(|_| {
            let spin = spin.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while spin.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                x
            })
        })
        .collect();
    let refused = wait_until(Duration::from_secs(30), "a refusal while hot", || async {
        let res = app.place_call(&t.token, &body).await;
        (res.status() == 503).then_some(res)
    })
    .await;
    spin.store(false, Ordering::Relaxed);
    for s in spinners {
        let _ = s.join();
    }
    assert!(refused.headers().contains_key("retry-after"));
    let refusal: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(refusal["code"], "at_capacity", "{refusal}");
    let metrics = app.ops_get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("iace_calls_refused_total{source=\"api\"}"),
        "refusal counted"
    );

    // Cooled down: the next heartbeat's sample lets calls in again.
    let placed = wait_until(
        Duration::from_secs(30),
        "a call placed once cool",
        || async {
            let res = app.place_call(&t.token, &body).await;
            (res.status() == 202).then_some(res)
        },
    )
    .await;
    let call: serde_json::Value = placed.json().await.unwrap();
    assert_eq!(call["status"], "dialing", "{call}");
}
