//! `os-getConsoleOutput` (the serial log's tail) and `os-getSerialConsole`
//! (a websocket URL for `consoles`); graphical consoles are refused.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::S;
use crate::compute::access;
use crate::compute::states::{PowerState, VmState};
use crate::compute::{ComputeError, ComputeResult, int_field};
use crate::http::json_response;
use crate::identity::AuthContext;

/// `os-getConsoleOutput`: the last `length` lines (all when absent or -1).
pub(super) async fn console_output(
    s: &S,
    ctx: &Arc<AuthContext>,
    id: &str,
    arg: &Value,
) -> ComputeResult<Response> {
    let server = access::load(s, ctx, id).await?;
    let length = match arg.get("length") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let n = int_field(v, "length", -1, i64::from(i32::MAX))?;
            if n < 0 { None } else { Some(n as usize) }
        }
    };
    if server.vm_state == VmState::Building && server.power_state == PowerState::NoState {
        return Err(ComputeError::Conflict(format!(
            "Instance {id} is not ready"
        )));
    }
    let output = s.driver.console_output(&server.id, length).await;
    Ok(json_response(StatusCode::OK, &json!({"output": output})))
}

/// `os-getSerialConsole`: the URL of the serial console's websocket.
pub(super) async fn serial_console(
    s: &S,
    ctx: &Arc<AuthContext>,
    user_token: &str,
    id: &str,
    arg: &Value,
) -> ComputeResult<Response> {
    let kind = arg.get("type").and_then(Value::as_str).unwrap_or("");
    if kind != "serial" {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute type. Value: {kind}. '{kind}' is not one of ['serial']"
        )));
    }
    let url = crate::compute::consoles::new_console_url(s, ctx, user_token, id).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"console": {"type": "serial", "url": url}}),
    ))
}

/// `os-getVNCConsole`, `os-getSPICEConsole`, `os-getRDPConsole`.
pub(super) fn graphical_console() -> ComputeResult<Response> {
    Err(ComputeError::BadRequest(
        "Unavailable console type: this cloud serves serial consoles only.".into(),
    ))
}
