//! `os-getConsoleOutput` (the serial log's tail) and `os-getSerialConsole`
//! (a websocket URL for `consoles`); graphical consoles are refused.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::S;
use crate::compute::access;
use crate::compute::request::{Integer, action_arg};
use crate::compute::states::{PowerState, VmState};
use crate::compute::{ComputeError, ComputeResult};
use crate::http::json_response;
use crate::identity::AuthContext;

/// The argument of `os-getConsoleOutput`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConsoleOutputArg {
    #[serde(default)]
    pub(super) length: Option<Integer>,
}

/// The argument of `os-getSerialConsole`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SerialConsoleArg {
    #[serde(rename = "type")]
    pub(super) kind: ConsoleType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum ConsoleType {
    Serial,
}

/// `os-getConsoleOutput`: the last `length` lines (all when absent or -1).
pub(super) async fn console_output(
    s: &S,
    ctx: &Arc<AuthContext>,
    id: &str,
    arg: &Value,
) -> ComputeResult<Response> {
    let server = access::load(s, ctx, id).await?;
    // `null` as the argument counts as `{}`, as it always has here.
    let arg: Option<ConsoleOutputArg> = action_arg("os-getConsoleOutput", arg.clone())?;
    let length = match arg.and_then(|a| a.length) {
        None => None,
        Some(n) => {
            let n = n.within("length", -1, i64::from(i32::MAX))?;
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
    let SerialConsoleArg {
        kind: ConsoleType::Serial,
    } = action_arg("os-getSerialConsole", arg.clone())?;
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
