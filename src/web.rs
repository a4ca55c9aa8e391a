//! The embedded dashboard: the files of `web/`, compiled into the binary
//! (docs/dashboard.md). Plain JavaScript modules that talk to yunhe's own
//! OpenStack APIs from the browser, as Horizon talks to OpenStack.
//!
//! Every response carries a strict Content-Security-Policy (scripts and styles
//! only from these files, nothing inline, no frames, connections only back to
//! this origin), is gzip-compressed when the browser accepts it (each file
//! compressed once, on first request) and revalidated by its content hash
//! (`ETag`), so a new binary's files are picked up at once.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::events::{Bus, Event};
use crate::identity::{Auth, AuthContext, HasIdentity, IdentityState};
use crate::policy::{Service, Target};

#[derive(rust_embed::Embed)]
#[folder = "web/"]
struct Assets;

/// The policy of every dashboard response: the page runs only its own
/// scripts and styles (no inline code, no `eval`), talks only to this origin
/// (the APIs and the serial console's websocket), and cannot be framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; \
base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("txt") | Some("md") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Whether a file type is worth compressing.
fn compressible(path: &str) -> bool {
    matches!(
        path.rsplit('.').next(),
        Some("html" | "css" | "js" | "svg" | "json" | "txt" | "md")
    )
}

/// The gzip form of an embedded file, made once per file and kept.
fn gzipped(path: &str, data: &[u8]) -> Option<Vec<u8>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Vec<u8>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Ok(map) = cache.lock()
        && let Some(hit) = map.get(path)
    {
        return Some(hit.clone());
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).ok()?;
    let out = enc.finish().ok()?;
    if let Ok(mut map) = cache.lock() {
        map.insert(path.to_string(), out.clone());
    }
    Some(out)
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            let mut parts = v.trim().split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .is_some_and(|q| q.trim().parse::<f32>().ok() == Some(0.0))
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// Headers every dashboard response carries, the 404 included.
fn secure(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn asset(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        let mut r = StatusCode::NOT_FOUND.into_response();
        secure(&mut r);
        return r;
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..12]));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else if compressible(path)
        && accepts_gzip(headers)
        && let Some(gz) = gzipped(path, &file.data)
    {
        let mut r = Response::new(Body::from(gz));
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        Response::new(Body::from(file.data.into_owned()))
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    secure(&mut response);
    response
}

/// The dashboard's files at `/` and `/ui/`, and its live-update stream at
/// [`EVENTS_PATH`] over the services' change events.
pub fn router(identity: Arc<IdentityState>, events: Bus) -> Router {
    let live = Arc::new(Live {
        identity,
        events,
        open: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route(
            "/",
            get(|headers: HeaderMap| async move { asset("index.html", &headers) }),
        )
        .route(
            "/ui/{*path}",
            get(|Path(path): Path<String>, headers: HeaderMap| async move { asset(&path, &headers) }),
        )
        .route(EVENTS_PATH, get(stream).with_state(live))
}

// ------------------------------------------------------------ live updates

/// Where the page reads change events (docs/dashboard.md "Live updates").
pub const EVENTS_PATH: &str = "/dashboard/events";
/// Streams one user may hold open at once (a few tabs).
pub const STREAMS_PER_USER: usize = 4;
/// Streams the whole server holds open at once.
pub const STREAMS_TOTAL: usize = 256;
/// Seconds between heartbeats (a comment line) on an idle stream.
pub const HEARTBEAT_SECS: u64 = 20;
/// Frames queued for one stream; a reader that leaves them unread for
/// [`SLOW_READER_SECS`] is dropped.
const QUEUE: usize = 32;
const SLOW_READER_SECS: u64 = 10;
/// Events taken from the bus at a time.
const BATCH: usize = 64;

/// The stream's shared state: the identity service (for `Auth`), the bus
/// and how many streams each user holds open.
struct Live {
    identity: Arc<IdentityState>,
    events: Bus,
    open: Mutex<HashMap<String, usize>>,
}

impl HasIdentity for Arc<Live> {
    fn identity(&self) -> &Arc<IdentityState> {
        &self.identity
    }
}

/// One open stream, counted against its user until dropped.
struct Slot {
    live: Arc<Live>,
    user: String,
}

impl Slot {
    fn take(live: &Arc<Live>, user: &str) -> Option<Slot> {
        let mut open = live.open.lock().ok()?;
        let total: usize = open.values().sum();
        let mine = open.get(user).copied().unwrap_or(0);
        if total >= STREAMS_TOTAL || mine >= STREAMS_PER_USER {
            return None;
        }
        open.insert(user.to_string(), mine + 1);
        Some(Slot {
            live: live.clone(),
            user: user.to_string(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.live.open.lock()
            && let Some(n) = open.get_mut(&self.user)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

/// Which events a caller may see: those of its project, those tied to no
/// project (network, image and volume writes, which carry no id), and all
/// of them for a reader the compute API lets list every project's servers.
struct Audience {
    project: Option<String>,
    all: bool,
}

impl Audience {
    fn of(identity: &IdentityState, ctx: &AuthContext) -> Audience {
        let project = ctx.project_id().map(str::to_string);
        let target = Target::new()
            .with_opt("project_id", project.clone())
            .with("user_id", ctx.user_id.clone());
        let all = identity.policy.allows(
            Service::Compute,
            &ctx.credentials(),
            "os_compute_api:servers:detail:get_all_tenants",
            &target,
        );
        Audience { project, all }
    }

    fn sees(&self, event: &Event) -> bool {
        match &event.project_id {
            None => true,
            Some(p) => self.all || self.project.as_deref() == Some(p.as_str()),
        }
    }
}

/// A problem with a stream request (answered as Keystone-style JSON).
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// `Last-Event-ID` or `since` is not a sequence number.
    #[error("Last-Event-ID and since take a sequence number")]
    BadResume,
    /// The caller holds as many streams as it may.
    #[error("Too many open event streams; close one (at most {STREAMS_PER_USER} per user)")]
    TooMany,
}

impl IntoResponse for LiveError {
    fn into_response(self) -> Response {
        let (status, title) = match self {
            LiveError::BadResume => (StatusCode::BAD_REQUEST, "Bad Request"),
            LiveError::TooMany => (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests"),
        };
        let body = serde_json::json!({"error": {
            "code": status.as_u16(), "title": title, "message": self.to_string(),
        }});
        let mut r = (status, axum::Json(body)).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        }
        r
    }
}

/// Where a stream resumes: `Last-Event-ID` (what the page saw last), else
/// the `since` query parameter, else from now on.
fn resume_point(headers: &HeaderMap, query: Option<&str>) -> Result<Option<u64>, LiveError> {
    let header = headers
        .get("last-event-id")
        .map(|v| v.to_str().map_err(|_| LiveError::BadResume));
    let text = match header {
        Some(v) => Some(v?.trim().to_string()),
        None => query
            .unwrap_or("")
            .split('&')
            .find_map(|pair| pair.strip_prefix("since="))
            .map(str::to_string),
    };
    match text {
        None => Ok(None),
        Some(t) if t.is_empty() => Ok(None),
        Some(t) if t.len() > 20 => Err(LiveError::BadResume),
        Some(t) => t.parse().map(Some).map_err(|_| LiveError::BadResume),
    }
}

/// One server-sent-events frame.
fn frame(event: &str, id: Option<u64>, data: &impl serde::Serialize) -> Bytes {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
    let id = id.map(|n| format!("id: {n}\n")).unwrap_or_default();
    Bytes::from(format!("{id}event: {event}\ndata: {data}\n\n"))
}

/// `GET /dashboard/events`: the change events the caller may see, as
/// `text/event-stream`, until the token expires or the page goes away.
/// Frames: `hello` (the latest sequence number), `change` (one event, its
/// `id:` the sequence number), `reset` (events were lost: refetch
/// everything), `expired` (the token ran out), and a comment line every
/// [`HEARTBEAT_SECS`].
async fn stream(
    State(live): State<Arc<Live>>,
    Auth(ctx): Auth,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, LiveError> {
    let resume = resume_point(&headers, query.as_deref())?;
    let slot = Slot::take(&live, &ctx.user_id).ok_or(LiveError::TooMany)?;
    let audience = Audience::of(&live.identity, &ctx);
    let expires_in = (ctx.expires_unix - crate::db::now_unix()).max(0) as u64;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
    tokio::spawn(pump(slot, audience, resume, expires_in, tx));
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), rx))
    }));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    secure(&mut response);
    Ok(response)
}

/// Feeds one stream from the bus; ends (dropping the stream and its slot)
/// when the page goes away, reads too slowly, or its token expires.
async fn pump(
    slot: Slot,
    audience: Audience,
    resume: Option<u64>,
    expires_in: u64,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    use std::time::Duration;
    use tokio::time::{Instant, sleep_until, timeout};
    let bus = slot.live.events.clone();
    let mut tick = bus.watch();
    let latest = bus.latest();
    let send = |bytes: Bytes| {
        let tx = tx.clone();
        async move {
            matches!(
                timeout(Duration::from_secs(SLOW_READER_SECS), tx.send(bytes)).await,
                Ok(Ok(()))
            )
        }
    };
    if !send(frame("hello", None, &serde_json::json!({ "seq": latest }))).await {
        return;
    }
    let mut last = resume.unwrap_or(latest);
    let expiry = Instant::now() + Duration::from_secs(expires_in);
    let beat = Duration::from_secs(HEARTBEAT_SECS);
    let mut next_beat = Instant::now() + beat;
    loop {
        match bus.since(last, BATCH) {
            Ok(events) => {
                let full = events.len() == BATCH;
                for event in events {
                    last = event.seq;
                    if audience.sees(&event)
                        && !send(frame("change", Some(event.seq), &event)).await
                    {
                        return;
                    }
                }
                if full {
                    continue;
                }
            }
            Err(gap) => {
                last = gap.latest;
                if !send(frame(
                    "reset",
                    Some(gap.latest),
                    &serde_json::json!({ "seq": gap.latest }),
                ))
                .await
                {
                    return;
                }
                continue;
            }
        }
        tokio::select! {
            changed = tick.changed() => if changed.is_err() { return },
            () = sleep_until(next_beat) => {
                if !send(Bytes::from_static(b": heartbeat\n\n")).await {
                    return;
                }
                next_beat = Instant::now() + beat;
            }
            () = sleep_until(expiry) => {
                let _ = send(frame("expired", None, &serde_json::json!({}))).await;
                return;
            }
            () = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).expect("test header"),
        );
        h
    }

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip(&with("gzip, deflate, br")));
        assert!(accepts_gzip(&with("br;q=1.0, gzip;q=0.8")));
        assert!(!accepts_gzip(&with("gzip;q=0, br")));
        assert!(!accepts_gzip(&with("identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn no_inline_code_and_no_inner_html() {
        for path in Assets::iter() {
            let file = Assets::get(&path).expect("listed file");
            let text = String::from_utf8_lossy(&file.data);
            // User-supplied strings are rendered as text only (docs/dashboard.md).
            assert!(!text.contains("innerHTML"), "{path} uses innerHTML");
            assert!(!text.contains("outerHTML"), "{path} uses outerHTML");
            assert!(!text.contains("insertAdjacentHTML"), "{path}");
            assert!(!text.contains("document.write"), "{path}");
            assert!(!text.contains("eval("), "{path} uses eval");
            if path.ends_with(".html") {
                assert!(!text.contains("<script>"), "{path} has an inline script");
                assert!(!text.contains("style="), "{path} has an inline style");
                assert!(!text.contains("<style"), "{path} has an inline style");
            }
        }
    }

    #[test]
    fn every_response_has_the_policy() {
        let r = asset("index.html", &with("gzip"));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers().get(header::CONTENT_SECURITY_POLICY),
            Some(&HeaderValue::from_static(CSP))
        );
        assert_eq!(
            r.headers().get(header::CONTENT_ENCODING),
            Some(&HeaderValue::from_static("gzip"))
        );
        let missing = asset("nope.js", &HeaderMap::new());
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert!(
            missing
                .headers()
                .contains_key(header::CONTENT_SECURITY_POLICY)
        );
    }
}
