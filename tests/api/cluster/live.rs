//! Live events across instances: a browser connected to one `iace serve` sees a call owned by
//! another (events go through Redis pub/sub).

use super::fixture::{ClusterOptions, TestCluster, CALLER_LINE};
use crate::live::Sse;
use std::time::Duration;

#[actix_web::test]
async fn a_call_on_one_instance_streams_to_a_browser_on_another() {
    let mut options = ClusterOptions::new("forward");
    options.instances = 2;
    let cluster = TestCluster::start(options).await;
    let token = cluster.agent_token().await;
    let bases: Vec<String> = cluster
        .engines
        .iter()
        .flatten()
        .map(|e| e.base_url().to_owned())
        .collect();
    // One stream on each instance: whichever owns the call, the other one is remote.
    let mut streams = Vec::new();
    for base in &bases {
        streams.push(Sse::open(base, &token).await);
    }
    let ccid = cluster.place_call(1);
    let wait = Duration::from_secs(90);
    let row = crate::helpers::wait_until(wait, "the call row with its owner", || async {
        cluster.rows().await.into_iter().find(|r| {
            r.call_control_id.as_deref() == Some(ccid.as_str()) && r.owner_instance.is_some()
        })
    })
    .await;
    let owner = cluster.index_of(row.owner_instance.as_deref().unwrap());
    let remote = &mut streams[1 - owner];
    let id = row.id.to_string();
    remote
        .until(wait, "call_started on the other instance", |v| {
            v["type"] == "call_started" && v["call_id"] == id
        })
        .await;
    let line = remote
        .until(wait, "the caller's line on the other instance", |v| {
            v["type"] == "transcript" && v["call_id"] == id && v["speaker"] == "caller"
        })
        .await;
    assert_eq!(line["text"], CALLER_LINE, "logs: {}", cluster.logs_hint());
    remote
        .until(wait, "call_ended on the other instance", |v| {
            v["type"] == "call_ended" && v["call_id"] == id
        })
        .await;
}
