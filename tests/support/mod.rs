//! Test support: a real `yunhe serve` on an ephemeral port with a fresh
//! state directory, and a minimal HTTP/1.1 client (no extra dependencies).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const ADMIN_PASSWORD: &str = "test-admin-pw";

/// A running server; killed and its state removed on drop.
pub struct Server {
    child: Child,
    pub base: String,
    pub addr: String,
    pub state_dir: PathBuf,
    keep_state: bool,
}

impl Server {
    pub fn start() -> Server {
        let dir = std::env::temp_dir().join(format!("yunhe-test-{}", uuid_like()));
        Server::start_in(dir, false)
    }

    /// Starts a server on an existing (or new) state directory.
    pub fn start_in(state_dir: PathBuf, keep_state: bool) -> Server {
        Server::spawn(state_dir, keep_state, None, &[])
    }

    /// Starts a server with extra `yunhe serve` flags (on a new state
    /// directory when `state_dir` is None).
    pub fn start_in_with_args(state_dir: Option<PathBuf>, extra: &[&str]) -> Server {
        let dir = state_dir
            .unwrap_or_else(|| std::env::temp_dir().join(format!("yunhe-test-{}", uuid_like())));
        Server::spawn(dir, false, None, extra)
    }

    /// Starts a server with more `yunhe serve` arguments.
    pub fn start_with_args(args: &[&str]) -> Server {
        Server::start_in_with_args(None, args)
    }

    /// Starts a server logging at debug level into `log`.
    pub fn start_logging_to(log: &std::path::Path) -> Server {
        let dir = std::env::temp_dir().join(format!("yunhe-test-{}", uuid_like()));
        Server::spawn(dir, false, Some(log), &[])
    }

    fn spawn(
        state_dir: PathBuf,
        keep_state: bool,
        log: Option<&std::path::Path>,
        extra: &[&str],
    ) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_yunhe"));
        command
            // Tests never touch the host's network (root would turn the
            // dataplane on by itself).
            .env("YUNHE_DATAPLANE", "false")
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-password",
                ADMIN_PASSWORD,
                // The Rust tests speak plain HTTP; tests/tls.rs covers HTTPS.
                "--insecure-http",
            ])
            .arg("--state-dir")
            .arg(&state_dir)
            .args(extra)
            .stdout(Stdio::piped());
        match log {
            Some(path) => {
                let file = std::fs::File::create(path).expect("log file");
                command.env("YUNHE_LOG", "debug").stderr(file);
            }
            None => {
                command.env("YUNHE_LOG", "warn").stderr(Stdio::inherit());
            }
        }
        let mut child = command.spawn().expect("spawn yunhe serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut base = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let mut line = String::new();
            if reader.read_line(&mut line).expect("read stdout") == 0 {
                panic!("yunhe serve exited before it was ready");
            }
            if let Some(url) = line.trim().strip_prefix("identity:") {
                base = url.trim().trim_end_matches("/identity/v3").to_string();
                break;
            }
        }
        assert!(!base.is_empty(), "server did not print its URL");
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        });
        let addr = base.trim_start_matches("http://").to_string();
        let server = Server {
            child,
            base,
            addr,
            state_dir,
            keep_state,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.get("/healthz", None).status != 200 {
            assert!(Instant::now() < deadline, "healthz never answered 200");
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server with SIGKILL and waits for it.
    pub fn kill9(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.keep_state = true;
        self.state_dir.clone()
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut headers: Vec<(&str, String)> = Vec::new();
        if let Some(t) = token {
            headers.push(("X-Auth-Token", t.to_string()));
        }
        http(&self.addr, method, path, &headers, body)
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.request("GET", path, token, None)
    }

    /// A project-scoped token for a user of the default domain.
    pub fn token(&self, user: &str, password: &str, project: Option<&str>) -> Reply {
        let mut auth = serde_json::json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": password}}}}});
        if let Some(project) = project {
            auth["auth"]["scope"] =
                serde_json::json!({"project": {"name": project, "domain": {"id": "default"}}});
        }
        self.request("POST", "/identity/v3/auth/tokens", None, Some(&auth))
    }

    pub fn admin_token(&self) -> String {
        let reply = self.token("admin", ADMIN_PASSWORD, Some("admin"));
        assert_eq!(reply.status, 201, "admin token: {}", reply.text);
        reply
            .header("x-subject-token")
            .expect("X-Subject-Token")
            .to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_state {
            let _ = std::fs::remove_dir_all(&self.state_dir);
        }
    }
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

/// An HTTP response.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<&Value>,
) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if body.is_some() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", payload.len()));
    request.push_str(&payload);
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("receive");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Reply {
        status,
        headers,
        text: body,
    }
}

fn dechunk(mut data: &str) -> String {
    let mut out = String::new();
    while let Some((size_line, rest)) = data.split_once("\r\n") {
        let size = usize::from_str_radix(size_line.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        data = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// An HTTP response whose body is kept as bytes (image data).
pub struct RawReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request with a raw body (sent with `Content-Length`) and a
/// body-preserving reply; for image uploads, downloads and JSON-patch.
pub fn http_bytes(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> RawReply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(request.as_bytes()).expect("send");
    stream.write_all(body).expect("send body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("receive");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = raw.get(split + 4..).unwrap_or_default().to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    RawReply {
        status,
        headers,
        body,
    }
}

/// Whether /dev/kvm can be opened (says SKIPPED when not).
pub fn kvm_usable() -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        eprintln!("SKIPPED: /dev/kvm is missing or not accessible");
    }
    ok
}

/// A state directory for servers that boot; on drop every `yunhe vmm` below it is killed (by
/// pid, found through /proc/*/cmdline) and the directory removed.
pub struct VmmStateDir(pub PathBuf);

impl VmmStateDir {
    /// `yunhe-<tag>-<pid>-<name>` under the temporary directory, made empty.
    pub fn new(tag: &str, name: &str) -> VmmStateDir {
        let dir = std::env::temp_dir().join(format!("yunhe-{tag}-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the state directory");
        VmmStateDir(dir)
    }

    pub fn vmm_pids(&self) -> Vec<i32> {
        let prefix = format!("{}/", self.0.display());
        let mut pids = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return pids;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.len() >= 4
                && args[1] == "vmm"
                && args[2] == "--spec"
                && args[3].starts_with(&prefix)
            {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for VmmStateDir {
    fn drop(&mut self) {
        for pid in self.vmm_pids() {
            // SAFETY: kill(2) with a pid read from /proc and a valid signal number.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(300));
        if let Ok(real) = std::fs::canonicalize(&self.0) {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(real.to_string_lossy().as_bytes());
            let _ =
                std::fs::remove_dir_all(Path::new("/run/yunhe").join(hex::encode(&digest[..6])));
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A member of a new project named `name`: (project id, token).
pub fn member_of_new_project(server: &Server, admin: &str, name: &str) -> (String, String) {
    let project = server.request(
        "POST",
        "/identity/v3/projects",
        Some(admin),
        Some(&json!({"project": {"name": name}})),
    );
    assert_eq!(project.status, 201, "{}", project.text);
    let project_id = project.json()["project"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let password = format!("pw-{name}-123");
    let user = server.request(
        "POST",
        "/identity/v3/users",
        Some(admin),
        Some(&json!({"user": {"name": name, "password": password}})),
    );
    assert_eq!(user.status, 201, "{}", user.text);
    let user_id = user.json()["user"]["id"].as_str().expect("id").to_string();
    let roles = server
        .get("/identity/v3/roles?name=member", Some(admin))
        .json();
    let role = roles["roles"][0]["id"].as_str().expect("member role");
    let grant = format!("/identity/v3/projects/{project_id}/users/{user_id}/roles/{role}");
    assert_eq!(server.request("PUT", &grant, Some(admin), None).status, 204);
    let reply = server.token(name, &password, Some(name));
    assert_eq!(reply.status, 201, "{}", reply.text);
    let token = reply.header("x-subject-token").expect("token").to_string();
    (project_id, token)
}

/// Creates image `meta` and uploads `data` as its file: the image id.
pub fn upload_image(server: &Server, token: &str, meta: Value, data: &[u8]) -> String {
    let created = server.request("POST", "/image/v2/images", Some(token), Some(&meta));
    assert_eq!(created.status, 201, "image create: {}", created.text);
    let id = created.json()["id"].as_str().expect("image id").to_string();
    let put = http_bytes(
        &server.addr,
        "PUT",
        &format!("/image/v2/images/{id}/file"),
        &[
            ("X-Auth-Token", token.to_string()),
            ("Content-Type", "application/octet-stream".into()),
        ],
        data,
    );
    assert_eq!(put.status, 204, "{}", String::from_utf8_lossy(&put.body));
    id
}

/// The echo guest as a public aki image and a 1 MiB raw disk booting it.
pub fn echo_image(server: &Server, token: &str, scratch: &Path) -> String {
    let elf = scratch.join("echo.elf");
    let status = Command::new(env!("CARGO_BIN_EXE_yunhe"))
        .args(["vm", "guest", "echo", "-o"])
        .arg(&elf)
        .status()
        .expect("run yunhe vm guest echo");
    assert!(status.success());
    let kernel = std::fs::read(&elf).expect("read echo.elf");
    let kernel_id = upload_image(
        server,
        token,
        json!({"name": "echo-kernel", "disk_format": "aki", "container_format": "aki",
               "visibility": "public"}),
        &kernel,
    );
    upload_image(
        server,
        token,
        json!({"name": "echo-disk", "disk_format": "raw", "container_format": "bare",
               "kernel_id": kernel_id, "visibility": "public"}),
        &vec![0u8; 1 << 20],
    )
}
