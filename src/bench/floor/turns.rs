//! `bench floor --stack --raw-media --turns`: the conversation's floor. Beside the frames, the
//! stack-raw relay holds the bench's conversation with the provider exchanges a caller turn of
//! `bench calls` costs the engine, and nothing else: Deepgram's results parsed, two retrievals
//! while the caller speaks (Gemini `embedContent`, a Redis `MGET` of the cache keys, the
//! pattern search in Postgres), Groq's streamed reply cut into sentences, Groq's sentiment
//! rating, the sentences to Cartesia and its audio chunks on to Telnyx, a mark per sentence
//! and its echo, the transcript rows and the call's sentiment written to Postgres (one kept
//! connection, as the engine's recorder), seven live events to Redis (pipelined, as the
//! engine's publisher). It runs on the relay's one worker thread, in each stream's task and
//! the tasks it spawns, with the engine's clients (awc, diesel-async, deadpool, redis) against
//! the project's simulators, Postgres and Redis.
//!
//! It does less than the engine: no actors or thread hops, no metrics, no barge-in, watchdogs
//! or replay buffer, no history in the prompt, no caller memory, the agent's base64 audio
//! passed to Telnyx as Cartesia sent it (the engine decodes and re-encodes it), marks sent when
//! Cartesia's word timings arrive (the engine places them at the audio's offset), no pool
//! checkout (with its `PING`) before the `MGET`. Logging is the benches' (warnings only), so
//! the clients' `provider_request` spans are made but not recorded, as in the engine's bench.

use super::ws_frame;
use crate::config::Settings;
use crate::domain::audio::Codec;
use crate::domain::text::SentenceSplitter;
use crate::learning::RetrievedContext;
use crate::providers::cartesia::messages::TtsEvent;
use crate::providers::cartesia::CartesiaClient;
use crate::providers::deepgram::messages::SttEvent;
use crate::providers::gemini::GeminiClient;
use crate::providers::groq::{ChatMessage, GroqClient};
use crate::store::calls::{CallChanges, NewCall};
use crate::store::pool::DbPool;
use crate::store::utterances::NewUtterance;
use actix_codec::Framed;
use actix_http::ws;
use deadpool_redis::redis;
use futures_util::{SinkExt, StreamExt};
use std::rc::Rc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use uuid::Uuid;

/// The bench agent's prompt (as `bench calls` seeds it).
const PROFILE_PROMPT: &str = "You are a helpful support agent for an online shop.";
/// The engine's prefetch rule (`actors::call::listening`): an interim result of at least 3
/// words is fetched when the last fetch had under 0.6 of its words (at 3 and 6 of 9 words).
const PREFETCH_MIN_WORDS: usize = 3;
const PREFETCH_MIN_WORDS_SHARE: f64 = 0.6;
/// Writes the recorder takes at once.
const WRITE_BATCH: usize = 64;

/// What every stream of the relay's worker shares: the clients, the pools and the queues of
/// the live publisher and the writer.
pub(super) struct TurnDeps {
    organization_id: Uuid,
    gemini: GeminiClient,
    groq: GroqClient,
    cartesia: CartesiaClient,
    cartesia_version: String,
    db: DbPool,
    redis: redis::aio::MultiplexedConnection,
    live: mpsc::UnboundedSender<String>,
    writes: mpsc::UnboundedSender<Write>,
    /// The retrieval cache's key prefix (the engine's, `learning::retrieval`).
    cache_prefix: String,
    top_k: i64,
    min_similarity: f64,
}

impl TurnDeps {
    /// Opens Redis and starts the live publisher and the writer on this (the worker's) thread.
    pub(super) async fn start(settings: &Settings, db: DbPool) -> anyhow::Result<Rc<Self>> {
        let organization_id = seed_organization(&db).await?;
        let redis = tokio::time::timeout(
            Duration::from_secs(5),
            redis::Client::open(settings.redis.url.expose())?.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| anyhow::anyhow!("redis did not answer within 5 s"))??;
        let (live, queue) = mpsc::unbounded_channel();
        let channel = crate::live::channel(&settings.redis.key_prefix, organization_id);
        actix_web::rt::spawn(publish_live(queue, redis.clone(), channel));
        let (writes, write_queue) = mpsc::unbounded_channel();
        actix_web::rt::spawn(record(write_queue, db.clone(), organization_id));
        Ok(Rc::new(Self {
            organization_id,
            gemini: GeminiClient::new(&settings.gemini),
            groq: GroqClient::new(&settings.groq),
            cartesia: CartesiaClient::new(&settings.cartesia),
            cartesia_version: settings.cartesia.version.clone(),
            db,
            redis,
            live,
            writes,
            cache_prefix: format!("{}:learning:ctx", settings.redis.key_prefix),
            top_k: settings.learning.retrieval_top_k,
            min_similarity: settings.learning.min_similarity,
        }))
    }

    fn publish(&self, call_id: Uuid, kind: &str, detail: &str) {
        let payload = format!(r#"{{"type":"{kind}","call_id":"{call_id}","detail":"{detail}"}}"#);
        let _ = self.live.send(payload);
    }
}

/// The organization the relay's calls belong to.
async fn seed_organization(db: &DbPool) -> anyhow::Result<Uuid> {
    let mut conn = db.get().await?;
    let org = crate::store::organizations::insert(&mut conn, "floor").await?;
    Ok(org.id)
}

/// Live events to Redis in pipelines of up to 64, as the engine's publisher sends them.
async fn publish_live(
    mut queue: mpsc::UnboundedReceiver<String>,
    mut redis: redis::aio::MultiplexedConnection,
    channel: String,
) {
    let mut batch = Vec::with_capacity(64);
    while queue.recv_many(&mut batch, 64).await > 0 {
        let mut pipe = redis::pipe();
        for payload in batch.drain(..) {
            pipe.cmd("PUBLISH").arg(&channel).arg(payload).ignore();
        }
        if let Err(err) = pipe.query_async::<()>(&mut redis).await {
            failed("live events", err);
        }
    }
}

/// A write for Postgres.
enum Write {
    Utterance(NewUtterance),
    Sentiment { call_id: Uuid, score: f32 },
}

/// The writes on one kept connection, whatever is queued taken at once, one statement each
/// (as the engine's recorder does, less its 20 ms wait for a batch to gather).
async fn record(mut queue: mpsc::UnboundedReceiver<Write>, db: DbPool, organization_id: Uuid) {
    let mut conn = match db.get().await {
        Ok(conn) => conn,
        Err(err) => return failed("the writer's connection", err),
    };
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while queue.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        for write in batch.drain(..) {
            let written = match write {
                Write::Utterance(row) => crate::store::utterances::insert(&mut conn, &row).await,
                Write::Sentiment { call_id, score } => {
                    let changes = CallChanges {
                        sentiment_avg: Some(score),
                        ..CallChanges::default()
                    };
                    crate::store::calls::update(&mut conn, organization_id, call_id, &changes).await
                }
            };
            if let Err(err) = written {
                failed("a write", err);
            }
        }
    }
}

/// What the stream's spawned work asks of the stream's task (which owns the sockets), for the
/// turn it was started for.
enum Command {
    /// A sentence for Cartesia; `last` closes the context.
    Say { turn: u32, text: String, last: bool },
    /// The reply had this many sentences: the echo of that mark ends the turn.
    Sentences { turn: u32, count: usize },
}

/// One stream with its conversation: `telnyx` is the media socket, `deepgram` the provider
/// socket (the load plays Deepgram on it), frames relayed as the plain stack-raw relay does.
pub(super) async fn stream(
    deps: Rc<TurnDeps>,
    mut telnyx: Framed<TcpStream, ws::Codec>,
    deepgram: Framed<awc::BoxedSocket, awc::ws::Codec>,
) -> anyhow::Result<()> {
    let call_id = Uuid::now_v7();
    {
        let mut conn = deps.db.get().await?;
        crate::store::calls::insert(
            &mut conn,
            &NewCall {
                id: call_id,
                organization_id: deps.organization_id,
                agent_profile_id: None,
                direction: "inbound".into(),
                from_number: "+15550000000".into(),
                to_number: "+15550000001".into(),
                call_control_id: None,
                call_leg_id: None,
                call_session_id: None,
                status: "streaming".into(),
                started_at: chrono::Utc::now(),
                owner_instance: None,
            },
        )
        .await?;
    }
    let (_, cartesia) = crate::providers::ws::client(Duration::from_secs(5))
        .ws(deps.cartesia.socket_url())
        .header("Cartesia-Version", deps.cartesia_version.as_str())
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cartesia socket: {e}"))?;
    let (mut to_cartesia, mut from_cartesia) = cartesia.split();
    let (mut to_deepgram, mut from_deepgram) = deepgram.split();
    let (commands, mut command_queue) = mpsc::unbounded_channel::<Command>();
    let mut audio = vec![0u8; super::STACK_AUDIO];
    let mut turn = Turn::default();
    loop {
        tokio::select! {
            frame = telnyx.next() => match frame {
                Some(Ok(ws::Frame::Text(text))) if text.first() == Some(&b'{') => {
                    turn.on_telnyx_event(&deps, call_id, &text);
                }
                Some(Ok(ws::Frame::Text(text))) if text.len() >= 16 => {
                    let message = super::deepgram_message(&mut audio, &text);
                    if to_deepgram.send(message).await.is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                _ => return Ok(()),
            },
            frame = from_deepgram.next() => match frame {
                Some(Ok(awc::ws::Frame::Text(text))) => {
                    if let Ok(SttEvent::Results(results)) = serde_json::from_slice(&text) {
                        turn.on_transcript(&deps, call_id, &commands, &results);
                    }
                }
                Some(Ok(_)) => {}
                _ => return Ok(()),
            },
            frame = from_cartesia.next() => match frame {
                Some(Ok(awc::ws::Frame::Text(text))) => {
                    let out = match serde_json::from_slice::<TtsEvent>(&text) {
                        // A late chunk of a turn the call moved on from is not played.
                        Ok(TtsEvent::Chunk(chunk)) if turn.is_current(&chunk.context_id) => {
                            if !turn.speaking {
                                turn.speaking = true;
                                deps.publish(call_id, "stage", "speaking");
                            }
                            // Cartesia's base64 goes on as Telnyx's payload as it is.
                            Some(format!(
                                r#"{{"event":"media","media":{{"payload":"{}"}}}}"#,
                                chunk.data
                            ))
                        }
                        Ok(TtsEvent::Timestamps(t)) if turn.is_current(&t.context_id) => {
                            turn.marks += 1;
                            Some(format!(
                                r#"{{"event":"mark","mark":{{"name":"{}:{}"}}}}"#,
                                turn.number, turn.marks
                            ))
                        }
                        _ => None,
                    };
                    if let Some(out) = out {
                        if telnyx.send(ws::Message::Text(out.into())).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                Some(Ok(_)) => {}
                _ => return Ok(()),
            },
            Some(command) = command_queue.recv() => match command {
                Command::Say { turn: n, text, last } if n == turn.number => {
                    turn.reply.push_str(&text);
                    let context_id = n.to_string();
                    let request = deps.cartesia.request(&context_id, &text, Codec::Pcmu, !last);
                    let message = awc::ws::Message::Text(serde_json::to_string(&request)?.into());
                    if to_cartesia.send(message).await.is_err() {
                        return Ok(());
                    }
                }
                Command::Sentences { turn: n, count } if n == turn.number => {
                    turn.sentences = Some(count);
                }
                _ => {} // for a turn the call moved on from
            },
        }
    }
}

/// The turn under way on one stream.
#[derive(Default)]
struct Turn {
    number: u32,
    /// Words of the caller's speech a retrieval has been started for.
    prefetched: usize,
    /// The transcript rows written so far (caller and agent).
    seq: i32,
    speaking: bool,
    marks: usize,
    sentences: Option<usize>,
    reply: String,
}

impl Turn {
    fn on_transcript(
        &mut self,
        deps: &Rc<TurnDeps>,
        call_id: Uuid,
        commands: &mpsc::UnboundedSender<Command>,
        results: &crate::providers::deepgram::messages::Results,
    ) {
        let text = results.transcript();
        let words = text.split_whitespace().count();
        if !results.is_final {
            if self.prefetch(words) {
                actix_web::rt::spawn(retrieve(deps.clone(), text.to_owned()));
            }
            return;
        }
        if text.is_empty() {
            return; // Deepgram finalising silence
        }
        *self = Turn {
            number: self.number + 1,
            seq: self.seq + 1,
            ..Turn::default()
        };
        deps.publish(call_id, "transcript", text);
        deps.publish(call_id, "stage", "thinking");
        let (turn, seq) = (self.number, self.seq);
        actix_web::rt::spawn(reply(deps.clone(), commands.clone(), turn, text.to_owned()));
        actix_web::rt::spawn(score(deps.clone(), call_id, seq, text.to_owned()));
    }

    /// Whether an interim result of `words` words starts a retrieval (then it is the last).
    fn prefetch(&mut self, words: usize) -> bool {
        let stale = (self.prefetched as f64) < words as f64 * PREFETCH_MIN_WORDS_SHARE;
        let fetch = words >= PREFETCH_MIN_WORDS && stale;
        if fetch {
            self.prefetched = words;
        }
        fetch
    }

    /// Whether Cartesia's `context_id` is this turn's.
    fn is_current(&self, context_id: &str) -> bool {
        context_id.parse() == Ok(self.number)
    }

    /// A Telnyx event on the media socket: the echo of the turn's last mark ends it.
    fn on_telnyx_event(&mut self, deps: &Rc<TurnDeps>, call_id: Uuid, text: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Echo<'a> {
            #[serde(borrow)]
            mark: Mark<'a>,
        }
        #[derive(serde::Deserialize)]
        struct Mark<'a> {
            name: &'a str,
        }
        let Ok(echo) = serde_json::from_slice::<Echo>(text) else {
            return;
        };
        let last = self
            .sentences
            .map(|n| format!("{}:{n}", self.number))
            .is_some_and(|last| last == echo.mark.name);
        if !last {
            return;
        }
        self.sentences = None;
        self.seq += 1;
        deps.publish(call_id, "transcript", &self.reply);
        deps.publish(call_id, "turn", "latency");
        deps.publish(call_id, "stage", "listening");
        let row = utterance(
            deps,
            call_id,
            self.seq,
            "agent",
            std::mem::take(&mut self.reply),
        );
        let _ = deps.writes.send(Write::Utterance(NewUtterance {
            latency_ms: Some(0),
            ..row
        }));
    }
}

/// A prefetch: the question embedded, the retrieval cache asked, the patterns searched.
async fn retrieve(deps: Rc<TurnDeps>, text: String) {
    let embedding = match deps.gemini.embed_query(&text).await {
        Ok(embedding) => embedding,
        Err(err) => return failed("embedding", err),
    };
    let key = format!(
        "{}:{}:{}:{:x}",
        deps.cache_prefix,
        deps.organization_id,
        deps.gemini.model(),
        text.len()
    );
    let cached: Result<(Option<String>, Option<u64>), _> = redis::cmd("MGET")
        .arg(&key)
        .arg(format!(
            "{}:generation:{}",
            deps.cache_prefix, deps.organization_id
        ))
        .query_async(&mut deps.redis.clone())
        .await;
    if let Err(err) = cached {
        failed("retrieval cache", err);
    }
    let mut conn = match deps.db.get().await {
        Ok(conn) => conn,
        Err(err) => return failed("pattern search", err),
    };
    let found = crate::store::patterns::search(
        &mut conn,
        deps.organization_id,
        &embedding,
        deps.top_k,
        deps.min_similarity,
    )
    .await;
    if let Err(err) = found {
        failed("pattern search", err);
    }
}

/// A part of a turn that failed: said, so that a floor missing work does not pass unnoticed
/// (the report's tally of rows and requests shows it too).
fn failed(what: &str, err: impl std::fmt::Display) {
    eprintln!("floor turns: {what}: {err}");
}

/// Groq's streamed reply for turn `turn`, cut into sentences for Cartesia.
async fn reply(
    deps: Rc<TurnDeps>,
    commands: mpsc::UnboundedSender<Command>,
    turn: u32,
    text: String,
) {
    let system = crate::prompts::reply_system(PROFILE_PROMPT, &RetrievedContext::default());
    let request = deps
        .groq
        .chat_request(vec![ChatMessage::system(system), ChatMessage::user(text)]);
    let mut tokens = match deps.groq.stream(request).await {
        Ok(tokens) => tokens,
        Err(err) => return failed("reply", err),
    };
    let mut splitter = SentenceSplitter::new();
    let mut count = 0;
    let say = |text, last| {
        let _ = commands.send(Command::Say { turn, text, last });
    };
    while let Some(Ok(token)) = tokens.next().await {
        for text in splitter.push(&token) {
            count += 1;
            say(text, false);
        }
    }
    if let Some(text) = splitter.finish() {
        count += 1;
        say(text, false);
    }
    say(String::new(), true);
    let _ = commands.send(Command::Sentences { turn, count });
}

/// Groq's sentiment rating of the caller's sentence, then the caller's row and the call's
/// rolling sentiment written.
async fn score(deps: Rc<TurnDeps>, call_id: Uuid, seq: i32, text: String) {
    #[derive(serde::Deserialize)]
    struct Scored {
        score: f32,
    }
    let request = deps
        .groq
        .chat_request(crate::prompts::sentiment(text.clone()));
    let score = match deps.groq.complete_json::<Scored>(&request).await {
        Ok(scored) => scored.score,
        Err(err) => return failed("sentiment", err),
    };
    deps.publish(call_id, "sentiment", "scored");
    let _ = deps.writes.send(Write::Utterance(NewUtterance {
        sentiment_score: Some(score),
        sentiment_label: Some("neutral".into()),
        rolling_sentiment: Some(score),
        ..utterance(&deps, call_id, seq, "caller", text)
    }));
    let _ = deps.writes.send(Write::Sentiment { call_id, score });
}

/// A transcript row of the stream's call, with no timings or sentiment.
fn utterance(
    deps: &TurnDeps,
    call_id: Uuid,
    seq: i32,
    speaker: &str,
    text: String,
) -> NewUtterance {
    NewUtterance {
        organization_id: deps.organization_id,
        call_id,
        seq,
        speaker: speaker.into(),
        text,
        started_ms: 0,
        ended_ms: 0,
        sentiment_score: None,
        sentiment_label: None,
        rolling_sentiment: None,
        interrupted: false,
        latency_ms: None,
    }
}

// The load's side (`iace bench floor`, not the relay child).

/// Rows and requests a `--turns` run left behind, over the whole run (ramp included).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Tally {
    /// Transcript rows (one caller and one agent row per answered turn).
    pub utterances: i64,
    /// Calls whose rolling sentiment was written.
    pub scored_calls: i64,
    /// Gemini `embedContent` requests (two retrievals per caller turn).
    pub embeddings: usize,
    /// Groq requests (a reply and a sentiment rating per caller turn).
    pub llm_requests: usize,
}

/// The services the relay's conversation talks to, started by the load: the simulators (on the
/// load's CPU, as `bench calls` runs them) and a scratch database, dropped with it.
pub(super) struct Services {
    scratch: super::super::scratch::ScratchDb,
    gemini: crate::sim::gemini::GeminiSim,
    groq: crate::sim::groq::GroqSim,
    cartesia: crate::sim::cartesia::CartesiaSim,
}

impl Services {
    /// Starts them with `bench calls`' defaults (inside an actix system).
    pub fn start(settings: &Settings) -> anyhow::Result<Self> {
        use crate::bench::calls::{AGENT_REPLY, CALLER_LINE};
        use crate::sim::groq::{GroqRule, GroqSimConfig};
        anyhow::ensure!(
            CALLER_LINE.contains("order"),
            "the Groq rule keys on 'order'"
        );
        let groq = GroqSimConfig {
            rules: vec![GroqRule::new("order", AGENT_REPLY)],
            ..GroqSimConfig::default()
        };
        Ok(Self {
            scratch: super::super::scratch::ScratchDb::create(settings.database.url.expose())?,
            gemini: crate::sim::gemini::GeminiSim::start(Default::default())?,
            groq: crate::sim::groq::GroqSim::start(groq)?,
            cartesia: crate::sim::cartesia::CartesiaSim::start(Default::default())?,
        })
    }

    /// What the relay's conversation left behind: rows written and requests served.
    pub fn tally(&self) -> anyhow::Result<Tally> {
        use diesel::{Connection, RunQueryDsl};
        #[derive(diesel::QueryableByName)]
        struct Counts {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            utterances: i64,
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            scored_calls: i64,
        }
        let mut conn = diesel::PgConnection::establish(self.scratch.url())?;
        let counts: Counts = diesel::sql_query(
            "SELECT (SELECT count(*) FROM utterances) AS utterances, \
             (SELECT count(*) FROM calls WHERE sentiment_avg IS NOT NULL) AS scored_calls",
        )
        .get_result(&mut conn)?;
        Ok(Tally {
            utterances: counts.utterances,
            scored_calls: counts.scored_calls,
            embeddings: self.gemini.requests().len(),
            llm_requests: self.groq.requests().len(),
        })
    }

    /// The relay child's settings pointing at them (the scratch URL carries credentials: it
    /// goes to the child's environment only).
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("IACE__DATABASE__URL", self.scratch.url().to_owned()),
            ("IACE__GEMINI__BASE_URL", self.gemini.base_url()),
            ("IACE__GROQ__BASE_URL", self.groq.base_url()),
            ("IACE__CARTESIA__BASE_URL", self.cartesia.base_url()),
        ]
    }
}

/// What Deepgram sends over one caller turn of the bench's caller ("Could you tell me when my
/// order will arrive?", 2.86 s of speech), as the bench's Deepgram simulator sends it: speech
/// started, an interim result every 300 ms revealing three words a second, the final 280 ms
/// after the speech, the utterance end 700 ms later and an empty final over the silence that
/// follows (about 3 s on). Each as a server text frame, at its 20 ms tick from the turn's
/// start.
pub(super) fn deepgram_script() -> anyhow::Result<Vec<(u64, Vec<u8>)>> {
    use crate::providers::deepgram::messages::{
        Alternative, Channel, Results, SpeechStarted, UtteranceEnd, Word,
    };
    let words: Vec<&str> = crate::bench::calls::CALLER_LINE
        .split_whitespace()
        .collect();
    let results = |n: usize, is_final: bool| {
        let words: Vec<Word> = words[..n]
            .iter()
            .enumerate()
            .map(|(i, w)| Word {
                word: w
                    .trim_matches(|c: char| !c.is_alphanumeric())
                    .to_lowercase(),
                start: i as f64 / 3.0,
                end: (i + 1) as f64 / 3.0,
                confidence: 0.98,
                punctuated_word: Some((*w).to_owned()),
            })
            .collect();
        SttEvent::Results(Results {
            channel_index: vec![0, 1],
            start: 0.0,
            duration: n as f64 / 3.0,
            is_final,
            speech_final: is_final,
            from_finalize: false,
            channel: Channel {
                alternatives: vec![Alternative {
                    transcript: words
                        .iter()
                        .filter_map(|w| w.punctuated_word.clone())
                        .collect::<Vec<_>>()
                        .join(" "),
                    confidence: 0.98,
                    words,
                }],
            },
            metadata: None,
        })
    };
    let mut script = vec![(
        0,
        SttEvent::SpeechStarted(SpeechStarted {
            channel: vec![0],
            timestamp: 0.0,
        }),
    )];
    for n in 1..=words.len() {
        script.push((15 * n as u64, results(n, false)));
    }
    script.push((157, results(words.len(), true)));
    script.push((
        192,
        SttEvent::UtteranceEnd(UtteranceEnd {
            channel: vec![0, 1],
            last_word_end: 2.86,
        }),
    ));
    script.push((307, results(0, true)));
    script
        .into_iter()
        .map(|(tick, event)| Ok((tick, ws_frame(&serde_json::to_vec(&event)?, false))))
        .collect()
}

/// One past the last tick [`deepgram_script`] uses: a turn cannot be shorter.
pub(super) const SCRIPT_TICKS: u64 = 308;

/// The load's Telnyx side reading what the relay sends it: agent audio counted, every mark
/// echoed back (as Telnyx does once the audio before it has played; here at once) through
/// `echoes`, which the stream's sender writes before its next frame.
pub(super) async fn read_telnyx(
    mut from_relay: impl tokio::io::AsyncReadExt + Unpin,
    echoes: mpsc::UnboundedSender<Vec<u8>>,
    counters: std::sync::Arc<super::Counters>,
) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    #[derive(serde::Deserialize)]
    struct Mark {
        name: String,
    }
    #[derive(serde::Deserialize)]
    struct Event {
        event: String,
        mark: Option<Mark>,
    }
    let mut payload = Vec::new();
    loop {
        let mut head = [0u8; 2];
        from_relay.read_exact(&mut head).await?;
        let len = match head[1] & 0x7f {
            126 => usize::from(from_relay.read_u16().await?),
            127 => usize::try_from(from_relay.read_u64().await?)?,
            n => usize::from(n),
        };
        anyhow::ensure!(head[1] & 0x80 == 0, "the relay masked a server frame");
        payload.resize(len, 0);
        from_relay.read_exact(&mut payload).await?;
        if payload.starts_with(br#"{"event":"media""#) {
            if counters.measuring.load(Ordering::Relaxed) {
                counters.agent_frames.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        let Ok(Event {
            event,
            mark: Some(mark),
        }) = serde_json::from_slice::<Event>(&payload)
        else {
            continue;
        };
        if event == "mark" {
            if counters.measuring.load(Ordering::Relaxed) {
                counters.marks_echoed.fetch_add(1, Ordering::Relaxed);
            }
            let echo = format!(
                r#"{{"event":"mark","sequence_number":"1","stream_id":"floor","mark":{{"name":"{}"}}}}"#,
                mark.name
            );
            let _ = echoes.send(ws_frame(echo.as_bytes(), true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payload of a server frame [`ws_frame`] made (no mask).
    fn payload(frame: &[u8]) -> &[u8] {
        match frame[1] & 0x7f {
            126 => &frame[4..],
            127 => &frame[10..],
            _ => &frame[2..],
        }
    }

    #[test]
    fn frames_carry_their_length_in_the_form_its_size_needs() {
        for (len, header) in [(125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let frame = ws_frame(&vec![b'a'; len], false);
            assert_eq!(frame.len(), header + len, "{len}");
            assert_eq!(payload(&frame).len(), len);
        }
        // A client's frame: the mask bit and a zero mask, the payload as written.
        let frame = ws_frame(b"hi", true);
        assert_eq!(frame, [0x81, 0x82, 0, 0, 0, 0, b'h', b'i']);
    }

    #[test]
    fn a_scripted_turn_prefetches_twice_and_ends_with_the_callers_whole_sentence() {
        let script = deepgram_script().unwrap();
        assert!(script.windows(2).all(|w| w[0].0 <= w[1].0), "in tick order");
        assert!(script.iter().all(|(tick, _)| *tick < SCRIPT_TICKS));
        let events: Vec<SttEvent> = script
            .iter()
            .map(|(_, frame)| serde_json::from_slice(payload(frame)).unwrap())
            .collect();
        let (mut turn, mut prefetches, mut finals) = (Turn::default(), 0, Vec::new());
        for event in &events {
            let SttEvent::Results(results) = event else {
                continue;
            };
            let words = results.transcript().split_whitespace().count();
            if results.is_final {
                finals.push(results.transcript().to_owned());
            } else if turn.prefetch(words) {
                prefetches += 1;
            }
        }
        assert_eq!(
            prefetches, 2,
            "at 3 and 6 of 9 words, as the engine fetches"
        );
        assert_eq!(finals, [crate::bench::calls::CALLER_LINE, ""]);
        assert!(matches!(events.first(), Some(SttEvent::SpeechStarted(_))));
        assert!(events
            .iter()
            .any(|e| matches!(e, SttEvent::UtteranceEnd(_))));
    }
}
