//! `yunhe bench control-plane`: start-up time against `yunhe --version`, idle memory, API
//! throughput with token validation against `/healthz` (wrk), binary size.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::harness::{
    BenchError, admin_token, median, rss_kib, self_exe, start_server, start_server_with,
};

/// Result of one wrk run.
pub(super) struct Load {
    pub(super) requests_per_second: f64,
    pub(super) p99_ms: f64,
}

fn parse_latency_ms(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().ok().map(|v| v * factor)
}

pub(super) fn wrk(
    addr: &str,
    path: &str,
    token: Option<&str>,
    seconds: u32,
) -> Result<Load, BenchError> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", "-c16", &format!("-d{seconds}s"), "--latency"]);
    if let Some(token) = token {
        cmd.args(["-H", &format!("X-Auth-Token: {token}")]);
    }
    cmd.arg(format!("http://{addr}{path}"));
    let output = cmd.output().map_err(|e| {
        BenchError::LoadTool(format!(
            "cannot run wrk ({e}); install it with `apt-get install wrk`"
        ))
    })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let requests_per_second = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| BenchError::LoadTool(format!("unexpected wrk output:\n{text}")))?;
    let p99_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(parse_latency_ms)
        .unwrap_or(f64::NAN);
    if text.contains("Non-2xx") {
        return Err(BenchError::LoadTool(format!(
            "non-2xx answers under load:\n{text}"
        )));
    }
    Ok(Load {
        requests_per_second,
        p99_ms,
    })
}

/// Runs the group: each figure beside its baseline and goal. The state
/// directory goes afterwards, also when a measurement fails.
pub fn run(seconds: u32) -> Result<(), BenchError> {
    let exe = self_exe()?;
    let state_dir = std::env::temp_dir().join(format!("yunhe-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    println!("yunhe bench control-plane ({})", exe.display());
    let result = measure(&exe, &state_dir, seconds);
    let _ = std::fs::remove_dir_all(&state_dir);
    result
}

fn measure(
    exe: &std::path::Path,
    state_dir: &std::path::Path,
    seconds: u32,
) -> Result<(), BenchError> {
    let exe = exe.to_path_buf();
    let state_dir = state_dir.to_path_buf();

    // First start creates the state; the measured starts reuse it.
    drop(start_server(&exe, &state_dir)?);
    let mut exec_ms = Vec::new();
    let mut ready_ms = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let status = Command::new(&exe)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .map_err(|e| BenchError::Io("running yunhe --version", e))?;
        if !status.success() {
            return Err(BenchError::Server("yunhe --version failed".into()));
        }
        exec_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let (server, ready) = start_server(&exe, &state_dir)?;
        ready_ms.push(ready.as_secs_f64() * 1000.0);
        drop(server);
    }
    let exec = median(exec_ms);
    let ready = median(ready_ms);
    println!(
        "start-up  exec to /healthz 200 on an existing state dir: {ready:.1} ms (median of 7; goal <= 100 ms)\n          \
         baseline `yunhe --version` exec to exit: {exec:.1} ms; ratio {:.1}x",
        ready / exec
    );

    // The per-user API rate limit (200 req/s by default) would turn the load
    // test into a measure of the limiter: it is off for this server.
    let (server, _) = start_server_with(&exe, &state_dir, &["--api-rate-limit", "0"])?;
    std::thread::sleep(Duration::from_millis(300));
    let rss = rss_kib(server.child.id()).unwrap_or(0) as f64 / 1024.0;
    println!(
        "memory    idle RSS of serve: {rss:.1} MiB (goal <= 30 MiB; ratio to goal {:.2})",
        rss / 30.0
    );

    let token = admin_token(&server)?;
    let baseline = wrk(&server.addr, "/healthz", None, seconds)?;
    let users = wrk(&server.addr, "/identity/v3/users", Some(&token), seconds)?;
    println!(
        "api       GET /v3/users with token validation (wrk -t2 -c16, --api-rate-limit 0): {:.0} req/s, p99 {:.2} ms \
         (goal >= 5000 req/s, p99 <= 10 ms)\n          baseline GET /healthz (no auth, no state): {:.0} req/s, p99 {:.2} ms; ratio {:.2}",
        users.requests_per_second,
        users.p99_ms,
        baseline.requests_per_second,
        baseline.p99_ms,
        users.requests_per_second / baseline.requests_per_second
    );
    drop(server);

    let size = std::fs::metadata(&exe).map(|m| m.len()).unwrap_or(0) as f64 / (1024.0 * 1024.0);
    println!(
        "binary    {size:.1} MiB (goal <= 30 MiB; ratio to goal {:.2})",
        size / 30.0
    );
    Ok(())
}
