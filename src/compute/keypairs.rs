//! Keypairs: import of SSH public keys (ssh-rsa, ssh-dss, ssh-ed25519,
//! ecdsa-sha2-*) and x509 certificates, Ed25519 generation below 2.92,
//! per-user keypairs for admins (2.10), pagination (2.35), the key quota.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use base64::Engine;
use rand::Rng;
use serde_json::{Map, Value, json};

use super::{
    ComputeError, ComputeResult, ComputeState, Mv, empty, next_link, nova_time, paginate, query_map,
};
use crate::db::compute::{self as store, Keypair};
use crate::db::now_unix;
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};
use crate::policy::Target;

type S = Arc<ComputeState>;

pub fn routes() -> Router<S> {
    Router::new()
        .route("/v2.1/os-keypairs", get(list).post(create))
        .route("/v2.1/os-keypairs/{name}", get(show).delete(delete))
}

/// Errors of key parsing, shown to the user as 400s.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The public key is not an OpenSSH public key of a known type.
    #[error("Keypair data is invalid: failed to generate fingerprint")]
    InvalidSsh,
    /// The certificate is not a PEM X.509 certificate.
    #[error("Keypair data is invalid: failed to generate X509 fingerprint")]
    InvalidX509,
}

const SSH_TYPES: &[&str] = &[
    "ssh-rsa",
    "ssh-dss",
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
];

fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Nova's fingerprint of an OpenSSH public key: the MD5 of the decoded key
/// blob, colon-separated hex.
pub fn ssh_fingerprint(public_key: &str) -> Result<String, KeyError> {
    let mut words = public_key.split_whitespace();
    let kind = words.next().ok_or(KeyError::InvalidSsh)?;
    let data = words.next().ok_or(KeyError::InvalidSsh)?;
    if !SSH_TYPES.contains(&kind) {
        return Err(KeyError::InvalidSsh);
    }
    let blob = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| KeyError::InvalidSsh)?;
    // The blob starts with the key type as an SSH string.
    let len = blob
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or(KeyError::InvalidSsh)?;
    let inner = blob.get(4..4 + len).ok_or(KeyError::InvalidSsh)?;
    if inner != kind.as_bytes() || blob.len() <= 4 + len {
        return Err(KeyError::InvalidSsh);
    }
    use md5::Digest;
    Ok(colon_hex(&md5::Md5::digest(&blob)))
}

/// Nova's fingerprint of a PEM certificate: the SHA-1 of its DER bytes.
pub fn x509_fingerprint(pem: &str) -> Result<String, KeyError> {
    let begin = "-----BEGIN CERTIFICATE-----";
    let end = "-----END CERTIFICATE-----";
    let start = pem.find(begin).ok_or(KeyError::InvalidX509)? + begin.len();
    let stop = pem[start..].find(end).ok_or(KeyError::InvalidX509)? + start;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| KeyError::InvalidX509)?;
    // A certificate is a DER SEQUENCE whose length covers the whole input.
    if der.len() < 16 || der[0] != 0x30 || !der_length_matches(&der) {
        return Err(KeyError::InvalidX509);
    }
    use sha1::Digest;
    Ok(colon_hex(&sha1::Sha1::digest(&der)))
}

fn der_length_matches(der: &[u8]) -> bool {
    let Some(&first) = der.get(1) else {
        return false;
    };
    if first & 0x80 == 0 {
        return der.len() == 2 + first as usize;
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 4 {
        return false;
    }
    let Some(bytes) = der.get(2..2 + n) else {
        return false;
    };
    let len = bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
    der.len() == 2 + n + len
}

fn ssh_string(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// A new Ed25519 keypair: (OpenSSH public key, OpenSSH private key PEM).
pub fn generate_ed25519(comment: &str) -> (String, String) {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let public = signing.verifying_key().to_bytes();
    let mut blob = Vec::new();
    ssh_string(&mut blob, b"ssh-ed25519");
    ssh_string(&mut blob, &public);
    let b64 = base64::engine::general_purpose::STANDARD;
    let public_line = format!("ssh-ed25519 {} {comment}", b64.encode(&blob));

    let check: u32 = rand::rng().next_u32();
    let mut private = Vec::new();
    private.extend_from_slice(&check.to_be_bytes());
    private.extend_from_slice(&check.to_be_bytes());
    ssh_string(&mut private, b"ssh-ed25519");
    ssh_string(&mut private, &public);
    let mut secret = seed.to_vec();
    secret.extend_from_slice(&public);
    ssh_string(&mut private, &secret);
    ssh_string(&mut private, comment.as_bytes());
    let mut pad = 1u8;
    while private.len() % 8 != 0 {
        private.push(pad);
        pad += 1;
    }
    let mut file = b"openssh-key-v1\0".to_vec();
    ssh_string(&mut file, b"none");
    ssh_string(&mut file, b"none");
    ssh_string(&mut file, b"");
    file.extend_from_slice(&1u32.to_be_bytes());
    ssh_string(&mut file, &blob);
    ssh_string(&mut file, &private);
    let encoded = b64.encode(&file);
    let mut pem = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for chunk in encoded.as_bytes().chunks(70) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    (public_line, pem)
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

fn pem(label: &str, der_bytes: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der_bytes);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in encoded.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A new self-signed X.509 certificate for `common_name` (Ed25519, ten
/// years), as Nova generates for `type: x509` keypairs:
/// (certificate PEM, PKCS#8 private key PEM).
pub fn generate_x509(common_name: &str) -> (String, String) {
    use ed25519_dalek::Signer;
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let public = signing.verifying_key().to_bytes();
    let ed25519_oid = der(0x06, &[0x2b, 0x65, 0x70]);
    let algorithm = der(0x30, &ed25519_oid);
    let cn: String = common_name.chars().take(64).collect();
    let name = der(
        0x30,
        &der(
            0x31,
            &der(
                0x30,
                &[der(0x06, &[0x55, 0x04, 0x03]), der(0x0c, cn.as_bytes())].concat(),
            ),
        ),
    );
    let now = chrono::Utc::now();
    let utc = |t: chrono::DateTime<chrono::Utc>| {
        der(0x17, t.format("%y%m%d%H%M%SZ").to_string().as_bytes())
    };
    let validity = der(
        0x30,
        &[utc(now), utc(now + chrono::Duration::days(3650))].concat(),
    );
    let mut serial = [0u8; 16];
    rand::rng().fill_bytes(&mut serial);
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    let mut key_bits = vec![0u8];
    key_bits.extend_from_slice(&public);
    let spki = der(0x30, &[algorithm.clone(), der(0x03, &key_bits)].concat());
    let tbs = der(
        0x30,
        &[
            der(0xa0, &der(0x02, &[2])),
            der(0x02, &serial),
            algorithm.clone(),
            name.clone(),
            validity,
            name,
            spki,
        ]
        .concat(),
    );
    let signature = signing.sign(&tbs).to_bytes();
    let mut sig_bits = vec![0u8];
    sig_bits.extend_from_slice(&signature);
    let cert = der(
        0x30,
        &[tbs, algorithm.clone(), der(0x03, &sig_bits)].concat(),
    );
    let pkcs8 = der(
        0x30,
        &[der(0x02, &[0]), algorithm, der(0x04, &der(0x04, &seed))].concat(),
    );
    (pem("CERTIFICATE", &cert), pem("PRIVATE KEY", &pkcs8))
}

/// Whose keypairs a request is about: `user_id` (2.10+) or the caller's,
/// once `rule` allows the caller on that user's keypairs (Nova's target is
/// the user id alone; the defaults let admins act on other users').
fn target_user(
    s: &ComputeState,
    ctx: &AuthContext,
    mv: Mv,
    wanted: Option<&str>,
    rule: &str,
) -> ComputeResult<String> {
    let user = match wanted {
        Some(user) if mv.at_least(10) => user.to_string(),
        _ => ctx.user_id.clone(),
    };
    super::authorize(s, ctx, rule, &Target::new().with("user_id", user.clone()))?;
    Ok(user)
}

fn not_found(user: &str, name: &str) -> ComputeError {
    ComputeError::NotFound(format!("Keypair {name} not found for user {user}"))
}

fn summary(k: &Keypair, mv: Mv) -> Value {
    let mut obj = Map::new();
    obj.insert("name".into(), json!(k.name));
    obj.insert("public_key".into(), json!(k.public_key));
    obj.insert("fingerprint".into(), json!(k.fingerprint));
    if mv.at_least(2) {
        obj.insert("type".into(), json!(k.kind));
    }
    Value::Object(obj)
}

async fn list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    let q: HashMap<String, String> = query_map(q);
    let user = target_user(
        &s,
        &ctx,
        mv,
        q.get("user_id").map(String::as_str),
        "os_compute_api:os-keypairs:index",
    )?;
    let keys = s
        .read(move |conn| Ok(store::list_keypairs(conn, &user)?))
        .await?;
    let (page, more) = if mv.at_least(35) {
        paginate(keys, &q, |k| k.name.clone())?
    } else {
        (keys, false)
    };
    let items: Vec<Value> = page
        .iter()
        .map(|k| json!({"keypair": summary(k, mv)}))
        .collect();
    let mut body = Map::new();
    body.insert("keypairs".into(), Value::Array(items));
    if more && let Some(last) = page.last() {
        body.insert(
            "keypairs_links".into(),
            next_link(&s, "os-keypairs", &q, &last.name),
        );
    }
    Ok(json_response(StatusCode::OK, &Value::Object(body)))
}

async fn show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(name): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    let q = query_map(q);
    let user = target_user(
        &s,
        &ctx,
        mv,
        q.get("user_id").map(String::as_str),
        "os_compute_api:os-keypairs:show",
    )?;
    let (u, n) = (user.clone(), name.clone());
    let key = s
        .read(move |conn| Ok(store::get_keypair(conn, &u, &n)?))
        .await?
        .ok_or_else(|| not_found(&user, &name))?;
    let mut obj = summary(&key, mv);
    if let Value::Object(map) = &mut obj {
        map.insert("user_id".into(), json!(key.user_id));
        map.insert("created_at".into(), json!(nova_time(key.created_at)));
        map.insert("updated_at".into(), Value::Null);
        map.insert("deleted_at".into(), Value::Null);
        map.insert("deleted".into(), json!(false));
        map.insert("id".into(), json!(key.id));
    }
    Ok(json_response(StatusCode::OK, &json!({"keypair": obj})))
}

/// The body of `POST /os-keypairs` (Nova's `keypairs` schemas): `type`
/// from 2.2, `user_id` from 2.10, `public_key` required from 2.92.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeypairCreate {
    keypair: NewKeypair,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKeypair {
    name: String,
    #[serde(rename = "type")]
    kind: Option<KeyType>,
    user_id: Option<String>,
    public_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum KeyType {
    Ssh,
    X509,
}

impl NewKeypair {
    /// Refuses members the request's microversion does not have yet, as
    /// Nova's per-version schemas do.
    fn check_microversion(&self, mv: Mv) -> ComputeResult<()> {
        let too_new = [
            ("type", self.kind.is_some() && !mv.at_least(2)),
            ("user_id", self.user_id.is_some() && !mv.at_least(10)),
        ];
        match too_new.iter().find(|(_, refused)| *refused) {
            Some((member, _)) => {
                Err(crate::http::body::BodyError::Unexpected(format!("keypair.{member}")).into())
            }
            None => Ok(()),
        }
    }
}

fn check_name(name: String, mv: Mv) -> ComputeResult<String> {
    let extra = if mv.at_least(92) { " _-@." } else { " _-" };
    let ok = !name.is_empty()
        && name.chars().count() <= 255
        && name.trim() == name
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(c));
    if ok {
        Ok(name)
    } else {
        Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute name. Value: {name}. '{name}' does not match a valid keypair name"
        )))
    }
}

async fn create(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    body: Bytes,
) -> ComputeResult<Response> {
    let request: KeypairCreate = super::request::body(&body)?;
    let k = request.keypair;
    k.check_microversion(mv)?;
    let name = check_name(k.name, mv)?;
    let kind = k.kind.unwrap_or(KeyType::Ssh);
    let rule = "os_compute_api:os-keypairs:create";
    let user_id = target_user(&s, &ctx, mv, k.user_id.as_deref(), rule)?;
    let (public_key, private_key) = match k.public_key {
        Some(key) => (key.trim().to_string(), None),
        None if !mv.at_least(92) => {
            let (public, private) = if kind == KeyType::X509 {
                generate_x509(&user_id)
            } else {
                generate_ed25519("Generated-by-Nova")
            };
            (public, Some(private))
        }
        None => {
            return Err(crate::http::body::BodyError::Missing("keypair.public_key".into()).into());
        }
    };
    let kind = match kind {
        KeyType::Ssh => "ssh".to_string(),
        KeyType::X509 => "x509".to_string(),
    };
    let fingerprint = if kind == "x509" {
        x509_fingerprint(&public_key)
    } else {
        ssh_fingerprint(&public_key)
    }
    .map_err(|e| ComputeError::BadRequest(e.to_string()))?;
    let project = ctx.project_id().unwrap_or("").to_string();
    let key = Keypair {
        id: 0,
        user_id: user_id.clone(),
        name,
        kind,
        public_key,
        fingerprint,
        created_at: now_unix(),
    };
    let stored = key.clone();
    s.write(move |tx| {
        let used = store::count_keypairs(tx, &stored.user_id)?;
        super::quotas::enforce_limit(tx, &project, Some(&stored.user_id), "key_pairs", used, 1)
            .map_err(|e| match e {
                ComputeError::QuotaExceeded(_) => {
                    ComputeError::Forbidden("Quota exceeded, too many key pairs.".into())
                }
                other => other,
            })?;
        Ok(store::insert_keypair(tx, &stored)?)
    })
    .await?;
    let mut obj = summary(&key, mv);
    if let Value::Object(map) = &mut obj {
        map.insert("user_id".into(), json!(key.user_id));
        if let Some(private) = private_key {
            map.insert("private_key".into(), json!(private));
        }
    }
    let status = if mv.at_least(2) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, &json!({"keypair": obj})))
}

async fn delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(name): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    let q = query_map(q);
    let user = target_user(
        &s,
        &ctx,
        mv,
        q.get("user_id").map(String::as_str),
        "os_compute_api:os-keypairs:delete",
    )?;
    s.write(move |tx| {
        if store::delete_keypair(tx, &user, &name)? {
            Ok(())
        } else {
            Err(not_found(&user, &name))
        }
    })
    .await?;
    Ok(empty(if mv.at_least(2) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::ACCEPTED
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_a_valid_fingerprint() {
        let (public, private) = generate_ed25519("test");
        assert!(public.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"));
        assert!(private.contains("BEGIN OPENSSH PRIVATE KEY"));
        let fp = ssh_fingerprint(&public).expect("fingerprint");
        assert_eq!(fp.len(), 47);
    }

    #[test]
    fn known_key_fingerprints_match_ssh_keygen() {
        // Expected values printed by `ssh-keygen -l -E md5 -f KEY.pub`.
        for (key, expected) in [
            (
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEx+qyD3RU4oPsmaRyNRVsRoHtrP2ioE7ZHPFJz51aXc x",
                "75:1f:73:ae:56:8f:20:47:90:50:49:0c:cf:c1:27:25",
            ),
            (
                "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDRLo1nLtkOQHmGPY4lGH/D/e6/Tcb533LFfbLwLWQhJvn78/4xWu9f3xXWvVB7TKnnQHIQVwhPDThe/Uu/X8HyR17mPK7EPz6WNi2B+nAGNrM39k/yOKGhSqqcozkQN7o7+QZVrhVUgkK6o7wC1tQZp4zp5y+95sai6dWezbIBxQ== t",
                "0b:f1:8a:29:30:5c:ba:62:b6:2e:42:e4:59:6a:cf:5a",
            ),
            (
                "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBMl2SJfVShL27ZqYk8pQIuH/61Z+ioa8nskwB207c7PW6Ak77o8460ckC7Af5lG60lFkuTmB/YDsvktP4ZKeDTk= t",
                "77:73:dd:9e:3f:c9:5b:3f:10:99:d9:09:0d:7a:64:15",
            ),
        ] {
            assert_eq!(
                ssh_fingerprint(key).ok().as_deref(),
                Some(expected),
                "{key}"
            );
        }
        assert!(ssh_fingerprint("ssh-ed25519 bm90IGEga2V5").is_err());
        assert!(ssh_fingerprint("garbage").is_err());
        // The blob's type must match the declared one.
        assert!(
            ssh_fingerprint(
                "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIEx+qyD3RU4oPsmaRyNRVsRoHtrP2ioE7ZHPFJz51aXc"
            )
            .is_err()
        );
    }

    #[test]
    fn generated_certificates_parse_back() {
        let (cert, key) = generate_x509("someone");
        assert!(key.contains("BEGIN PRIVATE KEY"));
        assert_eq!(x509_fingerprint(&cert).expect("fingerprint").len(), 59);
    }

    #[test]
    fn certificates_need_pem_der() {
        assert!(x509_fingerprint("not a cert").is_err());
        assert!(
            x509_fingerprint("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----")
                .is_err()
        );
    }
}
