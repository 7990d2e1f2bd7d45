//! `iace bench vector`: loads synthetic 768-dimension patterns into a scratch database (created
//! and dropped here), then measures filtered top-10 search as the engine runs it
//! (`store::patterns::search`: one organization; its own HNSW index when it has
//! `index_min_rows` patterns, exact below) against exact search
//! (`store::patterns::search_exact`), reporting latency percentiles and recall@10.

use super::scratch::ScratchDb;
use super::stats::percentile_ms as percentile;
use crate::domain::embedding::{normalize, Embedding, EMBEDDING_DIMS};
use crate::store::patterns::{self, NewPattern};
use crate::store::schema::{organizations, patterns as patterns_table};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use pgvector::Vector;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What to measure.
#[derive(Debug, Clone)]
pub struct VectorBenchOptions {
    pub rows: usize,
    pub queries: usize,
    pub orgs: usize,
    pub ef_search: u32,
    /// Patterns an organization needs for its own HNSW index.
    pub index_min_rows: i64,
    /// Topics the synthetic problems cluster around.
    pub clusters: usize,
    pub seed: u64,
}

/// What was measured (printed as a table and as JSON).
#[derive(Debug, Clone, serde::Serialize)]
pub struct VectorBenchReport {
    pub rows: usize,
    pub orgs: usize,
    pub queries: usize,
    pub dims: usize,
    pub k: i64,
    pub ef_search: u32,
    pub index_min_rows: i64,
    /// Organizations that got their own HNSW index.
    pub orgs_indexed: usize,
    /// Timed searches an organization's own index served (from `pg_stat_user_indexes`).
    pub searches_by_index: i64,
    pub load_secs: f64,
    pub index_build_secs: f64,
    pub search_p50_ms: f64,
    pub search_p95_ms: f64,
    pub search_p99_ms: f64,
    pub search_mean_ms: f64,
    pub exact_p50_ms: f64,
    pub exact_p95_ms: f64,
    pub recall_at_10: f64,
    pub recall_at_10_min: f64,
}

const MODEL: &str = "bench-768";
const K: i64 = 10;
const BATCH: usize = 1000;
/// Spread of a problem around its topic (per dimension): neighbours at cosine ~0.5.
const NOISE: f32 = 0.04;

/// Runs the benchmark against the server of `database_url` (any database on it: the scratch
/// database is created beside it and dropped afterwards, also on failure).
pub fn vector(
    database_url: &str,
    options: &VectorBenchOptions,
) -> anyhow::Result<VectorBenchReport> {
    let scratch = ScratchDb::create(database_url)?;
    let url = scratch.url().to_owned();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(&url, options))
}

async fn run(url: &str, o: &VectorBenchOptions) -> anyhow::Result<VectorBenchReport> {
    let mut conn = AsyncPgConnection::establish(url).await?;
    // As every pooled connection of the engine is set up.
    patterns::configure_session(&mut conn, o.ef_search).await?;
    let mut rng = StdRng::seed_from_u64(o.seed);
    let orgs: Vec<Uuid> = (0..o.orgs.max(1)).map(|_| Uuid::new_v4()).collect();
    let rows: Vec<_> = orgs
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                organizations::id.eq(*id),
                organizations::name.eq(format!("bench-{i}")),
            )
        })
        .collect();
    diesel::insert_into(organizations::table)
        .values(rows)
        .execute(&mut conn)
        .await?;
    let centers: Vec<Vec<f32>> = (0..o.clusters.max(1))
        .map(|_| unit(gaussian(&mut rng, EMBEDDING_DIMS, 1.0)))
        .collect();

    let started = Instant::now();
    let mut loaded = 0;
    while loaded < o.rows {
        let n = BATCH.min(o.rows - loaded);
        let batch: Vec<NewPattern> = (0..n)
            .map(|_| {
                let org = orgs[rng.gen_range(0..orgs.len())];
                let topic = rng.gen_range(0..centers.len());
                let values = near(&mut rng, &centers[topic]);
                NewPattern {
                    id: Uuid::now_v7(),
                    organization_id: org,
                    problem: format!("synthetic problem of topic {topic}"),
                    resolution: "synthetic resolution".into(),
                    embedding: Vector::from(values),
                    embedding_model: MODEL.into(),
                    success_count: 1,
                    failure_count: 0,
                    source_call_id: None,
                    confirmed: true,
                    source_caller: None,
                }
            })
            .collect();
        diesel::insert_into(patterns_table::table)
            .values(&batch)
            .execute(&mut conn)
            .await?;
        loaded += n;
    }
    let load_secs = started.elapsed().as_secs_f64();
    eprintln!("bench: loaded {loaded} rows in {load_secs:.1} s; building per-organization indexes");

    // As the engine does after learning or an import: every organization at or above the
    // threshold gets its own index (built after the load: far faster than per insert).
    let started = Instant::now();
    conn.batch_execute(
        "SET maintenance_work_mem = '1GB'; SET max_parallel_maintenance_workers = 1",
    )
    .await?;
    let mut orgs_indexed = 0;
    for org in &orgs {
        if patterns::ensure_org_index(&mut conn, *org, o.index_min_rows).await? {
            orgs_indexed += 1;
        }
    }
    conn.batch_execute("ANALYZE patterns").await?;
    let index_build_secs = started.elapsed().as_secs_f64();
    eprintln!("bench: {orgs_indexed} indexes built in {index_build_secs:.1} s; searching");

    let queries: Vec<(Uuid, Embedding)> = (0..o.queries.max(1))
        .map(|_| {
            let org = orgs[rng.gen_range(0..orgs.len())];
            let topic = rng.gen_range(0..centers.len());
            let values = near(&mut rng, &centers[topic]);
            (
                org,
                Embedding {
                    model: MODEL.into(),
                    values,
                },
            )
        })
        .collect();
    // Warm the caches (index pages, plans) before timing anything.
    for (org, query) in queries.iter().take(20) {
        patterns::search(&mut conn, *org, query, K, -1.0).await?;
    }
    let scans_before = index_scans(&mut conn, &orgs).await?;
    // The timed searches run in one pass, as a live engine serves them; the exact references
    // come after. Interleaved, each exact scan (every heap page of the organization) would
    // evict the index pages the next timed search needs, which a serving engine keeps warm.
    let mut fast = Vec::with_capacity(queries.len());
    let mut answers = Vec::with_capacity(queries.len());
    for (org, query) in &queries {
        let started = Instant::now();
        answers.push(patterns::search(&mut conn, *org, query, K, -1.0).await?);
        fast.push(started.elapsed());
    }
    let (mut exact, mut recalls) = (Vec::new(), Vec::new());
    for ((org, query), found) in queries.iter().zip(&answers) {
        let started = Instant::now();
        let truth = patterns::search_exact(&mut conn, *org, query, K).await?;
        exact.push(started.elapsed());
        let truth: HashSet<Uuid> = truth.iter().map(|h| h.pattern.id).collect();
        let hits = found
            .iter()
            .filter(|h| truth.contains(&h.pattern.id))
            .count();
        recalls.push(hits as f64 / truth.len().max(1) as f64);
    }
    // The statistics reach pg_stat_user_indexes up to a second after a session goes idle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let searches_by_index = index_scans(&mut conn, &orgs).await? - scans_before;
    fast.sort();
    exact.sort();
    let mean = fast.iter().sum::<Duration>().as_secs_f64() * 1000.0 / fast.len() as f64;
    Ok(VectorBenchReport {
        rows: o.rows,
        orgs: orgs.len(),
        queries: queries.len(),
        dims: EMBEDDING_DIMS,
        k: K,
        ef_search: o.ef_search,
        index_min_rows: o.index_min_rows,
        orgs_indexed,
        searches_by_index,
        load_secs,
        index_build_secs,
        search_p50_ms: percentile(&fast, 0.50),
        search_p95_ms: percentile(&fast, 0.95),
        search_p99_ms: percentile(&fast, 0.99),
        search_mean_ms: mean,
        exact_p50_ms: percentile(&exact, 0.50),
        exact_p95_ms: percentile(&exact, 0.95),
        recall_at_10: recalls.iter().sum::<f64>() / recalls.len() as f64,
        recall_at_10_min: recalls.iter().copied().fold(1.0, f64::min),
    })
}

impl VectorBenchReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        format!(
            "vector search: {} rows x {} dims, {} orgs (filtered to one per query), {} queries, top-{}, hnsw.ef_search={}, index_min_rows={}\n\
             | metric                     | value      |\n\
             |----------------------------|------------|\n\
             | load (multi-row inserts)   | {:>8.1} s |\n\
             | orgs with their own index  | {:>10} |\n\
             | HNSW index builds          | {:>8.1} s |\n\
             | searches served by an index| {:>10} |\n\
             | search p50                 | {:>7.2} ms |\n\
             | search p95                 | {:>7.2} ms |\n\
             | search p99                 | {:>7.2} ms |\n\
             | search mean                | {:>7.2} ms |\n\
             | exact search p50 (no index)| {:>7.2} ms |\n\
             | exact search p95 (no index)| {:>7.2} ms |\n\
             | recall@10 (mean)           | {:>10.4} |\n\
             | recall@10 (worst query)    | {:>10.4} |",
            self.rows,
            self.dims,
            self.orgs,
            self.queries,
            self.k,
            self.ef_search,
            self.index_min_rows,
            self.load_secs,
            self.orgs_indexed,
            self.index_build_secs,
            self.searches_by_index,
            self.search_p50_ms,
            self.search_p95_ms,
            self.search_p99_ms,
            self.search_mean_ms,
            self.exact_p50_ms,
            self.exact_p95_ms,
            self.recall_at_10,
            self.recall_at_10_min,
        )
    }
}

/// Index scans served so far by the organizations' own indexes.
async fn index_scans(conn: &mut AsyncPgConnection, orgs: &[Uuid]) -> anyhow::Result<i64> {
    conn.batch_execute("SELECT pg_stat_clear_snapshot()")
        .await?;
    let mut total = 0;
    for org in orgs {
        total += patterns::org_index_scans(conn, *org).await?.unwrap_or(0);
    }
    Ok(total)
}

/// A point near `center`: center plus Gaussian noise, normalised.
fn near(rng: &mut StdRng, center: &[f32]) -> Vec<f32> {
    let noise = gaussian(rng, center.len(), NOISE);
    unit(center.iter().zip(noise).map(|(c, n)| c + n).collect())
}

fn unit(mut values: Vec<f32>) -> Vec<f32> {
    normalize(&mut values);
    values
}

/// `n` samples of N(0, sigma²) (Box-Muller: rand 0.8 has no normal distribution built in).
fn gaussian(rng: &mut StdRng, n: usize, sigma: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f32 = rng.gen_range(f32::EPSILON..1.0);
            let u2: f32 = rng.gen_range(0.0..1.0);
            sigma * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect()
}
