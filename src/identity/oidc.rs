//! OpenID Connect without Apache: an IdP's access or ID token (a JWT)
//! checked as mod_auth_openidc would before Keystone saw the claims. A leaf:
//! no axum, no database.
//!
//! - The signature: RS256/RS384/RS512 or ES256/ES384 (never `none` nor a
//!   shared secret) against the key of the token's `kid` in the issuer's
//!   JWKS, found through `{iss}/.well-known/openid-configuration`
//!   (`jwks_uri`). Keys are cached per issuer for [`JWKS_TTL`] and fetched
//!   again when a token names a `kid` the cache lacks (at most every
//!   [`REFETCH_AFTER`]).
//! - `iss` must be one of the identity provider's `remote_ids`; only then
//!   is anything fetched, so a token cannot make yunhe call an address the
//!   administrator did not configure. Fetches use HTTPS with the system CA
//!   bundle (`SSL_CERT_FILE`, else /etc/ssl/certs/ca-certificates.crt);
//!   plain HTTP only to loopback (tests, a provider on the same host).
//! - `aud` (a string or a list) must hold one of `serve --oidc-audience`
//!   (comma-separated; default `yunhe`, the client id to register yunhe
//!   under at the provider).
//! - `exp` is required; `exp` and `nbf` are checked with [`LEEWAY`] seconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Map, Value};

/// How long a fetched JWKS is trusted.
pub const JWKS_TTL: Duration = Duration::from_secs(300);
/// An unknown `kid` refetches the JWKS at most this often.
pub const REFETCH_AFTER: Duration = Duration::from_secs(10);
/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY: i64 = 60;
/// Largest discovery document or JWKS accepted.
const MAX_DOCUMENT: usize = 1 << 20;
/// Time allowed for one fetch (connect, TLS, answer).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a token is refused (all 401 to the client) or the provider unreachable.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// Not three base64url parts with JSON header and claims.
    #[error("the token is not a JWT")]
    Malformed,
    /// The algorithm is not one yunhe accepts.
    #[error("the token's algorithm {0:?} is not accepted")]
    Algorithm(String),
    /// `iss` is not a remote id of the identity provider.
    #[error("the token's issuer is not one of the identity provider's remote ids")]
    Issuer,
    /// `aud` names none of the accepted audiences.
    #[error("the token's audience is not accepted")]
    Audience,
    /// Past `exp`, before `nbf`, or without `exp`.
    #[error("the token is expired or not yet valid")]
    Expired,
    /// No key of the issuer verifies the signature.
    #[error("the token's signature does not verify")]
    Signature,
    /// The discovery document or the JWKS could not be fetched or read.
    #[error("fetching the identity provider's keys failed: {0}")]
    Fetch(String),
}

/// Verifies IdP tokens for one server: the audiences it accepts (`serve
/// --oidc-audience`), the issuers' keys it has fetched, and its TLS client.
/// Owned by `IdentityState`, so two servers in one process do not share them.
pub struct OidcVerifier {
    audiences: Vec<String>,
    keys: Mutex<HashMap<String, CachedKeys>>,
    connector: OnceLock<Result<tokio_rustls::TlsConnector, String>>,
}

/// The audience accepted when none is configured.
pub const DEFAULT_AUDIENCE: &str = "yunhe";

impl OidcVerifier {
    /// A verifier accepting these audiences in `aud` (empty entries dropped;
    /// none at all means [`DEFAULT_AUDIENCE`]).
    pub fn new(audiences: &[String]) -> OidcVerifier {
        let mut audiences: Vec<String> = audiences
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if audiences.is_empty() {
            audiences.push(DEFAULT_AUDIENCE.to_string());
        }
        OidcVerifier {
            audiences,
            keys: Mutex::new(HashMap::new()),
            connector: OnceLock::new(),
        }
    }

    /// The audiences accepted in `aud`.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }
}

impl Default for OidcVerifier {
    fn default() -> Self {
        OidcVerifier::new(&[])
    }
}

/// A token split and decoded, its signature not yet checked.
struct Parsed {
    alg: String,
    kid: Option<String>,
    signed: String,
    signature: Vec<u8>,
    claims: Map<String, Value>,
}

fn b64(part: &str) -> Result<Vec<u8>, OidcError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| OidcError::Malformed)
}

fn parse(token: &str) -> Result<Parsed, OidcError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(OidcError::Malformed);
    };
    let header: Value = serde_json::from_slice(&b64(header)?).map_err(|_| OidcError::Malformed)?;
    let claims: Value = serde_json::from_slice(&b64(payload)?).map_err(|_| OidcError::Malformed)?;
    let Value::Object(claims) = claims else {
        return Err(OidcError::Malformed);
    };
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(OidcError::Malformed)?
        .to_string();
    Ok(Parsed {
        alg,
        kid: header
            .get("kid")
            .and_then(Value::as_str)
            .map(str::to_string),
        signed: format!(
            "{}.{}",
            token.split('.').next().unwrap_or(""),
            token.split('.').nth(1).unwrap_or("")
        ),
        signature: b64(signature)?,
        claims,
    })
}

fn check_claims(
    claims: &Map<String, Value>,
    remote_ids: &[String],
    audiences: &[String],
    now: i64,
) -> Result<(), OidcError> {
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(OidcError::Issuer)?;
    if !remote_ids.iter().any(|r| r == iss) {
        return Err(OidcError::Issuer);
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => audiences.contains(a),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .any(|a| audiences.iter().any(|w| w == a)),
        _ => false,
    };
    if !aud_ok {
        return Err(OidcError::Audience);
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .ok_or(OidcError::Expired)?;
    if (exp as i64) + LEEWAY <= now {
        return Err(OidcError::Expired);
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_f64)
        && (nbf as i64) - LEEWAY > now
    {
        return Err(OidcError::Expired);
    }
    Ok(())
}

/// One verification key of a JWKS.
#[derive(Debug, Clone)]
struct Jwk {
    kid: Option<String>,
    key: PublicKey,
}

#[derive(Debug, Clone)]
enum PublicKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed point (0x04 || x || y) on P-256 or P-384.
    Ec {
        curve: String,
        point: Vec<u8>,
    },
}

fn parse_jwks(doc: &Value) -> Vec<Jwk> {
    let keys = doc.get("keys").and_then(Value::as_array);
    keys.map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|k| {
            k.get("use")
                .and_then(Value::as_str)
                .is_none_or(|u| u == "sig")
        })
        .filter_map(|k| {
            let field = |name: &str| {
                k.get(name)
                    .and_then(Value::as_str)
                    .and_then(|v| b64(v).ok())
            };
            let key = match k.get("kty").and_then(Value::as_str)? {
                "RSA" => PublicKey::Rsa {
                    n: field("n")?,
                    e: field("e")?,
                },
                "EC" => {
                    let mut point = vec![4u8];
                    point.extend(field("x")?);
                    point.extend(field("y")?);
                    PublicKey::Ec {
                        curve: k.get("crv")?.as_str()?.to_string(),
                        point,
                    }
                }
                _ => return None,
            };
            Some(Jwk {
                kid: k.get("kid").and_then(Value::as_str).map(str::to_string),
                key,
            })
        })
        .collect()
}

fn verify_with(key: &PublicKey, alg: &str, message: &[u8], signature: &[u8]) -> bool {
    use ring::signature as sig;
    match (key, alg) {
        (PublicKey::Rsa { n, e }, "RS256" | "RS384" | "RS512") => {
            let params = match alg {
                "RS256" => &sig::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &sig::RSA_PKCS1_2048_8192_SHA384,
                _ => &sig::RSA_PKCS1_2048_8192_SHA512,
            };
            sig::RsaPublicKeyComponents { n, e }
                .verify(params, message, signature)
                .is_ok()
        }
        (PublicKey::Ec { curve, point }, "ES256") if curve == "P-256" => {
            sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point)
                .verify(message, signature)
                .is_ok()
        }
        (PublicKey::Ec { curve, point }, "ES384") if curve == "P-384" => {
            sig::UnparsedPublicKey::new(&sig::ECDSA_P384_SHA384_FIXED, point)
                .verify(message, signature)
                .is_ok()
        }
        _ => false,
    }
}

const ALGORITHMS: [&str; 5] = ["RS256", "RS384", "RS512", "ES256", "ES384"];

/// Checks a token against an issuer's keys and the provider's remote ids;
/// the claims when it holds. `None` from `keys_for` means the `kid` is not
/// among the keys (the caller may refetch and try again).
fn verify_against(
    parsed: &Parsed,
    keys: &[Jwk],
    remote_ids: &[String],
    audiences: &[String],
    now: i64,
) -> Result<(), OidcError> {
    if !ALGORITHMS.contains(&parsed.alg.as_str()) {
        return Err(OidcError::Algorithm(parsed.alg.clone()));
    }
    check_claims(&parsed.claims, remote_ids, audiences, now)?;
    let candidates = keys
        .iter()
        .filter(|k| parsed.kid.is_none() || k.kid == parsed.kid);
    for key in candidates {
        if verify_with(
            &key.key,
            &parsed.alg,
            parsed.signed.as_bytes(),
            &parsed.signature,
        ) {
            return Ok(());
        }
    }
    Err(OidcError::Signature)
}

// ------------------------------------------------------------- JWKS cache

struct CachedKeys {
    fetched: Instant,
    keys: Arc<Vec<Jwk>>,
}

fn cached(v: &OidcVerifier, issuer: &str, max_age: Duration) -> Option<Arc<Vec<Jwk>>> {
    let cache = v.keys.lock().ok()?;
    let entry = cache.get(issuer)?;
    (entry.fetched.elapsed() < max_age).then(|| entry.keys.clone())
}

async fn fetch_keys(v: &OidcVerifier, issuer: &str) -> Result<Arc<Vec<Jwk>>, OidcError> {
    let discovery_url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let discovery = fetch_json(v, &discovery_url).await?;
    let jwks_uri = discovery
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or_else(|| OidcError::Fetch("the discovery document has no jwks_uri".into()))?;
    let keys = Arc::new(parse_jwks(&fetch_json(v, jwks_uri).await?));
    if let Ok(mut cache) = v.keys.lock() {
        cache.insert(
            issuer.to_string(),
            CachedKeys {
                fetched: Instant::now(),
                keys: keys.clone(),
            },
        );
    }
    Ok(keys)
}

/// Verifies an IdP token: signature against the issuer's JWKS (fetched or
/// cached), `iss` among `remote_ids`, `aud`, `exp` and `nbf`. The claims
/// when it holds.
pub async fn verify(
    v: &OidcVerifier,
    token: &str,
    remote_ids: &[String],
    now: i64,
) -> Result<Map<String, Value>, OidcError> {
    let parsed = parse(token)?;
    if !ALGORITHMS.contains(&parsed.alg.as_str()) {
        return Err(OidcError::Algorithm(parsed.alg));
    }
    // Nothing is fetched for an issuer the administrator did not configure.
    check_claims(&parsed.claims, remote_ids, v.audiences(), now)?;
    let issuer = parsed
        .claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(OidcError::Issuer)?
        .to_string();
    let keys = match cached(v, &issuer, JWKS_TTL) {
        Some(keys) => keys,
        None => fetch_keys(v, &issuer).await?,
    };
    let known_kid = parsed
        .kid
        .as_ref()
        .is_none_or(|kid| keys.iter().any(|k| k.kid.as_ref() == Some(kid)));
    let keys = if !known_kid && cached(v, &issuer, REFETCH_AFTER).is_none() {
        fetch_keys(v, &issuer).await?
    } else {
        keys
    };
    verify_against(&parsed, &keys, remote_ids, v.audiences(), now)?;
    Ok(parsed.claims)
}

// ------------------------------------------------------------ HTTP client

fn is_loopback(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1" | "[::1]") || host.starts_with("127.")
}

/// Splits `scheme://host[:port]/path` into (https, host, port, path).
fn split_url(url: &str) -> Result<(bool, String, u16, String), OidcError> {
    let bad = || OidcError::Fetch(format!("unsupported URL {url:?}"));
    let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(bad());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') || authority.is_empty() {
        return Err(bad());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && !p.contains(']') => {
            (h.to_string(), p.parse::<u16>().map_err(|_| bad())?)
        }
        _ => (authority.to_string(), if https { 443 } else { 80 }),
    };
    if !https && !is_loopback(&host) {
        return Err(OidcError::Fetch(format!(
            "{url:?}: plain HTTP is only used on loopback; use https"
        )));
    }
    Ok((https, host, port, path.to_string()))
}

fn tls_connector(v: &OidcVerifier) -> Result<tokio_rustls::TlsConnector, OidcError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    v.connector
        .get_or_init(|| {
            let path = std::env::var("SSL_CERT_FILE")
                .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(&path).map_err(|e| format!("{path}: {e}"))?;
            for cert in certs.flatten() {
                let _ = roots.add(cert);
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
            Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
        })
        .clone()
        .map_err(OidcError::Fetch)
}

async fn get_over<S>(stream: S, authority: &str, path: &str) -> Result<Vec<u8>, OidcError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let fetch = |e: &dyn std::fmt::Display| OidcError::Fetch(e.to_string());
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| fetch(&e))?;
    tokio::spawn(connection);
    let request = axum::http::Request::get(path)
        .header(axum::http::header::HOST, authority)
        .header(axum::http::header::ACCEPT, "application/json")
        .header(axum::http::header::USER_AGENT, "yunhe")
        .body(axum::body::Body::empty())
        .map_err(|e| fetch(&e))?;
    let response = sender.send_request(request).await.map_err(|e| fetch(&e))?;
    if !response.status().is_success() {
        return Err(OidcError::Fetch(format!(
            "{path}: HTTP {}",
            response.status()
        )));
    }
    let body = axum::body::to_bytes(axum::body::Body::new(response.into_body()), MAX_DOCUMENT)
        .await
        .map_err(|e| fetch(&e))?;
    Ok(body.to_vec())
}

/// GETs a JSON document (HTTPS, or HTTP on loopback).
async fn fetch_json(v: &OidcVerifier, url: &str) -> Result<Value, OidcError> {
    let (https, host, port, path) = split_url(url)?;
    let authority = if (https && port == 443) || (!https && port == 80) {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let connect_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let work = async {
        let tcp = tokio::net::TcpStream::connect((connect_host.as_str(), port))
            .await
            .map_err(|e| OidcError::Fetch(format!("{url}: {e}")))?;
        if https {
            let name = rustls_pki_types::ServerName::try_from(connect_host.clone())
                .map_err(|e| OidcError::Fetch(e.to_string()))?;
            let tls = tls_connector(v)?
                .connect(name, tcp)
                .await
                .map_err(|e| OidcError::Fetch(format!("{url}: {e}")))?;
            get_over(tls, &authority, &path).await
        } else {
            get_over(tcp, &authority, &path).await
        }
    };
    let body = tokio::time::timeout(FETCH_TIMEOUT, work)
        .await
        .map_err(|_| OidcError::Fetch(format!("{url}: timed out")))??;
    serde_json::from_slice(&body).map_err(|e| OidcError::Fetch(format!("{url}: {e}")))
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use serde_json::json;

    use super::*;

    fn enc(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// An ES256 key, its JWK, and a signer.
    fn es256() -> (EcdsaKeyPair, Jwk) {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("pair");
        let jwk = Jwk {
            kid: Some("k1".into()),
            key: PublicKey::Ec {
                curve: "P-256".into(),
                point: pair.public_key().as_ref().to_vec(),
            },
        };
        (pair, jwk)
    }

    fn sign(pair: &EcdsaKeyPair, claims: &Value) -> String {
        let header = enc(json!({"alg": "ES256", "kid": "k1", "typ": "JWT"})
            .to_string()
            .as_bytes());
        let payload = enc(claims.to_string().as_bytes());
        let signed = format!("{header}.{payload}");
        let sig = pair
            .sign(&SystemRandom::new(), signed.as_bytes())
            .expect("sign");
        format!("{signed}.{}", enc(sig.as_ref()))
    }

    fn check(token: &str, keys: &[Jwk]) -> Result<(), OidcError> {
        let parsed = parse(token)?;
        verify_against(
            &parsed,
            keys,
            &["https://idp".to_string()],
            &["yunhe".to_string()],
            1_000,
        )
    }

    #[test]
    fn tokens_are_checked_for_signature_issuer_audience_and_time() {
        let (pair, jwk) = es256();
        let good = json!({"iss": "https://idp", "aud": ["x", "yunhe"], "exp": 2000, "sub": "u"});
        assert!(check(&sign(&pair, &good), std::slice::from_ref(&jwk)).is_ok());
        let (other, _) = es256();
        assert!(matches!(
            check(&sign(&other, &good), std::slice::from_ref(&jwk)),
            Err(OidcError::Signature)
        ));
        let mut bad = good.clone();
        bad["iss"] = json!("https://evil");
        assert!(matches!(
            check(&sign(&pair, &bad), std::slice::from_ref(&jwk)),
            Err(OidcError::Issuer)
        ));
        let mut bad = good.clone();
        bad["aud"] = json!("other");
        assert!(matches!(
            check(&sign(&pair, &bad), std::slice::from_ref(&jwk)),
            Err(OidcError::Audience)
        ));
        let mut bad = good.clone();
        bad["exp"] = json!(900);
        assert!(matches!(
            check(&sign(&pair, &bad), std::slice::from_ref(&jwk)),
            Err(OidcError::Expired)
        ));
        bad["exp"] = json!(950);
        assert!(
            check(&sign(&pair, &bad), std::slice::from_ref(&jwk)).is_ok(),
            "leeway"
        );
        let mut bad = good.clone();
        bad["nbf"] = json!(1100);
        assert!(matches!(
            check(&sign(&pair, &bad), std::slice::from_ref(&jwk)),
            Err(OidcError::Expired)
        ));
    }

    #[test]
    fn unsigned_and_symmetric_tokens_are_refused() {
        let (_, jwk) = es256();
        let claims = enc(json!({"iss": "https://idp", "aud": "yunhe", "exp": 2000})
            .to_string()
            .as_bytes());
        for alg in ["none", "HS256"] {
            let header = enc(json!({"alg": alg}).to_string().as_bytes());
            let token = format!("{header}.{claims}.{}", enc(b"x"));
            assert!(matches!(
                check(&token, std::slice::from_ref(&jwk)),
                Err(OidcError::Algorithm(_))
            ));
        }
        assert!(matches!(check("a.b", &[jwk]), Err(OidcError::Malformed)));
    }

    #[test]
    fn jwks_and_urls_are_read() {
        let keys = parse_jwks(&json!({"keys": [
            {"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB", "use": "sig"},
            {"kty": "RSA", "kid": "enc", "n": "AQAB", "e": "AQAB", "use": "enc"},
            {"kty": "oct", "k": "AQAB"}
        ]}));
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("r"));
        let (https, host, port, path) = split_url("http://127.0.0.1:8080/jwks").expect("url");
        assert_eq!(
            (https, host.as_str(), port, path.as_str()),
            (false, "127.0.0.1", 8080, "/jwks")
        );
        assert!(
            split_url("http://example.org/jwks").is_err(),
            "plain HTTP off loopback"
        );
        assert_eq!(split_url("https://example.org").expect("url").2, 443);
        assert!(split_url("ftp://x").is_err());
    }
}
