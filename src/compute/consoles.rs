//! Remote consoles: `POST /servers/{id}/remote-consoles` (protocol
//! `serial`, from 2.6) and the legacy `os-getSerialConsole` action hand out
//! a websocket URL with a one-use-per-connection token, valid for ten
//! minutes as Nova's `console_token_ttl`; `GET /compute/serial-console?token=`
//! carries the guest's serial console both ways over that websocket, as
//! nova-serialproxy does (binary frames; text frames are accepted as input).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ComputeError, ComputeResult, ComputeState, Mv, parse_body, take_object};
use crate::db::now_unix;
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};

type S = Arc<ComputeState>;

/// Seconds a console token stays valid.
const TOKEN_TTL: i64 = 600;

/// Creates a console token for a server the caller may see and use
/// (os-remote-consoles) and returns the URL.
pub async fn new_console_url(s: &S, ctx: &AuthContext, id: &str) -> ComputeResult<String> {
    let rule = "os_compute_api:os-remote-consoles";
    let server = super::servers::load_authorized(s, ctx, id, rule).await?;
    if !["active", "paused", "resized"].contains(&server.vm_state.as_str())
        || !s.virt.is_alive(&server.id) && s.virt.status(&server.id).await.is_none()
    {
        return Err(ComputeError::Conflict(format!(
            "Instance {id} is not ready (vm_state {})",
            server.vm_state
        )));
    }
    let token = uuid::Uuid::new_v4().to_string();
    {
        let mut tokens = s.console_tokens.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_unix();
        tokens.retain(|_, (_, expires)| *expires > now);
        tokens.insert(token.clone(), (server.id.clone(), now + TOKEN_TTL));
    }
    let ws_base = s
        .public_url
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    Ok(format!("{ws_base}/compute/serial-console?token={token}"))
}

/// `POST /servers/{id}/remote-consoles`.
pub async fn remote_console(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    body: Bytes,
) -> ComputeResult<Response> {
    if !mv.at_least(6) {
        return Err(ComputeError::NotFound(
            "The resource could not be found.".into(),
        ));
    }
    let mut body = parse_body(&body)?;
    let console = take_object(&mut body, "remote_console")?;
    let protocol = console
        .get("protocol")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = console.get("type").and_then(Value::as_str).unwrap_or("");
    if !["vnc", "spice", "rdp", "serial", "mks"].contains(&protocol) {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute protocol. Value: {protocol}. '{protocol}' is not one of ['vnc', 'spice', 'rdp', 'serial', 'mks']"
        )));
    }
    if protocol != "serial" || kind != "serial" {
        return Err(ComputeError::BadRequest(format!(
            "Unavailable console type {protocol}/{kind}: this cloud serves serial consoles only."
        )));
    }
    let url = new_console_url(&s, &ctx, &id).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"remote_console": {"protocol": "serial", "type": "serial", "url": url}}),
    ))
}

/// `GET /compute/serial-console?token=...`: the websocket.
pub async fn serial_websocket(
    State(s): State<S>,
    Query(q): Query<Vec<(String, String)>>,
    ws: WebSocketUpgrade,
) -> Response {
    let token = q
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let server_id = {
        let tokens = s.console_tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .get(&token)
            .filter(|(_, expires)| *expires > now_unix())
            .map(|(id, _)| id.clone())
    };
    let Some(server_id) = server_id else {
        return ComputeError::Forbidden("The console token is invalid or has expired.".into())
            .into_response();
    };
    let (reader, writer) = match s.virt.console_stream(&server_id).await {
        Ok(pair) => pair,
        Err(e) => {
            return ComputeError::Conflict(format!("The console is not available: {e}"))
                .into_response();
        }
    };
    ws.protocols(["binary", "base64"])
        .on_upgrade(move |socket| pump(socket, reader, writer))
}

/// Copies bytes between the websocket and the VMM's console connection
/// until either side closes.
async fn pump(
    socket: WebSocket,
    mut from_vmm: tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>,
    mut to_vmm: tokio::net::unix::OwnedWriteHalf,
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
