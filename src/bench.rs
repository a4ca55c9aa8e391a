//! `yunhe bench`: measurements printed as ratios against a named baseline
//! measured in the same run (and against the goals of the issues).
//!
//! Not a timed test: numbers depend on the machine. Run it on an idle host.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Options of `yunhe bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Which group to run.
    #[arg(value_enum, default_value = "all")]
    pub group: BenchGroup,
    /// Seconds of load for each throughput measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum BenchGroup {
    /// Every group below.
    All,
    /// Start-up time, idle memory, API throughput and binary size.
    ControlPlane,
    /// VMM start-up against QEMU microvm, VMM memory overhead, virtio-blk request path.
    Vmm,
    /// Servers: POST latency, POST to ACTIVE, listing 1,000 servers, VMM memory per server.
    Compute,
    /// A wrong-password flood: serve's RSS and an unrelated write's p99 (issue 9).
    LoginFlood,
}

/// Errors of a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A process could not be started or talked to.
    #[error("{0}: {1}")]
    Io(&'static str, std::io::Error),
    /// The server under test misbehaved.
    #[error("server: {0}")]
    Server(String),
    /// The load tool is missing or its output could not be read.
    #[error("load tool: {0}")]
    LoadTool(String),
}

pub fn bench_main(args: BenchArgs) -> ExitCode {
    let mut result = Ok(());
    if matches!(args.group, BenchGroup::All | BenchGroup::ControlPlane) {
        result = control_plane(args.seconds);
    }
    if result.is_ok() && matches!(args.group, BenchGroup::All | BenchGroup::Compute) {
        result = crate::compute_bench::run();
    }
    if result.is_ok() && matches!(args.group, BenchGroup::All | BenchGroup::LoginFlood) {
        result = crate::auth_bench::run(args.seconds);
    }
    if matches!(args.group, BenchGroup::All | BenchGroup::Vmm) {
        println!("yunhe bench vmm");
        for (name, line) in crate::vmm::bench::run_benchmarks() {
            println!("{name:<40} {line}");
        }
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("yunhe bench: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn self_exe() -> Result<PathBuf, BenchError> {
    std::fs::read_link("/proc/self/exe").map_err(|e| BenchError::Io("locating the yunhe binary", e))
}

/// A `yunhe serve` child on an ephemeral port; killed on drop.
pub(crate) struct ServerUnderTest {
    pub(crate) child: Child,
    pub(crate) addr: String,
}

impl Drop for ServerUnderTest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start_server(
    exe: &Path,
    state_dir: &Path,
) -> Result<(ServerUnderTest, Duration), BenchError> {
    start_server_with(exe, state_dir, &[])
}

/// [`start_server`] with extra `serve` flags.
pub(crate) fn start_server_with(
    exe: &Path,
    state_dir: &Path,
    extra: &[&str],
) -> Result<(ServerUnderTest, Duration), BenchError> {
    let started = Instant::now();
    let mut child = Command::new(exe)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-password",
            "bench-password",
            // The benches measure the API, not TLS.
            "--insecure-http",
        ])
        .arg("--state-dir")
        .arg(state_dir)
        .args(extra)
        .env("YUNHE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| BenchError::Io("starting yunhe serve", e))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Server("no stdout".into()))?;
    let mut reader = BufReader::new(stdout);
    let mut addr = String::new();
    let mut line = String::new();
    while reader
        .read_line(&mut line)
        .map_err(|e| BenchError::Io("reading serve output", e))?
        > 0
    {
        if let Some(url) = line.trim().strip_prefix("identity:") {
            addr = url
                .trim()
                .trim_start_matches("http://")
                .trim_end_matches("/identity/v3")
                .to_string();
            break;
        }
        line.clear();
    }
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    if addr.is_empty() {
        let _ = child.kill();
        return Err(BenchError::Server(
            "serve exited before printing its address".into(),
        ));
    }
    let server = ServerUnderTest { child, addr };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((200, _, _)) = request(&server.addr, "GET", "/healthz", &[], "") {
            return Ok((server, started.elapsed()));
        }
        if Instant::now() > deadline {
            return Err(BenchError::Server("healthz never answered 200".into()));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// One HTTP/1.1 request; returns (status, headers, body).
pub(crate) fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String, String)> {
    request_bytes(addr, method, path, headers, body.as_bytes())
}

/// [`request`] with a binary body.
pub(crate) fn request_bytes(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes)?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, head.to_string(), rest.to_string()))
}

pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Result of one wrk run.
struct Load {
    requests_per_second: f64,
    p99_ms: f64,
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

fn wrk(addr: &str, path: &str, token: Option<&str>, seconds: u32) -> Result<Load, BenchError> {
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

fn control_plane(seconds: u32) -> Result<(), BenchError> {
    let exe = self_exe()?;
    let state_dir = std::env::temp_dir().join(format!("yunhe-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    println!("yunhe bench control-plane ({})", exe.display());

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

    let (server, _) = start_server(&exe, &state_dir)?;
    std::thread::sleep(Duration::from_millis(300));
    let rss = rss_kib(server.child.id()).unwrap_or(0) as f64 / 1024.0;
    println!(
        "memory    idle RSS of serve: {rss:.1} MiB (goal <= 30 MiB; ratio to goal {:.2})",
        rss / 30.0
    );

    let auth = r#"{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"bench-password"}}},"scope":{"project":{"name":"admin","domain":{"id":"default"}}}}}"#;
    let (status, head, _) = request(
        &server.addr,
        "POST",
        "/identity/v3/auth/tokens",
        &[("Content-Type", "application/json")],
        auth,
    )
    .map_err(|e| BenchError::Io("issuing a token", e))?;
    let token = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-subject-token")
                .then(|| v.trim().to_string())
        })
        .ok_or_else(|| BenchError::Server(format!("no token (status {status})")))?;
    let baseline = wrk(&server.addr, "/healthz", None, seconds)?;
    let users = wrk(&server.addr, "/identity/v3/users", Some(&token), seconds)?;
    println!(
        "api       GET /v3/users with token validation (wrk -t2 -c16): {:.0} req/s, p99 {:.2} ms \
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
    let _ = std::fs::remove_dir_all(&state_dir);
    Ok(())
}
