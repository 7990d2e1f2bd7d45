//! A small front proxy for the cluster tests, standing in for Fly's proxy: it sends each request
//! (one request per connection) to a random instance it knows, skips one that refuses the
//! connection (as Fly's health checks would), and, in `fly-replay` mode, honours the
//! `fly-replay` response header as Fly documents it: `instance=<id>` replays the request to that
//! instance, `elsewhere=true` to any instance but the one that answered, `state=` is handed on;
//! the replayed request carries `fly-replay-src: instance=<src>;region=<r>;t=<micros>;state=<s>`
//! and the first answer's body is discarded. WebSocket upgrades are replayed the same way, then
//! spliced both ways. In `plain` mode it is an ordinary load balancer (cluster.routing =
//! "forward" deployments).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Replays of one request before the proxy gives up (a loop between instances is a bug).
const MAX_REPLAYS: usize = 3;
const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Honour `fly-replay` (Fly's proxy).
    FlyReplay,
    /// A plain load balancer.
    Plain,
}

/// What the proxy saw, for assertions.
#[derive(Debug, Clone, Default)]
pub struct ProxyStats {
    /// Requests received from clients.
    pub requests: usize,
    /// Replays made on a `fly-replay` answer (WebSocket upgrades included).
    pub replays: usize,
    pub upgrade_replays: usize,
    /// Final answers by status, keyed `"METHOD /path-prefix STATUS"` (path up to its 3rd '/').
    pub answers: HashMap<String, usize>,
    /// A request replayed more than `MAX_REPLAYS` times (a routing loop).
    pub loops: usize,
}

#[derive(Default)]
struct State {
    upstreams: Vec<(String, SocketAddr)>,
    down: Vec<String>,
    stats: ProxyStats,
}

#[derive(Clone)]
pub struct FrontProxy {
    pub port: u16,
    mode: ProxyMode,
    state: Arc<Mutex<State>>,
}

/// A parsed request or response head.
struct Head {
    first_line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> usize {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    fn is_upgrade(&self) -> bool {
        self.header("upgrade").is_some()
    }

    /// The head as bytes, with `extra` headers and without the `drop` ones.
    fn render(&self, drop: &[&str], extra: &[(String, String)]) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.first_line);
        for (n, v) in &self.headers {
            if !drop.iter().any(|d| n.eq_ignore_ascii_case(d)) {
                out.push_str(&format!("{n}: {v}\r\n"));
            }
        }
        for (n, v) in extra {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// Reads a head (up to the blank line); returns it and any bytes read past it.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<(Head, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..end]).to_string();
            let rest = buf[end + 4..].to_vec();
            let mut lines = text.split("\r\n");
            let first_line = lines.next().unwrap_or_default().to_owned();
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .collect();
            return Ok(Some((
                Head {
                    first_line,
                    headers,
                },
                rest,
            )));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Parses `fly-replay` fields (`instance=x;elsewhere=true;state=s`).
fn replay_fields(value: &str) -> HashMap<String, String> {
    value
        .split(';')
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect()
}

impl FrontProxy {
    /// Listens on a free loopback port (its own thread and runtime, so it never waits on the
    /// test's). Upstreams are given later with [`FrontProxy::set_upstreams`].
    pub fn start(mode: ProxyMode) -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let port = std_listener.local_addr().unwrap().port();
        let proxy = FrontProxy {
            port,
            mode,
            state: Arc::default(),
        };
        let serving = proxy.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                while let Ok((client, _)) = listener.accept().await {
                    let proxy = serving.clone();
                    tokio::spawn(async move { proxy.serve(client).await });
                }
            });
        });
        proxy
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_upstreams(&self, upstreams: Vec<(String, SocketAddr)>) {
        self.state.lock().unwrap().upstreams = upstreams;
    }

    pub fn stats(&self) -> ProxyStats {
        self.state.lock().unwrap().stats.clone()
    }

    /// The next live upstream in turn, skipping `not`.
    fn pick(&self, not: Option<&str>) -> Option<(String, SocketAddr)> {
        let s = self.state.lock().unwrap();
        let candidates: Vec<_> = s
            .upstreams
            .iter()
            .filter(|(id, _)| !s.down.contains(id) && Some(id.as_str()) != not)
            .cloned()
            .collect();
        if candidates.is_empty() {
            return None;
        }
        // Random, like a balancer under real traffic: a strict rotation can line up with a
        // call's fixed number of webhooks and send every `call.initiated` to one instance.
        let i = rand::random::<usize>() % candidates.len();
        Some(candidates[i].clone())
    }

    fn named(&self, id: &str) -> Option<(String, SocketAddr)> {
        let s = self.state.lock().unwrap();
        s.upstreams
            .iter()
            .find(|(i, _)| i == id && !s.down.contains(i))
            .cloned()
    }

    fn mark_down(&self, id: &str) {
        let mut s = self.state.lock().unwrap();
        if !s.down.iter().any(|d| d == id) {
            s.down.push(id.to_owned());
        }
    }

    fn count_answer(&self, head: &Head, status: &str) {
        let mut parts = head.first_line.split_whitespace();
        let method = parts.next().unwrap_or("");
        let path = parts.next().unwrap_or("");
        let prefix: String = path
            .split('?')
            .next()
            .unwrap_or("")
            .split('/')
            .take(3)
            .collect::<Vec<_>>()
            .join("/");
        let key = format!("{method} {prefix} {status}");
        *self
            .state
            .lock()
            .unwrap()
            .stats
            .answers
            .entry(key)
            .or_default() += 1;
    }

    async fn serve(&self, mut client: TcpStream) {
        let Ok(Some((head, mut body))) = read_head(&mut client).await else {
            return;
        };
        self.state.lock().unwrap().stats.requests += 1;
        // Bodies are buffered whole (replay needs them; Fly's limit is 1 MB).
        let want = head.content_length();
        while body.len() < want {
            let mut chunk = vec![0u8; want - body.len()];
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        let upgrade = head.is_upgrade();
        let mut target = self.pick(None);
        let mut replay_src: Option<String> = None;
        let mut replays = 0;
        loop {
            let Some((id, addr)) = target.clone() else {
                let _ = client
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                self.count_answer(&head, "503");
                return;
            };
            let mut upstream = match TcpStream::connect(addr).await {
                Ok(s) => s,
                Err(_) => {
                    // Refused: the instance is gone; as Fly's health checks would, stop using it.
                    self.mark_down(&id);
                    target = match &replay_src {
                        Some(_) => None,
                        None => self.pick(None),
                    };
                    continue;
                }
            };
            let mut extra = Vec::new();
            if let Some(src) = &replay_src {
                extra.push(("fly-replay-src".to_owned(), src.clone()));
            }
            if !upgrade {
                extra.push(("connection".to_owned(), "close".to_owned()));
            }
            let drop: &[&str] = if upgrade {
                &["fly-replay-src"]
            } else {
                &["fly-replay-src", "connection", "keep-alive"]
            };
            if upstream
                .write_all(&head.render(drop, &extra))
                .await
                .is_err()
                || upstream.write_all(&body).await.is_err()
            {
                self.mark_down(&id);
                target = self.pick(None);
                continue;
            }
            let Ok(Some((answer, rest))) = read_head(&mut upstream).await else {
                let _ = client
                    .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                self.count_answer(&head, "502");
                return;
            };
            let replay = (self.mode == ProxyMode::FlyReplay)
                .then(|| answer.header("fly-replay").map(replay_fields))
                .flatten();
            if let Some(fields) = replay {
                replays += 1;
                {
                    let mut s = self.state.lock().unwrap();
                    s.stats.replays += 1;
                    if upgrade {
                        s.stats.upgrade_replays += 1;
                    }
                    if replays > MAX_REPLAYS {
                        s.stats.loops += 1;
                    }
                }
                if replays > MAX_REPLAYS {
                    let _ = client
                        .write_all(b"HTTP/1.1 508 Loop Detected\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    self.count_answer(&head, "508");
                    return;
                }
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_micros();
                let mut src = format!("instance={id};region=local;t={t}");
                if let Some(state) = fields.get("state") {
                    src.push_str(&format!(";state={state}"));
                }
                replay_src = Some(src);
                target = match fields.get("instance") {
                    Some(instance) => self.named(instance),
                    None if fields.get("elsewhere").map(String::as_str) == Some("true") => {
                        self.pick(Some(&id))
                    }
                    None => self.pick(None),
                };
                continue;
            }
            let status = answer
                .first_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_owned();
            self.count_answer(&head, &status);
            if client.write_all(&answer.render(&[], &[])).await.is_err()
                || client.write_all(&rest).await.is_err()
            {
                return;
            }
            // A body until close, or a WebSocket both ways.
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            return;
        }
    }
}
