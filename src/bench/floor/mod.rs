//! `iace bench floor`: the measured floor under the media path's CPU figure. A bare relay (a
//! child process, `iace bench floor-relay`, pinned like the engine) does only the socket work a
//! live call's frames need, with no parsing, codecs or actors: per caller frame one read from
//! the "Telnyx" socket and one write to the "Deepgram" socket, per agent frame one read from the
//! "Cartesia" socket and one write back to "Telnyx", on one tokio thread. The load (this
//! process) streams both directions in real time over loopback TCP, as `iace bench calls` does.
//! Its CPU per call-second is what the kernel and the runtime cost before the engine does
//! anything; `--coalesce-us` shows what deliberately batching wake-ups (sleeping before each
//! park, like a NIC's interrupt moderation) would save, and the latency it adds.
//!
//! `--stack` measures a second floor: the same relay written on the engine's own stack and
//! nothing else. The child serves the media route with actix-web and actix-ws and opens each
//! stream's provider socket with awc (the engine's ws client), and one task per stream moves
//! frames both ways: no JSON, no base64, no actors, no metrics. The load speaks WebSocket to it
//! with pre-built frames (a zero mask on its client frames), so it costs the load little. What
//! the engine spends above this floor is its own work; what this floor spends above the bare
//! one is the price of the framework's media path (HTTP dispatcher, payload channel, codecs).

pub mod turns;

use super::stats::percentile_ms;
use super::stats::proc_sample;
use crate::config::Settings;
use actix_codec::Framed;
use serde::Serialize;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A Telnyx `media` frame as it crosses the socket (JSON text, 20 ms of base64 PCMU, WebSocket
/// header): about this many bytes, in both directions.
const TELNYX_FRAME: usize = 330;
/// The same 20 ms as a masked binary WebSocket message to Deepgram.
const DEEPGRAM_FRAME: usize = 166;
/// One agent frame from Cartesia (JSON with base64 audio), relayed to Telnyx.
const CARTESIA_FRAME: usize = 330;
/// Agent audio flows about a tenth as often as caller audio in `iace bench calls` (1,067
/// against 10,000 frames a second at 200 calls): every tenth tick carries one.
const AGENT_EVERY: u64 = 10;
const FRAME: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
pub struct FloorBenchOptions {
    pub streams: usize,
    pub duration_secs: u64,
    /// Seconds over which streams start (spread, as calls arrive).
    pub ramp_secs: u64,
    /// Pin the relay to these CPUs (`taskset -c` list).
    pub relay_cpus: Option<String>,
    /// Microseconds the relay sleeps before each park (0: wake per event).
    pub coalesce_us: u64,
    /// The relay on the engine's stack (actix-web, actix-ws, awc) instead of bare sockets.
    pub stack: bool,
    /// With `stack`: the media socket is taken from actix-http at its upgrade and read and
    /// written on the raw TCP stream in the stream's own task (no HTTP dispatcher, payload
    /// channel or actix-ws), the provider side still on awc.
    pub raw_media: bool,
    /// With `raw_media`: hold the bench's conversation too (see [`turns`]), a caller turn
    /// starting every `turn_every_ms` on each stream.
    pub turns: bool,
    pub turn_every_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FloorBenchReport {
    /// "bare" (tokio sockets), "stack" (actix-web, actix-ws and awc) or "stack-raw" (the
    /// media socket raw after actix-http's upgrade, awc for the provider).
    pub relay: String,
    /// The relay held the conversation (`--turns`).
    pub turns: bool,
    pub streams: usize,
    pub coalesce_us: u64,
    pub window_secs: f64,
    pub relay_cpu_secs: f64,
    pub cpu_ms_per_call_second: f64,
    /// The kernel's part of it (system time).
    pub kernel_ms_per_call_second: f64,
    pub caller_frames: u64,
    pub agent_frames: u64,
    /// With `turns`: marks the relay sent, one per agent sentence (two per reply), echoed.
    pub marks_echoed: u64,
    /// With `turns`: what the conversation wrote and asked for over the run.
    pub tally: Option<turns::Tally>,
    pub cpu_us_per_frame: f64,
    /// Load → relay → load for caller frames, including the load's own scheduling.
    pub round_trip_p50_ms: f64,
    pub round_trip_p99_ms: f64,
    pub round_trip_max_ms: f64,
    /// How late the load's sends ran behind their 20 ms schedule, worst case.
    pub load_late_max_ms: f64,
}

impl FloorBenchReport {
    pub fn table(&self) -> String {
        let mut table = format!(
            "{} relay floor{}: {} streams, coalesce {} us, {:.0} s window\n\
             | metric | value |\n|---|---|\n\
             | relay CPU | {:.2} s |\n\
             | CPU per call-second (kernel) | {:.3} ms ({:.3} ms) |\n\
             | caller / agent frames relayed | {} / {} |\n\
             | {} | {:.1} us |\n\
             | round trip p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |\n\
             | load sends late, worst | {:.2} ms |",
            self.relay,
            if self.turns {
                " with the conversation"
            } else {
                ""
            },
            self.streams,
            self.coalesce_us,
            self.window_secs,
            self.relay_cpu_secs,
            self.cpu_ms_per_call_second,
            self.kernel_ms_per_call_second,
            self.caller_frames,
            self.agent_frames,
            if self.turns {
                "CPU per frame relayed (the conversation's included)"
            } else {
                "CPU per frame relayed"
            },
            self.cpu_us_per_frame,
            self.round_trip_p50_ms,
            self.round_trip_p99_ms,
            self.round_trip_max_ms,
            self.load_late_max_ms,
        );
        if let Some(t) = &self.tally {
            table.push_str(&format!(
                "\n| agent marks echoed (one per sentence) | {} |\n\
                 | over the run: transcript rows / calls scored | {} / {} |\n\
                 | over the run: embeddings / LLM requests | {} / {} |",
                self.marks_echoed, t.utterances, t.scored_calls, t.embeddings, t.llm_requests
            ));
        }
        table
    }
}

/// The relay child's body: prints its address, then pairs connections as they arrive (the first
/// of each pair is the stream's Telnyx side, the second its provider side) until killed.
pub fn relay(coalesce_us: u64) -> anyhow::Result<()> {
    exit_with_parent();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    if coalesce_us > 0 {
        let pause = Duration::from_micros(coalesce_us);
        // Sleeping before the park lets events pile up, so one epoll_wait returns many.
        builder.on_thread_park(move || std::thread::sleep(pause));
    }
    builder.build()?.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?);
        loop {
            let (telnyx, _) = listener.accept().await?;
            let (provider, _) = listener.accept().await?;
            telnyx.set_nodelay(true)?;
            provider.set_nodelay(true)?;
            let (telnyx_in, telnyx_out) = telnyx.into_split();
            let (provider_in, provider_out) = provider.into_split();
            tokio::spawn(pipe(telnyx_in, provider_out, TELNYX_FRAME, DEEPGRAM_FRAME));
            tokio::spawn(pipe(provider_in, telnyx_out, CARTESIA_FRAME, TELNYX_FRAME));
        }
    })
}

/// Reads `in_len`-byte frames and writes an `out_len`-byte frame for each, carrying the first
/// 8 bytes (the load's send time) across.
async fn pipe(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    in_len: usize,
    out_len: usize,
) {
    let (mut frame, mut out) = (vec![0u8; in_len], vec![0u8; out_len]);
    while from.read_exact(&mut frame).await.is_ok() {
        out[..8].copy_from_slice(&frame[..8]);
        if to.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Shared between the load's tasks.
#[derive(Default)]
struct Counters {
    measuring: AtomicBool,
    stop: AtomicBool,
    caller_frames: AtomicU64,
    agent_frames: AtomicU64,
    marks_echoed: AtomicU64,
    late_max_us: AtomicU64,
    round_trips_us: Mutex<Vec<u32>>,
}

/// Runs the bench; `settings` (the database and Redis) serve `--turns` only.
pub fn run(settings: &Settings, options: &FloorBenchOptions) -> anyhow::Result<FloorBenchReport> {
    // An actix system: the simulators `--turns` starts run on it.
    actix_web::rt::System::new().block_on(measure(settings, options))
}

/// The Deepgram messages of one caller turn at their ticks, and how many ticks a turn takes.
struct TurnScript {
    frames: Vec<(u64, Vec<u8>)>,
    every_ticks: u64,
}

async fn measure(settings: &Settings, o: &FloorBenchOptions) -> anyhow::Result<FloorBenchReport> {
    let mut command = child_command(o.relay_cpus.as_deref())?;
    let (services, script) = if o.turns {
        anyhow::ensure!(o.stack && o.raw_media, "--turns needs --stack --raw-media");
        let every_ticks = o.turn_every_ms / FRAME.as_millis() as u64;
        anyhow::ensure!(
            every_ticks > turns::SCRIPT_TICKS,
            "--turn-every-ms must be more than {} ms (a caller turn's messages)",
            turns::SCRIPT_TICKS * FRAME.as_millis() as u64
        );
        let services = turns::Services::start(settings)?;
        command.envs(services.child_env());
        let script = TurnScript {
            frames: turns::deepgram_script()?,
            every_ticks,
        };
        (Some(services), Some(Arc::new(script)))
    } else {
        (None, None)
    };
    command
        .args(["bench", "floor-relay", "--coalesce-us"])
        .arg(o.coalesce_us.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    // The stack relay opens each stream's provider socket to this listener.
    let providers = if o.stack {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        command
            .arg("--stack-provider")
            .arg(listener.local_addr()?.to_string());
        if o.raw_media {
            command.arg("--raw-media");
        }
        if o.turns {
            command.arg("--turns");
        }
        Some(listener)
    } else {
        None
    };
    let wire = if o.stack { Wire::STACK } else { Wire::BARE };
    let mut child = KillOnDrop(command.spawn()?);
    let stdout = child
        .0
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("the relay's stdout is not piped"))?;
    // Its first line that is an address; anything else (a log line) is skipped.
    let read_addr = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.trim().parse::<std::net::SocketAddr>().ok())
    });
    let addr = tokio::time::timeout(Duration::from_secs(10), read_addr)
        .await
        .map_err(|_| anyhow::anyhow!("the relay did not say where it listens within 10 s"))??
        .ok_or_else(|| anyhow::anyhow!("the relay exited before listening"))?;

    let counters = Arc::new(Counters::default());
    let origin = Instant::now();
    let streams = o.streams.max(1);
    let spacing = Duration::from_secs(o.ramp_secs).div_f64(streams as f64);
    for i in 0..streams {
        let (telnyx, provider) = match &providers {
            // Sequential connects: the relay pairs them in accept order.
            None => (
                TcpStream::connect(addr).await?,
                TcpStream::connect(addr).await?,
            ),
            // One stream at a time: the provider socket accepted next is this stream's.
            Some(listener) => {
                let mut telnyx = TcpStream::connect(addr).await?;
                ws_client_handshake(&mut telnyx, i).await?;
                let (mut provider, _) =
                    tokio::time::timeout(Duration::from_secs(10), listener.accept())
                        .await
                        .map_err(|_| {
                            anyhow::anyhow!(
                                "the stack relay did not open stream {i}'s provider socket"
                            )
                        })??;
                ws_server_handshake(&mut provider).await?;
                (telnyx, provider)
            }
        };
        telnyx.set_nodelay(true)?;
        provider.set_nodelay(true)?;
        let start = tokio::time::Instant::from_std(origin + spacing * i as u32);
        tokio::spawn(stream(
            telnyx,
            provider,
            start,
            origin,
            counters.clone(),
            wire,
            script.clone(),
        ));
    }
    tokio::time::sleep_until(tokio::time::Instant::from_std(
        origin + Duration::from_secs(o.ramp_secs + 2),
    ))
    .await;

    let pid = child.0.id();
    let before = proc_sample(pid).ok_or_else(|| anyhow::anyhow!("the relay is gone"))?;
    counters.measuring.store(true, Ordering::SeqCst);
    let window_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(o.duration_secs)).await;
    counters.measuring.store(false, Ordering::SeqCst);
    let window = window_start.elapsed().as_secs_f64();
    let after = proc_sample(pid).ok_or_else(|| anyhow::anyhow!("the relay is gone"))?;
    counters.stop.store(true, Ordering::SeqCst);
    drop(child);
    let tally = services.as_ref().map(turns::Services::tally).transpose()?;
    drop(services);

    let cpu = after.cpu_secs - before.cpu_secs;
    let caller_frames = counters.caller_frames.load(Ordering::SeqCst);
    let agent_frames = counters.agent_frames.load(Ordering::SeqCst);
    let mut trips: Vec<Duration> = counters
        .round_trips_us
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|us| Duration::from_micros(u64::from(*us)))
        .collect();
    trips.sort();
    let per_call_sec = |secs: f64| secs * 1000.0 / (streams as f64 * window);
    Ok(FloorBenchReport {
        relay: match (o.stack, o.raw_media) {
            (false, _) => "bare",
            (true, false) => "stack",
            (true, true) => "stack-raw",
        }
        .to_owned(),
        turns: o.turns,
        streams,
        coalesce_us: o.coalesce_us,
        window_secs: window,
        relay_cpu_secs: cpu,
        cpu_ms_per_call_second: per_call_sec(cpu),
        kernel_ms_per_call_second: per_call_sec(after.system_secs - before.system_secs),
        caller_frames,
        agent_frames,
        marks_echoed: counters.marks_echoed.load(Ordering::SeqCst),
        tally,
        cpu_us_per_frame: cpu * 1e6 / (caller_frames + agent_frames).max(1) as f64,
        round_trip_p50_ms: percentile_ms(&trips, 0.50),
        round_trip_p99_ms: percentile_ms(&trips, 0.99),
        round_trip_max_ms: trips.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        load_late_max_ms: counters.late_max_us.load(Ordering::SeqCst) as f64 / 1000.0,
    })
}

/// One simulated call: caller frames every 20 ms, an agent frame every tenth tick, and both
/// relayed directions read back.
async fn stream(
    telnyx: TcpStream,
    provider: TcpStream,
    start: tokio::time::Instant,
    origin: Instant,
    counters: Arc<Counters>,
    wire: Wire,
    script: Option<Arc<TurnScript>>,
) {
    let (mut telnyx_in, mut telnyx_out) = telnyx.into_split();
    let (mut provider_in, mut provider_out) = provider.into_split();
    let c = counters.clone();
    tokio::spawn(async move {
        // Caller frames come back as Deepgram-sized messages: time their round trip.
        let mut frame = vec![0u8; wire.to_provider];
        while provider_in.read_exact(&mut frame).await.is_ok() {
            if c.measuring.load(Ordering::Relaxed) {
                let sent = wire.read_stamp(&frame);
                let now = origin.elapsed().as_micros() as u64;
                let trip = u32::try_from(now.saturating_sub(sent)).unwrap_or(u32::MAX);
                c.round_trips_us
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(trip);
                c.caller_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let c = counters.clone();
    let (echo_tx, mut echoes) = tokio::sync::mpsc::unbounded_channel();
    if script.is_some() {
        // Agent audio of varying size, and marks to echo.
        tokio::spawn(turns::read_telnyx(telnyx_in, echo_tx, c));
    } else {
        tokio::spawn(async move {
            let mut frame = vec![0u8; wire.to_telnyx];
            while telnyx_in.read_exact(&mut frame).await.is_ok() {
                if c.measuring.load(Ordering::Relaxed) {
                    c.agent_frames.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let mut ticks = tokio::time::interval_at(start, FRAME);
    let (mut caller, agent) = (wire.caller_frame(), wire.agent_frame());
    for n in 0u64.. {
        let due = ticks.tick().await;
        if counters.stop.load(Ordering::Relaxed) {
            return;
        }
        if counters.measuring.load(Ordering::Relaxed) {
            let late = due.elapsed().as_micros() as u64;
            counters.late_max_us.fetch_max(late, Ordering::Relaxed);
        }
        while let Ok(echo) = echoes.try_recv() {
            if telnyx_out.write_all(&echo).await.is_err() {
                return;
            }
        }
        wire.write_stamp(&mut caller, origin.elapsed().as_micros() as u64);
        if telnyx_out.write_all(&caller).await.is_err() {
            return;
        }
        let Some(script) = &script else {
            if n % AGENT_EVERY == 0 && provider_out.write_all(&agent).await.is_err() {
                return;
            }
            continue;
        };
        // With the conversation, this socket is Deepgram's: the turn's messages at their ticks.
        let tick = n % script.every_ticks;
        for (_, frame) in script.frames.iter().filter(|(at, _)| *at == tick) {
            if provider_out.write_all(frame).await.is_err() {
                return;
            }
        }
    }
}

/// The frames the load writes and reads, whole (headers included), and where the caller frame's
/// send time travels.
#[derive(Debug, Clone, Copy)]
struct Wire {
    /// Load → relay, the caller's frame.
    caller: usize,
    /// Relay → load's provider side, the caller frame forwarded.
    to_provider: usize,
    /// Load's provider side → relay, an agent frame.
    agent: usize,
    /// Relay → load's Telnyx side, the agent frame forwarded.
    to_telnyx: usize,
    websocket: bool,
}

/// Payload of a stack caller frame (a Telnyx `media` JSON text with 20 ms of base64 PCMU).
const STACK_TEXT: usize = TELNYX_FRAME - 8;
/// Payload of the stack relay's Deepgram message (20 ms of PCMU, binary).
const STACK_AUDIO: usize = 160;

impl Wire {
    const BARE: Wire = Wire {
        caller: TELNYX_FRAME,
        to_provider: DEEPGRAM_FRAME,
        agent: CARTESIA_FRAME,
        to_telnyx: TELNYX_FRAME,
        websocket: false,
    };
    /// Client frames carry a 16-bit length and a mask (8-byte header), server frames a 16-bit
    /// length (4 bytes).
    const STACK: Wire = Wire {
        caller: 8 + STACK_TEXT,
        to_provider: 8 + STACK_AUDIO,
        agent: 4 + STACK_TEXT,
        to_telnyx: 4 + STACK_TEXT,
        websocket: true,
    };

    /// A caller frame: bare bytes, or a masked (zero mask) text frame of ASCII.
    fn caller_frame(&self) -> Vec<u8> {
        self.frame(self.caller, true)
    }

    /// An agent frame: bare bytes, or an unmasked server text frame of ASCII.
    fn agent_frame(&self) -> Vec<u8> {
        self.frame(self.agent, false)
    }

    fn frame(&self, len: usize, masked: bool) -> Vec<u8> {
        if !self.websocket {
            return vec![0u8; len];
        }
        let frame = ws_frame(&[b'a'; STACK_TEXT], masked);
        debug_assert_eq!(frame.len(), len);
        frame
    }

    /// Writes the send time (µs since the load's origin) into a caller frame: 8 bytes up
    /// front, or 16 hex digits at the start of the text.
    fn write_stamp(&self, frame: &mut [u8], micros: u64) {
        if self.websocket {
            frame[8..24].copy_from_slice(format!("{micros:016x}").as_bytes());
        } else {
            frame[..8].copy_from_slice(&micros.to_le_bytes());
        }
    }

    /// The send time a forwarded caller frame carries (unmasking the relay's client frame).
    fn read_stamp(&self, frame: &[u8]) -> u64 {
        if !self.websocket {
            let mut stamp = [0u8; 8];
            stamp.copy_from_slice(&frame[..8]);
            return u64::from_le_bytes(stamp);
        }
        let mask = &frame[4..8];
        let hex: String = frame[8..24]
            .iter()
            .enumerate()
            .map(|(i, b)| char::from(b ^ mask[i % 4]))
            .collect();
        u64::from_str_radix(&hex, 16).unwrap_or(0)
    }
}

/// A final text frame of `payload`; a client's carries a zero mask (payload as written).
fn ws_frame(payload: &[u8], masked: bool) -> Vec<u8> {
    let mask_bit = if masked { 0x80 } else { 0 };
    let mut frame = vec![0x81];
    match payload.len() {
        n if n < 126 => frame.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        frame.extend_from_slice(&[0; 4]);
    }
    frame.extend_from_slice(payload);
    frame
}

/// Reads an HTTP head (up to the blank line) byte by byte: once per stream, before timing.
async fn read_head(socket: &mut TcpStream) -> anyhow::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(head.len() < 8192, "HTTP head too long");
        socket.read_exact(&mut byte).await?;
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The load's Telnyx side opens stream `n`'s media socket on the stack relay.
async fn ws_client_handshake(socket: &mut TcpStream, n: usize) -> anyhow::Result<()> {
    let request = format!(
        "GET /media/{n} HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await?;
    let head = read_head(socket).await?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 101"),
        "the stack relay refused the media socket: {head}"
    );
    Ok(())
}

/// The load's provider side accepts the relay's upgrade (awc checks the accept key).
async fn ws_server_handshake(socket: &mut TcpStream) -> anyhow::Result<()> {
    let head = read_head(socket).await?;
    let key = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .ok_or_else(|| anyhow::anyhow!("the relay's upgrade has no key: {head}"))?;
    let accept = actix_http::ws::hash_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        String::from_utf8_lossy(&accept)
    );
    socket.write_all(response.as_bytes()).await?;
    Ok(())
}

/// The stack relay child's body: the media route on actix-web + actix-ws, each stream's
/// provider socket opened with awc to `provider`, one task per stream; prints its address.
/// With `raw_media` the media socket is served by [`raw_media_server`] instead, and with
/// `turns` (settings pointing at the simulators and a scratch database) it also holds the
/// conversation ([`turns`]).
pub fn stack_relay(
    provider: String,
    raw_media: bool,
    turns: Option<Settings>,
) -> anyhow::Result<()> {
    use actix_web::{web, App, HttpServer};
    exit_with_parent();
    actix_web::rt::System::new().block_on(async move {
        if raw_media {
            raw_media_server(provider, turns)?.await?;
            return Ok(());
        }
        anyhow::ensure!(turns.is_none(), "--turns needs --raw-media");
        let provider = web::Data::new(provider);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(provider.clone())
                .route("/media/{n}", web::get().to(stack_media))
        })
        .workers(1)
        .disable_signals()
        .tcp_nodelay(true)
        .bind("127.0.0.1:0")?;
        for addr in server.addrs() {
            println!("{addr}");
        }
        server.run().await?;
        Ok(())
    })
}

/// The media socket below actix-web: one worker whose actix-http service hands every
/// WebSocket upgrade to [`raw_media`] with the connection itself (`HttpService::upgrade`);
/// other requests go to an (empty) actix-web `App`, as they would in the engine.
fn raw_media_server(
    provider: String,
    turns: Option<Settings>,
) -> anyhow::Result<actix_web::dev::Server> {
    use actix_http::{h1, HttpService, Request};
    use actix_service::{
        fn_factory, fn_service, map_config, IntoServiceFactory, ServiceFactoryExt,
    };
    use actix_web::dev::AppConfig;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?);
    let provider = Arc::new(provider);
    // The pool is built here and its connections opened by the worker that uses them.
    let turns = match turns {
        Some(settings) => {
            let session = crate::store::patterns::session_settings(settings.learning.ef_search);
            let db = crate::store::pool::db_pool(&settings.database, Some(session))?;
            Some((Arc::new(settings), db))
        }
        None => None,
    };
    let server = actix_web::dev::Server::build()
        .workers(1)
        .disable_signals()
        .listen("stack-raw", listener, move || {
            let (provider, turns) = (provider.clone(), turns.clone());
            let app = actix_web::App::new()
                .into_factory()
                .map_err(|err: actix_web::Error| err.error_response());
            HttpService::build()
                .tcp_nodelay(true)
                .upgrade(fn_factory(move || {
                    let (provider, turns) = (provider.clone(), turns.clone());
                    async move {
                        // Once per worker: the conversation's clients on its thread.
                        let deps = match turns {
                            Some((settings, db)) => Some(
                                turns::TurnDeps::start(&settings, db)
                                    .await
                                    .map_err(|err| eprintln!("stack-raw turns: {err:#}"))?,
                            ),
                            None => None,
                        };
                        Ok::<_, ()>(fn_service(
                            move |(req, framed): (Request, Framed<TcpStream, h1::Codec>)| {
                                let (provider, deps) = (provider.clone(), deps.clone());
                                async move {
                                    if let Err(err) = raw_media(provider, deps, req, framed).await {
                                        eprintln!("stack-raw stream: {err:#}");
                                    }
                                    Ok::<(), actix_http::Error>(())
                                }
                            },
                        ))
                    }
                }))
                .finish(map_config(app, |_| AppConfig::default()))
                .tcp()
        })?
        .run();
    Ok(server)
}

/// One stream whose media socket actix-http handed over at its upgrade: answer 101, then
/// read and write WebSocket frames on the TCP stream in this task (bytes already read after
/// the request head stay first in the read buffer).
async fn raw_media(
    provider: Arc<String>,
    turns: Option<Rc<turns::TurnDeps>>,
    req: actix_http::Request,
    framed: Framed<TcpStream, actix_http::h1::Codec>,
) -> anyhow::Result<()> {
    use actix_http::ws;
    use futures_util::{SinkExt, StreamExt};
    let n = req
        .path()
        .strip_prefix("/media/")
        .ok_or_else(|| anyhow::anyhow!("not a media socket: {}", req.path()))?
        .to_owned();
    let response = ws::handshake(req.head())
        .map_err(|e| anyhow::anyhow!("bad WebSocket handshake: {e}"))?
        .finish()
        .drop_body();
    let framed = actix_http::h1::SendResponse::new(framed, response)
        .await
        .map_err(|e| anyhow::anyhow!("101 not sent: {e}"))?;
    let parts = framed.into_parts();
    let mut telnyx = Framed::from_parts(actix_codec::FramedParts::with_read_buf(
        parts.io,
        ws::Codec::new(),
        parts.read_buf,
    ));
    let url = format!("ws://{}/deepgram/{n}", provider.as_str());
    let client = crate::providers::ws::client(Duration::from_secs(5));
    let Ok((_, provider)) = client.ws(url).connect().await else {
        return Ok(());
    };
    if let Some(deps) = turns {
        return turns::stream(deps, telnyx, provider).await;
    }
    let (mut to_provider, mut from_provider) = provider.split();
    let mut audio = vec![0u8; STACK_AUDIO];
    loop {
        tokio::select! {
            frame = telnyx.next() => match frame {
                Some(Ok(ws::Frame::Text(text))) if text.len() >= 16 => {
                    if to_provider.send(deepgram_message(&mut audio, &text)).await.is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                _ => return Ok(()),
            },
            frame = from_provider.next() => match frame {
                Some(Ok(awc::ws::Frame::Text(text))) => {
                    let Ok(text) = String::from_utf8(text.to_vec()) else { return Ok(()) };
                    if telnyx.send(ws::Message::Text(text.into())).await.is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                _ => return Ok(()),
            },
        }
    }
}

/// The Deepgram message a caller frame becomes: `audio` (160 bytes) carrying the frame's send
/// time (its first 16 bytes).
fn deepgram_message(audio: &mut [u8], caller_frame: &[u8]) -> awc::ws::Message {
    audio[..16].copy_from_slice(&caller_frame[..16]);
    awc::ws::Message::Binary(bytes::Bytes::copy_from_slice(audio))
}

async fn stack_media(
    req: actix_web::HttpRequest,
    body: actix_web::web::Payload,
    n: actix_web::web::Path<u64>,
    provider: actix_web::web::Data<String>,
) -> actix_web::Result<actix_web::HttpResponse> {
    let (response, session, telnyx) = actix_ws::handle(&req, body)?;
    let url = format!("ws://{}/deepgram/{}", provider.get_ref(), n.into_inner());
    actix_web::rt::spawn(stack_stream(url, session, telnyx));
    Ok(response)
}

/// One stream on the stack: caller text frames out to the provider as 160-byte binary messages
/// (carrying the send time), agent text frames back to Telnyx.
async fn stack_stream(
    url: String,
    mut session: actix_ws::Session,
    mut telnyx: actix_ws::MessageStream,
) {
    use futures_util::{SinkExt, StreamExt};
    let client = crate::providers::ws::client(Duration::from_secs(5));
    let Ok((_, provider)) = client.ws(url).connect().await else {
        let _ = session.close(None).await;
        return;
    };
    let (mut to_provider, mut from_provider) = provider.split();
    let mut audio = vec![0u8; STACK_AUDIO];
    loop {
        tokio::select! {
            message = telnyx.next() => match message {
                Some(Ok(actix_ws::Message::Text(text))) if text.len() >= 16 => {
                    let message = deepgram_message(&mut audio, text.as_bytes());
                    if to_provider.send(message).await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            frame = from_provider.next() => match frame {
                Some(Ok(awc::ws::Frame::Text(text))) => {
                    let Ok(text) = std::str::from_utf8(&text) else { return };
                    if session.text(text.to_owned()).await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
}

/// A bench child's parent holds its stdin open: when the parent ends (however it ends), the
/// pipe closes and so does the child.
pub(crate) fn exit_with_parent() {
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
}

/// `iace` run as a bench child, pinned to `cpus` (a `taskset -c` list) when given.
pub(crate) fn child_command(cpus: Option<&str>) -> anyhow::Result<std::process::Command> {
    let exe: PathBuf = std::env::current_exe()?;
    Ok(match cpus {
        Some(cpus) => {
            let mut c = std::process::Command::new("taskset");
            c.args(["-c", cpus]).arg(&exe);
            c
        }
        None => std::process::Command::new(&exe),
    })
}

/// The relay child, killed when the bench ends (also on error). Its stdin stays open with it:
/// if this process dies without dropping it, the closed pipe ends the relay too.
pub(crate) struct KillOnDrop(pub(crate) std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
