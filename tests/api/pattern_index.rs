//! Per-organization pattern search (issue 16): a small organization is searched exactly, a
//! large one through its own partial HNSW index, and neither ever sees another's patterns.
//! Checked against `search_exact` on clustered synthetic vectors, the data on which one
//! shared, filtered HNSW index returned none of the true neighbours for some queries.

use crate::helpers::{spawn_app, wait_until};
use diesel_async::RunQueryDsl;
use iace::domain::embedding::{normalize, Embedding, EMBEDDING_DIMS};
use iace::store::patterns::{self, NewPattern};
use iace::store::schema::patterns as patterns_table;
use pgvector::Vector;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

const MODEL: &str = "test-768";

/// A unit vector near topic `topic` (topics are the first few axes, so they are orthogonal).
fn near(rng: &mut StdRng, topic: usize) -> Vec<f32> {
    let mut values: Vec<f32> = (0..EMBEDDING_DIMS)
        .map(|_| rng.gen_range(-0.04..0.04))
        .collect();
    values[topic] += 1.0;
    normalize(&mut values);
    values
}

fn pattern(org: Uuid, values: Vec<f32>, n: usize) -> NewPattern {
    NewPattern {
        id: Uuid::now_v7(),
        organization_id: org,
        problem: format!("problem {n}"),
        resolution: "resolution".into(),
        embedding: Vector::from(values),
        embedding_model: MODEL.into(),
        success_count: 1,
        failure_count: 0,
        source_call_id: None,
        confirmed: true,
        source_caller: None,
    }
}

fn ids(hits: &[patterns::PatternHit]) -> HashSet<Uuid> {
    hits.iter().map(|h| h.pattern.id).collect()
}

#[actix_web::test]
async fn a_large_organization_gets_its_own_index_and_every_search_stays_within_its_tenant() {
    let app = spawn_app().await;
    let (large, small) = (app.create_org("large").await, app.create_org("small").await);
    let mut conn = app.state.db.get().await.unwrap();
    // Searches run without a transaction: every pooled connection carries the HNSW settings.
    #[derive(diesel::QueryableByName)]
    struct Settings {
        #[diesel(sql_type = diesel::sql_types::Text)]
        ef_search: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        iterative_scan: String,
    }
    let settings: Settings = diesel::sql_query(
        "SELECT current_setting('hnsw.ef_search') AS ef_search, \
         current_setting('hnsw.iterative_scan') AS iterative_scan",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        settings.ef_search,
        app.state.settings.learning.ef_search.to_string()
    );
    assert_eq!(settings.iterative_scan, "relaxed_order");
    let mut rng = StdRng::seed_from_u64(7);
    // 3000 patterns for `large` over 20 topics (a size at which Postgres prefers the index to
    // comparing every row); 40 for `small` on the same topics.
    for (org, n) in [(large, 3000), (small, 40)] {
        let rows: Vec<NewPattern> = (0..n)
            .map(|i| pattern(org, near(&mut rng, i % 20), i))
            .collect();
        for chunk in rows.chunks(500) {
            diesel::insert_into(patterns_table::table)
                .values(chunk)
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }

    // Below the threshold nothing is built; at it, the organization's own index is.
    assert!(!patterns::ensure_org_index(&mut conn, small, 1000)
        .await
        .unwrap());
    assert_eq!(
        patterns::org_index_scans(&mut conn, small).await.unwrap(),
        None
    );
    assert!(patterns::ensure_org_index(&mut conn, large, 1000)
        .await
        .unwrap());
    // Idempotent: a second call finds the valid index.
    assert!(patterns::ensure_org_index(&mut conn, large, 1000)
        .await
        .unwrap());
    let scans_before = patterns::org_index_scans(&mut conn, large)
        .await
        .unwrap()
        .expect("the large organization has its index");

    let mut searches = 0;
    for topic in 0..20 {
        let query = Embedding {
            model: MODEL.into(),
            values: near(&mut rng, topic),
        };
        for org in [large, small] {
            let found = patterns::search(&mut conn, org, &query, 10, -1.0)
                .await
                .unwrap();
            let truth = patterns::search_exact(&mut conn, org, &query, 10)
                .await
                .unwrap();
            assert_eq!(found.len(), 10, "a full top-10 for every organization");
            assert!(
                found.iter().all(|h| h.pattern.organization_id == org),
                "a search never returns another organization's pattern"
            );
            let recall = ids(&found).intersection(&ids(&truth)).count();
            assert!(
                recall >= 9,
                "topic {topic}: recall@10 {recall}/10 for {}",
                if org == large { "large" } else { "small" }
            );
            if org == large {
                searches += 1;
            }
        }
    }
    // The large organization's searches went through its own index (the statistics arrive up
    // to a second after the searching session goes idle).
    drop(conn);
    let state = app.state.clone();
    wait_until(Duration::from_secs(15), "index scans counted", || {
        let state = state.clone();
        async move {
            let mut conn = state.db.get().await.ok()?;
            let scans = patterns::org_index_scans(&mut conn, large).await.ok()??;
            (scans - scans_before >= searches).then_some(())
        }
    })
    .await;
}

#[actix_web::test]
async fn an_import_that_crosses_the_threshold_builds_the_index_in_the_background() {
    let app = crate::helpers::spawn_app_with(|s| s.learning.index_min_rows = 3).await;
    let org = app.create_org("importer").await;
    let token = app.token_for(org, iace::domain::role::Role::Admin).await;
    let pairs: Vec<_> = [
        "Router keeps rebooting at night",
        "Invoice shows a double charge",
        "Cannot log in to the customer portal",
        "Parcel arrived damaged",
    ]
    .iter()
    .map(|p| serde_json::json!({"problem": p, "resolution": "We fixed it"}))
    .collect();
    let res = app
        .post_as(
            &token,
            "/api/v1/patterns/import",
            &serde_json::json!({ "pairs": pairs }),
        )
        .await;
    assert_eq!(res.status(), 200);
    let state = app.state.clone();
    wait_until(Duration::from_secs(30), "the organization's index", || {
        let state = state.clone();
        async move {
            let mut conn = state.db.get().await.ok()?;
            patterns::org_index_scans(&mut conn, org).await.ok()?
        }
    })
    .await;
}
