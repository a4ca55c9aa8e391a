//! The dashboard's live-update stream (`GET /dashboard/events`, src/web.rs
//! over src/events.rs) against the real `yunhe serve` on an ephemeral port:
//! authentication, who sees which project's events, resuming with
//! `Last-Event-ID`, and the per-user cap on open streams.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Server, http, http_bytes, member_of_new_project};

/// An open event stream read as raw text (the frames' bytes, between the
/// chunk-size lines of the chunked encoding).
struct Stream {
    sock: TcpStream,
    status: u16,
    text: String,
}

impl Stream {
    fn open(server: &Server, token: Option<&str>, extra: &[(&str, &str)]) -> Stream {
        let mut sock = TcpStream::connect(&server.addr).expect("connect");
        let mut request = format!(
            "GET /dashboard/events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n",
            server.addr
        );
        if let Some(t) = token {
            request.push_str(&format!("X-Auth-Token: {t}\r\n"));
        }
        for (k, v) in extra {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        sock.write_all(request.as_bytes()).expect("send");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let mut stream = Stream {
            sock,
            status: 0,
            text: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stream.text.contains("\r\n\r\n") {
            assert!(Instant::now() < deadline, "no response head");
            stream.pump();
        }
        stream.status = stream
            .text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status line");
        stream
    }

    /// Reads what has arrived (waits at most the socket's 100 ms).
    fn pump(&mut self) -> bool {
        let mut buf = [0u8; 8192];
        match self.sock.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                self.text.push_str(&String::from_utf8_lossy(&buf[..n]));
                true
            }
            Err(_) => true,
        }
    }

    /// Reads until `needle` arrived; false after `limit`.
    fn wait_for(&mut self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.text.contains(needle) {
            if Instant::now() > deadline || !self.pump() {
                return self.text.contains(needle);
            }
        }
        true
    }

    /// The `change` events received so far.
    fn changes(&self) -> Vec<Value> {
        self.text
            .split("event: change\ndata: ")
            .skip(1)
            .filter_map(|rest| rest.lines().next())
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

fn nova(server: &Server, token: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
    let reply = http(
        &server.addr,
        method,
        &format!("/compute/v2.1{path}"),
        &[
            ("X-Auth-Token", token.to_string()),
            ("OpenStack-API-Version", "compute 2.79".to_string()),
        ],
        body,
    );
    assert!(reply.status < 300, "{method} {path}: {}", reply.text);
    if reply.text.is_empty() {
        Value::Null
    } else {
        reply.json()
    }
}

/// A server of the member's project that no host can fit: it goes to
/// ERROR at once, without a VMM; then deleted. Returns its id.
fn server_lifecycle(server: &Server, member: &str) -> String {
    let image = server.request(
        "POST",
        "/image/v2/images",
        Some(member),
        Some(&json!({"name": "tiny", "disk_format": "raw", "container_format": "bare"})),
    );
    assert_eq!(image.status, 201, "{}", image.text);
    let image_id = image.json()["id"].as_str().expect("id").to_string();
    let upload = http_bytes(
        &server.addr,
        "PUT",
        &format!("/image/v2/images/{image_id}/file"),
        &[
            ("X-Auth-Token", member.to_string()),
            ("Content-Type", "application/octet-stream".into()),
        ],
        &[0u8; 4096],
    );
    assert_eq!(upload.status, 204);
    let created = nova(
        server,
        member,
        "POST",
        "/servers",
        Some(&json!({"server": {"name": "ev", "imageRef": image_id,
            "flavorRef": "too-big", "networks": "none"}})),
    );
    let id = created["server"]["id"]
        .as_str()
        .expect("server id")
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = nova(server, member, "GET", &format!("/servers/{id}"), None);
        if shown["server"]["status"] == "ERROR" {
            break;
        }
        assert!(Instant::now() < deadline, "never ERROR: {shown}");
        std::thread::sleep(Duration::from_millis(50));
    }
    nova(server, member, "DELETE", &format!("/servers/{id}"), None);
    id
}

fn make_big_flavor(server: &Server, admin: &str) {
    let hypervisors = nova(server, admin, "GET", "/os-hypervisors/detail", None);
    let host_ram = hypervisors["hypervisors"][0]["memory_mb"]
        .as_i64()
        .expect("memory_mb");
    nova(
        server,
        admin,
        "POST",
        "/flavors",
        Some(&json!({"flavor": {"name": "too-big", "id": "too-big",
            "ram": host_ram + 1, "vcpus": 1, "disk": 1}})),
    );
}

#[test]
fn stream_is_authenticated_filtered_resumable_and_bounded() {
    let server = Server::start();
    let admin = server.admin_token();

    // No token, or a bad one: 401, as every API.
    assert_eq!(Stream::open(&server, None, &[]).status, 401);
    assert_eq!(Stream::open(&server, Some("not-a-token"), &[]).status, 401);
    // A resume point that is no number: 400.
    let bad = Stream::open(&server, Some(&admin), &[("Last-Event-ID", "x")]);
    assert_eq!(bad.status, 400);

    make_big_flavor(&server, &admin);
    let (_alpha, alpha) = member_of_new_project(&server, &admin, "alpha");
    let (_beta, beta) = member_of_new_project(&server, &admin, "beta");

    let mut a = Stream::open(&server, Some(&alpha), &[]);
    let mut b = Stream::open(&server, Some(&beta), &[]);
    let mut all = Stream::open(&server, Some(&admin), &[]);
    for s in [&mut a, &mut b, &mut all] {
        assert_eq!(s.status, 200, "{}", s.text);
        assert!(s.text.to_ascii_lowercase().contains("text/event-stream"));
        assert!(s.wait_for("event: hello", Duration::from_secs(5)));
    }

    let started = Instant::now();
    let id = server_lifecycle(&server, &alpha);
    // The member sees its server change (ERROR, deleting, deleted) ...
    let needle = format!("\"kind\":\"server\",\"id\":\"{id}\"");
    assert!(
        a.wait_for(&needle, Duration::from_secs(5)),
        "alpha's stream: {}",
        a.text
    );
    let gone = Instant::now();
    while a.changes().iter().filter(|e| e["id"] == id).count() < 2 {
        assert!(gone.elapsed() < Duration::from_secs(10), "{}", a.text);
        a.pump();
    }
    eprintln!(
        "server events reached the stream {:?} after the create",
        started.elapsed()
    );
    // ... the admin (all projects) too ...
    assert!(
        all.wait_for(&needle, Duration::from_secs(5)),
        "{}",
        all.text
    );
    // ... the other project's member does not (only id-less events, such
    // as the image writes, reach everyone).
    b.wait_for("never", Duration::from_millis(500));
    assert!(!b.text.contains(&id), "beta saw alpha's server: {}", b.text);
    assert!(
        b.changes().iter().all(|e| e["project_id"].is_null()),
        "{}",
        b.text
    );

    // Resume: from just before the first server event, the same events
    // again, each with its `id:` line.
    let first = a
        .changes()
        .into_iter()
        .find(|e| e["id"] == id)
        .expect("a server event");
    let seq = first["seq"].as_u64().expect("seq");
    assert!(a.text.contains(&format!("id: {seq}\n")), "{}", a.text);
    drop(a);
    let mut again = Stream::open(
        &server,
        Some(&alpha),
        &[("Last-Event-ID", &(seq - 1).to_string())],
    );
    assert_eq!(again.status, 200);
    assert!(
        again.wait_for(&format!("id: {seq}\nevent: change"), Duration::from_secs(5)),
        "{}",
        again.text
    );
    assert!(!again.text.contains("event: reset"), "{}", again.text);
    // The same through `?since=` is covered by the page; a number the bus
    // never had (another run's) asks the page to refetch everything.
    let mut lost = Stream::open(&server, Some(&alpha), &[("Last-Event-ID", "1")]);
    assert!(
        lost.wait_for("event: reset", Duration::from_secs(5)),
        "{}",
        lost.text
    );

    // The cap: alpha holds 2 streams (again, lost); 2 more are fine, the
    // fifth is 429 until one closes.
    let c = Stream::open(&server, Some(&alpha), &[]);
    let d = Stream::open(&server, Some(&alpha), &[]);
    assert_eq!((c.status, d.status), (200, 200));
    let over = Stream::open(&server, Some(&alpha), &[]);
    assert_eq!(over.status, 429, "{}", over.text);
    assert!(over.text.to_ascii_lowercase().contains("retry-after"));
    // Another user is not affected.
    assert_eq!(Stream::open(&server, Some(&beta), &[]).status, 200);
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = Stream::open(&server, Some(&alpha), &[]);
        if s.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was not given back");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop((again, lost, d, b, all));
}

#[test]
fn stream_ends_when_the_token_expires() {
    let server = Server::start_with_args(&["--token-ttl", "3"]);
    let admin = server.admin_token();
    let mut s = Stream::open(&server, Some(&admin), &[]);
    assert_eq!(s.status, 200, "{}", s.text);
    assert!(s.wait_for("event: hello", Duration::from_secs(5)));
    let t0 = Instant::now();
    assert!(
        s.wait_for("event: expired", Duration::from_secs(10)),
        "{}",
        s.text
    );
    // ... and the server ends the response (its last, empty chunk; the
    // connection itself may stay for the next request).
    assert!(
        s.wait_for("\r\n0\r\n\r\n", Duration::from_secs(5)),
        "the stream stayed open: {:?}",
        s.text
    );
    eprintln!("stream ended {:?} after it opened", t0.elapsed());
    // The expired token opens no new stream.
    assert_eq!(Stream::open(&server, Some(&admin), &[]).status, 401);
}
