//! `iace sim`: every provider simulator where the settings point, a simulated caller on each
//! streamed call; `iace sim call` asks the running Telnyx simulator to place a call.

use super::wait_for_signal;
use iace::config::Settings;
use iace::sim::suite::SimLatencies;
use std::process::ExitCode;
use std::time::Duration;

/// Listen addresses given on the command line (`None`: where the settings point).
pub struct SimBinds {
    pub telnyx: Option<String>,
    pub deepgram: Option<String>,
    pub cartesia: Option<String>,
    pub groq: Option<String>,
}

/// `iace sim`: every simulator, until SIGTERM or SIGINT.
pub fn run(
    settings: &Settings,
    binds: SimBinds,
    seed: &str,
    answer_delay_ms: u64,
    latencies: SimLatencies,
) -> ExitCode {
    use iace::providers::telnyx::dev_key::signing_key_from_seed;
    use iace::sim::caller::{CallerOutcome, ReportHook};
    use iace::sim::suite::{self, bind_for, SimSuite, SimSuiteConfig};
    let mut config = SimSuiteConfig::demo(latencies);
    config.telnyx.bind = binds
        .telnyx
        .unwrap_or_else(|| bind_for(&settings.telnyx.base_url, suite::TELNYX_BIND));
    config.telnyx.webhook_url = format!(
        "{}/webhooks/telnyx",
        settings.server.public_url.trim_end_matches('/')
    );
    config.telnyx.api_key = settings.telnyx.api_key.expose().to_owned();
    config.telnyx.connection_id = settings.telnyx.connection_id.clone();
    config.telnyx.answer_delay_ms = answer_delay_ms;
    config.telnyx.signing_key = Some(signing_key_from_seed(seed));
    config.deepgram_bind = binds
        .deepgram
        .unwrap_or_else(|| bind_for(&settings.deepgram.base_url, suite::DEEPGRAM_BIND));
    config.cartesia_bind = binds
        .cartesia
        .unwrap_or_else(|| bind_for(&settings.cartesia.base_url, suite::CARTESIA_BIND));
    config.groq_bind = binds
        .groq
        .unwrap_or_else(|| bind_for(&settings.groq.base_url, suite::GROQ_BIND));
    // Gemini too: development embeds through its simulator like every other provider.
    config.gemini_bind = bind_for(&settings.gemini.base_url, suite::GEMINI_BIND);
    let print_report: ReportHook = std::sync::Arc::new(|outcome: &CallerOutcome| match outcome {
        Ok(report) => print!("simulated call finished:\n{}", report.overview()),
        Err(err) => eprintln!("simulated call failed: {err}"),
    });
    config.on_report = Some(print_report);
    let result = actix_web::rt::System::new().block_on(async move {
        let webhook_url = config.telnyx.webhook_url.clone();
        let sims = SimSuite::start(config).await?;
        for line in sims.describe() {
            println!("sim: {line}");
        }
        println!("sim: telnyx webhooks to {webhook_url}");
        println!(
            "sim: telnyx public key {} (IACE__TELNYX__WEBHOOK_PUBLIC_KEY)",
            sims.telnyx.public_key_b64()
        );
        println!("sim: place a call with `iace sim call --from +15550100001 --to <our number>`");
        wait_for_signal().await;
        sims.stop().await;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("iace sim failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `iace sim call`: ask the running Telnyx simulator for an inbound call (and follow it).
pub fn call(
    settings: &Settings,
    sim_url: Option<String>,
    from: &str,
    to: &str,
    wait: bool,
) -> ExitCode {
    let url = sim_url.unwrap_or_else(|| settings.telnyx.base_url.clone());
    let result = actix_web::rt::System::new().block_on(async {
        let call_control_id = iace::sim::telnyx::request_inbound_call(&url, from, to).await?;
        println!("{call_control_id}");
        if wait {
            let report =
                iace::demo::follow_call(settings, &call_control_id, Duration::from_secs(180))
                    .await?;
            print!("{report}");
        }
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{err:#}");
            ExitCode::FAILURE
        }
    }
}
