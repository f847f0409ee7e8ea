//! TLS for remote XAPI: rustls with the ring provider, and two certificate
//! verifiers besides the usual chain check — one pinned to a SHA-256
//! fingerprint of the leaf, one (explicitly requested) that checks nothing.
//! Both still verify the handshake signatures, so the peer must hold the
//! certificate's private key.

use std::net::TcpStream;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme, StreamOwned};

use crate::transport::{Fingerprint, TlsVerify};

/// The SHA-256 fingerprint of a DER certificate.
#[must_use]
pub fn fingerprint(der: &[u8]) -> Fingerprint {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(digest.as_ref());
    Fingerprint(bytes)
}

#[derive(Debug)]
struct PinnedOrAny {
    pin: Option<Fingerprint>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedOrAny {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = self.pin else { return Ok(ServerCertVerified::assertion()) };
        let seen = fingerprint(end_entity);
        if seen == pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate has SHA-256 fingerprint {seen}, not the pinned {pin}; if the host's \
                 certificate was renewed, check the new one on the host and pin it"
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn config(verify: &TlsVerify) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let algorithms = provider.signature_verification_algorithms;
    Ok(match verify {
        TlsVerify::SystemRoots => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no trusted root certificates were found on this system; pin the XAPI certificate's \
                            fingerprint instead"
                    .into());
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsVerify::Fingerprint(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedOrAny { pin: Some(*pin), algorithms }))
            .with_no_client_auth(),
        TlsVerify::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedOrAny { pin: None, algorithms }))
            .with_no_client_auth(),
    })
}

/// Connects TLS over `tcp` and completes the handshake, so certificate
/// errors surface here as TLS errors rather than as I/O errors later.
pub(crate) fn handshake(
    mut tcp: TcpStream,
    host: &str,
    verify: &TlsVerify,
) -> Result<StreamOwned<ClientConnection, TcpStream>, String> {
    let name =
        ServerName::try_from(host.to_owned()).map_err(|e| format!("{host:?} is not a valid server name: {e}"))?;
    let mut connection = ClientConnection::new(Arc::new(config(verify)?), name).map_err(|e| e.to_string())?;
    while connection.is_handshaking() {
        connection.complete_io(&mut tcp).map_err(|e| {
            match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(rustls::Error::General(why)) => why.clone(),
                Some(other) => other.to_string(),
                None => e.to_string(),
            }
        })?;
    }
    Ok(StreamOwned::new(connection, tcp))
}
