//! Remote consoles: `POST /servers/{id}/remote-consoles` (protocol
//! `serial`, from 2.6) and the legacy `os-getSerialConsole` action hand out
//! a websocket URL with a console token; `GET /compute/serial-console?token=`
//! carries the guest's serial console both ways over that websocket, as
//! nova-serialproxy does (binary frames; text frames are accepted as input).
//!
//! A console token is single-use (the first websocket handshake that presents
//! it consumes it, whatever comes next), valid for ten minutes (Nova's
//! `console_token_ttl`), and bound to the rights of whoever asked for it: at
//! connect time the Keystone token that created the URL is validated again
//! and the server authorised again, so a revoked token, a removed role or a
//! disabled user refuses the console. A handshake whose `Origin` names
//! another host or scheme than the public URL is refused with 403, as Nova's
//! console proxy checks it against `allowed_origins` (no `Origin`: not a
//! browser, accepted). Each VMM serves at most
//! [`crate::vmm::control::MAX_CONSOLE_CLIENTS`] console clients; the next
//! handshake is refused with 409.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::request;
use super::{ComputeError, ComputeResult, ComputeState, Mv};
use crate::compute::states::VmState;
use crate::db::now_unix;
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};

type S = Arc<ComputeState>;

/// Seconds a console token stays valid (Nova's `console_token_ttl`).
const TOKEN_TTL: i64 = 600;
/// Console tokens kept at most; beyond, the one expiring first is dropped.
const MAX_OUTSTANDING_TOKENS: usize = 10_000;

/// The Keystone token of the request, as the client sent it (empty when
/// absent; `Auth` has already refused such a request).
pub struct CallerToken(pub String);

impl<St: Send + Sync> FromRequestParts<St> for CallerToken {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &St) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        Ok(CallerToken(token.to_string()))
    }
}

/// What a console token grants, and to whom.
struct ConsoleGrant {
    server_id: String,
    expires: i64,
    user_id: String,
    /// The Keystone token the URL was created with, validated again at
    /// connect time. Kept in memory only, until the grant is used or expires.
    user_token: String,
}

/// The outstanding console tokens (in memory: a restart invalidates them).
#[derive(Default)]
pub struct ConsoleTokens(Mutex<HashMap<String, ConsoleGrant>>);

impl ConsoleTokens {
    fn insert(&self, token: String, grant: ConsoleGrant) {
        let mut tokens = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_unix();
        tokens.retain(|_, g| g.expires > now);
        if tokens.len() >= MAX_OUTSTANDING_TOKENS
            && let Some(first) = tokens
                .iter()
                .min_by_key(|(_, g)| g.expires)
                .map(|(t, _)| t.clone())
        {
            tokens.remove(&first);
        }
        tokens.insert(token, grant);
    }

    /// Removes the token and returns its grant when it has not expired.
    fn take(&self, token: &str) -> Option<ConsoleGrant> {
        let mut tokens = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tokens.remove(token).filter(|g| g.expires > now_unix())
    }
}

/// May `ctx` use the console of server `id`? Used when the URL is created and
/// again when the websocket connects. Returns the server id.
async fn authorize_console(s: &S, ctx: &AuthContext, id: &str) -> ComputeResult<String> {
    let rule = "os_compute_api:os-remote-consoles";
    let server = super::access::load_authorized(s, ctx, id, rule).await?;
    if ![VmState::Active, VmState::Paused, VmState::Resized].contains(&server.vm_state)
        || !s.driver.is_alive(&server.id) && s.driver.status(&server.id).await.is_none()
    {
        return Err(ComputeError::Conflict(format!(
            "Instance {id} is not ready (vm_state {})",
            server.vm_state
        )));
    }
    Ok(server.id)
}

/// Creates a console token for a server the caller may use and returns the
/// URL; `user_token` is the caller's Keystone token.
pub async fn new_console_url(
    s: &S,
    ctx: &AuthContext,
    user_token: &str,
    id: &str,
) -> ComputeResult<String> {
    let server_id = authorize_console(s, ctx, id).await?;
    let token = uuid::Uuid::new_v4().to_string();
    s.console_tokens.insert(
        token.clone(),
        ConsoleGrant {
            server_id,
            expires: now_unix() + TOKEN_TTL,
            user_id: ctx.user_id.clone(),
            user_token: user_token.to_string(),
        },
    );
    let ws_base = s
        .public_url
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    Ok(format!("{ws_base}/compute/serial-console?token={token}"))
}

/// `POST /servers/{id}/remote-consoles`'s body (Nova's
/// `remote_consoles.create_v26`, `mks` from 2.8).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteConsoleBody {
    remote_console: RemoteConsoleArg,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteConsoleArg {
    protocol: Protocol,
    #[serde(rename = "type")]
    kind: String,
}

/// A console protocol Nova names; only `serial` is served here.
#[derive(Debug)]
struct Protocol(String);

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match v.as_str() {
            Some(p @ ("vnc" | "spice" | "rdp" | "serial" | "mks")) => Ok(Protocol(p.to_string())),
            _ => {
                let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                Err(serde::de::Error::custom(format!(
                    "{text}. '{text}' is not one of ['vnc', 'spice', 'rdp', 'serial', 'mks']"
                )))
            }
        }
    }
}

/// `POST /servers/{id}/remote-consoles`.
pub async fn remote_console(
    State(s): State<S>,
    Auth(ctx): Auth,
    CallerToken(user_token): CallerToken,
    mv: Mv,
    Path(id): Path<String>,
    body: Bytes,
) -> ComputeResult<Response> {
    if !mv.at_least(6) {
        return Err(ComputeError::NotFound(
            "The resource could not be found.".into(),
        ));
    }
    let RemoteConsoleBody {
        remote_console: console,
    } = request::body(&body)?;
    let (protocol, kind) = (console.protocol.0, console.kind);
    if protocol == "mks" && !mv.at_least(8) {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute protocol. Value: {protocol}. '{protocol}' is not one of ['vnc', 'spice', 'rdp', 'serial']"
        )));
    }
    if protocol != "serial" || kind != "serial" {
        return Err(ComputeError::BadRequest(format!(
            "Unavailable console type {protocol}/{kind}: this cloud serves serial consoles only."
        )));
    }
    let url = new_console_url(&s, &ctx, &user_token, &id).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"remote_console": {"protocol": "serial", "type": "serial", "url": url}}),
    ))
}

/// `GET /compute/serial-console?token=...`: the websocket.
pub async fn serial_websocket(
    State(s): State<S>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    match open_console(&s, &q, &headers).await {
        Ok((reader, writer)) => ws
            .protocols(["binary", "base64"])
            .on_upgrade(move |socket| pump(socket, reader, writer)),
        Err(e) => e.into_response(),
    }
}

/// Checks the handshake (origin, token, the rights behind the token) and
/// connects to the VMM's console.
async fn open_console(
    s: &S,
    query: &[(String, String)],
    headers: &HeaderMap,
) -> ComputeResult<super::driver::ConsoleStream> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        if !origin_allowed(&s.public_url, origin) {
            return Err(ComputeError::Forbidden(
                "Origin header does not match this host.".into(),
            ));
        }
    }
    let token = query
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    let Some(grant) = s.console_tokens.take(token) else {
        return Err(ComputeError::Forbidden(
            "The console token is invalid or has expired.".into(),
        ));
    };
    let refused = || {
        ComputeError::Forbidden(
            "The console token is no longer valid: its user may not use this console.".into(),
        )
    };
    let ctx = match crate::identity::token::validate(&s.identity, &grant.user_token).await {
        Ok(ctx) if ctx.user_id == grant.user_id => ctx,
        Ok(_) => return Err(refused()),
        Err(crate::identity::IdentityError::Db(e)) => return Err(ComputeError::Db(e)),
        Err(_) => return Err(refused()),
    };
    match authorize_console(s, &ctx, &grant.server_id).await {
        Ok(_) => {}
        Err(ComputeError::NotFound(_) | ComputeError::Forbidden(_)) => return Err(refused()),
        Err(other) => return Err(other),
    }
    s.driver
        .console_stream(&grant.server_id)
        .await
        .map_err(|e| ComputeError::Conflict(format!("The console is not available: {e}")))
}

/// True when a browser's `Origin` names the public URL's host with its
/// scheme (http or ws for an http URL, https or wss for https), as Nova's
/// console proxy checks it.
pub fn origin_allowed(public_url: &str, origin: &str) -> bool {
    let Some((public_scheme, public_host)) = scheme_and_host(public_url) else {
        return false;
    };
    let Some((scheme, host)) = scheme_and_host(origin) else {
        return false;
    };
    let same_security = match public_scheme.as_str() {
        "http" | "ws" => scheme == "http" || scheme == "ws",
        "https" | "wss" => scheme == "https" || scheme == "wss",
        _ => false,
    };
    same_security && !host.is_empty() && host == public_host
}

/// The lower-cased scheme and host (without port or brackets) of a URL.
fn scheme_and_host(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split_once(']')?.0
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    Some((scheme.to_ascii_lowercase(), host.to_ascii_lowercase()))
}

/// Copies bytes between the websocket and the VMM's console connection
/// until either side closes.
async fn pump(
    socket: WebSocket,
    mut from_vmm: Box<dyn tokio::io::AsyncBufRead + Send + Unpin>,
    mut to_vmm: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
) {
    use futures_util::{SinkExt, StreamExt};
    let (mut ws_tx, mut ws_rx) = socket.split();
    let out = async {
        let mut buf = vec![0u8; 4096];
        loop {
            match from_vmm.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws_tx
                        .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = ws_tx.close().await;
    };
    let input = async {
        while let Some(Ok(message)) = ws_rx.next().await {
            let bytes: Vec<u8> = match message {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_str().as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            if to_vmm.write_all(&bytes).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = out => {},
        () = input => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_name_the_public_host_and_scheme() {
        let public = "http://cloud.example:8080";
        assert!(origin_allowed(public, "http://cloud.example:8080"));
        assert!(origin_allowed(public, "http://CLOUD.example"));
        assert!(origin_allowed(public, "ws://cloud.example:9000"));
        assert!(!origin_allowed(public, "https://cloud.example:8080"));
        assert!(!origin_allowed(public, "http://evil.example"));
        assert!(!origin_allowed(public, "http://cloud.example.evil.example"));
        assert!(!origin_allowed(public, "http://cloud.example@evil.example"));
        assert!(!origin_allowed(public, "null"));
        assert!(!origin_allowed(public, ""));
        assert!(origin_allowed("https://[::1]:8443", "https://[::1]"));
        assert!(!origin_allowed("https://[::1]:8443", "http://[::1]"));
    }

    #[test]
    fn remote_console_bodies_follow_novas_schema() {
        let read = |v: Value| request::body::<RemoteConsoleBody>(v.to_string().as_bytes());
        let ok = read(json!({"remote_console": {"protocol": "serial", "type": "serial"}}))
            .expect("accepted");
        assert_eq!(
            (
                ok.remote_console.protocol.0.as_str(),
                ok.remote_console.kind.as_str()
            ),
            ("serial", "serial")
        );
        assert_eq!(
            request::refused(read(
                json!({"remote_console": {"protocol": "telnet", "type": "x"}})
            )),
            "Invalid input for field/attribute protocol. Value: telnet. 'telnet' is not one of ['vnc', 'spice', 'rdp', 'serial', 'mks']"
        );
        assert_eq!(
            request::refused(read(json!({"remote_console": {"protocol": "serial"}}))),
            "Invalid input for field/attribute remote_console. 'type' is a required property"
        );
        assert_eq!(
            request::refused(read(
                json!({"remote_console": {"protocol": "serial", "type": "serial", "x": 1}})
            )),
            "Invalid input for field/attribute remote_console. Additional properties are not allowed ('x' was unexpected)"
        );
        assert_eq!(
            request::refused(read(json!({}))),
            "Invalid input for field/attribute remote_console: 'remote_console' is a required property"
        );
    }
}
