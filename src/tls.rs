//! HTTPS for the one port: a local certificate authority made on first
//! start, a server certificate it signs for the names clients use, or the
//! operator's own certificate and key.
//!
//! Files (in `<state-dir>/tls/`, keys mode 0600):
//! - `ca.pem`, `ca-key.pem`: the local CA (10 years). Clients trust it:
//!   `clouds.yaml` names it as `cacert`, `admin-openrc.sh` as `OS_CACERT`.
//! - `server.pem`, `server-key.pem`: the server certificate (about 13
//!   months), for `localhost`, the host name, the public URL's host and the
//!   host's addresses. It is made anew, signed by the same CA, when those
//!   names change or it has less than 30 days left; `server.names` records
//!   the names it was made for.
//!
//! The CA key never leaves the state directory. With `--tls-cert` and
//! `--tls-key` nothing is generated and the operator's chain is served.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Days a generated server certificate is valid.
const SERVER_CERT_DAYS: i64 = 397;
/// A server certificate with less than this left is made anew at start.
const RENEW_BEFORE_DAYS: i64 = 30;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A certificate or key file holds nothing usable.
    #[error("{path}: {message}")]
    Pem { path: String, message: String },
    /// Generating a key or certificate failed.
    #[error("generating the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate and key.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// What the server serves, and what clients should trust.
pub struct TlsSetup {
    pub config: Arc<rustls::ServerConfig>,
    /// The CA that signed the certificate, when yunhe made it.
    pub ca_file: Option<PathBuf>,
}

/// The operator's certificate chain and key (PEM files).
pub fn from_files(cert: &Path, key: &Path) -> Result<TlsSetup, TlsError> {
    let chain = read_chain(cert)?;
    let key = read_key(key)?;
    Ok(TlsSetup {
        config: server_config(chain, key)?,
        ca_file: None,
    })
}

/// The local CA and a server certificate for `names` (host names and IP
/// addresses), made or renewed as needed.
pub fn local_ca(dir: &Path, names: &[String]) -> Result<TlsSetup, TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| io_error(dir, source))?;
    let ca_cert_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca-key.pem");
    if !ca_cert_path.exists() || !ca_key_path.exists() {
        let key = KeyPair::generate()?;
        let name = format!("yunhe local CA {}", short_id());
        let mut params = ca_params(&name);
        params.not_before = days_from_now(-1);
        params.not_after = days_from_now(3650);
        let cert = params.self_signed(&key)?;
        write_file(&ca_key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&dir.join("ca.name"), name.as_bytes(), 0o644)?;
        write_file(&ca_cert_path, cert.pem().as_bytes(), 0o644)?;
        // A new CA voids any server certificate signed by an old one.
        let _ = std::fs::remove_file(dir.join("server.names"));
    }

    let server_cert_path = dir.join("server.pem");
    let server_key_path = dir.join("server-key.pem");
    let names_path = dir.join("server.names");
    let wanted = names.join("\n");
    let current = std::fs::read_to_string(&names_path).unwrap_or_default();
    let expires = std::fs::read_to_string(dir.join("server.expires"))
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0);
    let renew = current != wanted
        || expires < chrono::Utc::now().timestamp() + RENEW_BEFORE_DAYS * 86_400
        || !server_cert_path.exists()
        || !server_key_path.exists();
    if renew {
        let ca_key_pem =
            std::fs::read_to_string(&ca_key_path).map_err(|e| io_error(&ca_key_path, e))?;
        let ca_key = KeyPair::from_pem(&ca_key_pem)?;
        let ca_pem =
            std::fs::read_to_string(&ca_cert_path).map_err(|e| io_error(&ca_cert_path, e))?;
        let name_path = dir.join("ca.name");
        let ca_name = std::fs::read_to_string(&name_path).map_err(|e| io_error(&name_path, e))?;
        // The issuer is the CA's name and key: the same parameters it was
        // made with give the same subject, and the key the same identifier.
        let issuer = Issuer::new(ca_params(ca_name.trim()), ca_key);

        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_else(|| "localhost".into()),
        );
        params.distinguished_name = dn;
        params.subject_alt_names = names.iter().filter_map(|n| san(n)).collect();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = days_from_now(-1);
        params.not_after = days_from_now(SERVER_CERT_DAYS);
        let cert = params.signed_by(&key, &issuer)?;
        write_file(&server_key_path, key.serialize_pem().as_bytes(), 0o600)?;
        let chain = format!("{}{}", cert.pem(), ca_pem);
        write_file(&server_cert_path, chain.as_bytes(), 0o644)?;
        let until = chrono::Utc::now().timestamp() + SERVER_CERT_DAYS * 86_400;
        write_file(
            &dir.join("server.expires"),
            until.to_string().as_bytes(),
            0o644,
        )?;
        write_file(&names_path, wanted.as_bytes(), 0o644)?;
    }
    let chain = read_chain(&server_cert_path)?;
    let key = read_key(&server_key_path)?;
    Ok(TlsSetup {
        config: server_config(chain, key)?,
        ca_file: Some(ca_cert_path),
    })
}

/// The CA's subject and constraints (its dates are set where it is made).
fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "yunhe");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// The names a generated certificate covers: the public URL's host,
/// localhost, the host name, and every address of the host (so the CLI
/// works by address from the LAN too).
pub fn certificate_names(public_host: &str) -> Vec<String> {
    let mut names = vec![public_host.trim_matches(['[', ']']).to_string()];
    names.push("localhost".into());
    if let Ok(host) = nix::unistd::gethostname()
        && let Some(host) = host.to_str()
    {
        names.push(host.to_string());
    }
    names.push("127.0.0.1".into());
    names.push("::1".into());
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for addr in addrs {
            let Some(sock) = addr.address else { continue };
            if let Some(v4) = sock.as_sockaddr_in() {
                names.push(v4.ip().to_string());
            } else if let Some(v6) = sock.as_sockaddr_in6()
                && !v6.ip().is_unicast_link_local()
            {
                names.push(v6.ip().to_string());
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| !n.is_empty() && seen.insert(n.clone()));
    names
}

fn san(name: &str) -> Option<SanType> {
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => Some(SanType::IpAddress(ip)),
        Err(_) => name.to_string().try_into().ok().map(SanType::DnsName),
    }
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: path.display().to_string(),
            message: "no certificate in the file".into(),
        });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(path, e))
}

fn pem_error(path: &Path, e: rustls_pki_types::pem::Error) -> TlsError {
    match e {
        rustls_pki_types::pem::Error::Io(source) => io_error(path, source),
        other => TlsError::Pem {
            path: path.display().to_string(),
            message: other.to_string(),
        },
    }
}

fn io_error(path: &Path, source: std::io::Error) -> TlsError {
    TlsError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes a file atomically with the given mode.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|source| io_error(path, source))
}

fn days_from_now(days: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(days)
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_a_ca_and_renews_the_server_certificate_when_names_change() {
        let dir = std::env::temp_dir().join(format!("yunhe-tls-{}", short_id()));
        let names = vec!["cloudbox.lan".to_string(), "127.0.0.1".to_string()];
        local_ca(&dir, &names).expect("first start");
        let ca = std::fs::read(dir.join("ca.pem")).expect("ca");
        let server = std::fs::read(dir.join("server.pem")).expect("server");
        // Same names: nothing changes.
        local_ca(&dir, &names).expect("second start");
        assert_eq!(
            std::fs::read(dir.join("server.pem")).expect("server"),
            server
        );
        // New names: a new server certificate from the same CA.
        local_ca(&dir, &["other.lan".to_string()]).expect("renamed");
        assert_ne!(
            std::fs::read(dir.join("server.pem")).expect("server"),
            server
        );
        assert_eq!(std::fs::read(dir.join("ca.pem")).expect("ca"), ca);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("ca-key.pem"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
