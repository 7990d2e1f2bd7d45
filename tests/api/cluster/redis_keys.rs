//! The directory and the call leases against the real Redis: a lease is renewed and released
//! only by its holder; an instance that stops beating drops out of the directory.

use crate::helpers::test_settings;
use iace::cluster::{Directory, InstanceInfo, Leases};
use iace::domain::call::CallId;
use std::time::Duration;

fn pool() -> iace::store::RedisPool {
    iace::store::pool::redis_pool(&test_settings().redis).expect("redis pool")
}

fn prefix() -> String {
    format!("iace-test:{}", uuid::Uuid::new_v4().simple())
}

#[actix_web::test]
async fn a_call_lease_is_held_renewed_and_released_only_by_its_owner() {
    // A time-to-live far above the renew interval: a loaded machine may stretch each sleep.
    let leases = Leases::new(pool(), &prefix(), 2000);
    let call = CallId::new();
    assert!(leases.acquire(call, "a").await.unwrap());
    assert!(leases.acquire(call, "a").await.unwrap(), "the holder again");
    assert!(
        !leases.acquire(call, "b").await.unwrap(),
        "not another instance"
    );
    assert_eq!(leases.owner(call).await.unwrap().as_deref(), Some("a"));
    assert!(
        !leases.release(call, "b").await.unwrap(),
        "compare-and-delete"
    );
    assert_eq!(leases.renew(&[call], "b").await.unwrap(), 0);
    // Renewed by its holder, the lease outlives its first time-to-live.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(leases.renew(&[call], "a").await.unwrap(), 1);
    }
    assert_eq!(leases.owner(call).await.unwrap().as_deref(), Some("a"));
    assert!(leases.release(call, "a").await.unwrap());
    assert_eq!(leases.owner(call).await.unwrap(), None);
    // A take-over is claimed once.
    assert!(leases.claim_takeover(call, "b").await.unwrap());
    assert!(!leases.claim_takeover(call, "c").await.unwrap());
}

fn info(id: &str) -> InstanceInfo {
    InstanceInfo {
        id: id.into(),
        region: "local".into(),
        private_url: "http://127.0.0.1:1".into(),
        public_url: "http://127.0.0.1:1".into(),
        live_calls: 1,
        capacity: 5,
        draining: false,
        cpu_hot: false,
        beat_at_ms: 0,
    }
}

#[actix_web::test]
async fn an_instance_that_stops_beating_drops_out_of_the_directory() {
    // Beats every 500 ms against a 2 s time-to-live: slack for a loaded machine.
    let directory = Directory::new(pool(), &prefix(), 2000);
    directory.beat(&info("a")).await.unwrap();
    directory.beat(&info("b")).await.unwrap();
    let mut ids: Vec<String> = directory
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["a", "b"]);
    // "b" keeps beating, "a" stops.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        directory.beat(&info("b")).await.unwrap();
    }
    let ids: Vec<String> = directory
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, ["b"]);
    assert_eq!(directory.get("a").await.unwrap(), None);
    directory.leave("b").await.unwrap();
    assert!(directory.list().await.unwrap().is_empty());
}

/// How many commands named `command` a Redis has run (`INFO commandstats`).
async fn commands_run(client: &deadpool_redis::redis::Client, command: &str) -> u64 {
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = deadpool_redis::redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[actix_web::test]
async fn heartbeats_and_renewals_keep_one_connection_and_outlive_a_redis_restart() {
    let port = crate::helpers::free_port();
    let redis = crate::services::PrivateRedis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let mut settings = test_settings().redis;
    settings.url = iace::config::Secret::new(url.clone());
    // One connection in the pool: the kept ones are taken out of it, so they never leave the
    // rest of the instance (here: each other and the lease checkouts) without one.
    settings.pool_max_size = 1;
    let pool = iace::store::pool::redis_pool(&settings).expect("redis pool");
    let client = deadpool_redis::redis::Client::open(url).unwrap();
    let (directory, leases) = (
        Directory::new(pool.clone(), &prefix(), 5000),
        Leases::new(pool, &prefix(), 5000),
    );
    let call = CallId::new();
    assert!(leases.acquire(call, "a").await.unwrap());
    let pings_before = commands_run(&client, "ping").await;
    for _ in 0..5 {
        directory.beat(&info("a")).await.unwrap();
        assert_eq!(leases.renew(&[call], "a").await.unwrap(), 1);
    }
    // A pool checkout pings the connection it hands out: one per beat and per renewal before
    // they kept their connections; now at most the first checkout of each.
    let pings = commands_run(&client, "ping").await - pings_before;
    assert!(pings <= 2, "{pings} PINGs for 5 beats and 5 renewals");

    // Redis restarts (empty): the kept connections are dead, and the very next beat still
    // lands, on a new one.
    drop(redis);
    let _redis = crate::services::PrivateRedis::start(port);
    directory
        .beat(&info("a"))
        .await
        .expect("the first beat after the restart");
    assert_eq!(
        directory.get("a").await.unwrap().map(|i| i.id).as_deref(),
        Some("a")
    );
    assert!(leases.acquire(call, "a").await.unwrap());
    assert_eq!(
        leases
            .renew(&[call], "a")
            .await
            .expect("the first renewal after the restart"),
        1
    );
}
