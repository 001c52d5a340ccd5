//! libpq's TLS settings on top of tokio-postgres, with rustls.
//!
//! tokio-postgres knows `sslmode` disable, prefer and require, and no `sslrootcert`; a DSN
//! written for psql says `sslmode=verify-full sslrootcert=/etc/ssl/db-ca.pem`. Those two are
//! taken off the connection string here and become the connector:
//!
//! | sslmode | encrypted | certificate checked |
//! |---|---|---|
//! | disable | no | - |
//! | allow, prefer (default) | when the server offers it | no (as libpq) |
//! | require | yes, or the connection fails | only when `sslrootcert` is given (as libpq) |
//! | verify-ca | yes | chain to `sslrootcert` (default `~/.postgresql/root.crt`; `system`: the OS's roots) |
//! | verify-full | yes | chain, and the host name |

use std::str::FromStr;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};

pub enum Tls {
    Off,
    /// Encrypted when the server offers (or, with `require`, must offer) it; not verified.
    Encrypt,
    Verify {
        roots: Arc<RootCertStore>,
        hostname: bool,
    },
}

/// The connection string as tokio-postgres takes it, and how to secure it.
pub fn config(dsn: &str) -> Result<(Config, Tls), String> {
    let (rest, mode, rootcert) = split(dsn);
    let mut config = Config::from_str(&rest).map_err(|e| e.to_string())?;
    let mode = mode.unwrap_or_else(|| "prefer".into());
    let roots = |required: bool| -> Result<Option<Arc<RootCertStore>>, String> {
        let path = match &rootcert {
            Some(p) => p.clone(),
            None if required => std::env::var("HOME")
                .map(|h| format!("{h}/.postgresql/root.crt"))
                .unwrap_or_default(),
            None => return Ok(None),
        };
        load_roots(&path).map(|r| Some(Arc::new(r)))
    };
    let tls = match mode.as_str() {
        "disable" => {
            config.ssl_mode(SslMode::Disable);
            Tls::Off
        }
        "allow" | "prefer" => {
            config.ssl_mode(SslMode::Prefer);
            Tls::Encrypt
        }
        "require" => {
            config.ssl_mode(SslMode::Require);
            match roots(false)? {
                Some(roots) => Tls::Verify {
                    roots,
                    hostname: false,
                },
                None => Tls::Encrypt,
            }
        }
        "verify-ca" | "verify-full" => {
            config.ssl_mode(SslMode::Require);
            Tls::Verify {
                roots: roots(true)?.expect("required roots"),
                hostname: mode == "verify-full",
            }
        }
        other => {
            return Err(format!(
                "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
            ));
        }
    };
    Ok((config, tls))
}

/// An error with its causes (a TLS failure says why).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}

/// Connects and drives the connection in the background.
pub async fn connect(config: &Config, tls: &Tls) -> Result<Client, tokio_postgres::Error> {
    match tls {
        Tls::Off => {
            let (client, connection) = config.connect(NoTls).await?;
            tokio::spawn(connection);
            Ok(client)
        }
        Tls::Encrypt | Tls::Verify { .. } => {
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new(client_config(tls));
            let (client, connection) = config.connect(connector).await?;
            tokio::spawn(connection);
            Ok(client)
        }
    }
}

fn client_config(tls: &Tls) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the default protocol versions");
    let verifier: Arc<dyn ServerCertVerifier> = match tls {
        Tls::Verify { roots, hostname } => {
            let webpki = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider)
                .build()
                .expect("a verifier for the roots");
            if *hostname {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
        _ => Arc::new(Unverified(provider)),
    };
    builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth()
}

fn load_roots(path: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    if path == "system" {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
    } else {
        let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("sslrootcert {path}: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("sslrootcert {path}: {e}"))?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("sslrootcert {path}: {e}"))?;
        }
    }
    if roots.is_empty() {
        return Err(format!("sslrootcert {path}: no certificate in it"));
    }
    Ok(roots)
}

/// `sslmode` and `sslrootcert` taken off a `key=value` connection string (values may be
/// single-quoted) or a `postgres://` URL's query; the rest as written.
fn split(dsn: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root) = (None, None);
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        let Some((base, query)) = dsn.split_once('?') else {
            return (dsn.to_string(), None, None);
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|kv| match kv.split_once('=') {
                Some(("sslmode", v)) => {
                    mode = Some(v.to_string());
                    false
                }
                Some(("sslrootcert", v)) => {
                    root = Some(v.to_string());
                    false
                }
                _ => true,
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, mode, root);
    }
    let mut kept = Vec::new();
    let mut chars = dsn.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        // key
        let mut key = String::new();
        while let Some(&(_, c)) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|&(_, c)| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek().is_some_and(|&(_, c)| c == '=') {
            chars.next();
            while chars.peek().is_some_and(|&(_, c)| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek().is_some_and(|&(_, c)| c == '\'') {
                chars.next();
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                value.push(n);
                            }
                        }
                        '\'' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        let end = chars.peek().map_or(dsn.len(), |&(i, _)| i);
        match key.as_str() {
            "sslmode" => mode = Some(value),
            "sslrootcert" => root = Some(value),
            _ => kept.push(&dsn[start..end]),
        }
    }
    (kept.join(" "), mode, root)
}

/// `verify-ca`: the chain must lead to a trusted root; the name in it is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a root: encrypted, any certificate (libpq's behaviour); the
/// handshake's signatures are still checked.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn ssl_settings_come_off_the_connection_string_and_the_rest_stays_as_written() {
        let (rest, mode, root) = split(
            "host=db port=5432 sslmode=verify-full  password='a b\\'c' sslrootcert='/etc/my ca.pem' user=x",
        );
        assert_eq!(rest, "host=db port=5432 password='a b\\'c' user=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/etc/my ca.pem"));
        let (rest, mode, root) =
            split("postgres://u@db/app?sslmode=require&application_name=x&sslrootcert=/ca.pem");
        assert_eq!(rest, "postgres://u@db/app?application_name=x");
        assert_eq!(mode.as_deref(), Some("require"));
        assert_eq!(root.as_deref(), Some("/ca.pem"));
        assert_eq!(split("host=db").0, "host=db");
        assert_eq!(
            split("host = db sslmode = disable").1.as_deref(),
            Some("disable")
        );
    }
}
