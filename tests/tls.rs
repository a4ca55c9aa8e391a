//! HTTPS by default: the local CA, the client files that trust it, the
//! operator's own certificate, and no plain HTTP on a TLS port. Clients are
//! the real `curl`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Serve {
    child: Child,
    url: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(state_dir: &Path, extra: &[&str]) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_yunhe"))
        .env("YUNHE_DATAPLANE", "false")
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-password",
            "tls-test-pw",
        ])
        .arg("--state-dir")
        .arg(state_dir)
        .args(extra)
        .env("YUNHE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn yunhe serve");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut url = String::new();
    while Instant::now() < deadline {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("read") == 0 {
            panic!("serve exited before it was ready");
        }
        if let Some(u) = line.trim().strip_prefix("identity:") {
            url = u.trim().trim_end_matches("/identity/v3").to_string();
            break;
        }
    }
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    assert!(!url.is_empty(), "no URL printed");
    Serve { child, url }
}

/// `curl` exit status and HTTP code for a URL.
fn curl(url: &str, ca: Option<&Path>) -> (i32, String) {
    let mut command = Command::new("curl");
    command.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
    ]);
    // An empty bundle from the environment must not help or hurt.
    command
        .env_remove("CURL_CA_BUNDLE")
        .env_remove("SSL_CERT_FILE");
    if let Some(ca) = ca {
        command.arg("--cacert").arg(ca);
    }
    let out = command.arg(url).output().expect("run curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "yunhe-tls-{tag}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn wait_ready(url: &str, ca: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while curl(&format!("{url}/healthz"), Some(ca)).1 != "200" {
        assert!(Instant::now() < deadline, "{url}/healthz never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn https_by_default_with_a_local_ca_the_client_files_trust() {
    let dir = temp_dir("default");
    let server = serve(&dir, &[]);
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let ca = dir.join("tls/ca.pem");
    wait_ready(&server.url, &ca);

    // Without the CA a client refuses the certificate (curl: 60).
    let (code, _) = curl(&format!("{}/healthz", server.url), None);
    assert_eq!(code, 60, "curl without the CA must fail verification");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let http = server.url.replacen("https://", "http://", 1);
    let (_, status) = curl(&format!("{http}/healthz"), None);
    assert_ne!(status, "200");

    let clouds = std::fs::read_to_string(dir.join("clouds.yaml")).expect("clouds.yaml");
    assert!(clouds.contains(&format!("auth_url: {}/identity", server.url)));
    assert!(
        clouds.contains(&format!("cacert: \"{}\"", ca.display())),
        "{clouds}"
    );
    let openrc = std::fs::read_to_string(dir.join("admin-openrc.sh")).expect("openrc");
    assert!(openrc.contains(&format!("export OS_CACERT='{}'", ca.display())));
    let key_mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dir.join("tls/ca-key.pem"))
            .expect("ca key")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(key_mode, 0o600);

    // A restart keeps the CA, so clients keep trusting the server.
    let ca_bytes = std::fs::read(&ca).expect("ca");
    drop(server);
    let server = serve(&dir, &[]);
    wait_ready(&server.url, &ca);
    assert_eq!(std::fs::read(&ca).expect("ca"), ca_bytes);
    // The password survives in clouds.yaml across the rewrite.
    let clouds = std::fs::read_to_string(dir.join("clouds.yaml")).expect("clouds.yaml");
    assert!(clouds.contains("password: \"tls-test-pw\""));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_operators_certificate_and_plain_http_on_request() {
    // Make a certificate with one server, then serve it as "the operator's".
    let first = temp_dir("maker");
    let maker = serve(&first, &[]);
    wait_ready(&maker.url, &first.join("tls/ca.pem"));
    drop(maker);

    let dir = temp_dir("own");
    let cert = first.join("tls/server.pem");
    let key = first.join("tls/server-key.pem");
    let cert_arg = cert.display().to_string();
    let key_arg = key.display().to_string();
    let server = serve(&dir, &["--tls-cert", &cert_arg, "--tls-key", &key_arg]);
    let ca = first.join("tls/ca.pem");
    wait_ready(&server.url, &ca);
    assert!(
        !dir.join("tls/ca.pem").exists(),
        "no CA is made for an operator's cert"
    );
    let clouds = std::fs::read_to_string(dir.join("clouds.yaml")).expect("clouds.yaml");
    assert!(!clouds.contains("cacert"));
    drop(server);

    // A key that does not exist stops the server with a clear message.
    let out = Command::new(env!("CARGO_BIN_EXE_yunhe"))
        .env("YUNHE_DATAPLANE", "false")
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert", &cert_arg])
        .args(["--tls-key", "/nonexistent/key.pem", "--state-dir"])
        .arg(&dir)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/key.pem"), "{err}");

    // --insecure-http serves plain HTTP, and says so.
    let plain = temp_dir("plain");
    let mut child = Command::new(env!("CARGO_BIN_EXE_yunhe"))
        .env("YUNHE_DATAPLANE", "false")
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--insecure-http",
            "--state-dir",
        ])
        .arg(&plain)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut banner = String::new();
    let mut url = String::new();
    for _ in 0..20 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(u) = line.trim().strip_prefix("identity:") {
            url = u.trim().trim_end_matches("/identity/v3").to_string();
        }
        banner.push_str(&line);
        if line.contains("tls:") {
            break;
        }
    }
    assert!(url.starts_with("http://"), "{banner}");
    assert!(banner.contains("--insecure-http"), "{banner}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while curl(&format!("{url}/healthz"), None).1 != "200" {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    for d in [first, dir, plain] {
        let _ = std::fs::remove_dir_all(d);
    }
    let _ = std::io::stdout().flush();
}
