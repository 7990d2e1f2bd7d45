//! Every simulator at once (Telnyx, Deepgram, Cartesia, Groq, Gemini and the caller), wired
//! together the way `iace sim` runs them: the Telnyx simulator starts a simulated caller on every
//! stream, and the Deepgram simulator (and Telnyx's own transcription, the fallback) "hears" the
//! sentences that caller's script says. Tests and benchmarks
//! start the same suite on port 0.

use super::caller::{
    CallEnd, CallerHook, CallerOptions, CallerReport, CallerScript, CallerScripts, ReportHook,
};
use super::cartesia::{CartesiaSim, CartesiaSimConfig};
use super::deepgram::{DeepgramSim, DeepgramSimConfig};
use super::gemini::{GeminiSim, GeminiSimConfig};
use super::groq::{GroqRule, GroqSim, GroqSimConfig};
use super::telnyx::{StreamHook, StreamStarted, TelnyxSim, TelnyxSimConfig, TelnyxSimHandle};
use crate::config::is_loopback_url;
use std::sync::Arc;
use std::time::Duration;

/// Where each simulator listens when nothing else is said: the loopback ports the default
/// configuration's `base_url`s point at.
pub const TELNYX_BIND: &str = "127.0.0.1:8790";
pub const DEEPGRAM_BIND: &str = "127.0.0.1:8791";
pub const CARTESIA_BIND: &str = "127.0.0.1:8792";
pub const GROQ_BIND: &str = "127.0.0.1:8793";
pub const GEMINI_BIND: &str = "127.0.0.1:8794";

/// The provider latencies of the demo, settable from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimLatencies {
    /// Silence after speech before Deepgram finalises a segment when endpointing is off.
    pub stt_final_delay_ms: u32,
    /// Groq's time to first token.
    pub llm_first_token_ms: u64,
    /// Cartesia's wait before the first audio chunk.
    pub tts_first_audio_ms: u64,
}

impl Default for SimLatencies {
    fn default() -> Self {
        Self {
            stt_final_delay_ms: 300,
            llm_first_token_ms: 350,
            tts_first_audio_ms: 90,
        }
    }
}

/// How the suite is started.
#[derive(Clone)]
pub struct SimSuiteConfig {
    /// The Telnyx simulator (`on_stream_started` is replaced by the caller hook).
    pub telnyx: TelnyxSimConfig,
    pub deepgram_bind: String,
    pub deepgram: DeepgramSimConfig,
    pub cartesia_bind: String,
    pub cartesia: CartesiaSimConfig,
    pub groq_bind: String,
    pub groq: GroqSimConfig,
    pub gemini_bind: String,
    pub gemini: GeminiSimConfig,
    /// What each simulated caller says, by the number dialled.
    pub scripts: CallerScripts,
    pub caller: CallerOptions,
    /// On every new stream, the Deepgram simulator's script becomes the sentences of that call's
    /// caller script (restarting from the first). One call at a time then transcribes right.
    pub sync_deepgram_script: bool,
    /// Called with each finished caller's outcome.
    pub on_report: Option<ReportHook>,
}

impl SimSuiteConfig {
    /// Every simulator on a free loopback port with default behaviour, callers speaking
    /// `scripts`: for tests. Webhooks go to a closed port until the test points them at its
    /// engine (`telnyx.webhook_url`, or `TelnyxSimHandle::set_webhook_url` once it runs).
    pub fn ephemeral(scripts: CallerScripts) -> Self {
        Self {
            telnyx: TelnyxSimConfig {
                webhook_url: "http://127.0.0.1:9/webhooks/telnyx".into(),
                ..TelnyxSimConfig::default()
            },
            deepgram_bind: "127.0.0.1:0".into(),
            deepgram: DeepgramSimConfig::default(),
            cartesia_bind: "127.0.0.1:0".into(),
            cartesia: CartesiaSimConfig::default(),
            groq_bind: "127.0.0.1:0".into(),
            groq: GroqSimConfig::default(),
            gemini_bind: "127.0.0.1:0".into(),
            gemini: GeminiSimConfig::default(),
            scripts,
            caller: CallerOptions::default(),
            sync_deepgram_script: true,
            on_report: None,
        }
    }

    /// The demo on the default ports: every call is the support conversation of
    /// [`CallerScript::support_demo`], with Groq answering it by rule (and scoring sentiment with
    /// its lexicon) at the given latencies.
    pub fn demo(latencies: SimLatencies) -> Self {
        let script = CallerScript::support_demo();
        let mut config = Self::ephemeral(CallerScripts::new(script.clone()));
        config.telnyx.bind = TELNYX_BIND.into();
        config.deepgram_bind = DEEPGRAM_BIND.into();
        config.cartesia_bind = CARTESIA_BIND.into();
        config.groq_bind = GROQ_BIND.into();
        config.gemini_bind = GEMINI_BIND.into();
        config.deepgram.script = script.utterances();
        config.deepgram.final_delay_ms = latencies.stt_final_delay_ms;
        config.cartesia.first_chunk_latency = Duration::from_millis(latencies.tts_first_audio_ms);
        config.groq.time_to_first_token = Duration::from_millis(latencies.llm_first_token_ms);
        config.groq.rules = demo_rules();
        config
    }
}

/// Groq's answers to the demo caller, by a keyword of each sentence.
pub fn demo_rules() -> Vec<GroqRule> {
    vec![
        GroqRule::new(
            "dropping",
            "I'm sorry your connection keeps dropping. Have you tried restarting your router?",
        ),
        GroqRule::new(
            "restarted",
            "Thanks for trying that. I've reset your line and removed an evening congestion \
             limit on our side. Could you check whether it's stable now?",
        ),
        GroqRule::new(
            "fixed",
            "Wonderful, I'm glad it's working again. Have a great evening!",
        ),
    ]
}

/// The `host:port` a simulator should listen on so that `base_url` reaches it: the URL's own
/// host and port when it names a loopback address with a port, `fallback` otherwise (a real
/// provider's URL, or one without a port).
pub fn bind_for(base_url: &str, fallback: &str) -> String {
    if !is_loopback_url(base_url) {
        return fallback.to_owned();
    }
    let rest = base_url.split("://").nth(1).unwrap_or("");
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    match authority.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() && !host.is_empty() => {
            authority.to_owned()
        }
        _ => fallback.to_owned(),
    }
}

/// Starts suites.
pub struct SimSuite;

impl SimSuite {
    /// Starts every simulator. Must run inside an actix system.
    pub async fn start(config: SimSuiteConfig) -> anyhow::Result<SimSuiteHandle> {
        let bound = |name: &str, bind: &str, e: std::io::Error| {
            anyhow::anyhow!("{name} sim cannot listen on {bind}: {e}")
        };
        let deepgram = DeepgramSim::start_on(&config.deepgram_bind, config.deepgram.clone())
            .map_err(|e| bound("deepgram", &config.deepgram_bind, e))?;
        let cartesia = CartesiaSim::start_on(&config.cartesia_bind, config.cartesia.clone())
            .map_err(|e| bound("cartesia", &config.cartesia_bind, e))?;
        let groq = GroqSim::start_on(&config.groq_bind, config.groq.clone())
            .map_err(|e| bound("groq", &config.groq_bind, e))?;
        let gemini = GeminiSim::start_on(&config.gemini_bind, config.gemini.clone())
            .map_err(|e| bound("gemini", &config.gemini_bind, e))?;
        // A caller who hangs up ends the Telnyx leg too, as a real phone would: Telnyx then
        // reports `call.hangup` to the engine.
        let telnyx_slot: Arc<std::sync::OnceLock<TelnyxSimHandle>> = Arc::default();
        let on_report: ReportHook = {
            let slot = telnyx_slot.clone();
            let user = config.on_report.clone();
            Arc::new(move |outcome| {
                if let (Ok(report), Some(telnyx)) = (outcome, slot.get()) {
                    if report.ended == CallEnd::HungUp {
                        telnyx.caller_hangs_up(&report.call_control_id);
                    }
                }
                if let Some(user) = &user {
                    user(outcome);
                }
            })
        };
        let callers = CallerHook::start(
            config.scripts.clone(),
            config.caller.clone(),
            Some(on_report),
        );
        let hook: StreamHook = {
            let callers = callers.clone();
            let deepgram = deepgram.clone();
            let sync = config.sync_deepgram_script;
            let telnyx = telnyx_slot.clone();
            Arc::new(move |stream: StreamStarted| {
                if sync {
                    let sentences = callers.script_for(&stream.to).utterances();
                    if let Some(telnyx) = telnyx.get() {
                        telnyx.set_transcripts(sentences.clone());
                    }
                    deepgram.set_script(sentences);
                }
                callers.call(stream);
            })
        };
        let telnyx = TelnyxSim::start(TelnyxSimConfig {
            on_stream_started: Some(hook),
            ..config.telnyx
        })
        .await?;
        let _ = telnyx_slot.set(telnyx.clone());
        Ok(SimSuiteHandle {
            telnyx,
            deepgram,
            cartesia,
            groq,
            gemini,
            callers,
        })
    }
}

/// The running simulators.
#[derive(Clone)]
pub struct SimSuiteHandle {
    pub telnyx: TelnyxSimHandle,
    pub deepgram: DeepgramSim,
    pub cartesia: CartesiaSim,
    pub groq: GroqSim,
    pub gemini: GeminiSim,
    pub callers: CallerHook,
}

impl SimSuiteHandle {
    /// The report of every simulated call finished so far.
    pub fn caller_reports(&self) -> Vec<CallerReport> {
        self.callers.reports()
    }

    /// One line per simulator: where it listens and which setting points the engine at it.
    pub fn describe(&self) -> Vec<String> {
        vec![
            format!("telnyx   {} (telnyx.base_url)", self.telnyx.base_url()),
            format!("deepgram {} (deepgram.base_url)", self.deepgram.base_url()),
            format!("cartesia {} (cartesia.base_url)", self.cartesia.base_url()),
            format!("groq     {} (groq.base_url)", self.groq.base_url()),
            format!("gemini   {} (gemini.base_url)", self.gemini.base_url()),
        ]
    }

    /// Stops every simulator.
    pub async fn stop(&self) {
        self.telnyx.stop().await;
        self.callers.stop();
        self.deepgram.stop().await;
        self.cartesia.stop().await;
        self.groq.stop().await;
        self.gemini.stop().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulators_bind_where_the_configured_base_urls_point() {
        assert_eq!(
            bind_for("ws://127.0.0.1:8791", DEEPGRAM_BIND),
            "127.0.0.1:8791"
        );
        assert_eq!(
            bind_for("http://localhost:9993/openai/v1", GROQ_BIND),
            "localhost:9993"
        );
        assert_eq!(
            bind_for("wss://api.deepgram.com", DEEPGRAM_BIND),
            DEEPGRAM_BIND
        );
        assert_eq!(bind_for("http://127.0.0.1/v2", TELNYX_BIND), TELNYX_BIND);
    }

    #[test]
    fn the_demo_groq_rules_answer_every_demo_sentence_differently() {
        let rules = demo_rules();
        let replies: Vec<_> = CallerScript::support_demo()
            .utterances()
            .iter()
            .map(|sentence| {
                let lower = sentence.to_lowercase();
                rules
                    .iter()
                    .find(|r| lower.contains(&r.keyword))
                    .map(|r| r.reply.clone())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(replies.len(), 3);
        assert!(replies.iter().all(|r| !r.is_empty()), "{replies:?}");
        assert_ne!(replies[0], replies[1]);
        assert_ne!(replies[1], replies[2]);
    }
}
