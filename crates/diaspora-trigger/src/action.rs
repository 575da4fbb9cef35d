//! Running one attempt of a trigger's action on one event.
//!
//! An attempt ends in one of three ways: done, failed for now (the runner
//! retries it after a back-off), or failed for good (the runner sends the
//! event to the dead-letter topic at once). Every action is handed the
//! event's idempotency key; what it acts on can use it to recognise a run
//! repeated after a crash.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use diaspora_fabric::item::{meta, ConsumedItem, Item};
use diaspora_fabric::{Client, Producer, ProducerConfig};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::spec::{ActionSpec, TriggerSpec};

/// The most of a failing command's stderr, or a failing server's answer,
/// kept for its error message, bytes.
pub const ERROR_TEXT_MAX: usize = 2048;
/// Largest answer read from an HTTP server, bytes (the rest is not read).
pub const HTTP_BODY_MAX: usize = 64 << 10;

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// It may work if tried again.
    Transient(String),
    /// It will not work however often it is tried.
    Permanent(String),
}

impl Failure {
    /// What went wrong.
    pub fn message(&self) -> &str {
        match self {
            Failure::Transient(m) | Failure::Permanent(m) => m,
        }
    }
}

/// An event as an action sees it (the JSON on a command's stdin, in an
/// HTTP body; the pool task's and the dead-letter item's context).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// The trigger.
    pub trigger: String,
    /// The idempotency key: `TRIGGER:topic/partition/offset`.
    pub key: String,
    /// Where the event is.
    pub topic: String,
    /// Its partition.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// The item's key (UTF-8, lossily).
    pub item_key: String,
    /// The item's timestamp, µs since the epoch.
    pub timestamp_us: i64,
    /// Its payload's length, bytes.
    pub payload_bytes: u64,
    /// Its metadata (raw bytes as `{"hex": "…"}`).
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// This attempt (1, 2, …).
    pub attempt: u32,
}

impl Event {
    /// The event of `item` for trigger `trigger`.
    pub fn new(trigger: &str, item: &ConsumedItem) -> Event {
        use diaspora_proto::v1::value::Kind;
        let metadata = item
            .item
            .metadata
            .iter()
            .filter_map(|(k, v)| {
                let j = match v.kind.as_ref()? {
                    Kind::I(i) => serde_json::json!(i),
                    Kind::F(f) => serde_json::json!(f),
                    Kind::B(b) => serde_json::json!(b),
                    Kind::S(s) => serde_json::json!(s),
                    Kind::Raw(r) => serde_json::json!({ "hex": hex(r) }),
                };
                Some((k.clone(), j))
            })
            .collect();
        Event {
            trigger: trigger.to_string(),
            key: idempotency_key(trigger, item),
            topic: item.topic.to_string(),
            partition: item.partition,
            offset: item.offset,
            item_key: String::from_utf8_lossy(&item.item.key).into_owned(),
            timestamp_us: item.item.timestamp_us,
            payload_bytes: item.payload_bytes,
            metadata,
            attempt: 1,
        }
    }

    /// `topic/partition/offset`.
    pub fn location(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// The item a trigger publishes for `event` (an action's `publish`, the
/// dead-letter topic): keyed by the idempotency key, the event's metadata
/// and timestamp, `payload`, and `trigger.name`, `trigger.key` and
/// `trigger.source` added to the metadata.
pub fn event_item(event: &Event, item: &ConsumedItem, payload: Bytes) -> Item {
    let mut out = Item {
        key: Bytes::from(event.key.clone().into_bytes()),
        metadata: item.item.metadata.clone(),
        timestamp_us: item.item.timestamp_us,
        payload,
        ..Default::default()
    };
    let m = &mut out.metadata;
    m.insert("trigger.name".into(), meta::string(&event.trigger));
    m.insert("trigger.key".into(), meta::string(&event.key));
    m.insert("trigger.source".into(), meta::string(&event.location()));
    out
}

/// The idempotency key of `item` for trigger `trigger`.
pub fn idempotency_key(trigger: &str, item: &ConsumedItem) -> String {
    format!(
        "{trigger}:{}/{}/{}",
        item.topic, item.partition, item.offset
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Keeps the end of a text, at most [`ERROR_TEXT_MAX`] bytes, on one line.
fn tail(text: &[u8]) -> String {
    let s = String::from_utf8_lossy(text);
    let s = s.trim();
    let mut start = s.len().saturating_sub(ERROR_TEXT_MAX);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].replace('\n', " | ")
}

/// An `http://` or `https://` URL, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// `https`?
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path and query (`/` at least).
    pub path: String,
}

impl HttpTarget {
    /// Parses a URL.
    pub fn parse(url: &str) -> Result<HttpTarget, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(s) => return Err(format!("{url:?}: the scheme is {s}, not http or https")),
            None => return Err(format!("{url:?} has no scheme (http:// or https://)")),
        };
        let auth = uri
            .authority()
            .ok_or_else(|| format!("{url:?} has no host"))?;
        if auth.as_str().contains('@') {
            return Err(format!(
                "{url:?}: credentials in the URL are refused; give them as a header"
            ));
        }
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        // (`Authority::port` says nothing of a port that is not a u16.)
        let after_host = auth
            .as_str()
            .rsplit_once(']')
            .map_or(auth.as_str(), |(_, rest)| rest);
        let port = match after_host.rsplit_once(':') {
            Some((_, p)) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{url:?}: bad port {p:?}"))?,
            None if tls => 443,
            None => 80,
        };
        Ok(HttpTarget {
            tls,
            host: host.to_string(),
            port,
            path: uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string()),
        })
    }
}

/// Runs attempts of one trigger's action. Holds what attempts share: the
/// fabric client, the publishing producer, the TLS set-up.
pub struct Actions {
    spec: Arc<TriggerSpec>,
    client: Client,
    producer: Option<Producer>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Actions {
    /// Prepares `spec`'s action (a producer for `publish`, the TLS roots
    /// for `https`).
    pub async fn new(spec: Arc<TriggerSpec>, client: &Client) -> Result<Actions, String> {
        let producer = match &spec.action {
            ActionSpec::Publish { topic, .. } => Some(
                Producer::new(client, ProducerConfig::new(topic.clone()))
                    .await
                    .map_err(|e| format!("the action's topic {topic}: {e}"))?,
            ),
            _ => None,
        };
        let tls = match &spec.action {
            ActionSpec::Http { url, ca, .. } if HttpTarget::parse(url)?.tls => {
                Some(Arc::new(tls_config(ca.as_deref())?))
            }
            _ => None,
        };
        Ok(Actions {
            spec,
            client: client.clone(),
            producer,
            tls,
        })
    }

    /// Whether attempts need the event's payload.
    pub fn needs_payload(&self) -> bool {
        matches!(
            self.spec.action,
            ActionSpec::Publish {
                with_payload: true,
                ..
            }
        )
    }

    /// One attempt on `event` (`item` is the event's item as consumed).
    pub async fn attempt(&self, event: &Event, item: &ConsumedItem) -> Result<String, Failure> {
        match &self.spec.action {
            ActionSpec::Command {
                argv,
                timeout_ms,
                env,
                permanent_exit_codes,
            } => {
                run_command(
                    argv,
                    env,
                    Duration::from_millis(*timeout_ms),
                    permanent_exit_codes,
                    event,
                )
                .await
            }
            ActionSpec::Publish { with_payload, .. } => {
                self.publish(event, item, *with_payload).await
            }
            ActionSpec::PoolTask { pool, task } => {
                let kind = self
                    .spec
                    .pool_task_kind(task)
                    .map_err(|e| Failure::Permanent(e.to_string()))?;
                let task = diaspora_pool::messages::Task {
                    key: event.key.clone(),
                    kind,
                    inputs: vec![event.location()],
                    attempt: 0,
                    not_before_us: 0,
                };
                diaspora_pool::fabric::submit(&self.client, pool, &[task])
                    .await
                    .map(|()| format!("submitted to pool {pool}"))
                    .map_err(|e| Failure::Transient(format!("submitting to pool {pool}: {e}")))
            }
            ActionSpec::Http {
                url,
                timeout_ms,
                headers,
                ..
            } => {
                let target = HttpTarget::parse(url).map_err(Failure::Permanent)?;
                let body = serde_json::to_vec(event).expect("an event serialises");
                match tokio::time::timeout(
                    Duration::from_millis(*timeout_ms),
                    post(&target, self.tls.clone(), headers, &event.key, body),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(Failure::Transient(format!(
                        "POST {url}: no answer within {timeout_ms} ms"
                    ))),
                }
            }
        }
    }

    async fn publish(
        &self,
        event: &Event,
        item: &ConsumedItem,
        with_payload: bool,
    ) -> Result<String, Failure> {
        let producer = self.producer.as_ref().expect("publish has a producer");
        let payload = if !with_payload {
            Bytes::new()
        } else if item.payload_left_out() {
            self.client
                .read_payload(&event.topic, event.partition, event.offset)
                .await
                .map_err(|e| Failure::Transient(format!("reading the payload: {e}")))?
        } else {
            item.item.payload.clone()
        };
        let out = event_item(event, item, payload);
        let d = producer
            .send(out)
            .await
            .map_err(|e| Failure::Transient(format!("publishing to {}: {e}", producer.topic())))?
            .await
            .map_err(|e| Failure::Transient(format!("publishing to {}: {e}", producer.topic())))?;
        Ok(format!(
            "published as {}/{}/{}",
            producer.topic(),
            d.partition,
            d.offset
        ))
    }

    /// Flushes and closes what the actions hold.
    pub async fn close(self) {
        if let Some(p) = self.producer {
            let _ = p.close().await;
        }
    }
}

/// Runs a command attempt: the event on stdin, its identity in the
/// environment; killed after `timeout`.
pub async fn run_command(
    argv: &[String],
    env: &BTreeMap<String, String>,
    timeout: Duration,
    permanent_exit_codes: &[i32],
    event: &Event,
) -> Result<String, Failure> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .envs(env)
        .env("DIASPORA_TRIGGER", &event.trigger)
        .env("DIASPORA_TRIGGER_KEY", &event.key)
        .env("DIASPORA_TRIGGER_ATTEMPT", event.attempt.to_string())
        .env("DIASPORA_EVENT_TOPIC", &event.topic)
        .env("DIASPORA_EVENT_PARTITION", event.partition.to_string())
        .env("DIASPORA_EVENT_OFFSET", event.offset.to_string())
        .env("DIASPORA_EVENT_ITEM_KEY", &event.item_key)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| Failure::Transient(format!("starting {}: {e}", argv[0])))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let json = serde_json::to_vec(event).expect("an event serialises");
    let feed = async move {
        // A command that does not read its stdin closes it early: not an error.
        let _ = stdin.write_all(&json).await;
        let _ = stdin.shutdown().await;
    };
    let mut stderr = child.stderr.take().expect("piped stderr");
    let drain = async move {
        // Keep the last ERROR_TEXT_MAX bytes; read it all so the command never blocks on it.
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > 2 * ERROR_TEXT_MAX {
                kept.drain(..kept.len() - ERROR_TEXT_MAX);
            }
        }
        kept
    };
    let run = async {
        let (_, err, status) = tokio::join!(feed, drain, child.wait());
        (err, status)
    };
    let (err, status) = match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => {
            let _ = child.kill().await;
            return Err(Failure::Transient(format!(
                "{} ran past its {} ms and was killed",
                argv[0],
                timeout.as_millis()
            )));
        }
    };
    let status = status.map_err(|e| Failure::Transient(format!("waiting for {}: {e}", argv[0])))?;
    if status.success() {
        return Ok(format!("{} exited 0", argv[0]));
    }
    let said = tail(&err);
    let said = if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    };
    match status.code() {
        Some(c) if permanent_exit_codes.contains(&c) => Err(Failure::Permanent(format!(
            "{} exited {c} (permanent){said}",
            argv[0]
        ))),
        Some(c) => Err(Failure::Transient(format!("{} exited {c}{said}", argv[0]))),
        None => Err(Failure::Transient(format!(
            "{} was killed by a signal{said}",
            argv[0]
        ))),
    }
}

/// The TLS client set-up for `https://` actions: the system's roots, and
/// `ca` if given.
fn tls_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).map_err(|e| format!("action.ca {}: {e}", ca.display()))?;
        let mut n = 0;
        for c in rustls_pemfile::certs(&mut pem.as_slice()) {
            let c = c.map_err(|e| format!("action.ca {}: {e}", ca.display()))?;
            roots
                .add(c)
                .map_err(|e| format!("action.ca {}: {e}", ca.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!(
                "action.ca {} holds no PEM certificate",
                ca.display()
            ));
        }
    }
    if roots.is_empty() {
        return Err("https: no CA certificates (none in the system, no action.ca)".into());
    }
    // ring alone, as everywhere in the project (rustls 0.23.48 deprecates it for
    // lacking post-quantum key exchange; see diaspora-fabric's tls::provider).
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// POSTs `body` to `target`; classifies the answer.
async fn post(
    target: &HttpTarget,
    tls: Option<Arc<rustls::ClientConfig>>,
    headers: &BTreeMap<String, String>,
    key: &str,
    body: Vec<u8>,
) -> Result<String, Failure> {
    let url = format!(
        "{}://{}:{}{}",
        if target.tls { "https" } else { "http" },
        target.host,
        target.port,
        target.path
    );
    let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| Failure::Transient(format!("POST {url}: connecting: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let host_header = if (target.tls && target.port == 443) || (!target.tls && target.port == 80) {
        target.host.clone()
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let mut req = http::Request::post(target.path.as_str())
        .header(http::header::HOST, host_header)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", key);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(http_body_util::Full::new(Bytes::from(body)))
        .map_err(|e| Failure::Permanent(format!("POST {url}: a bad header: {e}")))?;
    let resp = match tls {
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| Failure::Permanent(format!("POST {url}: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|e| Failure::Transient(format!("POST {url}: TLS: {e}")))?;
            send(hyper_util::rt::TokioIo::new(stream), req, &url).await?
        }
        None => send(hyper_util::rt::TokioIo::new(tcp), req, &url).await?,
    };
    let (status, text) = resp;
    let code = status.as_u16();
    if status.is_success() {
        return Ok(format!("POST {url}: {code}"));
    }
    let said = if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    };
    if code == 408 || code == 429 || status.is_server_error() {
        Err(Failure::Transient(format!("POST {url}: {code}{said}")))
    } else {
        Err(Failure::Permanent(format!("POST {url}: {code}{said}")))
    }
}

async fn send<I>(
    io: I,
    req: http::Request<http_body_util::Full<Bytes>>,
    url: &str,
) -> Result<(http::StatusCode, String), Failure>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| Failure::Transient(format!("POST {url}: {e}")))?;
    let conn = tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| Failure::Transient(format!("POST {url}: {e}")));
    let out = match resp {
        Ok(resp) => {
            let status = resp.status();
            let mut body = resp.into_body();
            let mut kept = Vec::new();
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Some(d) = frame.data_ref() {
                    kept.extend_from_slice(&d[..d.len().min(HTTP_BODY_MAX - kept.len())]);
                    if kept.len() >= HTTP_BODY_MAX {
                        break;
                    }
                }
            }
            Ok((status, tail(&kept)))
        }
        Err(e) => Err(e),
    };
    conn.abort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_taken_apart_or_refused() {
        let t = HttpTarget::parse("http://127.0.0.1:8080/hook?a=1").unwrap();
        assert_eq!(
            t,
            HttpTarget {
                tls: false,
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/hook?a=1".into()
            }
        );
        let t = HttpTarget::parse("https://example.org").unwrap();
        assert_eq!((t.tls, t.port, t.path.as_str()), (true, 443, "/"));
        let t = HttpTarget::parse("http://[::1]:9/x").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9));
        for bad in ["ftp://x/", "//x/", "x", "http://u:p@x/", "http://x:70000/"] {
            assert!(HttpTarget::parse(bad).is_err(), "{bad}");
        }
    }

    fn event() -> Event {
        Event {
            trigger: "t".into(),
            key: "t:frames/0/7".into(),
            topic: "frames".into(),
            partition: 0,
            offset: 7,
            item_key: "k".into(),
            timestamp_us: 1,
            payload_bytes: 0,
            metadata: BTreeMap::new(),
            attempt: 2,
        }
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn a_command_gets_the_event_and_its_exit_decides() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seen");
        let script = format!(
            "cat > {o}.json; echo \"$DIASPORA_TRIGGER_KEY $DIASPORA_TRIGGER_ATTEMPT $DIASPORA_EVENT_OFFSET\" > {o}",
            o = out.display()
        );
        let r = run_command(
            &sh(&script),
            &BTreeMap::new(),
            Duration::from_secs(10),
            &[],
            &event(),
        )
        .await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap().trim(),
            "t:frames/0/7 2 7"
        );
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("seen.json")).unwrap()).unwrap();
        assert_eq!(json["key"], "t:frames/0/7");

        let r = run_command(
            &sh("echo nope >&2; exit 3"),
            &BTreeMap::new(),
            Duration::from_secs(10),
            &[],
            &event(),
        )
        .await;
        assert_eq!(r, Err(Failure::Transient("sh exited 3: nope".into())));
        let r = run_command(
            &sh("exit 3"),
            &BTreeMap::new(),
            Duration::from_secs(10),
            &[3],
            &event(),
        )
        .await;
        assert_eq!(r, Err(Failure::Permanent("sh exited 3 (permanent)".into())));
        let r = run_command(
            &sh("sleep 30"),
            &BTreeMap::new(),
            Duration::from_millis(200),
            &[],
            &event(),
        )
        .await;
        assert!(
            matches!(&r, Err(Failure::Transient(m)) if m.contains("killed")),
            "{r:?}"
        );
        let r = run_command(
            &["/no/such/program".to_string()],
            &BTreeMap::new(),
            Duration::from_secs(1),
            &[],
            &event(),
        )
        .await;
        assert!(
            matches!(&r, Err(Failure::Transient(m)) if m.contains("starting")),
            "{r:?}"
        );
    }

    #[test]
    fn error_text_keeps_the_end_on_one_line() {
        assert_eq!(tail(b"a\nb\n"), "a | b");
        let long = "é".repeat(ERROR_TEXT_MAX);
        let t = tail(long.as_bytes());
        assert!(t.len() <= ERROR_TEXT_MAX && t.ends_with('é'));
    }
}
