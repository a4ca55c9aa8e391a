//! What every benchmark group shares: the `yunhe serve` child under test on an ephemeral
//! port, plain HTTP/1.1 requests to it, and small statistics.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// The running yunhe binary (the benches start it as `serve`).
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

/// Starts `yunhe serve` on `state_dir`; returns it and how long it took to answer /healthz.
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
    // For profiling: `YUNHE_BENCH_SERVE_LOG=<file>` keeps serve's log there, at the level
    // `YUNHE_BENCH_SERVE_LEVEL` says (default warn), e.g. `yunhe=debug` for the build timings.
    let log = std::env::var_os("YUNHE_BENCH_SERVE_LOG")
        .and_then(|path| std::fs::File::create(path).ok())
        .map_or_else(Stdio::null, Stdio::from);
    let level = std::env::var("YUNHE_BENCH_SERVE_LEVEL").unwrap_or_else(|_| "warn".into());
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
        .env("YUNHE_LOG", level)
        // The benches measure the API and the VMM, never the host's network.
        .env("YUNHE_DATAPLANE", "false")
        .stdout(Stdio::piped())
        .stderr(log)
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

/// A project-scoped token for the bootstrap admin (password `bench-password`).
pub(crate) fn admin_token(server: &ServerUnderTest) -> Result<String, BenchError> {
    admin_token_at(&server.addr)
}

/// [`admin_token`] from the server at `addr` (a password login each call).
pub(crate) fn admin_token_at(addr: &str) -> Result<String, BenchError> {
    let auth = r#"{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"bench-password"}}},"scope":{"project":{"name":"admin","domain":{"id":"default"}}}}}"#;
    let (status, head, _) = request(
        addr,
        "POST",
        "/identity/v3/auth/tokens",
        &[("Content-Type", "application/json")],
        auth,
    )
    .map_err(|e| BenchError::Io("issuing a token", e))?;
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-subject-token")
                .then(|| v.trim().to_string())
        })
        .ok_or_else(|| BenchError::Server(format!("no token (status {status})")))
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

/// The `NAME:` fields of process `pid`'s `/proc/<pid>/status`, each in KiB (None when the
/// process is gone or a field is missing).
fn status_kib<const N: usize>(pid: u32, names: [&str; N]) -> Option<[u64; N]> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut values = [0; N];
    for (value, name) in values.iter_mut().zip(names) {
        *value = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    }
    Some(values)
}

/// The resident set of process `pid`, KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, ["VmRSS:"]).map(|[rss]| rss)
}

/// Of process `pid`'s resident set, the file-backed part (`RssFile`: serve's are the binary's
/// pages) and the anonymous part (`RssAnon`), KiB.
pub(crate) fn rss_file_anon_kib(pid: u32) -> Option<(u64, u64)> {
    status_kib(pid, ["RssFile:", "RssAnon:"]).map(|[file, anon]| (file, anon))
}

/// How many threads process `pid` has.
pub(crate) fn thread_count(pid: u32) -> Option<u64> {
    status_kib(pid, ["Threads:"]).map(|[threads]| threads)
}

/// The median (the upper one of an even count; NaN when empty).
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
