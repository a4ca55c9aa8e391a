//! `yunhe bench federation`: token issue for a federated (OpenID Connect)
//! user beside password token issue, from the same run. The bench is its
//! own OpenID provider: an ES256 key made with ring, its JWKS and discovery
//! document served on 127.0.0.1, the JWTs signed here.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Instant;

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::json;

use super::harness::{BenchError, admin_token, median, request, self_exe, start_server};

fn enc(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Serves the discovery document and `jwks` on 127.0.0.1; the issuer URL.
fn serve_provider(jwk: serde_json::Value) -> Result<String, BenchError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| BenchError::Io("binding the provider", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| BenchError::Io("binding the provider", e))?;
    let issuer = format!("http://{addr}");
    let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")}).to_string();
    let jwks = json!({"keys": [jwk]}).to_string();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let n = stream.read(&mut buf).unwrap_or(0);
            let text = String::from_utf8_lossy(&buf[..n]);
            let body = if text.starts_with("GET /jwks") {
                &jwks
            } else {
                &discovery
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(issuer)
}

fn key() -> Result<EcdsaKeyPair, BenchError> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| BenchError::Server("making an ES256 key".into()))?;
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| BenchError::Server("reading the ES256 key".into()))
}

fn sign(pair: &EcdsaKeyPair, claims: &serde_json::Value) -> Result<String, BenchError> {
    let header = enc(json!({"alg": "ES256", "typ": "JWT", "kid": "bench"})
        .to_string()
        .as_bytes());
    let signed = format!("{header}.{}", enc(claims.to_string().as_bytes()));
    let signature = pair
        .sign(&SystemRandom::new(), signed.as_bytes())
        .map_err(|_| BenchError::Server("signing a JWT".into()))?;
    Ok(format!("{signed}.{}", enc(signature.as_ref())))
}

/// Times `count` requests that must answer 201; milliseconds each.
fn time_issue(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    count: usize,
) -> Result<Vec<f64>, BenchError> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        let (status, _, text) = request(addr, "POST", path, headers, body)
            .map_err(|e| BenchError::Io("issuing a token", e))?;
        if status != 201 {
            return Err(BenchError::Server(format!(
                "{path} answered {status}: {text}"
            )));
        }
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(out)
}

pub fn run(count: usize) -> Result<(), BenchError> {
    let exe = self_exe()?;
    let state_dir = std::env::temp_dir().join(format!("yunhe-bench-fed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    let result = measure(&exe, &state_dir, count.max(10));
    let _ = std::fs::remove_dir_all(&state_dir);
    result
}

fn measure(
    exe: &std::path::Path,
    state_dir: &std::path::Path,
    count: usize,
) -> Result<(), BenchError> {
    println!("yunhe bench federation ({})", exe.display());
    let pair = key()?;
    let point = pair.public_key().as_ref();
    let (x, y) = (point.get(1..33), point.get(33..65));
    let (Some(x), Some(y)) = (x, y) else {
        return Err(BenchError::Server("an ES256 public key is 65 bytes".into()));
    };
    let issuer = serve_provider(json!({"kty": "EC", "crv": "P-256", "kid": "bench",
        "x": enc(x), "y": enc(y)}))?;
    let (server, _) = start_server(exe, state_dir)?;
    let admin = admin_token(&server)?;
    let auth = [
        ("X-Auth-Token", admin.as_str()),
        ("Content-Type", "application/json"),
    ];
    let base = "/identity/v3/OS-FEDERATION";
    for (path, body) in [
        (
            format!("{base}/identity_providers/bench"),
            json!({"identity_provider": {"remote_ids": [issuer], "enabled": true}}),
        ),
        (
            format!("{base}/mappings/bench"),
            json!({"mapping": {"rules": [{"local": [{"user": {"name": "{0}"}}],
                "remote": [{"type": "sub"}]}]}}),
        ),
        (
            format!("{base}/identity_providers/bench/protocols/openid"),
            json!({"protocol": {"mapping_id": "bench"}}),
        ),
    ] {
        let (status, _, text) = request(&server.addr, "PUT", &path, &auth, &body.to_string())
            .map_err(|e| BenchError::Io("configuring federation", e))?;
        if status != 201 {
            return Err(BenchError::Server(format!(
                "{path} answered {status}: {text}"
            )));
        }
    }
    let now = chrono::Utc::now().timestamp();
    let jwt = sign(
        &pair,
        &json!({"iss": issuer, "aud": "yunhe", "sub": "bench-user", "iat": now, "exp": now + 3600}),
    )?;
    let bearer = format!("Bearer {jwt}");
    let oidc_path = format!("{base}/identity_providers/bench/protocols/openid/auth");
    let oidc_headers = [("Authorization", bearer.as_str())];
    let password_body =
        json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": "bench-password"}}}}})
        .to_string();
    let json_headers = [("Content-Type", "application/json")];
    // Warm both paths (the first OIDC login fetches the JWKS).
    time_issue(&server.addr, &oidc_path, &oidc_headers, "", 3)?;
    time_issue(
        &server.addr,
        "/identity/v3/auth/tokens",
        &json_headers,
        &password_body,
        3,
    )?;
    let oidc = time_issue(&server.addr, &oidc_path, &oidc_headers, "", count)?;
    let password = time_issue(
        &server.addr,
        "/identity/v3/auth/tokens",
        &json_headers,
        &password_body,
        count,
    )?;
    let (oidc_median, password_median) = (median(oidc.clone()), median(password.clone()));
    println!(
        "token     unscoped token issue, {count} sequential requests each:\n          \
         OpenID Connect (ES256 JWT, mapped ephemeral user) median {oidc_median:.2} ms\n          \
         password (Argon2) median {password_median:.2} ms; ratio OIDC/password {:.2}",
        oidc_median / password_median
    );
    drop(server);
    Ok(())
}
