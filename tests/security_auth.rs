//! Security regressions of issue 9 in authentication (findings 1, 5 and the
//! token part of 10), each against a real `yunhe serve`.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{ADMIN_PASSWORD, Reply, Server};

/// The measuring tests (the flood, the timing comparison) run alone: the
/// other tests of this file take it shared, those two exclusively, so their
/// numbers are not another test's load.
static MEASURING: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    MEASURING.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    MEASURING.write().unwrap_or_else(|e| e.into_inner())
}

fn subject_token(reply: &Reply) -> String {
    reply
        .header("x-subject-token")
        .unwrap_or_else(|| panic!("no token ({}): {}", reply.status, reply.text))
        .to_string()
}

fn password_auth(user: &str, password: &str) -> Value {
    json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": password}}}}})
}

fn login(server: &Server, user: &str, password: &str) -> Reply {
    server.request(
        "POST",
        "/identity/v3/auth/tokens",
        None,
        Some(&password_auth(user, password)),
    )
}

/// Posts `body` to `path` over one keep-alive connection (reconnecting when
/// the server closes it) until `stop`; returns the statuses, 0 for a
/// transport error.
fn flood(addr: &str, path: &str, body: &Value, stop: Instant) -> Vec<u16> {
    use std::io::{BufRead, BufReader, Read, Write};
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut statuses = Vec::new();
    'connect: while Instant::now() < stop {
        let Ok(stream) = std::net::TcpStream::connect(addr) else {
            statuses.push(0);
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        let Ok(mut writer) = stream.try_clone() else {
            continue;
        };
        let mut reader = BufReader::new(stream);
        while Instant::now() < stop {
            if writer.write_all(request.as_bytes()).is_err() {
                continue 'connect;
            }
            let (mut status, mut length) = (0u16, 0usize);
            let mut line = String::new();
            loop {
                line.clear();
                if !matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                    continue 'connect;
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
            statuses.push(status);
        }
    }
    statuses
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values.get(index).copied().unwrap_or(f64::NAN)
}

/// The admin's token, user id and project id.
fn admin(server: &Server) -> (String, String, String) {
    let reply = server.token("admin", ADMIN_PASSWORD, Some("admin"));
    assert_eq!(reply.status, 201, "{}", reply.text);
    let body = reply.json();
    (
        subject_token(&reply),
        body["token"]["user"]["id"].as_str().expect("user").into(),
        body["token"]["project"]["id"]
            .as_str()
            .expect("project")
            .into(),
    )
}

fn role_id(server: &Server, token: &str, name: &str) -> String {
    let reply = server.get(&format!("/identity/v3/roles?name={name}"), Some(token));
    reply.json()["roles"][0]["id"]
        .as_str()
        .expect("role")
        .to_string()
}

/// Creates a user with a password and, if a project is given, the member role on it.
fn create_user(server: &Server, admin: &str, name: &str, project: Option<&str>) -> String {
    let reply = server.request(
        "POST",
        "/identity/v3/users",
        Some(admin),
        Some(&json!({"user": {"name": name, "password": format!("pw-{name}"), "domain_id": "default"}})),
    );
    assert_eq!(reply.status, 201, "{}", reply.text);
    let id = reply.json()["user"]["id"].as_str().expect("id").to_string();
    if let Some(project) = project {
        let member = role_id(server, admin, "member");
        let grant = format!("/identity/v3/projects/{project}/users/{id}/roles/{member}");
        assert_eq!(server.request("PUT", &grant, Some(admin), None).status, 204);
    }
    id
}

/// An application credential of the token's user; returns (id, secret).
fn create_app_cred(server: &Server, token: &str, user: &str, body: Value) -> (String, String) {
    let reply = server.request(
        "POST",
        &format!("/identity/v3/users/{user}/application_credentials"),
        Some(token),
        Some(&json!({ "application_credential": body })),
    );
    assert_eq!(reply.status, 201, "{}", reply.text);
    let cred = &reply.json()["application_credential"];
    (
        cred["id"].as_str().expect("id").into(),
        cred["secret"].as_str().expect("secret").into(),
    )
}

fn app_cred_login(server: &Server, id: &str, secret: &str) -> Reply {
    server.request(
        "POST",
        "/identity/v3/auth/tokens",
        None,
        Some(
            &json!({"auth": {"identity": {"methods": ["application_credential"],
            "application_credential": {"id": id, "secret": secret}}}}),
        ),
    )
}

/// Finding 1: a wrong-password flood (here with lockout and rate limits off,
/// so only the bounded Argon2 pool stands in the way) neither exhausts
/// memory nor stalls unrelated writes.
#[test]
fn wrong_password_flood_keeps_memory_bounded_and_writes_fast() {
    let _measuring = exclusive();
    let server = Server::start_with_args(&[
        "--lockout-failure-attempts",
        "0",
        "--auth-user-burst",
        "0",
        "--auth-source-burst",
        "0",
    ]);
    let (token, _, project) = admin(&server);
    let write = |i: usize| {
        let t = Instant::now();
        let reply = server.request(
            "PUT",
            &format!("/identity/v3/projects/{project}/tags/t{}", i % 50),
            Some(&token),
            None,
        );
        assert!(
            reply.status < 300,
            "tag write: {} {}",
            reply.status,
            reply.text
        );
        t.elapsed().as_secs_f64() * 1000.0
    };
    let baseline: Vec<f64> = (0..30).map(write).collect();
    let rss_before = rss_kib(server.pid());

    let stop = Instant::now() + Duration::from_secs(3);
    let addr = server.addr.clone();
    let flooders: Vec<_> = (0..50)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                // The flooding clients run at the lowest priority, so they
                // do not starve this process's measuring thread of the two
                // cores: the test measures serve, not the client.
                // SAFETY: setpriority on this thread's own id; no memory.
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
                }
                let body = password_auth("admin", "wrong-password");
                flood(&addr, "/identity/v3/auth/tokens", &body, stop)
            })
        })
        .collect();
    let mut under_flood = Vec::new();
    let mut peak_rss = rss_before;
    let mut i = 100;
    while Instant::now() < stop {
        under_flood.push(write(i));
        peak_rss = peak_rss.max(rss_kib(server.pid()));
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut statuses = Vec::new();
    for flooder in flooders {
        statuses.extend(flooder.join().expect("flooder"));
    }
    peak_rss = peak_rss.max(rss_kib(server.pid()));
    let p99_base = percentile(baseline, 0.99);
    let p99_flood = percentile(under_flood.clone(), 0.99);
    let refused = statuses.iter().filter(|s| **s == 429).count();
    eprintln!(
        "flood: {} attempts ({} answered 429), RSS {} -> peak {} KiB, tag write p99 {:.1} ms (baseline {:.1} ms, {} writes)",
        statuses.len(),
        refused,
        rss_before,
        peak_rss,
        p99_flood,
        p99_base,
        under_flood.len()
    );
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "only 401 and 429 under the flood: {:?}",
        statuses
            .iter()
            .filter(|s| **s != 401 && **s != 429)
            .collect::<Vec<_>>()
    );
    assert!(refused > 0, "the queue overflowed into 429s");
    assert!(peak_rss < 100 * 1024, "peak RSS {peak_rss} KiB");
    // The goal is a p99 under 50 ms (`yunhe bench login-flood` prints it);
    // before the fix every write waited for the queued hashes (4.9 s). The
    // flooding threads run at the lowest priority, so what is measured is
    // serve; here it measures 10-17 ms. The bound leaves room for a busy CI.
    let median_flood = percentile(under_flood.clone(), 0.5);
    assert!(
        median_flood < 50.0,
        "write median under flood {median_flood:.1} ms"
    );
    assert!(p99_flood < 100.0, "write p99 under flood {p99_flood:.1} ms");
    // The right password still works afterwards.
    assert_eq!(server.token("admin", ADMIN_PASSWORD, None).status, 201);
}

/// Finding 1: whether a name exists does not show in the answer time.
#[test]
fn unknown_and_known_user_names_answer_in_similar_time() {
    let _measuring = exclusive();
    let server = Server::start_with_args(&["--lockout-failure-attempts", "0"]);
    let time = |user: &str| {
        let t = Instant::now();
        let reply = login(&server, user, "not-the-password");
        assert_eq!(reply.status, 401, "{}", reply.text);
        t.elapsed().as_secs_f64() * 1000.0
    };
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..8 {
        known.push(time("admin"));
        unknown.push(time(&format!("nobody-{i}")));
    }
    let (known, unknown) = (percentile(known, 0.5), percentile(unknown, 0.5));
    eprintln!("median wrong-password answer: known {known:.1} ms, unknown {unknown:.1} ms");
    let ratio = known / unknown;
    assert!(
        (0.5..2.0).contains(&ratio),
        "known {known:.1} ms vs unknown {unknown:.1} ms"
    );
}

/// Finding 1: Keystone's lockout, its expiry, and the admin's unlock.
#[test]
fn lockout_after_failures_lifts_after_the_duration_or_an_admin_update() {
    let _measuring = shared();
    let server =
        Server::start_with_args(&["--lockout-failure-attempts", "3", "--lockout-duration", "2"]);
    let (admin_token, _, _) = admin(&server);
    let user = create_user(&server, &admin_token, "locky", None);
    let lock = || {
        for _ in 0..3 {
            assert_eq!(login(&server, "locky", "wrong").status, 401);
        }
        let locked = login(&server, "locky", "pw-locky");
        assert_eq!(locked.status, 401, "locked even with the right password");
        assert_eq!(
            locked.json()["error"]["message"],
            format!("The account is locked for user: {user}.")
        );
    };
    lock();
    std::thread::sleep(Duration::from_millis(2300));
    assert_eq!(
        login(&server, "locky", "pw-locky").status,
        201,
        "lock expired"
    );

    lock();
    let update = server.request(
        "PATCH",
        &format!("/identity/v3/users/{user}"),
        Some(&admin_token),
        Some(&json!({"user": {"enabled": true}})),
    );
    assert_eq!(update.status, 200, "{}", update.text);
    assert_eq!(
        login(&server, "locky", "pw-locky").status,
        201,
        "admin unlocked"
    );
    // A success resets the count: two more failures do not lock.
    for _ in 0..2 {
        assert_eq!(login(&server, "locky", "wrong").status, 401);
    }
    assert_eq!(login(&server, "locky", "pw-locky").status, 201);
}

/// Finding 1: per-user and per-source rate limits answer 429 with Retry-After.
#[test]
fn failed_logins_are_rate_limited_per_user_and_per_source() {
    let _measuring = shared();
    let server = Server::start_with_args(&[
        "--lockout-failure-attempts",
        "0",
        "--auth-user-burst",
        "3",
        "--auth-user-rate",
        "0.2",
        "--auth-source-burst",
        "8",
        "--auth-source-rate",
        "0.2",
    ]);
    for _ in 0..3 {
        assert_eq!(login(&server, "admin", "wrong").status, 401);
    }
    let limited = login(&server, "admin", "wrong");
    assert_eq!(limited.status, 429, "{}", limited.text);
    assert_eq!(limited.json()["error"]["code"], 429);
    let wait: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=10).contains(&wait), "Retry-After {wait}");
    // Even the right password waits: no guess is checked while limited.
    assert_eq!(login(&server, "admin", ADMIN_PASSWORD).status, 429);
    // Other names from the same address use up the source's bucket.
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(login(&server, &format!("other-{i}"), "wrong").status);
    }
    assert!(statuses.contains(&429), "per-source limit: {statuses:?}");
}

/// Finding 1: the tokenless password change endpoint is bounded and counts
/// towards the lockout like a login.
#[test]
fn password_change_is_bounded_and_counts_towards_lockout() {
    let _measuring = shared();
    let server = Server::start_with_args(&[
        "--lockout-failure-attempts",
        "3",
        "--auth-hash-workers",
        "1",
        "--auth-hash-queue",
        "2",
        "--auth-source-burst",
        "0",
        "--auth-user-burst",
        "0",
    ]);
    let (admin_token, _, _) = admin(&server);
    let user = create_user(&server, &admin_token, "changer", None);
    let change = |original: &str, new: &str| {
        server.request(
            "POST",
            &format!("/identity/v3/users/{user}/password"),
            None,
            Some(&json!({"user": {"original_password": original, "password": new}})),
        )
    };
    // A concurrent burst is refused beyond the queue instead of piling up.
    let addr = server.addr.clone();
    let path = format!("/identity/v3/users/{user}/password");
    let burst: Vec<_> = (0..24)
        .map(|_| {
            let (addr, path) = (addr.clone(), path.clone());
            std::thread::spawn(move || {
                let body = json!({"user": {"original_password": "x", "password": "y"}});
                support::http(&addr, "POST", &path, &[], Some(&body)).status
            })
        })
        .collect();
    let statuses: Vec<u16> = burst.into_iter().map(|t| t.join().expect("t")).collect();
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert!(statuses.contains(&429), "{statuses:?}");
    // How many of the burst were checked (401) depends on how the threads arrived; top the
    // failures up one by one to the lockout threshold (3), so what follows is deterministic.
    let checked = statuses.iter().filter(|s| **s == 401).count();
    for _ in checked..3 {
        assert_eq!(change("wrong", "y").status, 401, "burst was {statuses:?}");
    }
    // Those failures locked the user: the right original password is refused.
    let locked = change("pw-changer", "new-password");
    assert_eq!(
        locked.status, 401,
        "burst was {statuses:?}: {}",
        locked.text
    );
    assert!(
        locked.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("locked"),
        "{}",
        locked.text
    );
    // The admin unlocks; the change then works and the new password logs in.
    let update = server.request(
        "PATCH",
        &format!("/identity/v3/users/{user}"),
        Some(&admin_token),
        Some(&json!({"user": {"enabled": true}})),
    );
    assert_eq!(update.status, 200);
    assert_eq!(change("pw-changer", "new-password").status, 204);
    assert_eq!(login(&server, "changer", "new-password").status, 201);
}

/// Finding 5: access rules bind every service.
#[test]
fn app_cred_access_rules_are_enforced_on_identity_compute_and_image() {
    let _measuring = shared();
    let server = Server::start();
    let (token, user, _) = admin(&server);
    let (other, _) = create_app_cred(&server, &token, &user, json!({"name": "other"}));
    let (image_id, image_secret) = create_app_cred(
        &server,
        &token,
        &user,
        json!({"name": "images-only", "access_rules": [
            {"service": "image", "method": "GET", "path": "/v2/images"}]}),
    );
    let reply = app_cred_login(&server, &image_id, &image_secret);
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(
        reply.json()["token"]["application_credential"]["access_rules"][0]["path"],
        "/v2/images"
    );
    let limited = subject_token(&reply);
    let status = |method: &str, path: &str, body: Option<&Value>| {
        server.request(method, path, Some(&limited), body).status
    };
    assert_eq!(status("GET", "/image/v2/images", None), 200);
    assert_eq!(
        status("POST", "/image/v2/images", Some(&json!({"name": "x"}))),
        401
    );
    assert_eq!(status("GET", "/image/v2/images/abc", None), 401);
    assert_eq!(
        status(
            "POST",
            "/compute/v2.1/os-keypairs",
            Some(&json!({"keypair": {"name": "k"}}))
        ),
        401
    );
    assert_eq!(status("GET", "/compute/v2.1/flavors", None), 401);
    assert_eq!(status("GET", "/identity/v3/users", None), 401);
    assert_eq!(
        status(
            "DELETE",
            &format!("/identity/v3/users/{user}/application_credentials/{other}"),
            None
        ),
        401
    );
    // Validating a token is always allowed.
    let validate = support::http(
        &server.addr,
        "GET",
        "/identity/v3/auth/tokens",
        &[
            ("X-Auth-Token", limited.clone()),
            ("X-Subject-Token", limited.clone()),
        ],
        None,
    );
    assert_eq!(validate.status, 200, "{}", validate.text);

    let (compute_id, compute_secret) = create_app_cred(
        &server,
        &token,
        &user,
        json!({"name": "flavors-and-projects", "access_rules": [
            {"service": "compute", "method": "GET", "path": "/v2.1/flavors/**"},
            {"service": "compute", "method": "GET", "path": "/v2.1/flavors"},
            {"service": "identity", "method": "GET", "path": "/v3/projects"}]}),
    );
    let reply = app_cred_login(&server, &compute_id, &compute_secret);
    let scoped = subject_token(&reply);
    let get = |path: &str| server.get(path, Some(&scoped)).status;
    assert_eq!(get("/compute/v2.1/flavors"), 200);
    assert_eq!(get("/compute/v2.1/flavors/detail"), 200);
    assert_eq!(get("/compute/v2.1/servers"), 401);
    assert_eq!(get("/identity/v3/projects"), 200);
    assert_eq!(get("/identity/v3/domains"), 401);
    assert_eq!(get("/image/v2/images"), 401);
}

/// Finding 5: a restricted app credential cannot make or delete app
/// credentials, and no app credential token reaches EC2 or other credentials.
#[test]
fn restricted_app_creds_cannot_manage_credentials() {
    let _measuring = shared();
    let server = Server::start();
    let (token, user, project) = admin(&server);
    let (victim, _) = create_app_cred(&server, &token, &user, json!({"name": "victim"}));
    let (id, secret) = create_app_cred(&server, &token, &user, json!({"name": "restricted"}));
    let restricted = subject_token(&app_cred_login(&server, &id, &secret));
    let creds = format!("/identity/v3/users/{user}/application_credentials");
    let status = |t: &str, method: &str, path: &str, body: Option<&Value>| {
        server.request(method, path, Some(t), body).status
    };
    assert_eq!(
        status(
            &restricted,
            "POST",
            &creds,
            Some(&json!({"application_credential": {"name": "child"}}))
        ),
        403
    );
    assert_eq!(
        status(&restricted, "DELETE", &format!("{creds}/{victim}"), None),
        403
    );
    let ec2 = format!("/identity/v3/users/{user}/credentials/OS-EC2");
    assert_eq!(
        status(
            &restricted,
            "POST",
            &ec2,
            Some(&json!({"tenant_id": project}))
        ),
        403
    );
    let blob = json!({"access": "a", "secret": "s"}).to_string();
    assert_eq!(
        status(
            &restricted,
            "POST",
            "/identity/v3/credentials",
            Some(
                &json!({"credential": {"type": "ec2", "user_id": user, "project_id": project, "blob": blob}})
            )
        ),
        403
    );
    // An unrestricted one may manage app credentials, but still not EC2 keys.
    let (id, secret) = create_app_cred(
        &server,
        &token,
        &user,
        json!({"name": "unrestricted", "unrestricted": true}),
    );
    let unrestricted = subject_token(&app_cred_login(&server, &id, &secret));
    assert_eq!(
        status(
            &unrestricted,
            "POST",
            &creds,
            Some(&json!({"application_credential": {"name": "child"}}))
        ),
        201
    );
    assert_eq!(
        status(
            &unrestricted,
            "POST",
            &ec2,
            Some(&json!({"tenant_id": project}))
        ),
        403
    );
    // The user's own password token still can.
    assert_eq!(
        status(&token, "POST", &ec2, Some(&json!({"tenant_id": project}))),
        201
    );
}

/// Finding 5: an app credential dies with a role it was made with.
#[test]
fn app_creds_die_with_their_role() {
    let _measuring = shared();
    let server = Server::start();
    let (admin_token, _, project) = admin(&server);
    let user = create_user(&server, &admin_token, "delegator", Some(&project));
    let reply = server.token("delegator", "pw-delegator", Some("admin"));
    assert_eq!(reply.status, 201, "{}", reply.text);
    let user_token = subject_token(&reply);
    let (id, secret) = create_app_cred(&server, &user_token, &user, json!({"name": "ci"}));
    let cred_token = subject_token(&app_cred_login(&server, &id, &secret));
    assert_eq!(
        server
            .get("/compute/v2.1/flavors", Some(&cred_token))
            .status,
        200
    );

    let member = role_id(&server, &admin_token, "member");
    let grant = format!("/identity/v3/projects/{project}/users/{user}/roles/{member}");
    assert_eq!(
        server
            .request("DELETE", &grant, Some(&admin_token), None)
            .status,
        204
    );
    assert_eq!(
        server
            .get("/compute/v2.1/flavors", Some(&cred_token))
            .status,
        401
    );
    assert_eq!(app_cred_login(&server, &id, &secret).status, 401);
    // Deleted, as Keystone does: granting the role again does not revive it.
    assert_eq!(
        server
            .request("PUT", &grant, Some(&admin_token), None)
            .status,
        204
    );
    assert_eq!(app_cred_login(&server, &id, &secret).status, 401);
    let listed = server.get(
        &format!("/identity/v3/users/{user}/application_credentials"),
        Some(&admin_token),
    );
    assert_eq!(listed.json()["application_credentials"], json!([]));

    // Deleting a role the credential carries kills it too.
    let role = server.request(
        "POST",
        "/identity/v3/roles",
        Some(&admin_token),
        Some(&json!({"role": {"name": "deployer"}})),
    );
    let role = role.json()["role"]["id"]
        .as_str()
        .expect("role")
        .to_string();
    let grant = format!("/identity/v3/projects/{project}/users/{user}/roles/{role}");
    assert_eq!(
        server
            .request("PUT", &grant, Some(&admin_token), None)
            .status,
        204
    );
    let user_token = subject_token(&server.token("delegator", "pw-delegator", Some("admin")));
    let (id, secret) = create_app_cred(&server, &user_token, &user, json!({"name": "ci2"}));
    assert_eq!(app_cred_login(&server, &id, &secret).status, 201);
    assert_eq!(
        server
            .request(
                "DELETE",
                &format!("/identity/v3/roles/{role}"),
                Some(&admin_token),
                None
            )
            .status,
        204
    );
    assert_eq!(app_cred_login(&server, &id, &secret).status, 401);
}

/// Finding 10: expired token rows are purged while the server runs.
#[test]
fn expired_tokens_are_purged_while_running() {
    let _measuring = shared();
    let server = Server::start_with_args(&["--token-ttl", "1", "--token-purge-interval", "1"]);
    for _ in 0..5 {
        assert_eq!(server.token("admin", ADMIN_PASSWORD, None).status, 201);
    }
    let count = || -> i64 {
        let db = rusqlite::Connection::open_with_flags(
            server.state_dir.join("yunhe.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open the state file");
        db.query_row("SELECT count(*) FROM tokens", [], |r| r.get(0))
            .expect("count")
    };
    assert!(count() >= 1, "tokens are stored");
    let deadline = Instant::now() + Duration::from_secs(6);
    while count() > 0 {
        assert!(
            Instant::now() < deadline,
            "expired tokens still stored: {}",
            count()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
