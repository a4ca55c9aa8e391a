//! `yunhe bench scale` (issue 17): the control plane with 100 servers.
//!
//! Boots the built-in echo guest on m1.nano with `--cpu-allocation-ratio 64`
//! and prints, each beside a baseline measured in the same run:
//! * the launch rate of 100 servers in one request (`min_count` = `max_count`
//!   = 100), POST to all ACTIVE and POST to every guest's first serial line,
//!   against 100 VMMs started directly with `yunhe vm run` in parallel (to
//!   their first serial line), and the ratio to the goal of 300/s;
//! * the same for 100 concurrent single-server POSTs (goal 100/s);
//! * serve's RSS with 100 servers running and after 100 password logins
//!   (right after each burst and once its idle blocking threads have ended),
//!   against its RSS after bootstrap, and a soak under read load printing the
//!   RSS each minute (`--soak-seconds`);
//! * authenticated identity and compute reads against `/healthz` of the same
//!   server (wrk, goal >= 0.5x).
//!
//! Not in `yunhe bench all`: it runs for minutes and starts 200 VMMs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::compute::{Api, clean_up};
use super::control_plane::wrk;
use super::harness::{
    BenchError, admin_token, rss_file_anon_kib, rss_kib, self_exe, start_server_with, thread_count,
};
use crate::server::{BLOCKING_THREAD_KEEP_ALIVE, TRIM_INTERVAL};

/// Servers per burst.
const BURST: usize = 100;
/// The echo guest's first serial line.
const READY: &str = "yunhe echo guest: ready";
/// How long after a burst serve's memory is measured again: its blocking
/// pool's idle threads end after [`BLOCKING_THREAD_KEEP_ALIVE`], and serve
/// returns free heap pages every [`TRIM_INTERVAL`].
const SETTLE: Duration = if BLOCKING_THREAD_KEEP_ALIVE.as_millis() > TRIM_INTERVAL.as_millis() {
    BLOCKING_THREAD_KEEP_ALIVE
} else {
    TRIM_INTERVAL
}
.saturating_add(Duration::from_millis(1500));
/// Longest a burst may take before the bench gives up.
const BURST_LIMIT: Duration = Duration::from_secs(300);

/// serve's binary pages and anonymous memory (KiB) and its thread count.
fn split_of(pid: u32) -> Option<(u64, u64, u64)> {
    let (file, anon) = rss_file_anon_kib(pid)?;
    Some((file, anon, thread_count(pid)?))
}

fn mib(kib: Option<u64>) -> f64 {
    kib.unwrap_or(0) as f64 / 1024.0
}

/// Runs the group; the state directory and every VMM go afterwards, also
/// when a measurement fails.
pub fn run(seconds: u32, soak_seconds: u32) -> Result<(), BenchError> {
    if !Path::new("/dev/kvm").exists() {
        println!("yunhe bench scale: skipped (no /dev/kvm)");
        return Ok(());
    }
    let exe = self_exe()?;
    let state_dir = std::env::temp_dir().join(format!("yunhe-bench-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    std::fs::create_dir_all(&state_dir).map_err(|e| BenchError::Io("state directory", e))?;
    println!("yunhe bench scale ({})", exe.display());
    let result = measure(&exe, &state_dir, seconds, soak_seconds);
    clean_up(&state_dir);
    result
}

/// Starts `BURST` echo VMMs with `yunhe vm run` at once; the seconds until
/// every one printed its first serial line.
fn direct_vmms(exe: &Path, elf: &Path) -> Result<f64, BenchError> {
    let started = Instant::now();
    let mut children = Vec::new();
    let mut readers = Vec::new();
    let mut failure = None;
    for _ in 0..BURST {
        let spawned = Command::new(exe)
            .args(["vm", "run", "--memory", "192", "--kernel"])
            .arg(elf)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                failure = Some(BenchError::Io("starting yunhe vm run", e));
                break;
            }
        };
        if let Some(out) = child.stdout.take() {
            readers.push(std::thread::spawn(move || {
                let mut reader = BufReader::new(out);
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    if line.contains(READY) {
                        return Some(Instant::now());
                    }
                    line.clear();
                }
                None
            }));
        }
        children.push(child);
    }
    let mut last = None;
    let mut missing = 0;
    if failure.is_none() {
        for reader in readers {
            match reader.join().ok().flatten() {
                Some(t) => last = last.max(Some(t)),
                None => missing += 1,
            }
        }
    }
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    if let Some(e) = failure {
        return Err(e);
    }
    match last {
        Some(t) if missing == 0 => Ok(t.duration_since(started).as_secs_f64()),
        _ => Err(BenchError::Server(format!(
            "{missing} of {BURST} `yunhe vm run` guests never printed their first line"
        ))),
    }
}

/// Polls a burst until all `BURST` servers are ACTIVE and every guest printed
/// its first line; returns the seconds to each from `started`.
fn wait_burst(
    api: &Api,
    state_dir: &Path,
    list: &str,
    started: Instant,
) -> Result<(f64, f64, Vec<String>), BenchError> {
    let mut active_at = None;
    loop {
        let (status, _, reply) = api.call("GET", list, None)?;
        if status != 200 {
            return Err(BenchError::Server(format!("GET {list}: {status}")));
        }
        let servers = reply["servers"].as_array().cloned().unwrap_or_default();
        if let Some(bad) = servers.iter().find(|s| s["status"] == "ERROR") {
            return Err(BenchError::Server(format!(
                "server {} went to ERROR: {}",
                bad["id"], bad["fault"]
            )));
        }
        let ids: Vec<String> = servers
            .iter()
            .filter_map(|s| s["id"].as_str().map(str::to_string))
            .collect();
        let active = servers.iter().filter(|s| s["status"] == "ACTIVE").count();
        if active_at.is_none() && active == BURST {
            active_at = Some(started.elapsed().as_secs_f64());
        }
        if let Some(active_s) = active_at {
            let ready = ids
                .iter()
                .filter(|id| {
                    std::fs::read_to_string(
                        state_dir.join("instances").join(id).join("console.log"),
                    )
                    .is_ok_and(|t| t.contains(READY))
                })
                .count();
            if ready == BURST {
                return Ok((active_s, started.elapsed().as_secs_f64(), ids));
            }
        }
        if started.elapsed() > BURST_LIMIT {
            return Err(BenchError::Server(format!(
                "{active} of {BURST} servers ACTIVE after {BURST_LIMIT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Deletes the servers and waits until the list is empty.
fn delete_all(api: &Api, ids: &[String]) -> Result<(), BenchError> {
    for id in ids {
        api.call("DELETE", &format!("/compute/v2.1/servers/{id}"), None)?;
    }
    let deadline = Instant::now() + BURST_LIMIT;
    loop {
        let (_, _, reply) = api.call("GET", "/compute/v2.1/servers", None)?;
        if reply["servers"].as_array().is_some_and(|a| a.is_empty()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Server("servers not gone after delete".into()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn rate_line(what: &str, first_line_s: f64, active_s: f64, baseline_s: f64, goal: f64) {
    let n = BURST as f64;
    let rate = n / first_line_s;
    let base = n / baseline_s;
    println!(
        "launch    {what}: {rate:.0} servers/s to every guest's first serial line ({first_line_s:.2} s; \
         all ACTIVE after {active_s:.2} s, {:.0}/s)\n          \
         baseline {BURST} `yunhe vm run` in parallel to their first line: {base:.0} VMs/s ({baseline_s:.2} s); \
         ratio {:.2}; ratio to the goal {goal:.0}/s {:.2}",
        n / active_s,
        rate / base,
        rate / goal
    );
}

fn measure(
    exe: &Path,
    state_dir: &Path,
    seconds: u32,
    soak_seconds: u32,
) -> Result<(), BenchError> {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "          load average at the start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let elf: PathBuf = state_dir.join("echo.elf");
    std::fs::write(&elf, crate::vmm::guests::ECHO_ELF)
        .map_err(|e| BenchError::Io("writing the echo guest", e))?;
    let serve_dir = state_dir.join("serve");
    // The per-user rate limit would measure the limiter, not the control plane.
    let (server, _) = start_server_with(
        exe,
        &serve_dir,
        &["--cpu-allocation-ratio", "64", "--api-rate-limit", "0"],
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let pid = server.child.id();
    let boot_rss = mib(rss_kib(pid));
    let boot_split = split_of(pid);
    let api = Api {
        token: admin_token(&server)?,
        server: &server,
    };
    let kernel = api.upload(
        json!({"name": "bench-echo-kernel", "disk_format": "aki", "container_format": "aki"}),
        crate::vmm::guests::ECHO_ELF,
    )?;
    let image = api.upload(
        json!({"name": "bench-echo", "disk_format": "raw", "container_format": "bare", "kernel_id": kernel}),
        &vec![0u8; 1 << 20],
    )?;
    let (_, _, projects) = api.call("GET", "/identity/v3/projects?name=admin", None)?;
    let project = projects["projects"][0]["id"]
        .as_str()
        .ok_or_else(|| BenchError::Server(format!("no admin project: {projects}")))?
        .to_string();
    api.call(
        "PUT",
        &format!("/compute/v2.1/os-quota-sets/{project}"),
        Some(&json!({"quota_set": {"instances": -1, "cores": -1, "ram": -1}})),
    )?;

    // Baseline: the bare VMMs, started directly.
    let baseline = direct_vmms(exe, &elf)?;

    // 100 servers in one request.
    let started = Instant::now();
    let (status, _, reply) = api.call(
        "POST",
        "/compute/v2.1/servers",
        Some(
            &json!({"server": {"name": "scale", "imageRef": image, "flavorRef": "42",
                                 "networks": "none", "min_count": BURST, "max_count": BURST,
                                 "return_reservation_id": true}}),
        ),
    )?;
    let reservation = reply["reservation_id"]
        .as_str()
        .ok_or_else(|| BenchError::Server(format!("burst create: {status} {reply}")))?
        .to_string();
    let (active_s, ready_s, ids) = wait_burst(
        &api,
        &serve_dir,
        &format!("/compute/v2.1/servers/detail?reservation_id={reservation}"),
        started,
    )?;
    rate_line(
        &format!("{BURST} servers in one request (min_count = max_count = {BURST})"),
        ready_s,
        active_s,
        baseline,
        300.0,
    );
    std::thread::sleep(Duration::from_millis(500));
    let running_rss = mib(rss_kib(pid));
    let running_split = split_of(pid);
    // Settled: the burst's idle blocking threads have ended and serve has trimmed malloc's free pages.
    std::thread::sleep(SETTLE);
    let settled_rss = mib(rss_kib(pid));
    let settled_split = split_of(pid);
    delete_all(&api, &ids)?;
    // With every server of the burst deleted: what stays is not per-server state but what the
    // burst left with the allocator (or a leak).
    std::thread::sleep(Duration::from_millis(500));
    let deleted_split = split_of(pid);

    // 100 concurrent single-server POSTs.
    let started = Instant::now();
    let posts: Vec<_> = (0..BURST)
        .map(|i| {
            let addr = server.addr.clone();
            let token = api.token.clone();
            let image = image.clone();
            std::thread::spawn(move || {
                let body = json!({"server": {"name": format!("one-{i}"), "imageRef": image,
                                             "flavorRef": "42", "networks": "none"}})
                .to_string();
                super::harness::request(
                    &addr,
                    "POST",
                    "/compute/v2.1/servers",
                    &[
                        ("X-Auth-Token", token.as_str()),
                        ("Content-Type", "application/json"),
                        // `"networks": "none"` needs 2.37 or later.
                        ("OpenStack-API-Version", "compute 2.96"),
                    ],
                    &body,
                )
            })
        })
        .collect();
    for post in posts {
        match post.join() {
            Ok(Ok((202, _, _))) => {}
            Ok(Ok((status, _, body))) => {
                return Err(BenchError::Server(format!(
                    "POST /servers: {status} {body}"
                )));
            }
            Ok(Err(e)) => return Err(BenchError::Io("POST /servers", e)),
            Err(_) => return Err(BenchError::Server("a POST thread panicked".into())),
        }
    }
    let (active_s, ready_s, _) =
        wait_burst(&api, &serve_dir, "/compute/v2.1/servers/detail", started)?;
    rate_line(
        &format!("{BURST} concurrent single-server POSTs"),
        ready_s,
        active_s,
        baseline,
        100.0,
    );

    // 100 password logins, ten at a time.
    for _ in 0..10 {
        let logins: Vec<_> = (0..10)
            .map(|_| {
                let addr = server.addr.clone();
                std::thread::spawn(move || super::harness::admin_token_at(&addr))
            })
            .collect();
        for login in logins {
            login
                .join()
                .map_err(|_| BenchError::Server("a login thread panicked".into()))??;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let login_rss = mib(rss_kib(pid));
    let login_split = split_of(pid);
    std::thread::sleep(SETTLE);
    let login_settled_rss = mib(rss_kib(pid));
    let login_settled_split = split_of(pid);
    println!(
        "memory    serve's RSS with {BURST} servers running: {settled_rss:.1} MiB; after 100 more password logins \
         (with {BURST} running): {login_settled_rss:.1} MiB (goal <= 30 MiB; ratio to the goal {:.2}), each {} s after \
         the burst; right after it {running_rss:.1} and {login_rss:.1} MiB\n          \
         baseline serve's RSS after bootstrap: {boot_rss:.1} MiB; ratios {:.2} and {:.2}",
        settled_rss.max(login_settled_rss) / 30.0,
        SETTLE.as_secs_f64() + 0.5,
        settled_rss / boot_rss,
        login_settled_rss / boot_rss
    );
    let split = |s: Option<(u64, u64, u64)>| match s {
        Some((file, anon, threads)) => format!(
            "{:.1} + {:.1} ({threads} threads)",
            file as f64 / 1024.0,
            anon as f64 / 1024.0
        ),
        None => "?".into(),
    };
    println!(
        "          of which the binary's pages (RssFile) + anonymous (RssAnon), MiB: after bootstrap {}; \
         with {BURST} servers {}, settled {}; after deleting them {}; after the logins (100 servers again) {}, \
         settled {}",
        split(boot_split),
        split(running_split),
        split(settled_split),
        split(deleted_split),
        split(login_split),
        split(login_settled_split)
    );

    // Reads against /healthz of the same server.
    let token = api.token.clone();
    let healthz = wrk(&server.addr, "/healthz", None, seconds)?;
    println!(
        "reads     baseline GET /healthz (wrk -t2 -c16): {:.0} req/s, p99 {:.2} ms",
        healthz.requests_per_second, healthz.p99_ms
    );
    for path in [
        "/identity/v3/users",
        "/compute/v2.1/servers/detail",
        "/compute/v2.1/flavors/detail",
    ] {
        let read = wrk(&server.addr, path, Some(&token), seconds)?;
        println!(
            "          GET {path} with a token ({BURST} servers): {:.0} req/s, p99 {:.2} ms; ratio to /healthz {:.2} (goal >= 0.5)",
            read.requests_per_second,
            read.p99_ms,
            read.requests_per_second / healthz.requests_per_second
        );
    }

    // The soak: the three reads in turn, the RSS at each minute.
    let soak_start = mib(rss_kib(pid));
    println!(
        "soak      {soak_seconds} s of authenticated reads (wrk, the three paths in turn), {BURST} servers running; RSS at 0 s: {soak_start:.1} MiB"
    );
    let paths = [
        "/identity/v3/users",
        "/compute/v2.1/servers/detail",
        "/compute/v2.1/flavors/detail",
    ];
    let mut done = 0u32;
    let mut turn = 0usize;
    let mut next_print = 60u32.min(soak_seconds);
    while done < soak_seconds {
        let chunk = (next_print - done).min(20);
        wrk(&server.addr, paths[turn % paths.len()], Some(&token), chunk)?;
        turn += 1;
        done += chunk;
        if done >= next_print {
            let rss = mib(rss_kib(pid));
            println!(
                "          RSS at {done} s: {rss:.1} MiB (ratio to the soak's start {:.2})",
                rss / soak_start
            );
            next_print = (next_print + 60).min(soak_seconds);
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "          load average at the end: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    drop(server);
    Ok(())
}
