//! `yunhe bench login-flood`: issue 9's finding 1 as a measurement. A
//! wrong-password flood of 100 connections against a server whose lockout
//! and rate limits are off (only the bounded Argon2 pool stands in the way),
//! while an admin keeps writing project tags: prints serve's peak RSS and
//! the write's p99 beside the same write's p99 without the flood.
//!
//! `yunhe bench trust-token`: a trust-scoped token issue beside a password
//! token issue (the baseline) from the same run.

use std::time::{Duration, Instant};

use super::harness::{BenchError, median, request, rss_kib, self_exe, start_server_with};

/// Connections of the flood, as in the issue.
const FLOODERS: usize = 100;

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values.get(index).copied().unwrap_or(f64::NAN)
}

fn auth_body(password: &str) -> String {
    serde_json::json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})
    .to_string()
}

/// One keep-alive connection posting `body` to the token endpoint until
/// `stop`; counts the answers as [401, 429, other].
fn flood_connection(addr: &str, body: &str, stop: Instant) -> [usize; 3] {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut counts = [0usize; 3];
    let request = format!(
        "POST /identity/v3/auth/tokens HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    'connect: while Instant::now() < stop {
        let Ok(stream) = std::net::TcpStream::connect(addr) else {
            counts[2] += 1;
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let Ok(mut writer) = stream.try_clone() else {
            continue;
        };
        let mut reader = BufReader::new(stream);
        while Instant::now() < stop {
            if writer.write_all(request.as_bytes()).is_err() {
                continue 'connect;
            }
            let mut status = 0u16;
            let mut length = 0usize;
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => continue 'connect,
                    Ok(_) => {}
                }
                let text = line.trim_end();
                if text.is_empty() {
                    break;
                }
                if status == 0 {
                    status = text
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                } else if let Some((k, v)) = text.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut sink = vec![0u8; length];
            if reader.read_exact(&mut sink).is_err() {
                continue 'connect;
            }
            match status {
                401 => counts[0] += 1,
                429 => counts[1] += 1,
                _ => counts[2] += 1,
            }
        }
    }
    counts
}

pub fn run(seconds: u32) -> Result<(), BenchError> {
    let exe = self_exe()?;
    let state_dir = std::env::temp_dir().join(format!("yunhe-bench-flood-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    let result = measure(&exe, &state_dir, seconds.max(1) * 2);
    let _ = std::fs::remove_dir_all(&state_dir);
    result
}

fn measure(
    exe: &std::path::Path,
    state_dir: &std::path::Path,
    seconds: u32,
) -> Result<(), BenchError> {
    println!("yunhe bench login-flood ({})", exe.display());
    let (server, _) = start_server_with(
        exe,
        state_dir,
        &[
            "--lockout-failure-attempts",
            "0",
            "--auth-user-burst",
            "0",
            "--auth-source-burst",
            "0",
        ],
    )?;
    let pid = server.child.id();
    let json = [("Content-Type", "application/json")];
    let (status, head, body) = request(
        &server.addr,
        "POST",
        "/identity/v3/auth/tokens",
        &json,
        &auth_body("bench-password"),
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
    let project = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["token"]["project"]["id"].as_str().map(str::to_string))
        .ok_or_else(|| BenchError::Server("no project in the token".into()))?;
    let write = |i: usize| -> Result<f64, BenchError> {
        let t = Instant::now();
        let (status, _, _) = request(
            &server.addr,
            "PUT",
            &format!("/identity/v3/projects/{project}/tags/t{i}"),
            &[("X-Auth-Token", token.as_str())],
            "",
        )
        .map_err(|e| BenchError::Io("writing a tag", e))?;
        if status >= 300 {
            return Err(BenchError::Server(format!("tag write answered {status}")));
        }
        Ok(t.elapsed().as_secs_f64() * 1000.0)
    };
    let mut baseline = Vec::new();
    for i in 0..200 {
        baseline.push(write(i % 50)?);
        std::thread::sleep(Duration::from_millis(5));
    }
    let idle_rss = rss_kib(pid).unwrap_or(0);

    let stop = Instant::now() + Duration::from_secs(u64::from(seconds));
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|_| {
            let addr = server.addr.clone();
            std::thread::spawn(move || flood_connection(&addr, &auth_body("wrong-password"), stop))
        })
        .collect();
    let mut flooded = Vec::new();
    let mut peak_rss = idle_rss;
    let mut i = 0;
    while Instant::now() < stop {
        flooded.push(write(i % 50)?);
        peak_rss = peak_rss.max(rss_kib(pid).unwrap_or(0));
        i += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut counts = [0usize; 3];
    for flooder in flooders {
        if let Ok(c) = flooder.join() {
            for (total, n) in counts.iter_mut().zip(c) {
                *total += n;
            }
        }
    }
    peak_rss = peak_rss.max(rss_kib(pid).unwrap_or(0));
    std::thread::sleep(Duration::from_secs(1));
    let after_rss = rss_kib(pid).unwrap_or(0);
    // The hashing workers free their Argon2 memory once no job waits; a
    // later reading shows whether anything else stays behind.
    std::thread::sleep(Duration::from_secs(6));
    let settled_rss = rss_kib(pid).unwrap_or(0);
    let (p99_base, p99_flood) = (
        percentile(baseline.clone(), 0.99),
        percentile(flooded.clone(), 0.99),
    );
    println!(
        "flood     {FLOODERS} connections of wrong passwords for {seconds} s (lockout and rate limits off): \
         {} answered 401, {} answered 429, {} other",
        counts[0], counts[1], counts[2]
    );
    println!(
        "memory    serve RSS idle {:.1} MiB, peak under flood {:.1} MiB (goal < 100 MiB), 1 s after {:.1} MiB, \
         7 s after {:.1} MiB (goal <= 30 MiB; ratio to the idle baseline {:.2})",
        idle_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        after_rss as f64 / 1024.0,
        settled_rss as f64 / 1024.0,
        settled_rss as f64 / idle_rss.max(1) as f64
    );
    println!(
        "write     PUT /v3/projects/{{id}}/tags/x under flood: p99 {p99_flood:.2} ms, median {:.2} ms ({} writes; goal p99 < 50 ms)\n          \
         baseline without flood: p99 {p99_base:.2} ms, median {:.2} ms ({} writes); ratio of p99s {:.1}",
        median(flooded.clone()),
        flooded.len(),
        median(baseline.clone()),
        baseline.len(),
        p99_flood / p99_base
    );
    drop(server);
    Ok(())
}

/// The value of a response header.
fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// A JSON request that must answer `want`; the response's headers and body.
fn expect(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &serde_json::Value,
    want: u16,
) -> Result<(String, serde_json::Value), BenchError> {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(token) = token {
        headers.push(("X-Auth-Token", token));
    }
    let text = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (status, head, reply) =
        request(addr, method, path, &headers, &text).map_err(|e| BenchError::Io("a request", e))?;
    if status != want {
        return Err(BenchError::Server(format!(
            "{method} {path} answered {status}, not {want}: {reply}"
        )));
    }
    Ok((head, serde_json::from_str(&reply).unwrap_or_default()))
}

/// `yunhe bench trust-token`: issuing a trust-scoped token (the trustee's
/// password and `OS-TRUST:trust` scope) beside issuing a project-scoped
/// password token for the same user and project, alternated in one run;
/// the password issue is the baseline.
pub fn run_trust_token(seconds: u32) -> Result<(), BenchError> {
    let exe = self_exe()?;
    let state_dir = std::env::temp_dir().join(format!("yunhe-bench-trust-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    let result = measure_trust_token(&exe, &state_dir, seconds.max(1));
    let _ = std::fs::remove_dir_all(&state_dir);
    result
}

fn measure_trust_token(
    exe: &std::path::Path,
    state_dir: &std::path::Path,
    seconds: u32,
) -> Result<(), BenchError> {
    use serde_json::{Value, json};
    println!("yunhe bench trust-token ({})", exe.display());
    let (server, _) = start_server_with(exe, state_dir, &[])?;
    let addr = server.addr.as_str();
    let (head, admin) = expect(
        addr,
        "POST",
        "/identity/v3/auth/tokens",
        None,
        &serde_json::from_str::<Value>(&auth_body("bench-password")).unwrap_or_default(),
        201,
    )?;
    let token = header_value(&head, "x-subject-token")
        .ok_or_else(|| BenchError::Server("no admin token".into()))?;
    let admin_id = admin["token"]["user"]["id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let project = admin["token"]["project"]["id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let (_, trustee) = expect(
        addr,
        "POST",
        "/identity/v3/users",
        Some(&token),
        &json!({"user": {"name": "bench-trustee", "password": "bench-trustee-pw", "domain_id": "default"}}),
        201,
    )?;
    let trustee_id = trustee["user"]["id"].as_str().unwrap_or("").to_string();
    let (_, roles) = expect(
        addr,
        "GET",
        "/identity/v3/roles?name=reader",
        Some(&token),
        &Value::Null,
        200,
    )?;
    let reader = roles["roles"][0]["id"].as_str().unwrap_or("").to_string();
    expect(
        addr,
        "PUT",
        &format!("/identity/v3/projects/{project}/users/{trustee_id}/roles/{reader}"),
        Some(&token),
        &Value::Null,
        204,
    )?;
    let (_, trust) = expect(
        addr,
        "POST",
        "/identity/v3/OS-TRUST/trusts",
        Some(&token),
        &json!({"trust": {"trustor_user_id": admin_id, "trustee_user_id": trustee_id,
            "project_id": project, "impersonation": true, "roles": [{"name": "reader"}]}}),
        201,
    )?;
    let trust_id = trust["trust"]["id"].as_str().unwrap_or("").to_string();
    let login = |scope: Value| {
        json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "id": trustee_id, "password": "bench-trustee-pw"}}}, "scope": scope}})
    };
    let password_body = login(json!({"project": {"id": project}}));
    let trust_body = login(json!({"OS-TRUST:trust": {"id": trust_id}}));
    let issue = |body: &Value| -> Result<f64, BenchError> {
        let t = Instant::now();
        expect(
            addr,
            "POST",
            "/identity/v3/auth/tokens?nocatalog",
            None,
            body,
            201,
        )?;
        Ok(t.elapsed().as_secs_f64() * 1000.0)
    };
    // Alternated, so drift on a shared host hits both alike.
    let (mut password, mut trusted) = (Vec::new(), Vec::new());
    let stop = Instant::now() + Duration::from_secs(u64::from(seconds) * 2);
    while Instant::now() < stop || password.len() < 10 {
        password.push(issue(&password_body)?);
        trusted.push(issue(&trust_body)?);
    }
    let (p, t) = (median(password.clone()), median(trusted.clone()));
    println!(
        "token     POST /v3/auth/tokens, password + OS-TRUST:trust scope: median {t:.2} ms, p99 {:.2} ms ({} issues)\n          \
         baseline password + project scope, same user and project: median {p:.2} ms, p99 {:.2} ms ({} issues); ratio of medians {:.2}",
        percentile(trusted.clone(), 0.99),
        trusted.len(),
        percentile(password.clone(), 0.99),
        password.len(),
        t / p
    );
    drop(server);
    Ok(())
}
