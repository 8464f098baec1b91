//! The site's PKI: a development CA and its certificates (`mprelay certs init`), the relay's
//! master secrets and enrollment secret, and the rustls configurations built from them.
//!
//! Every configuration uses the ring crypto provider explicitly, so nothing depends on which
//! provider happens to be installed process-wide. Key and secret files are written with mode
//! 0600 and never overwritten.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SerialNumber,
};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use thiserror::Error;

use crate::envelope::MasterSecret;

/// Why PKI material could not be made or loaded. Every variant names the file at fault.
#[derive(Debug, Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The file holds no PEM certificate.
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    /// The file holds no PEM private key.
    #[error("{path}: no PEM private key found")]
    NoKey { path: PathBuf },
    /// A secret file does not hold what it should.
    #[error("{path}: {why}")]
    BadSecret { path: PathBuf, why: String },
    /// `certs init` would overwrite existing material.
    #[error("{path} already exists; refusing to overwrite PKI material")]
    Exists { path: PathBuf },
    /// The TLS configuration was refused (e.g. key does not match certificate).
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// Client certificate verification could not be configured.
    #[error("client certificate verification: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The well-known file names `certs init` writes inside its directory.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    pub dir: PathBuf,
}

impl PkiPaths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn relay_cert(&self) -> PathBuf {
        self.dir.join("relay.pem")
    }
    pub fn relay_key(&self) -> PathBuf {
        self.dir.join("relay.key")
    }
    pub fn site_cert(&self) -> PathBuf {
        self.dir.join("site-client.pem")
    }
    pub fn site_key(&self) -> PathBuf {
        self.dir.join("site-client.key")
    }
    pub fn master_secret(&self, epoch: u32) -> PathBuf {
        self.dir.join(format!("master-{epoch}.secret"))
    }
    pub fn enrollment_secret(&self) -> PathBuf {
        self.dir.join("enrollment.secret")
    }
    pub fn admin_cert(&self) -> PathBuf {
        self.dir.join("admin.pem")
    }
    pub fn admin_key(&self) -> PathBuf {
        self.dir.join("admin.key")
    }
    /// The admin API's bearer token.
    pub fn admin_token(&self) -> PathBuf {
        self.dir.join("admin.token")
    }
    pub fn agent_ca_cert(&self) -> PathBuf {
        self.dir.join("agent-ca.pem")
    }
    pub fn agent_ca_key(&self) -> PathBuf {
        self.dir.join("agent-ca.key")
    }
    /// The revocation list of agent client certificates.
    pub fn crl(&self) -> PathBuf {
        self.dir.join("agent-crl.pem")
    }
}

/// Which CA issues a client certificate. Agents and site servers get theirs from different CAs
/// so that an agent's certificate can never open the relay's site-facing listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRole {
    /// Issued by the agent CA; accepted by the agent listener when `client_auth` is on.
    Agent,
    /// Issued by the site CA; accepted by the relay's site-facing listener.
    Site,
}

impl PkiPaths {
    fn issuer_files(&self, role: ClientRole) -> (PathBuf, &'static str) {
        match role {
            ClientRole::Agent => (self.agent_ca_key(), AGENT_CA_COMMON_NAME),
            ClientRole::Site => (self.ca_key(), CA_COMMON_NAME),
        }
    }
}

/// The process-independent crypto provider every TLS configuration here uses.
///
/// The cipher suites are ring's, reordered to prefer AES-128-GCM with SHA-256: as safe as
/// AES-256-GCM for this use, and its SHA-256 key schedule runs on the SHA extensions most x86
/// servers have, where SHA-384 does not — a measurable share of a handshake (the reconnect storm).
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut p = rustls::crypto::ring::default_provider();
    let rank = |s: &rustls::SupportedCipherSuite| {
        [
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ]
        .iter()
        .position(|x| x.suite() == s.suite())
        .unwrap_or(usize::MAX)
    };
    p.cipher_suites.sort_by_key(rank);
    Arc::new(p)
}

/// Installs ring as the process-wide default provider (for libraries that ask for it). Safe to
/// call more than once.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

const CA_COMMON_NAME: &str = "mprelay site CA";
const AGENT_CA_COMMON_NAME: &str = "mprelay agent CA";

fn ca_params(common_name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "mprelay");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.key_identifier_method = KeyIdMethod::Sha256;
    p
}

fn leaf_params(
    common_name: &str,
    sans: Vec<String>,
    eku: ExtendedKeyUsagePurpose,
    serial: u64,
) -> Result<CertificateParams, PkiError> {
    let mut p = CertificateParams::new(sans)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "mprelay");
    p.distinguished_name = dn;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![eku];
    p.use_authority_key_identifier_extension = true;
    p.serial_number = Some(SerialNumber::from(serial));
    Ok(p)
}

fn random_serial() -> u64 {
    // Positive, non-zero, and unique enough for a site CA.
    (rand::random::<u64>() >> 1) | 1
}

/// What `certs init` wrote.
#[derive(Debug)]
pub struct InitReport {
    pub files: Vec<PathBuf>,
}

/// Writes a development PKI into `dir`: site CA, relay server certificate for `hosts`, site
/// client certificate, admin (console) server certificate, agent CA (for agent client
/// certificates), relay master secret (epoch 1) and enrollment secret. Refuses to overwrite.
pub fn init(dir: &Path, hosts: &[String]) -> Result<InitReport, PkiError> {
    let paths = PkiPaths::new(dir);
    fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.into(),
        source,
    })?;
    let all = [
        paths.ca_cert(),
        paths.ca_key(),
        paths.relay_cert(),
        paths.relay_key(),
        paths.site_cert(),
        paths.site_key(),
        paths.admin_cert(),
        paths.admin_key(),
        paths.admin_token(),
        paths.agent_ca_cert(),
        paths.agent_ca_key(),
        paths.master_secret(1),
        paths.enrollment_secret(),
    ];
    if let Some(p) = all.iter().find(|p| p.exists()) {
        return Err(PkiError::Exists { path: p.clone() });
    }

    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params(CA_COMMON_NAME).self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params(CA_COMMON_NAME), &ca_key);
    let agent_ca_key = KeyPair::generate()?;
    let agent_ca_cert = ca_params(AGENT_CA_COMMON_NAME).self_signed(&agent_ca_key)?;

    let admin_key = KeyPair::generate()?;
    let admin_cert = leaf_params(
        "mprelay site console",
        hosts.to_vec(),
        ExtendedKeyUsagePurpose::ServerAuth,
        random_serial(),
    )?
    .signed_by(&admin_key, &issuer)?;

    let relay_key = KeyPair::generate()?;
    let relay_cert = leaf_params(
        "mprelay relay",
        hosts.to_vec(),
        ExtendedKeyUsagePurpose::ServerAuth,
        random_serial(),
    )?
    .signed_by(&relay_key, &issuer)?;

    let site_key = KeyPair::generate()?;
    let site_cert = leaf_params(
        "mprelay site server",
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
        random_serial(),
    )?
    .signed_by(&site_key, &issuer)?;

    write_public(&paths.ca_cert(), ca_cert.pem().as_bytes())?;
    write_secret(&paths.ca_key(), ca_key.serialize_pem().as_bytes())?;
    write_public(&paths.relay_cert(), relay_cert.pem().as_bytes())?;
    write_secret(&paths.relay_key(), relay_key.serialize_pem().as_bytes())?;
    write_public(&paths.site_cert(), site_cert.pem().as_bytes())?;
    write_secret(&paths.site_key(), site_key.serialize_pem().as_bytes())?;
    write_public(&paths.admin_cert(), admin_cert.pem().as_bytes())?;
    write_secret(&paths.admin_key(), admin_key.serialize_pem().as_bytes())?;
    write_public(&paths.agent_ca_cert(), agent_ca_cert.pem().as_bytes())?;
    write_secret(
        &paths.agent_ca_key(),
        agent_ca_key.serialize_pem().as_bytes(),
    )?;
    write_secret(
        &paths.master_secret(1),
        format!("{}\n", hex::encode(MasterSecret::generate().expose())).as_bytes(),
    )?;
    write_secret(
        &paths.enrollment_secret(),
        format!("{}\n", hex::encode(rand::random::<[u8; 24]>())).as_bytes(),
    )?;
    // The admin API's bearer token: 64 hex characters, well past what the API accepts.
    write_secret(
        &paths.admin_token(),
        format!("{}\n", hex::encode(rand::random::<[u8; 32]>())).as_bytes(),
    )?;
    Ok(InitReport {
        files: all.to_vec(),
    })
}

/// Issues a client certificate (for an agent when `client_auth` is on, or for another site
/// server), written as `<name>.pem` and `<name>.key` in `out_dir`.
pub fn issue_client(
    paths: &PkiPaths,
    role: ClientRole,
    name: &str,
    out_dir: &Path,
) -> Result<(PathBuf, PathBuf), PkiError> {
    let (ca_key_path, ca_name) = paths.issuer_files(role);
    issue_leaf(
        &ca_key_path,
        ca_name,
        name,
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
        out_dir,
    )
}

/// Issues a server certificate from the site CA for `hosts` (a relay's, renewed or for another
/// relay), written as `<name>.pem` and `<name>.key` in `out_dir`.
pub fn issue_server(
    paths: &PkiPaths,
    name: &str,
    hosts: &[String],
    out_dir: &Path,
) -> Result<(PathBuf, PathBuf), PkiError> {
    issue_leaf(
        &paths.ca_key(),
        CA_COMMON_NAME,
        name,
        hosts.to_vec(),
        ExtendedKeyUsagePurpose::ServerAuth,
        out_dir,
    )
}

fn issue_leaf(
    ca_key_path: &Path,
    ca_name: &str,
    name: &str,
    sans: Vec<String>,
    eku: ExtendedKeyUsagePurpose,
    out_dir: &Path,
) -> Result<(PathBuf, PathBuf), PkiError> {
    let ca_key = load_key_pair(ca_key_path)?;
    let issuer = Issuer::new(ca_params(ca_name), &ca_key);
    let key = KeyPair::generate()?;
    let cert = leaf_params(name, sans, eku, random_serial())?.signed_by(&key, &issuer)?;
    let cert_path = out_dir.join(format!("{name}.pem"));
    let key_path = out_dir.join(format!("{name}.key"));
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(PkiError::Exists { path: p.clone() });
        }
    }
    write_public(&cert_path, cert.pem().as_bytes())?;
    write_secret(&key_path, key.serialize_pem().as_bytes())?;
    Ok((cert_path, key_path))
}

/// Writes (replacing) the agent CA's revocation list, revoking the certificates with these
/// serials.
pub fn write_crl(
    paths: &PkiPaths,
    revoked_serials: &[Vec<u8>],
    crl_number: u64,
) -> Result<PathBuf, PkiError> {
    let (ca_key_path, ca_name) = paths.issuer_files(ClientRole::Agent);
    let ca_key = load_key_pair(&ca_key_path)?;
    let issuer = Issuer::new(ca_params(ca_name), &ca_key);
    let now = time_now();
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update: now + std::time::Duration::from_secs(30 * 86_400),
        crl_number: SerialNumber::from(crl_number),
        issuing_distribution_point: None,
        revoked_certs: revoked_serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from_slice(s),
                revocation_time: now,
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&issuer)?;
    let path = paths.crl();
    let tmp = path.with_extension("pem.tmp");
    let _ = fs::remove_file(&tmp);
    write_public(&tmp, crl.pem()?.as_bytes())?;
    fs::rename(&tmp, &path).map_err(|source| PkiError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn load_key_pair(path: &Path) -> Result<KeyPair, PkiError> {
    let pem = read(path)?;
    let text = String::from_utf8(pem).map_err(|_| PkiError::NoKey { path: path.into() })?;
    KeyPair::from_pem(&text).map_err(|_| PkiError::NoKey { path: path.into() })
}

/// The serial number of the first certificate in a PEM file (for revocation).
pub fn certificate_serial(path: &Path) -> Result<Vec<u8>, PkiError> {
    let cert = load_certs(path)?.remove(0);
    serial_from_der(&cert).ok_or_else(|| PkiError::NoCertificate { path: path.into() })
}

/// Reads the serial out of a DER certificate: SEQUENCE { SEQUENCE (tbs) { [0] version?, INTEGER
/// serial, … } }. Small enough to do by hand rather than pull in an X.509 parser.
fn serial_from_der(der: &[u8]) -> Option<Vec<u8>> {
    fn header(b: &[u8]) -> Option<(u8, usize, usize)> {
        let tag = *b.first()?;
        let l0 = *b.get(1)? as usize;
        if l0 < 0x80 {
            return Some((tag, 2, l0));
        }
        let n = l0 & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        Some((tag, 2 + n, len))
    }
    let (t, h, _) = header(der)?;
    if t != 0x30 {
        return None;
    }
    let tbs = der.get(h..)?;
    let (t, h, _) = header(tbs)?;
    if t != 0x30 {
        return None;
    }
    let mut rest = tbs.get(h..)?;
    let (t, h, l) = header(rest)?;
    if t == 0xa0 {
        rest = rest.get(h + l..)?;
    }
    let (t, h, l) = header(rest)?;
    if t != 0x02 {
        return None;
    }
    let mut serial = rest.get(h..h + l)?.to_vec();
    while serial.len() > 1 && serial[0] == 0 {
        serial.remove(0);
    }
    Some(serial)
}

fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    fs::read(path).map_err(|source| PkiError::Io {
        path: path.into(),
        source,
    })
}

/// Writes a file readable by its owner only (mode 0600), failing if it exists.
pub fn write_secret(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    write_new(path, contents, 0o600)
}

fn write_public(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    write_new(path, contents, 0o644)
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.into(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    // The umask may have narrowed the mode; make it exactly what we asked for.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io)?;
    f.write_all(contents).map_err(io)?;
    f.sync_all().map_err(io)
}

/// All certificates in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| PkiError::NoCertificate { path: path.into() })?;
    if certs.is_empty() {
        return Err(PkiError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| PkiError::NoKey { path: path.into() })
}

/// CRLs in PEM files.
pub fn load_crls(
    paths: &[PathBuf],
) -> Result<Vec<CertificateRevocationListDer<'static>>, PkiError> {
    let mut out = Vec::new();
    for path in paths {
        let pem = read(path)?;
        let crls: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|_| PkiError::BadSecret {
                path: path.clone(),
                why: "not a PEM certificate revocation list".into(),
            })?;
        if crls.is_empty() {
            return Err(PkiError::BadSecret {
                path: path.clone(),
                why: "no PEM certificate revocation list found".into(),
            });
        }
        out.extend(crls);
    }
    Ok(out)
}

/// A master secret file: 64 hex characters (32 bytes), surrounding whitespace ignored.
pub fn load_master_secret(path: &Path) -> Result<MasterSecret, PkiError> {
    let text = read(path)?;
    let text = String::from_utf8_lossy(&text);
    let mut b = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut b).map_err(|_| PkiError::BadSecret {
        path: path.into(),
        why: "a master secret must be 64 hex characters (32 bytes)".into(),
    })?;
    Ok(MasterSecret::from_bytes(b))
}

/// The enrollment secret file: one line of at least 16 characters.
pub fn load_enrollment_secret(path: &Path) -> Result<String, PkiError> {
    let text = read(path)?;
    let s = String::from_utf8(text)
        .map_err(|_| PkiError::BadSecret {
            path: path.into(),
            why: "the enrollment secret must be UTF-8 text".into(),
        })?
        .trim()
        .to_string();
    if s.len() < 16 {
        return Err(PkiError::BadSecret {
            path: path.into(),
            why: "the enrollment secret must be at least 16 characters".into(),
        });
    }
    Ok(s)
}

/// Whether and how a listener asks for client certificates.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    None,
    /// Verified against these roots (and CRLs) when presented; anonymous clients allowed.
    Optional {
        roots: Vec<CertificateDer<'static>>,
        crls: Vec<CertificateRevocationListDer<'static>>,
    },
    /// Every client must present a certificate chaining to these roots, not revoked by the CRLs.
    Required {
        roots: Vec<CertificateDer<'static>>,
        crls: Vec<CertificateRevocationListDer<'static>>,
    },
}

fn root_store(roots: &[CertificateDer<'static>]) -> Result<RootCertStore, PkiError> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add(r.clone())?;
    }
    Ok(store)
}

/// A server configuration offering HTTP/2 and HTTP/1.1 over TLS 1.3 and 1.2.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_auth: ClientAuth,
) -> Result<ServerConfig, PkiError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional { roots, crls } => {
            let v = WebPkiClientVerifier::builder_with_provider(
                Arc::new(root_store(&roots)?),
                provider.clone(),
            )
            .with_crls(crls)
            .allow_unauthenticated()
            .build()?;
            builder.with_client_cert_verifier(v)
        }
        ClientAuth::Required { roots, crls } => {
            let v = WebPkiClientVerifier::builder_with_provider(
                Arc::new(root_store(&roots)?),
                provider.clone(),
            )
            .with_crls(crls)
            .build()?;
            builder.with_client_cert_verifier(v)
        }
    };
    let mut cfg = builder.with_single_cert(certs, key)?;
    // HTTP/1.1 first: rustls picks the first protocol of this list the client offers, so an
    // agent offering both (as mprelay's does) gets HTTP/1.1. An agent has one request in flight
    // at a time, so HTTP/2's streams buy it nothing, while an idle HTTP/1.1 connection costs the
    // relay about a quarter less memory and a request about a sixth less CPU (`mprelay bench
    // connections`, `mprelay bench intake --http 1|2`). A client offering only h2 still gets it.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec(), b"h2".to_vec()];
    // The server's order decides, so every client gets the cheaper suite.
    cfg.ignore_client_order = true;
    // Stateless session tickets (keys rotate every 6 hours, in memory only): an agent that
    // reconnects resumes without certificate signing and verification, whatever the number of
    // agents, where the default server-side cache holds 256 sessions.
    cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
    cfg.send_tls13_tickets = 1;
    Ok(cfg)
}

/// A client configuration trusting `roots`, presenting `identity` when given. `alpn` lists the
/// protocols to offer (e.g. `["h2", "http/1.1"]`).
pub fn client_config(
    roots: &[CertificateDer<'static>],
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, PkiError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(root_store(roots)?);
    let mut cfg = match identity {
        Some((certs, key)) => builder.with_client_auth_cert(certs, key)?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_everything_with_private_modes_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let report = init(dir.path(), &["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert_eq!(report.files.len(), 13);
        let paths = PkiPaths::new(dir.path());
        for key in [
            paths.ca_key(),
            paths.relay_key(),
            paths.site_key(),
            paths.admin_key(),
            paths.admin_token(),
            paths.agent_ca_key(),
            paths.master_secret(1),
            paths.enrollment_secret(),
        ] {
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        load_master_secret(&paths.master_secret(1)).unwrap();
        assert!(
            load_enrollment_secret(&paths.enrollment_secret())
                .unwrap()
                .len()
                >= 16
        );
        let certs = load_certs(&paths.relay_cert()).unwrap();
        let key = load_private_key(&paths.relay_key()).unwrap();
        server_config(certs, key, ClientAuth::None).unwrap();
        assert!(matches!(
            init(dir.path(), &["localhost".into()]),
            Err(PkiError::Exists { .. })
        ));
    }

    #[test]
    fn the_cheaper_suite_comes_first_and_nothing_is_lost() {
        let p = provider();
        assert_eq!(
            p.cipher_suites[0].suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        assert_eq!(
            p.cipher_suites.len(),
            rustls::crypto::ring::default_provider().cipher_suites.len()
        );
    }

    #[test]
    fn bad_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("junk.pem");
        fs::write(&p, "not pem").unwrap();
        let e = load_certs(&p).unwrap_err().to_string();
        assert!(e.contains("junk.pem"), "{e}");
        let e = load_master_secret(&p).unwrap_err().to_string();
        assert!(e.contains("64 hex"), "{e}");
        let e = load_private_key(&dir.path().join("missing.key"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.key"), "{e}");
    }

    #[test]
    fn serial_is_read_back_from_issued_certificate() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &["localhost".into()]).unwrap();
        let paths = PkiPaths::new(dir.path());
        let (cert, _) = issue_client(&paths, ClientRole::Agent, "agent-1", dir.path()).unwrap();
        let serial = certificate_serial(&cert).unwrap();
        assert!(!serial.is_empty() && serial.len() <= 8);
        let crl = write_crl(&paths, &[serial], 1).unwrap();
        assert_eq!(load_crls(&[crl]).unwrap().len(), 1);
    }
}
