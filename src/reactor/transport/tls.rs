//! The TLS server configuration built from nsqd's flags (`--tls-cert`, `--tls-key`,
//! `--tls-root-ca-file`, `--tls-client-auth-policy`, `--tls-min-version`), the client
//! certificate's common name for the auth server, and the client configuration of
//! `corq bench --tls` ([`client_config`], go-nsq's `tls_root_ca_file` and
//! `tls_insecure_skip_verify`), built on the same provider.
//!
//! Crypto comes from rustls' `ring` provider: it builds from crates.io with gcc alone
//! (`aws-lc-rs`, rustls' default, needs cmake). rustls speaks TLS 1.2 and 1.3 only, so a
//! `--tls-min-version` below `tls1.2` means `tls1.2`.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};

use crate::config::Options;

/// The server's TLS configuration, or `None` when no certificate is configured.
///
/// # Errors
/// A file that cannot be read or parsed, or a key that does not fit the certificate; the
/// message names the flag.
pub fn server_config(opts: &Options) -> Result<Option<Arc<ServerConfig>>, String> {
    if !opts.tls_configured() {
        return Ok(None);
    }
    let provider = Arc::new(ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&opts.tls_cert)
        .and_then(Iterator::collect)
        .map_err(|e| format!("--tls-cert {}: {e}", opts.tls_cert))?;
    if certs.is_empty() {
        return Err(format!("--tls-cert {}: no certificate", opts.tls_cert));
    }
    let key = PrivateKeyDer::from_pem_file(&opts.tls_key)
        .map_err(|e| format!("--tls-key {}: {e}", opts.tls_key))?;
    let versions: &[&rustls::SupportedProtocolVersion] = match opts.tls_min_version {
        crate::config::TlsMinVersion::Tls13 => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS12, &rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("--tls-min-version: {e}"))?;
    let builder = match opts.tls_client_auth_policy.as_str() {
        "require" => builder.with_client_cert_verifier(Arc::new(AnyClientCert(
            provider.signature_verification_algorithms,
        ))),
        "require-verify" => {
            let roots = root_store(&opts.tls_root_ca_file)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("--tls-root-ca-file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-key {}: {e}", opts.tls_key))?;
    Ok(Some(Arc::new(cfg)))
}

/// The CA pool of `--tls-root-ca-file`.
fn root_store(path: &str) -> Result<Arc<RootCertStore>, String> {
    if path.is_empty() {
        // Go would fall back to the system pool; corq has none to offer.
        return Err("--tls-client-auth-policy require-verify needs --tls-root-ca-file".into());
    }
    load_roots(path).map(Arc::new)
}

/// The certificates of a PEM file as a CA pool; errors name `--tls-root-ca-file`.
fn load_roots(path: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("--tls-root-ca-file {path}: {e}"))?
    {
        let cert = cert.map_err(|e| format!("--tls-root-ca-file {path}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("--tls-root-ca-file {path}: {e}"))?;
    }
    Ok(roots)
}

/// A TLS client configuration (`corq bench --tls`): the server's certificate verified
/// against `root_ca_file`, or not verified at all with `insecure_skip_verify` (go-nsq's
/// `tls_insecure_skip_verify`; the handshake's signatures are still checked). TLS 1.2 and
/// 1.3, the server's provider.
///
/// # Errors
/// Neither a CA file nor `insecure_skip_verify` (corq has no system CA pool to fall back
/// to, unlike Go), or a CA file that cannot be read or holds no certificate; the message
/// names the flag.
pub fn client_config(
    root_ca_file: Option<&str>,
    insecure_skip_verify: bool,
) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("--tls: {e}"))?;
    let cfg = if insecure_skip_verify {
        let verifier = AnyServerCert(provider.signature_verification_algorithms);
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    } else {
        let path = root_ca_file.ok_or(
            "--tls needs --tls-root-ca-file PATH (the CA that signed the server's \
             certificate) or --tls-insecure-skip-verify: corq has no system CA pool",
        )?;
        let roots = load_roots(path)?;
        if roots.is_empty() {
            return Err(format!("--tls-root-ca-file {path}: no certificate"));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(cfg))
}

/// Go's `InsecureSkipVerify`: any server certificate is accepted, but the handshake's
/// signatures are checked with it (so the link is still encrypted to whoever holds its key).
#[derive(Debug)]
struct AnyServerCert(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Go's `tls.RequireAnyClientCert`: a certificate is required and its signature over the
/// handshake checked, but it is not verified against any CA.
#[derive(Debug)]
struct AnyClientCert(WebPkiSupportedAlgorithms);

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The crypto provider of both sides (and of tests' clients).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// One DER TLV: (tag, contents, what follows). `None` on anything malformed.
fn tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(n)?;
        (
            bytes.iter().fold(0usize, |a, &b| a << 8 | usize::from(b)),
            rest,
        )
    };
    let (content, rest) = rest.split_at_checked(len)?;
    Some((tag, content, rest))
}

/// The subject common name of a DER certificate (the last CN, as Go's `pkix.Name` keeps).
pub fn common_name(cert: &[u8]) -> Option<String> {
    let (_, cert, _) = tlv(cert)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    let mut fields = Vec::with_capacity(6);
    while let Some((tag, content, next)) = tlv(rest) {
        if tag != 0xa0 {
            fields.push(content); // serial, signature, issuer, validity, subject, ...
        }
        rest = next;
        if fields.len() == 5 {
            break;
        }
    }
    let mut subject = *fields.get(4)?;
    let mut cn = None;
    while let Some((_, set, next)) = tlv(subject) {
        let mut atvs = set;
        while let Some((_, atv, after)) = tlv(atvs) {
            if let Some((0x06, oid, value)) = tlv(atv) {
                if oid == [0x55, 0x04, 0x03] {
                    if let Some((0x0c | 0x13 | 0x16 | 0x14, s, _)) = tlv(value) {
                        cn = Some(String::from_utf8_lossy(s).into_owned());
                    }
                }
            }
            atvs = after;
        }
        subject = next;
    }
    cn
}
