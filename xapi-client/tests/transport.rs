//! Transports: the unix socket, HTTPS pinned to the right and a wrong
//! fingerprint, unverified HTTPS only on request, the system roots refusing a
//! self-signed certificate, pinned redirects to the master, and timeouts.

#![allow(clippy::unwrap_used)] // test helpers: a failed step is a failed test

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use xapi_client::api::pool;
use xapi_client::tls::fingerprint;
use xapi_client::{Client, Credentials, Endpoint, Error, Fingerprint, Secret, Timeouts, TlsVerify};
use xapi_emulator::{AcceptAll, Config, Emulator};

fn root() -> Credentials {
    Credentials { user: "root".into(), password: Secret::new("xenroot") }
}

/// Serves `emulator` over TLS with a fresh self-signed certificate on
/// `address`; returns the port and the certificate's fingerprint.
fn serve_tls(emulator: Emulator, address: &str) -> (u16, Fingerprint) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let der: CertificateDer<'static> = certified.cert.der().clone();
    let pin = fingerprint(&der);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind(address).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let emulator = emulator.clone();
            let config = Arc::clone(&config);
            std::thread::spawn(move || {
                let connection = ServerConnection::new(config).unwrap();
                emulator.serve_connection(StreamOwned::new(connection, tcp), false);
            });
        }
    });
    (port, pin)
}

fn https(port: u16, verify: TlsVerify) -> Client {
    Client::new(Endpoint::Https { host: "127.0.0.1".into(), port, verify }, Timeouts::default())
}

#[test]
fn https_pinned_to_the_right_fingerprint_works() {
    let emulator = Emulator::new(Config::default(), AcceptAll);
    let (port, pin) = serve_tls(emulator.clone(), "127.0.0.1:0");
    let session = https(port, TlsVerify::Fingerprint(pin)).login(&root(), "nvmetcp-test").unwrap();
    pool::the_pool(&session).unwrap();
    drop(session);
    assert_eq!(emulator.open_sessions(), 0);
    // XAPI's colon-separated spelling parses back to the same pin.
    assert_eq!(pin.to_string().parse::<Fingerprint>().unwrap(), pin);
}

#[test]
fn a_wrong_fingerprint_is_refused_and_both_are_named() {
    let (port, pin) = serve_tls(Emulator::new(Config::default(), AcceptAll), "127.0.0.1:0");
    let wrong = Fingerprint([0xAB; 32]);
    let error = https(port, TlsVerify::Fingerprint(wrong)).login(&root(), "nvmetcp-test").unwrap_err();
    let Error::Tls { why, .. } = &error else { panic!("{error:?}") };
    assert!(why.contains(&pin.to_string()) && why.contains(&wrong.to_string()), "{why}");
}

#[test]
fn self_signed_certificates_fail_the_system_roots_and_pass_only_when_unverified() {
    let (port, _) = serve_tls(Emulator::new(Config::default(), AcceptAll), "127.0.0.1:0");
    let error = https(port, TlsVerify::SystemRoots).login(&root(), "nvmetcp-test").unwrap_err();
    assert!(matches!(error, Error::Tls { .. }), "{error:?}");
    https(port, TlsVerify::Insecure).login(&root(), "nvmetcp-test").unwrap();
}

#[test]
fn a_pinned_redirect_pins_the_master_the_member_vouches_for() {
    let master = Emulator::new(Config::default(), AcceptAll);
    let (port, master_pin) = serve_tls(master.clone(), "127.0.0.1:0");
    let member = Emulator::new(
        Config {
            member_of: Some("127.0.0.1".into()),
            master_thumbprint: Some(master_pin.to_string()),
            ..Config::default()
        },
        AcceptAll,
    );
    let (member_port, member_pin) = serve_tls(member, &format!("127.0.0.2:{port}"));
    assert_eq!(member_port, port);
    let client = Client::new(
        Endpoint::Https { host: "127.0.0.2".into(), port, verify: TlsVerify::Fingerprint(member_pin) },
        Timeouts::default(),
    );
    let session = client.login(&root(), "nvmetcp-test").unwrap();
    assert_eq!(
        session.endpoint(),
        &Endpoint::Https { host: "127.0.0.1".into(), port, verify: TlsVerify::Fingerprint(master_pin) }
    );
}

#[test]
fn a_silent_server_times_out_within_the_limit() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(2).collect();
        std::thread::sleep(Duration::from_secs(30));
        drop(held);
    });
    let limits = Timeouts { connect: Duration::from_secs(1), call: Duration::from_millis(300) };
    for endpoint in [
        Endpoint::Http { host: "127.0.0.1".into(), port },
        Endpoint::Https { host: "127.0.0.1".into(), port, verify: TlsVerify::Insecure },
    ] {
        let started = Instant::now();
        let error = Client::new(endpoint.clone(), limits).login(&root(), "nvmetcp-test").unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{endpoint}: {:?}", started.elapsed());
        assert!(matches!(error, Error::Timeout { .. } | Error::Tls { .. }), "{endpoint}: {error:?}");
        assert!(error.to_string().contains("127.0.0.1"), "{error}");
    }
}

#[test]
fn nobody_listening_is_a_connect_error_naming_the_endpoint() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let error = Client::new(Endpoint::Http { host: "127.0.0.1".into(), port }, Timeouts::default())
        .login(&root(), "x")
        .unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    assert!(error.to_string().contains(&format!("http://127.0.0.1:{port}")), "{error}");
    let dir = tempfile::tempdir().unwrap();
    let error = Client::new(Endpoint::Unix(dir.path().join("xapi")), Timeouts::default())
        .login(&Credentials::local_root(), "x")
        .unwrap_err();
    assert!(error.to_string().contains("unix:") && error.to_string().contains("xapi"), "{error}");
}

#[test]
fn endpoints_parse_and_bad_ones_say_what_to_write() {
    assert_eq!(Endpoint::parse("/var/lib/xcp/xapi", TlsVerify::Insecure).unwrap(), Endpoint::dom0());
    assert_eq!(
        Endpoint::parse("https://[2001:db8::1]:8443/", TlsVerify::Insecure).unwrap(),
        Endpoint::Https { host: "2001:db8::1".into(), port: 8443, verify: TlsVerify::Insecure }
    );
    assert_eq!(
        Endpoint::parse("https://pool.example", TlsVerify::SystemRoots).unwrap().to_string(),
        "https://pool.example:443"
    );
    for bad in ["pool.example", "ftp://x", "https://:1", "https://h:99999"] {
        assert!(matches!(Endpoint::parse(bad, TlsVerify::SystemRoots), Err(Error::Usage(_))), "{bad}");
    }
    assert!("sha256:00".parse::<Fingerprint>().is_err());
}
