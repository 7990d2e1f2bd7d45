//! `iace bench calls`: N concurrent simulated calls against an engine process. Every call is a
//! real Telnyx media socket streaming 20 ms frames in real time both ways with a scripted
//! conversation, through the real Deepgram, Cartesia, Groq and Gemini clients to the simulators.
//! The engine runs as a child process (pinned with `taskset` when asked) so that its CPU time and
//! resident memory are its own; its per-stage latencies come from its `/metrics`.

use super::engine::{EngineOptions, EngineProcess};
use super::scratch::ScratchDb;
use super::stats::{Histogram, ProcSample, Scrape, Summary};
use crate::config::Settings;
use crate::domain::text::SentenceSplitter;
use crate::sim::caller::{CallEnd, CallerOutcome, CallerScript, CallerScripts};
use crate::sim::gemini::{GeminiSim, GeminiSimConfig};
use crate::sim::groq::{tokens, GroqRule};
use crate::sim::suite::{SimSuite, SimSuiteConfig, SimSuiteHandle};
use crate::store::agents::{self, AgentProfileForm};
use anyhow::Context;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What every simulated caller says, turn after turn (neutral: no escalation).
pub const CALLER_LINE: &str = "Could you tell me when my order will arrive?";
/// What the simulated LLM answers to it.
pub const AGENT_REPLY: &str =
    "Of course. Your order left our warehouse today and arrives on Friday.";
/// The number every simulated call dials.
const OUR_NUMBER: &str = "+15550170000";
/// Frames later than this (one frame) count as late.
const LATE_SECS: f64 = 0.02;

/// How to run the benchmark.
#[derive(Debug, Clone)]
pub struct CallsBenchOptions {
    /// Concurrent calls.
    pub calls: usize,
    /// Seconds from the first call placed to every caller hanging up.
    pub duration_secs: u64,
    /// Seconds over which the calls are placed.
    pub ramp_secs: u64,
    /// `taskset -c` list for the engine (`None`: unpinned).
    pub engine_cpus: Option<String>,
    /// Resident memory and CPU are sampled this often (the soak curve).
    pub sample_every_secs: u64,
    /// Deepgram's final after this much silence (the engine's `endpointing`).
    pub stt_final_ms: u32,
    pub llm_first_token_ms: u64,
    pub llm_tokens_per_second: f32,
    pub tts_first_audio_ms: u64,
    /// Questions each caller asks (`None`: one after every answer until it hangs up). 0 keeps
    /// the callers silent after the greeting: the frames' cost without the conversation's.
    /// Given, the engine's silence limit is turned off, so quiet callers stay on the line.
    pub caller_turns: Option<usize>,
    /// The config folder the engine reads (APP_ENV=development, then overrides).
    pub config_dir: PathBuf,
    /// The engine binary (default: this one): an older build driven by this build's load, so
    /// two engines are compared under the same callers and simulators.
    pub engine_exe: Option<PathBuf>,
}

impl CallsBenchOptions {
    pub fn new(config_dir: PathBuf) -> Self {
        Self {
            calls: 50,
            duration_secs: 60,
            ramp_secs: 10,
            engine_cpus: None,
            sample_every_secs: 5,
            stt_final_ms: 300,
            llm_first_token_ms: 350,
            llm_tokens_per_second: 200.0,
            tts_first_audio_ms: 90,
            caller_turns: None,
            config_dir,
            engine_exe: None,
        }
    }
}

/// Latency of one engine stage, from the engine's histogram (bucket-interpolated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageLatency {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
}

impl StageLatency {
    fn of(h: &Histogram) -> Self {
        Self {
            count: h.count.max(0.0) as u64,
            p50_ms: h.quantile_ms(0.50),
            p95_ms: h.quantile_ms(0.95),
            p99_ms: h.quantile_ms(0.99),
            mean_ms: h.mean_ms(),
        }
    }
}

/// The engine's own time per stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EngineStages {
    /// Caller frame read → audio handed to the Deepgram socket.
    pub media_in_to_stt: StageLatency,
    /// Deepgram's final read → LLM request out (retrieval included).
    pub final_to_llm: StageLatency,
    /// A complete LLM sentence → Cartesia request out.
    pub llm_sentence_to_tts: StageLatency,
    /// Cartesia chunk read → media frame handed to the caller's socket.
    pub tts_to_media: StageLatency,
    /// Per answered turn: the three stages on its critical path, summed.
    pub turn_overhead: StageLatency,
    /// Provider waits as the engine saw them (request out → first sentence complete; first TTS
    /// request out → first chunk read): the simulators' delays plus sockets and client stacks.
    pub groq_first_sentence: StageLatency,
    pub cartesia_first_audio: StageLatency,
    /// Part of `final_to_llm`: fetching patterns and caller memory (embedding request to Gemini,
    /// pgvector search, Redis), bounded by `learning.retrieval_budget_ms`.
    pub retrieval: StageLatency,
    pub retrieval_timed_out: u64,
}

/// The simulators' own share of a turn (configured; see `BENCHMARKS.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SimulatorDelays {
    /// From the caller's first silent frame to Deepgram's final (endpointing less one frame).
    pub stt_final_ms: f64,
    /// Groq: request → the token completing the reply's first sentence.
    pub llm_first_sentence_ms: f64,
    /// Cartesia: request → first audio chunk.
    pub tts_first_audio_ms: f64,
    pub total_ms: f64,
}

/// Media frames both ways.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct FrameCounts {
    /// Caller → engine: sent by the callers, accepted by the engine.
    pub caller_sent: u64,
    pub engine_received: u64,
    /// Engine → caller: sent by the engine, received by the callers.
    pub engine_sent: u64,
    pub caller_received: u64,
    /// Frames per second through the engine while every call was live.
    pub in_per_sec: f64,
    pub out_per_sec: f64,
    /// Sent but never received, each way.
    pub lost_in: u64,
    pub lost_out: u64,
    /// Inbound frames the engine took more than 20 ms to hand to Deepgram.
    pub late_in_engine: u64,
    /// 20 ms ticks a caller's agent audio had run dry mid-turn (audio arrived late).
    pub late_out_gaps: u64,
    /// Frames the callers themselves sent more than 20 ms behind schedule (load generator lag),
    /// and the worst lag.
    pub caller_sent_late: u64,
    pub caller_max_send_lag_ms: u64,
    /// Frames the engine refused (malformed, wrong stream...).
    pub rejected: u64,
}

/// CPU and memory of the engine process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct EngineCost {
    /// Over the steady window (all calls live).
    pub steady_window_secs: f64,
    pub cpu_secs: f64,
    /// Average share of one core.
    pub cpu_cores: f64,
    pub call_secs: f64,
    pub cpu_ms_per_call_sec: f64,
    /// The kernel's part of `cpu_ms_per_call_sec` (system time: the sockets' syscalls and the
    /// other kernel work charged to the engine).
    pub kernel_ms_per_call_sec: f64,
    /// One core's worth of calls at this cost.
    pub calls_per_core: f64,
    pub rss_idle_kib: u64,
    pub rss_peak_kib: u64,
    pub rss_per_call_kib: f64,
    pub rss_after_kib: u64,
    pub threads: u64,
}

/// One point of the memory curve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct MemorySample {
    pub at_secs: f64,
    pub rss_kib: u64,
    pub cpu_secs: f64,
    pub live_calls: u64,
}

/// Whether resident memory grew while the load was steady.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct MemoryTrend {
    pub samples: usize,
    /// Least-squares slope over the steady window, and over its second half only (after the
    /// allocator and caches have warmed up).
    pub slope_kib_per_min: f64,
    pub second_half_slope_kib_per_min: f64,
    pub first_kib: u64,
    pub last_kib: u64,
    pub min_kib: u64,
    pub max_kib: u64,
}

/// Everything measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CallsBenchReport {
    pub calls: usize,
    pub duration_secs: u64,
    pub ramp_secs: u64,
    pub engine_cpus: Option<String>,
    pub calls_established: usize,
    pub calls_completed: usize,
    pub caller_turns: usize,
    pub turns_answered: usize,
    pub turns_unanswered: usize,
    pub frames: FrameCounts,
    pub stages: EngineStages,
    /// Caller stops speaking → first agent audio heard, as the callers measured it.
    pub turn_latency: Summary,
    pub simulator_delays: SimulatorDelays,
    /// Turn latency minus the simulators' delays: the engine's share plus loopback sockets and
    /// load-generator scheduling (an upper bound on what the engine adds).
    pub turn_latency_minus_simulators: Summary,
    pub engine: EngineCost,
    pub memory_trend: MemoryTrend,
    pub memory: Vec<MemorySample>,
    pub errors: usize,
    pub error_samples: Vec<String>,
    pub engine_exited_cleanly: bool,
}

/// Runs the benchmark: scratch database, simulators in this process, the engine as a child.
pub fn run(settings: &Settings, options: &CallsBenchOptions) -> anyhow::Result<CallsBenchReport> {
    anyhow::ensure!(options.calls > 0, "--calls must be at least 1");
    anyhow::ensure!(
        options.duration_secs > options.ramp_secs,
        "--duration must be longer than --ramp"
    );
    let scratch = ScratchDb::create(settings.database.url.expose())?;
    let url = scratch.url().to_owned();
    let redis_url = settings.redis.url.expose().to_owned();
    actix_web::rt::System::new().block_on(run_in_system(url, redis_url, options.clone()))
}

async fn run_in_system(
    database_url: String,
    redis_url: String,
    o: CallsBenchOptions,
) -> anyhow::Result<CallsBenchReport> {
    seed_profile(&database_url).await?;
    let run_started = tokio::time::Instant::now();
    let hang_up_at = run_started + Duration::from_secs(o.duration_secs);
    let sims = start_simulators(&o, hang_up_at).await?;
    let gemini = GeminiSim::start(GeminiSimConfig::default()).context("start the Gemini sim")?;
    let mut engine_options = EngineOptions::new(o.config_dir.clone(), &database_url, &redis_url)?;
    if let Some(exe) = &o.engine_exe {
        engine_options.exe = exe.clone();
    }
    let threads = o
        .engine_cpus
        .as_deref()
        .map(cpu_count)
        .unwrap_or(0)
        .to_string();
    engine_options.cpus = o.engine_cpus.clone();
    if o.caller_turns.is_some() {
        // Callers silent after their last question would be asked whether they are still
        // there, then hung up before the run ends.
        engine_options.set("IACE__CALLS__SILENCE_LIMIT_SECS", "0");
    }
    engine_options
        .set("IACE__SERVER__WORKERS", threads.clone())
        .set("IACE__CALLS__REGISTRY_SHARDS", threads)
        .set("IACE__TELNYX__BASE_URL", sims.telnyx.base_url())
        .set(
            "IACE__TELNYX__WEBHOOK_PUBLIC_KEY",
            sims.telnyx.public_key_b64(),
        )
        .set("IACE__DEEPGRAM__BASE_URL", sims.deepgram.base_url())
        .set("IACE__DEEPGRAM__ENDPOINTING_MS", o.stt_final_ms.to_string())
        .set("IACE__CARTESIA__BASE_URL", sims.cartesia.base_url())
        .set("IACE__GROQ__BASE_URL", sims.groq.base_url())
        .set("IACE__GEMINI__BASE_URL", gemini.base_url())
        .set("IACE__LEARNING__WORKERS", "0")
        .set(
            "IACE__CALLS__MAX_DURATION_SECS",
            (o.duration_secs + 600).to_string(),
        )
        .set("IACE__DATABASE__POOL_MAX_SIZE", "32");
    let engine = EngineProcess::start(&engine_options).await?;
    sims.telnyx
        .set_webhook_url(&format!("{}/webhooks/telnyx", engine.base_url()));

    let result = drive(&o, &sims, &engine, run_started).await;
    sims.stop().await;
    gemini.stop().await;
    let exited_cleanly = engine.stop(Duration::from_secs(20)).await;
    let mut report = result?;
    report.engine_exited_cleanly = exited_cleanly;
    Ok(report)
}

/// An organization with one agent profile answering [`OUR_NUMBER`].
async fn seed_profile(database_url: &str) -> anyhow::Result<()> {
    let mut conn = AsyncPgConnection::establish(database_url).await?;
    let org = crate::auth::accounts::create_org(&mut conn, "bench")
        .await
        .map_err(|e| anyhow::anyhow!("create the bench organization: {e}"))?;
    let form = AgentProfileForm {
        name: "bench support".into(),
        system_prompt: "You are a helpful support agent for an online shop.".into(),
        greeting: "Hello, thanks for calling. How can I help?".into(),
        voice_id: String::new(),
        language: String::new(),
        stt_model: String::new(),
        escalation_threshold: -0.6,
        escalation_number: None,
        spoken_lines: serde_json::json!({}),
    };
    crate::store::numbers::assign(&mut conn, org.id, OUR_NUMBER)
        .await
        .map_err(|e| anyhow::anyhow!("assign the bench number: {e}"))?;
    agents::create(&mut conn, org.id, &form, &[OUR_NUMBER.to_owned()])
        .await
        .map_err(|e| anyhow::anyhow!("create the bench agent profile: {e:?}"))?;
    Ok(())
}

async fn start_simulators(
    o: &CallsBenchOptions,
    hang_up_at: tokio::time::Instant,
) -> anyhow::Result<SimSuiteHandle> {
    // Enough questions to fill the call unless a number is asked for (a turn takes > 3 s).
    let turns = o.caller_turns.unwrap_or((o.duration_secs / 3 + 4) as usize);
    let mut script = CallerScript::new().wait_for_agent(15_000);
    for _ in 0..turns {
        script = script.say(CALLER_LINE).wait_for_agent(15_000);
    }
    let mut config = SimSuiteConfig::ephemeral(CallerScripts::new(script));
    config.sync_deepgram_script = false;
    config.deepgram.script = vec![CALLER_LINE.to_owned()];
    config.deepgram.repeat_script = true;
    config.deepgram.keep_audio = false;
    config.deepgram.final_delay_ms = o.stt_final_ms;
    config.groq.rules = vec![GroqRule::new("order", AGENT_REPLY)];
    config.groq.time_to_first_token = Duration::from_millis(o.llm_first_token_ms);
    config.groq.tokens_per_second = o.llm_tokens_per_second;
    config.cartesia.first_chunk_latency = Duration::from_millis(o.tts_first_audio_ms);
    config.caller.keep_frames = false;
    config.caller.hang_up_at = Some(hang_up_at);
    config.caller.deadline = Duration::from_secs(o.duration_secs + 120);
    config.caller.connect_timeout = Duration::from_secs(30);
    SimSuite::start(config).await
}

/// Places the calls, samples the engine while they run, waits for every caller, and reports.
async fn drive(
    o: &CallsBenchOptions,
    sims: &SimSuiteHandle,
    engine: &EngineProcess,
    run_started: tokio::time::Instant,
) -> anyhow::Result<CallsBenchReport> {
    let idle = engine.sample()?;
    let before = engine.scrape().await?;
    let started = Instant::now();
    let mut memory = vec![memory_sample(started, idle, 0)];
    let gap = Duration::from_secs_f64(o.ramp_secs as f64 / o.calls as f64);
    let mut next_sample = started + Duration::from_secs(o.sample_every_secs.max(1));
    for i in 0..o.calls {
        let from = format!("+1555{:07}", i % 10_000_000);
        sims.telnyx.place_inbound_call(&from, OUR_NUMBER);
        tokio::time::sleep_until(run_started + gap * (i as u32 + 1)).await;
        if Instant::now() >= next_sample {
            memory.push(memory_sample(
                started,
                engine.sample()?,
                sims.callers.running(),
            ));
            next_sample += Duration::from_secs(o.sample_every_secs.max(1));
        }
    }
    // Steady window: every call placed and a few seconds to connect, until the first hang-ups.
    let settle = Duration::from_secs(3).min(Duration::from_secs(o.duration_secs) / 4);
    let steady_from = run_started + Duration::from_secs(o.ramp_secs) + settle;
    let steady_to = run_started + Duration::from_secs(o.duration_secs);
    tokio::time::sleep_until(steady_from.max(tokio::time::Instant::now())).await;
    let steady_start = engine.sample()?;
    let steady_scrape = engine.scrape().await?;
    let steady_started = Instant::now();
    let live_at_start = sims.callers.running();
    let mut peak_rss = steady_start.rss_kib;
    while tokio::time::Instant::now() < steady_to {
        let wake = (tokio::time::Instant::now() + Duration::from_secs(o.sample_every_secs.max(1)))
            .min(steady_to);
        tokio::time::sleep_until(wake).await;
        let sample = engine.sample()?;
        peak_rss = peak_rss.max(sample.rss_kib);
        memory.push(memory_sample(started, sample, sims.callers.running()));
    }
    let steady_end = engine.sample()?;
    let steady_secs = steady_started.elapsed().as_secs_f64();
    let steady_scrape_end = engine.scrape().await?;
    let live_at_end = sims.callers.running();

    // Every caller hangs up at its next turn boundary; give them time to finish.
    let outcomes = sims
        .callers
        .wait_for_outcomes(o.calls, Duration::from_secs(90))
        .await;
    // The engine ends each call on Telnyx's hangup; wait until it has none live.
    let mut after = engine.scrape().await?;
    let drain_until = Instant::now() + Duration::from_secs(30);
    while after.value("iace_live_calls") > 0.0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = engine.scrape().await?;
    }
    let after_sample = engine.sample()?;
    memory.push(memory_sample(started, after_sample, 0));

    let live_calls = (live_at_start + live_at_end) as f64 / 2.0;
    let cpu_secs = steady_end.cpu_secs - steady_start.cpu_secs;
    let call_secs = live_calls * steady_secs;
    let per_call_sec = |secs: f64| {
        if call_secs > 0.0 {
            secs * 1000.0 / call_secs
        } else {
            0.0
        }
    };
    let cpu_ms_per_call_sec = per_call_sec(cpu_secs);
    let engine_cost = EngineCost {
        steady_window_secs: steady_secs,
        cpu_secs,
        cpu_cores: if steady_secs > 0.0 {
            cpu_secs / steady_secs
        } else {
            0.0
        },
        call_secs,
        cpu_ms_per_call_sec,
        kernel_ms_per_call_sec: per_call_sec(steady_end.system_secs - steady_start.system_secs),
        calls_per_core: if cpu_ms_per_call_sec > 0.0 {
            1000.0 / cpu_ms_per_call_sec
        } else {
            0.0
        },
        rss_idle_kib: idle.rss_kib,
        rss_peak_kib: peak_rss,
        rss_per_call_kib: if live_calls > 0.0 {
            (peak_rss.saturating_sub(idle.rss_kib)) as f64 / live_calls
        } else {
            0.0
        },
        rss_after_kib: after_sample.rss_kib,
        threads: steady_end.threads,
    };
    let steady_memory: Vec<MemorySample> = memory
        .iter()
        .copied()
        .filter(|m| {
            let at = started + Duration::from_secs_f64(m.at_secs);
            at >= steady_started && at <= steady_started + Duration::from_secs_f64(steady_secs)
        })
        .collect();
    let mut report = summarise(o, &outcomes, &before, &after);
    let rate = |direction: &str| {
        let series = format!("iace_media_frames_total{{direction=\"{direction}\"}}");
        (steady_scrape_end.value(&series) - steady_scrape.value(&series)) / steady_secs.max(1e-3)
    };
    report.frames.in_per_sec = rate("in");
    report.frames.out_per_sec = rate("out");
    report.engine = engine_cost;
    report.memory_trend = trend(&steady_memory);
    report.memory = memory;
    Ok(report)
}

fn memory_sample(started: Instant, sample: ProcSample, live: usize) -> MemorySample {
    MemorySample {
        at_secs: started.elapsed().as_secs_f64(),
        rss_kib: sample.rss_kib,
        cpu_secs: sample.cpu_secs,
        live_calls: live as u64,
    }
}

/// Everything derived from the callers' reports and the engine's metrics.
fn summarise(
    o: &CallsBenchOptions,
    outcomes: &[CallerOutcome],
    before: &Scrape,
    after: &Scrape,
) -> CallsBenchReport {
    let mut report = CallsBenchReport {
        calls: o.calls,
        duration_secs: o.duration_secs,
        ramp_secs: o.ramp_secs,
        engine_cpus: o.engine_cpus.clone(),
        ..CallsBenchReport::default()
    };
    let mut latencies = Vec::new();
    let mut frames = FrameCounts::default();
    for outcome in outcomes {
        let report_of = match outcome {
            Ok(r) => Some(r),
            Err(e) => {
                report.errors += 1;
                if report.error_samples.len() < 5 {
                    report
                        .error_samples
                        .push(e.to_string().lines().next().unwrap_or("").to_owned());
                }
                e.report()
            }
        };
        let Some(r) = report_of else { continue };
        if r.stream.media_sent > 0 {
            report.calls_established += 1;
        }
        if outcome.is_ok() && r.ended == CallEnd::HungUp {
            report.calls_completed += 1;
        } else if outcome.is_ok() {
            report.errors += 1;
            if report.error_samples.len() < 5 {
                report.error_samples.push(format!(
                    "call ended {:?} before its caller hung up",
                    r.ended
                ));
            }
        }
        frames.caller_sent += r.stream.media_sent as u64;
        frames.caller_received += r.stream.media_received as u64;
        frames.caller_sent_late += r.stream.sent_late as u64;
        frames.caller_max_send_lag_ms = frames.caller_max_send_lag_ms.max(r.stream.max_send_lag_ms);
        frames.late_out_gaps += r.stream.starved_ticks as u64;
        for turn in r.turns.iter().filter(|t| t.ended_at_ms.is_some()) {
            report.caller_turns += 1;
            match turn.first_agent_audio_after_ms {
                Some(ms) => {
                    report.turns_answered += 1;
                    latencies.push(ms as f64);
                }
                None => report.turns_unanswered += 1,
            }
        }
    }
    let delta = |name: &str| after.value(name) - before.value(name);
    frames.engine_received = delta("iace_media_frames_total{direction=\"in\"}") as u64;
    frames.engine_sent = delta("iace_media_frames_total{direction=\"out\"}") as u64;
    frames.rejected = (after.total("iace_media_frames_rejected_total")
        - before.total("iace_media_frames_rejected_total")) as u64;
    frames.lost_in = frames.caller_sent.saturating_sub(frames.engine_received);
    frames.lost_out = frames.engine_sent.saturating_sub(frames.caller_received);
    let stage = |name: &str| {
        let series = format!("iace_engine_stage_seconds{{stage=\"{name}\"}}");
        after.histogram(&series).since(&before.histogram(&series))
    };
    let retrieval = |result: &str| {
        let series = format!("iace_retrieval_duration_seconds{{result=\"{result}\"}}");
        after.histogram(&series).since(&before.histogram(&series))
    };
    let provider = |name: &str| {
        let series = format!("iace_provider_first_response_seconds{{provider=\"{name}\"}}");
        after.histogram(&series).since(&before.histogram(&series))
    };
    let media_in = stage("media_in_to_stt");
    frames.late_in_engine = media_in.count_above(LATE_SECS).max(0.0) as u64;
    report.frames = frames;
    let overhead = after
        .histogram("iace_engine_turn_overhead_seconds")
        .since(&before.histogram("iace_engine_turn_overhead_seconds"));
    report.stages = EngineStages {
        media_in_to_stt: StageLatency::of(&media_in),
        final_to_llm: StageLatency::of(&stage("final_to_llm")),
        llm_sentence_to_tts: StageLatency::of(&stage("llm_sentence_to_tts")),
        tts_to_media: StageLatency::of(&stage("tts_to_media")),
        turn_overhead: StageLatency::of(&overhead),
        groq_first_sentence: StageLatency::of(&provider("groq")),
        cartesia_first_audio: StageLatency::of(&provider("cartesia")),
        retrieval: StageLatency::of(&retrieval("complete")),
        retrieval_timed_out: retrieval("timed_out").count.max(0.0) as u64,
    };
    report.simulator_delays = simulator_delays(o);
    report.turn_latency = Summary::of_ms(&latencies);
    let sims = report.simulator_delays.total_ms;
    let minus: Vec<f64> = latencies.iter().map(|l| l - sims).collect();
    report.turn_latency_minus_simulators = Summary::of_ms(&minus);
    report
}

/// The simulators' configured share of one turn. The LLM's is its time to first token plus the
/// token gaps until the engine's sentence splitter has the reply's first sentence.
pub fn simulator_delays(o: &CallsBenchOptions) -> SimulatorDelays {
    let gap_ms = 1000.0 / f64::from(o.llm_tokens_per_second.max(0.1));
    let mut splitter = SentenceSplitter::new();
    let tokens = tokens(AGENT_REPLY);
    let first_sentence_token = tokens
        .iter()
        .position(|t| !splitter.push(t).is_empty())
        .unwrap_or(tokens.len().saturating_sub(1));
    let llm = o.llm_first_token_ms as f64 + first_sentence_token as f64 * gap_ms;
    // The simulator finalises on the frame that completes `stt_final_ms` of silence; the caller
    // counts its turn as ended when it sends the first silent frame, one frame earlier.
    let stt = f64::from(o.stt_final_ms) - f64::from(crate::domain::audio::FRAME_MS);
    let tts = o.tts_first_audio_ms as f64;
    SimulatorDelays {
        stt_final_ms: stt,
        llm_first_sentence_ms: llm,
        tts_first_audio_ms: tts,
        total_ms: stt + llm + tts,
    }
}

/// Least-squares slope of resident memory over time, in KiB per minute.
pub fn trend(samples: &[MemorySample]) -> MemoryTrend {
    MemoryTrend {
        samples: samples.len(),
        first_kib: samples.first().map_or(0, |s| s.rss_kib),
        last_kib: samples.last().map_or(0, |s| s.rss_kib),
        min_kib: samples.iter().map(|s| s.rss_kib).min().unwrap_or(0),
        max_kib: samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        slope_kib_per_min: slope(samples),
        second_half_slope_kib_per_min: slope(&samples[samples.len() / 2..]),
    }
}

/// Least-squares slope of resident memory over time, in KiB per minute (0 under two samples).
fn slope(samples: &[MemorySample]) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let mean_x = samples.iter().map(|s| s.at_secs).sum::<f64>() / n;
    let mean_y = samples.iter().map(|s| s.rss_kib as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for s in samples {
        num += (s.at_secs - mean_x) * (s.rss_kib as f64 - mean_y);
        den += (s.at_secs - mean_x).powi(2);
    }
    if den > 0.0 {
        num / den * 60.0
    } else {
        0.0
    }
}

/// CPUs in a `taskset -c` list ("0", "0-1", "0,2-3").
pub fn cpu_count(list: &str) -> usize {
    list.split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => match (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 1,
            },
            None => 1,
        })
        .sum::<usize>()
        .max(1)
}

impl CallsBenchReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let s = &self.stages;
        let f = &self.frames;
        let e = &self.engine;
        let stage = |name: &str, l: &StageLatency| {
            format!(
                "| {name:<34} | {:>8.3} | {:>8.3} | {:>8.3} | {:>8.3} | {:>9} |\n",
                l.p50_ms, l.p95_ms, l.p99_ms, l.mean_ms, l.count
            )
        };
        let summary = |name: &str, l: &Summary| {
            format!(
                "| {name:<34} | {:>8.1} | {:>8.1} | {:>8.1} | {:>8.1} | {:>9} |\n",
                l.p50_ms, l.p95_ms, l.p99_ms, l.mean_ms, l.count
            )
        };
        let mut out = format!(
            "calls bench: {} calls for {} s (ramp {} s), engine on cpus {}\n\
             calls established {} / completed {} / errors {}; caller turns {} answered {} unanswered {}\n\n",
            self.calls,
            self.duration_secs,
            self.ramp_secs,
            self.engine_cpus.as_deref().unwrap_or("any"),
            self.calls_established,
            self.calls_completed,
            self.errors,
            self.caller_turns,
            self.turns_answered,
            self.turns_unanswered,
        );
        out.push_str("| latency (ms)                       |      p50 |      p95 |      p99 |     mean |     count |\n");
        out.push_str("|------------------------------------|----------|----------|----------|----------|-----------|\n");
        out.push_str(&stage(
            "engine: caller frame -> deepgram",
            &s.media_in_to_stt,
        ));
        out.push_str(&stage("engine: stt final -> llm request", &s.final_to_llm));
        out.push_str(&stage(
            "engine: llm sentence -> tts req",
            &s.llm_sentence_to_tts,
        ));
        out.push_str(&stage("engine: tts chunk -> caller frame", &s.tts_to_media));
        out.push_str(&stage("engine: per-turn overhead", &s.turn_overhead));
        out.push_str(&stage("  of which retrieval (complete)", &s.retrieval));
        out.push_str(&stage(
            "wait: groq req -> 1st sentence",
            &s.groq_first_sentence,
        ));
        out.push_str(&stage(
            "wait: cartesia req -> 1st chunk",
            &s.cartesia_first_audio,
        ));
        out.push_str(&summary("turn latency (caller)", &self.turn_latency));
        out.push_str(&summary(
            "turn latency - simulator delays",
            &self.turn_latency_minus_simulators,
        ));
        out.push_str(&format!(
            "\nretrievals timed out: {}\nsimulator delays per turn (ms): stt final {:.0} + llm first sentence {:.0} + tts first audio {:.0} = {:.0}\n",
            s.retrieval_timed_out,
            self.simulator_delays.stt_final_ms,
            self.simulator_delays.llm_first_sentence_ms,
            self.simulator_delays.tts_first_audio_ms,
            self.simulator_delays.total_ms
        ));
        out.push_str(&format!(
            "frames in: {} sent, {} received ({:.0}/s), lost {}, late in engine {}; callers late {} (max lag {} ms)\n\
             frames out: {} sent ({:.0}/s), {} received, lost {}, gaps heard {}; rejected {}\n",
            f.caller_sent,
            f.engine_received,
            f.in_per_sec,
            f.lost_in,
            f.late_in_engine,
            f.caller_sent_late,
            f.caller_max_send_lag_ms,
            f.engine_sent,
            f.out_per_sec,
            f.caller_received,
            f.lost_out,
            f.late_out_gaps,
            f.rejected,
        ));
        out.push_str(&format!(
            "engine cpu: {:.2} s over {:.0} s steady ({:.3} cores) = {:.4} ms per call-second (kernel {:.4}), {:.0} calls per core\n\
             engine rss: idle {} KiB, peak {} KiB, {:.0} KiB per call, after {} KiB; {} threads\n\
             memory trend (steady): {:+.1} KiB/min over {} samples ({} -> {} KiB), second half {:+.1} KiB/min\n",
            e.cpu_secs,
            e.steady_window_secs,
            e.cpu_cores,
            e.cpu_ms_per_call_sec,
            e.kernel_ms_per_call_sec,
            e.calls_per_core,
            e.rss_idle_kib,
            e.rss_peak_kib,
            e.rss_per_call_kib,
            e.rss_after_kib,
            e.threads,
            self.memory_trend.slope_kib_per_min,
            self.memory_trend.samples,
            self.memory_trend.first_kib,
            self.memory_trend.last_kib,
            self.memory_trend.second_half_slope_kib_per_min,
        ));
        for sample in &self.error_samples {
            out.push_str(&format!("error: {sample}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(cpu_count("0"), 1);
        assert_eq!(cpu_count("0-1"), 2);
        assert_eq!(cpu_count("0,2-3"), 3);
    }

    #[test]
    fn the_llm_delay_counts_tokens_until_the_first_sentence_is_complete() {
        let mut o = CallsBenchOptions::new(PathBuf::from("config"));
        o.llm_tokens_per_second = 100.0;
        let d = simulator_delays(&o);
        // "Of", " course", "." complete nothing; the splitter needs the next token (" Your").
        assert_eq!(d.llm_first_sentence_ms, 350.0 + 3.0 * 10.0);
        assert_eq!(d.total_ms, 280.0 + d.llm_first_sentence_ms + 90.0);
    }

    #[test]
    fn a_flat_memory_curve_has_no_slope_and_a_growing_one_does() {
        let flat: Vec<MemorySample> = (0..10)
            .map(|i| MemorySample {
                at_secs: f64::from(i) * 6.0,
                rss_kib: 1000,
                ..MemorySample::default()
            })
            .collect();
        assert_eq!(trend(&flat).slope_kib_per_min, 0.0);
        let growing: Vec<MemorySample> = (0..10)
            .map(|i| MemorySample {
                at_secs: f64::from(i) * 6.0,
                rss_kib: 1000 + 10 * i as u64,
                ..MemorySample::default()
            })
            .collect();
        assert!((trend(&growing).slope_kib_per_min - 100.0).abs() < 1e-6);
        assert!((trend(&growing).second_half_slope_kib_per_min - 100.0).abs() < 1e-6);
        // A warm-up rise, then flat: the second half shows no growth.
        let mut warming = flat.clone();
        warming[0].rss_kib = 500;
        warming[1].rss_kib = 800;
        assert!(trend(&warming).slope_kib_per_min > 0.0);
        assert_eq!(trend(&warming).second_half_slope_kib_per_min, 0.0);
    }
}
