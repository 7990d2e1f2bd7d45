//! TLS for the runtime Postgres pool: reads libpq's `sslmode` and `sslrootcert` from
//! `database.url` and opens connections through rustls when the URL asks for TLS.
//!
//! Managed databases (Supabase, Neon, RDS...) want `sslmode=require` at least. The same URL
//! also works for libpq (the migrations' synchronous connection), so both paths agree.
//!
//! - `disable`, `allow`, `prefer` or no `sslmode`: plain TCP (tokio-postgres' `NoTls`).
//! - `require`: encrypted, the certificate is not checked (libpq's meaning of `require`).
//! - `verify-full`: encrypted, the chain is checked against `sslrootcert` (a PEM file) or,
//!   without one (or with `sslrootcert=system`), the webpki roots; the host name must match.
//! - `verify-ca` (chain without host name) has no rustls equivalent and is refused with a
//!   message naming `verify-full`.

use crate::store::StoreError;
use diesel::ConnectionResult;
use diesel_async::AsyncPgConnection;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How the pool talks to Postgres, decided once from the URL.
#[derive(Clone)]
pub enum PgTransport {
    /// No TLS: the URL is used as it is.
    Plain,
    /// TLS through rustls; `url` is the URL tokio-postgres understands (`sslmode=require`,
    /// `sslrootcert` removed).
    Tls {
        url: String,
        connector: MakeRustlsConnect,
        mode: &'static str,
    },
}

impl std::fmt::Debug for PgTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PgTransport::Plain => f.write_str("Plain"),
            PgTransport::Tls { mode, .. } => write!(f, "Tls({mode})"),
        }
    }
}

impl PgTransport {
    /// Reads `sslmode`/`sslrootcert` from a `postgres://` URL. Errors name the parameter and
    /// never contain the URL (it holds the password).
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, q),
            None => return Ok(PgTransport::Plain),
        };
        let mut mode = None;
        let mut root_cert = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sslmode", value)) => mode = Some(value.to_owned()),
                Some(("sslrootcert", value)) => root_cert = Some(value.to_owned()),
                _ => kept.push(pair),
            }
        }
        let mode: &'static str = match mode.as_deref() {
            None | Some("disable" | "allow" | "prefer") => return Ok(PgTransport::Plain),
            Some("require") => "require",
            Some("verify-full") => "verify-full",
            Some("verify-ca") => {
                return Err(StoreError::Pool(
                    "database.url: sslmode=verify-ca is not supported; use verify-full (checks the chain and the host name) or require".into(),
                ))
            }
            Some(other) => {
                return Err(StoreError::Pool(format!(
                    "database.url: unknown sslmode {other:?} (expected disable, prefer, require or verify-full)"
                )))
            }
        };
        let config = if mode == "require" {
            ClientConfig::builder()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptOnly::new()))
                .with_no_client_auth()
        } else {
            ClientConfig::builder()
                .with_root_certificates(root_store(root_cert.as_deref())?)
                .with_no_client_auth()
        };
        kept.push("sslmode=require");
        Ok(PgTransport::Tls {
            url: format!("{base}?{}", kept.join("&")),
            connector: MakeRustlsConnect::new(config),
            mode,
        })
    }

    /// The pool's connection callback for this transport (`None`: diesel-async's default).
    pub fn setup(
        &self,
    ) -> Option<diesel_async::pooled_connection::SetupCallback<AsyncPgConnection>> {
        match self.clone() {
            PgTransport::Plain => None,
            PgTransport::Tls { url, connector, .. } => Some(Box::new(move |_| {
                connect(url.clone(), connector.clone()).boxed()
            })),
        }
    }
}

/// Opens one TLS connection and hands it to diesel-async.
pub fn connect(
    url: String,
    connector: MakeRustlsConnect,
) -> BoxFuture<'static, ConnectionResult<AsyncPgConnection>> {
    async move {
        let (client, connection) = tokio_postgres::connect(&url, connector)
            .await
            .map_err(|e| diesel::ConnectionError::BadConnection(error_chain(&e)))?;
        AsyncPgConnection::try_from_client_and_connection(client, connection).await
    }
    .boxed()
}

/// The error with its causes: tokio-postgres says only "error performing TLS handshake" and
/// keeps the reason (an unknown issuer, a name mismatch) in its source.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The roots `verify-full` checks against: the PEM file named by `sslrootcert`, else webpki's.
fn root_store(root_cert: Option<&str>) -> Result<RootCertStore, StoreError> {
    let mut store = RootCertStore::empty();
    match root_cert {
        None | Some("system") => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect())
                .map_err(|e| StoreError::Pool(format!("database.url: sslrootcert {path}: {e}")))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(StoreError::Pool(format!(
                    "database.url: sslrootcert {path} holds no usable certificate"
                )));
            }
        }
    }
    Ok(store)
}

/// `sslmode=require`: the channel is encrypted and the server proves it holds the key of the
/// certificate it sent, but the certificate itself is not checked (as with libpq).
#[derive(Debug)]
struct EncryptOnly {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl EncryptOnly {
    fn new() -> Self {
        Self {
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for EncryptOnly {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_without_tls_stay_plain() {
        crate::install_crypto_provider();
        for url in [
            "postgres://u:p@h/db",
            "postgres://u:p@h/db?sslmode=disable",
            "postgres://u:p@h/db?sslmode=prefer&application_name=x",
        ] {
            assert!(matches!(
                PgTransport::from_url(url).unwrap(),
                PgTransport::Plain
            ));
        }
    }

    #[test]
    fn tls_modes_rewrite_the_url_for_tokio_postgres() {
        crate::install_crypto_provider();
        let t = PgTransport::from_url("postgres://u:p@h/db?application_name=x&sslmode=verify-full")
            .unwrap();
        match t {
            PgTransport::Tls { url, mode, .. } => {
                assert_eq!(
                    url,
                    "postgres://u:p@h/db?application_name=x&sslmode=require"
                );
                assert_eq!(mode, "verify-full");
            }
            PgTransport::Plain => panic!("expected TLS"),
        }
        let t = PgTransport::from_url("postgres://u:p@h/db?sslmode=require").unwrap();
        assert!(matches!(
            t,
            PgTransport::Tls {
                mode: "require",
                ..
            }
        ));
    }

    #[test]
    fn bad_modes_and_missing_ca_files_are_named_without_the_password() {
        crate::install_crypto_provider();
        let err = PgTransport::from_url("postgres://u:secret@h/db?sslmode=verify-ca")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("verify-full") && !err.contains("secret"),
            "{err}"
        );
        let err = PgTransport::from_url("postgres://u:secret@h/db?sslmode=strict")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown sslmode") && !err.contains("secret"),
            "{err}"
        );
        let err = PgTransport::from_url(
            "postgres://u:secret@h/db?sslmode=verify-full&sslrootcert=/no/such/ca.pem",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/no/such/ca.pem") && !err.contains("secret"),
            "{err}"
        );
    }
}
