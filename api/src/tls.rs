//! TLS to PostgreSQL, with rustls: `sslmode` as libpq means it.
//!
//! - `disable`: plain TCP (the default for loopback hosts and Unix sockets);
//! - `prefer`: TLS when the server offers it, the certificate not verified
//!   (the default for any other host);
//! - `require`: TLS or no connection, the certificate not verified (libpq's
//!   `require` without a root certificate);
//! - `verify-full`: TLS, the certificate chained to `FRONTEND_DB_SSLROOTCERT`
//!   (else the system's roots) and issued for the host name connected to.
//!
//! SECURITY: only `verify-full` stops an active man in the middle; start-up
//! warns when a remote database is reached with less. A connection URL's
//! own `sslmode=`/`sslrootcert=` win over the variables.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider},
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    DigitallySignedStruct, SignatureScheme,
};
use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

impl SslMode {
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            "disable" => Some(Self::Disable),
            "prefer" => Some(Self::Prefer),
            "require" => Some(Self::Require),
            "verify-full" => Some(Self::VerifyFull),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// How a connection uses TLS.
#[derive(Clone, Debug)]
pub struct DbTls {
    pub mode: SslMode,
    /// PEM file of the certificate authorities trusted for `verify-full`.
    pub root_cert: Option<PathBuf>,
}

/// Whether every host of a connection is this machine (or a Unix socket).
pub fn all_local(hosts: &[Host]) -> bool {
    !hosts.is_empty()
        && hosts.iter().all(|h| match h {
            Host::Tcp(name) => {
                name == "localhost"
                    || name
                        .trim_matches(['[', ']'])
                        .parse::<IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            #[cfg(unix)]
            Host::Unix(_) => true,
        })
}

/// Removes `name=value` from a connection string (URL query or key=value
/// form), returning the rest and the value. tokio-postgres knows no
/// `verify-full` and no `sslrootcert`, so they are taken out before it parses.
pub fn take_param(conninfo: &str, name: &str) -> (String, Option<String>) {
    let is_url = conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://");
    if is_url {
        let Some((base, query)) = conninfo.split_once('?') else {
            return (conninfo.to_owned(), None);
        };
        let mut found = None;
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| match pair.split_once('=') {
                Some((k, v)) if k == name => {
                    found = Some(
                        url::form_urlencoded::parse(format!("v={v}").as_bytes())
                            .next()
                            .map(|(_, v)| v.into_owned())
                            .unwrap_or_default(),
                    );
                    false
                }
                _ => true,
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        (rest, found)
    } else {
        let mut found = None;
        let kept: Vec<&str> = conninfo
            .split_whitespace()
            .filter(|pair| match pair.split_once('=') {
                Some((k, v)) if k == name => {
                    found = Some(v.trim_matches('\'').to_owned());
                    false
                }
                _ => true,
            })
            .collect();
        (kept.join(" "), found)
    }
}

/// The TLS of a connection to `hosts`: the connection string's own
/// `sslmode`/`sslrootcert` (`url_mode`, `url_root`), else
/// `FRONTEND_DB_SSLMODE`/`FRONTEND_DB_SSLROOTCERT` read through `var`, else
/// the default for the hosts. Errors name the variable, never a value
/// (the connector is built once, so a bad root certificate stops start-up).
pub fn from_settings(
    url_mode: Option<String>,
    url_root: Option<String>,
    var: &impl Fn(&str) -> Option<String>,
    hosts: &[Host],
) -> Result<DbTls, String> {
    let mode =
        match url_mode {
            Some(m) => Some(SslMode::parse(&m).ok_or(
                "the database URL's sslmode must be disable, prefer, require or verify-full",
            )?),
            None => match var("FRONTEND_DB_SSLMODE") {
                Some(m) => Some(SslMode::parse(&m).ok_or(
                    "FRONTEND_DB_SSLMODE must be disable, prefer, require or verify-full",
                )?),
                None => None,
            },
        };
    let root = url_root
        .or_else(|| var("FRONTEND_DB_SSLROOTCERT"))
        .map(|p| PathBuf::from(p.trim()));
    let tls = DbTls::resolve(mode, root, hosts);
    tls.connector()?;
    Ok(tls)
}

impl DbTls {
    /// The mode of a connection to `hosts`: `explicit` (the URL's, else the
    /// variable's), else `disable` for local hosts and `prefer` otherwise.
    pub fn resolve(explicit: Option<SslMode>, root_cert: Option<PathBuf>, hosts: &[Host]) -> Self {
        let mode = explicit.unwrap_or(if all_local(hosts) {
            SslMode::Disable
        } else {
            SslMode::Prefer
        });
        Self { mode, root_cert }
    }

    /// tokio-postgres's own mode (it negotiates; rustls verifies).
    pub fn pg_mode(&self) -> PgSslMode {
        match self.mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyFull => PgSslMode::Require,
        }
    }

    /// The TLS connector for this mode.
    pub fn connector(&self) -> Result<MakeRustlsConnect, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?;
        let config = match self.mode {
            SslMode::VerifyFull => builder
                .with_root_certificates(self.roots()?)
                .with_no_client_auth(),
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
                .with_no_client_auth(),
        };
        Ok(MakeRustlsConnect::new(config))
    }

    fn roots(&self) -> Result<rustls::RootCertStore, String> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                for cert in read_pem_certs(path)? {
                    roots.add(cert).map_err(|e| {
                        format!(
                            "FRONTEND_DB_SSLROOTCERT ({}) holds an unusable certificate: {e}",
                            path.display()
                        )
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = roots.add(cert);
                }
            }
        }
        if roots.is_empty() {
            return Err(
                "sslmode=verify-full needs FRONTEND_DB_SSLROOTCERT (or sslrootcert=): no trusted certificate authority found"
                    .into(),
            );
        }
        Ok(roots)
    }
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| {
            format!(
                "FRONTEND_DB_SSLROOTCERT ({}) cannot be read: {e}",
                path.display()
            )
        })?
        .collect();
    let certs = certs.map_err(|e| {
        format!(
            "FRONTEND_DB_SSLROOTCERT ({}) is not PEM: {e}",
            path.display()
        )
    })?;
    if certs.is_empty() {
        return Err(format!(
            "FRONTEND_DB_SSLROOTCERT ({}) holds no certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// `prefer` and `require`: the channel is encrypted and the handshake's
/// signatures are checked, but the certificate's issuer and name are not
/// (libpq's meaning of these modes). Use `verify-full` against an attacker
/// on the network path.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

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
        verify_tls12_signature(
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
        verify_tls13_signature(
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
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_urls_and_key_value_strings() {
        assert_eq!(
            take_param(
                "postgresql://u:p@db.example:5432/v?sslmode=verify-full&application_name=x",
                "sslmode"
            ),
            (
                "postgresql://u:p@db.example:5432/v?application_name=x".into(),
                Some("verify-full".into())
            )
        );
        assert_eq!(
            take_param(
                "postgresql://u@h/v?sslrootcert=%2Fetc%2Fca.pem",
                "sslrootcert"
            ),
            ("postgresql://u@h/v".into(), Some("/etc/ca.pem".into()))
        );
        assert_eq!(
            take_param("host=h user=u sslmode=require dbname=v", "sslmode"),
            ("host=h user=u dbname=v".into(), Some("require".into()))
        );
        assert_eq!(take_param("postgresql://u@h/v", "sslmode").1, None);
    }

    #[test]
    fn loopback_hosts_default_to_disable_and_others_to_prefer() {
        let tcp = |h: &str| vec![Host::Tcp(h.into())];
        for local in ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.53"] {
            assert_eq!(
                DbTls::resolve(None, None, &tcp(local)).mode,
                SslMode::Disable,
                "{local}"
            );
        }
        for remote in ["db.example.com", "10.0.0.5", "postgres"] {
            assert_eq!(
                DbTls::resolve(None, None, &tcp(remote)).mode,
                SslMode::Prefer,
                "{remote}"
            );
        }
        assert_eq!(
            DbTls::resolve(Some(SslMode::VerifyFull), None, &tcp("127.0.0.1")).mode,
            SslMode::VerifyFull
        );
        assert_eq!(SslMode::parse("verify-ca"), None);
    }
}
