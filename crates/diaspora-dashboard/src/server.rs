//! The HTTP shell: the page and its assets (compiled into the binary), the
//! frames as server-sent events, the lineage explorer's queries, and the
//! browser's authentication.
//!
//! | Path | What |
//! |---|---|
//! | `/` | the page (`/?token=T` checks T with the node, sets a cookie, and redirects to `/`) |
//! | `/app.js`, `/style.css` | its script and style |
//! | `/events` | server-sent events: one `frame` (JSON) per interval |
//! | `/api/state` | the latest frame (JSON) |
//! | `/api/lineage?q=TARGET&depth=N` | a record's lineage up and down, and its why-chain |

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use diaspora_provenance::{Direction, Provenance, RecordId, Target};
use serde::Deserialize;
use tokio::sync::{watch, Semaphore};

/// The page, its script and its style: compiled in, never fetched.
const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");
const LOGIN_HTML: &str = include_str!("../assets/login.html");

/// The cookie that carries the browser's token after `/?token=`.
pub const TOKEN_COOKIE: &str = "diaspora_dashboard_token";
/// Most browsers following the events at once.
pub const EVENT_CLIENTS_MAX: usize = 64;
/// Most lineage queries running at once (each holds a store connection).
pub const QUERIES_MAX: usize = 4;
/// Most records a lineage answer lists per direction.
pub const LINEAGE_NODES_MAX: usize = 200;
/// Deepest lineage walk asked for.
pub const LINEAGE_DEPTH_MAX: usize = 32;
/// How long a token the node accepted is trusted without asking again.
pub const TOKEN_TRUST: Duration = Duration::from_secs(30);
/// Most accepted tokens remembered.
pub const TOKENS_REMEMBERED_MAX: usize = 64;

/// Who may open the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone who reaches the address: the node lets anyone in (dev mode).
    Open,
    /// Only a browser presenting a bearer token the node accepts.
    Token,
}

/// Decides [`Access`] from the node's auth mode, as `serve` treats
/// `--listen`: a dev-mode node's dashboard is open, so it stays on a
/// loopback address unless `allow_open` says otherwise; a node that
/// requires identities gets a dashboard that requires a token.
///
/// ```
/// use diaspora_dashboard::server::{access_for, Access};
/// let lo = "127.0.0.1:8090".parse().unwrap();
/// let any = "0.0.0.0:8090".parse().unwrap();
/// assert_eq!(access_for(lo, "dev", false).unwrap(), Access::Open);
/// assert!(access_for(any, "dev", false).is_err());
/// assert_eq!(access_for(any, "dev", true).unwrap(), Access::Open);
/// assert_eq!(access_for(any, "token", false).unwrap(), Access::Token);
/// ```
pub fn access_for(
    listen: SocketAddr,
    node_mode: &str,
    allow_open: bool,
) -> Result<Access, crate::DashboardError> {
    if node_mode != "dev" && !node_mode.is_empty() {
        return Ok(Access::Token);
    }
    if listen.ip().is_loopback() || allow_open {
        Ok(Access::Open)
    } else {
        Err(crate::DashboardError::OpenOnNetwork { addr: listen })
    }
}

/// Checks browser tokens by asking the node: who they are (they must be a
/// token the node accepts) and whether they may describe the cluster (the
/// page shows all of it).
#[derive(Debug)]
struct TokenCheck {
    admin: SocketAddr,
    ca: PathBuf,
    trusted: parking_lot::Mutex<HashMap<String, Instant>>,
}

impl TokenCheck {
    async fn accepts(&self, token: &str) -> bool {
        if token.is_empty() || token.len() > 4096 {
            return false;
        }
        if let Some(t) = self.trusted.lock().get(token) {
            if t.elapsed() < TOKEN_TRUST {
                return true;
            }
        }
        let ok =
            match diaspora_fabric::AdminClient::connect_as(self.admin, &self.ca, None, Some(token))
                .await
            {
                // The page shows the whole node, so its reader must be allowed
                // to describe the cluster (listing users needs just that).
                Ok(mut a) => {
                    a.who_am_i()
                        .await
                        .is_ok_and(|w| w.method == "token" || w.method == "both")
                        && a.list_users().await.is_ok()
                }
                Err(_) => false,
            };
        let mut trusted = self.trusted.lock();
        if ok {
            if trusted.len() >= TOKENS_REMEMBERED_MAX {
                trusted.retain(|_, t| t.elapsed() < TOKEN_TRUST);
                if trusted.len() >= TOKENS_REMEMBERED_MAX {
                    trusted.clear();
                }
            }
            trusted.insert(token.to_string(), Instant::now());
        } else {
            trusted.remove(token);
        }
        ok
    }
}

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) frames: watch::Receiver<Arc<str>>,
    pub(crate) access: Access,
    token_check: TokenCheck,
    prov_store: Option<String>,
    queries: Semaphore,
    event_clients: Arc<AtomicUsize>,
}

impl AppState {
    pub(crate) fn new(
        frames: watch::Receiver<Arc<str>>,
        access: Access,
        admin: SocketAddr,
        ca: PathBuf,
        prov_store: Option<String>,
    ) -> AppState {
        AppState {
            frames,
            access,
            token_check: TokenCheck {
                admin,
                ca,
                trusted: parking_lot::Mutex::new(HashMap::new()),
            },
            prov_store,
            queries: Semaphore::new(QUERIES_MAX),
            event_clients: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The token the request carries: `Authorization: Bearer T` or the cookie.
    fn presented(headers: &HeaderMap) -> Option<String> {
        if let Some(v) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            if let Some(t) = v.strip_prefix("Bearer ") {
                return Some(t.trim().to_string());
            }
        }
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == TOKEN_COOKIE)
            .map(|(_, v)| v.to_string())
    }

    async fn allowed(&self, headers: &HeaderMap) -> bool {
        match self.access {
            Access::Open => true,
            Access::Token => match Self::presented(headers) {
                Some(t) => self.token_check.accepts(&t).await,
                None => false,
            },
        }
    }
}

fn unauthorised() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Html(LOGIN_HTML),
    )
        .into_response()
}

/// The router.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/events", get(events))
        .route("/api/state", get(api_state))
        .route("/api/lineage", get(api_lineage))
        .with_state(state)
}

#[derive(Deserialize)]
struct IndexQuery {
    token: Option<String>,
}

async fn index(
    State(s): State<Arc<AppState>>,
    Query(q): Query<IndexQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(token) = q.token {
        if s.access == Access::Open {
            return Redirect::to("/").into_response();
        }
        if !s.token_check.accepts(&token).await {
            return unauthorised();
        }
        let Ok(cookie) = HeaderValue::from_str(&format!(
            "{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
        )) else {
            return unauthorised();
        };
        // Redirect so that the token leaves the address bar and history.
        let mut r = Redirect::to("/").into_response();
        r.headers_mut().insert(header::SET_COOKIE, cookie);
        return r;
    }
    if !s.allowed(&headers).await {
        return unauthorised();
    }
    Html(INDEX_HTML).into_response()
}

async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
}

async fn style_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE_CSS,
    )
}

/// Counts a browser following the events while it lives.
struct ClientSlot(Arc<AtomicUsize>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn events(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !s.allowed(&headers).await {
        return unauthorised();
    }
    if s.event_clients.fetch_add(1, Ordering::Relaxed) >= EVENT_CLIENTS_MAX {
        s.event_clients.fetch_sub(1, Ordering::Relaxed);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{EVENT_CLIENTS_MAX} browsers follow this dashboard already"),
        )
            .into_response();
    }
    let slot = ClientSlot(s.event_clients.clone());
    let mut rx = s.frames.clone();
    rx.mark_changed();
    let stream = futures_util::stream::unfold((rx, slot), |(mut rx, slot)| async move {
        // Ends when the dashboard stops (the poller drops its sender).
        rx.changed().await.ok()?;
        let data = rx.borrow_and_update().clone();
        Some((
            Ok::<_, Infallible>(Event::default().event("frame").data(&*data)),
            (rx, slot),
        ))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn api_state(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !s.allowed(&headers).await {
        return unauthorised();
    }
    let data = s.frames.borrow().clone();
    (
        [(header::CONTENT_TYPE, "application/json")],
        data.to_string(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct LineageQuery {
    q: String,
    depth: Option<usize>,
}

fn json_error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

async fn api_lineage(
    State(s): State<Arc<AppState>>,
    Query(q): Query<LineageQuery>,
    headers: HeaderMap,
) -> Response {
    if !s.allowed(&headers).await {
        return unauthorised();
    }
    let Some(store) = s.prov_store.clone() else {
        return json_error(
            StatusCode::NOT_FOUND,
            "no provenance store: start the dashboard with --prov-store URL".into(),
        );
    };
    let Ok(_permit) = s.queries.acquire().await else {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into());
    };
    let depth = q.depth.unwrap_or(6).clamp(1, LINEAGE_DEPTH_MAX);
    let query = q.q.trim().to_string();
    let r = tokio::task::spawn_blocking(move || lineage(&store, &query, depth)).await;
    match r {
        Ok(Ok(v)) => axum::Json(v).into_response(),
        Ok(Err(e)) => json_error(StatusCode::BAD_REQUEST, e),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Parses what the explorer's box holds: a record id, an item
/// (`topic/0/17`), `name:NAME`, a tag (`scan=17`) or `model@version`.
fn parse_target(q: &str) -> Result<Target, String> {
    if q.is_empty() {
        return Err("type a record id, an item (topic/partition/offset), name:NAME, a tag (key=value) or model@version".into());
    }
    let q = q.strip_prefix('#').unwrap_or(q);
    Target::parse(q).map_err(|e| format!("{q:?}: {e}"))
}

/// The explorer's answer: the first record the query matches, its
/// why-chain, and its lineage up and down to `depth` levels (blocking).
pub fn lineage(store: &str, query: &str, depth: usize) -> Result<serde_json::Value, String> {
    let target = parse_target(query)?;
    let mut p = Provenance::open(store).map_err(|e| format!("provenance store: {e}"))?;
    let ids = p.resolve(&target).map_err(|e| e.to_string())?;
    let Some(&id) = ids.first() else {
        return Err(format!("no record matches {query:?}"));
    };
    let record = p.get(id).map_err(|e| e.to_string())?;
    let why = p.why(id).map_err(|e| e.to_string())?;
    let mut walk = |dir: Direction| -> Result<serde_json::Value, String> {
        let l = p.lineage(id, dir, Some(depth)).map_err(|e| e.to_string())?;
        let shown: Vec<(RecordId, usize)> =
            l.nodes.iter().copied().take(LINEAGE_NODES_MAX).collect();
        let ids: Vec<RecordId> = shown.iter().map(|n| n.0).collect();
        let recs: HashMap<RecordId, diaspora_provenance::Record> = p
            .backend()
            .records(&ids)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let mut nodes = Vec::with_capacity(shown.len());
        for (rid, d) in shown {
            let Some(r) = recs.get(&rid) else { continue };
            let invalid = p.is_invalid(rid).map_err(|e| e.to_string())?;
            nodes.push(serde_json::json!({
                "id": rid,
                "depth": d,
                "kind": r.kind,
                "name": r.name,
                "item": r.item.as_ref().map(|i| i.to_string()),
                "invalid": invalid,
            }));
        }
        Ok(serde_json::json!({
            "nodes": nodes,
            "truncated": l.truncated || l.nodes.len() > LINEAGE_NODES_MAX,
        }))
    };
    let up = walk(Direction::Up)?;
    let down = walk(Direction::Down)?;
    Ok(serde_json::json!({
        "query": query,
        "matches": ids.iter().take(50).collect::<Vec<_>>(),
        "matches_total": ids.len(),
        "record": record,
        "item": record.item.as_ref().map(|i| i.to_string()),
        "why": why,
        "up": up,
        "down": down,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dev_node_dashboard_stays_on_loopback_unless_told() {
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        assert_eq!(access_for(v6, "dev", false).unwrap(), Access::Open);
        let lan: SocketAddr = "10.0.0.2:8090".parse().unwrap();
        let e = access_for(lan, "dev", false).unwrap_err().to_string();
        assert!(
            e.contains("10.0.0.2:8090") && e.contains("--dashboard-open"),
            "{e}"
        );
        for mode in ["token", "cert", "cert-or-token", "cert-and-token"] {
            assert_eq!(access_for(lan, mode, false).unwrap(), Access::Token);
        }
    }

    #[test]
    fn the_token_is_read_from_the_header_or_the_cookie() {
        let mut h = HeaderMap::new();
        assert_eq!(AppState::presented(&h), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; diaspora_dashboard_token=abc; b=2"),
        );
        assert_eq!(AppState::presented(&h).as_deref(), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer xyz"),
        );
        assert_eq!(AppState::presented(&h).as_deref(), Some("xyz"));
    }

    #[test]
    fn lineage_walks_up_and_down_and_explains_an_invalid_record() {
        let dir = tempfile_dir();
        let store = dir.join("p.sqlite");
        let url = store.to_str().unwrap();
        let mut p = Provenance::open(url).unwrap();
        use diaspora_provenance::{EdgeKind, Kind, Record};
        let calib = p.add(Record::new(Kind::Fact, "calibration")).unwrap();
        let frame = p
            .add(
                Record::item(diaspora_fabric::ItemRef::new("frames", 0, 7))
                    .parent(calib, EdgeKind::Derived),
            )
            .unwrap();
        let recon = p
            .add(Record::new(Kind::Data, "recon-1").parent(frame, EdgeKind::Derived))
            .unwrap();
        p.invalidate(&Target::Record(calib), "gain map wrong", true)
            .unwrap();
        drop(p);
        let v = lineage(url, "frames/0/7", 6).unwrap();
        assert_eq!(v["item"], "frames/0/7");
        assert_eq!(
            lineage(url, &format!("#{frame}"), 6).unwrap()["record"]["id"],
            frame
        );
        assert_eq!(v["why"]["event"]["cause"], "gain map wrong");
        let up: Vec<i64> = v["up"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_i64().unwrap())
            .collect();
        assert_eq!(up, [frame, calib]);
        assert_eq!(v["down"]["nodes"][1]["id"], recon);
        assert_eq!(v["down"]["nodes"][1]["invalid"], true);
        assert!(lineage(url, "name:nothing", 6)
            .unwrap_err()
            .contains("no record"));
        assert!(lineage(url, "", 6).is_err());
        std::fs::remove_dir_all(dir).ok();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "diaspora-dashboard-test-{}-{}",
            std::process::id(),
            diaspora_fabric::item::now_us()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
