//! HTTPS served by the service itself with a certificate of `patrol tls self-signed`: a
//! client that trusts it logs in, one that does not is refused, plain HTTP and silent
//! clients on the port harm no one, and unusable certificate files stop the start with a
//! message naming the file. (The `patrol tls` command itself runs in
//! server/tests/binary.rs, where the binary is at hand.)

use std::{io::Write, path::Path, time::Duration};

use api_tests::{PASSWORD, TestServer};
use patrol_server::{settings::TlsFiles, tls};
use serde_json::json;

const HOSTS: [&str; 2] = ["127.0.0.1", "localhost"];

fn hosts() -> Vec<String> {
    HOSTS.map(str::to_owned).to_vec()
}

/// A self-signed certificate for 127.0.0.1 and localhost in `dir`.
fn certificate(dir: &Path) -> TlsFiles {
    let written = tls::write_self_signed(dir, &hosts(), 30, false).expect("certificate written");
    assert_eq!(written.len(), 3, "{written:?}");
    TlsFiles {
        cert: dir.join(tls::CERT_FILE),
        key: dir.join(tls::KEY_FILE),
    }
}

/// A client that trusts only the CA certificate in `dir` (what a phone installs).
fn trusting_client(dir: &Path) -> reqwest::Client {
    let ca = std::fs::read(dir.join(tls::CA_FILE)).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn https_server(dir: &Path) -> TestServer {
    let files = certificate(dir);
    TestServer::start_with(|s| s.tls = Some(files)).await
}

fn port(s: &TestServer) -> u16 {
    s.base.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_client_that_trusts_the_certificate_checks_health_and_logs_in_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let s = https_server(dir.path()).await;
    assert!(s.base.starts_with("https://127.0.0.1:"), "{}", s.base);

    let health = s.send(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, 200, "{health:#?}");
    // The harness's admin() logs in through POST /api/v1/auth/login.
    let token = s.admin().await;
    assert!(!token.is_empty());

    // By name and by address, trusting the CA certificate alone.
    let client = trusting_client(dir.path());
    for host in HOSTS {
        let base = format!("https://{host}:{}", port(&s));
        let res = client.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.version(), reqwest::Version::HTTP_11);
        let res = client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"username": "admin", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = res.json().await.unwrap();
        assert!(body["access_token"].is_string(), "{body}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = https_server(dir.path()).await;
    let untrusting = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let err = untrusting
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .expect_err("an unknown issuer is refused");
    assert!(err.is_connect(), "{err:?}");
    // Another certificate's CA does not do either.
    let other = tempfile::tempdir().unwrap();
    certificate(other.path());
    let res = trusting_client(other.path())
        .get(format!("{}/healthz", s.base))
        .send()
        .await;
    assert!(res.is_err(), "{res:?}");
    // The refusals cost the server nothing.
    let health = s.send(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn plain_http_and_silent_clients_on_the_tls_port_get_nothing_and_stall_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = https_server(dir.path()).await;
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let res = plain
        .get(format!("http://127.0.0.1:{}/healthz", port(&s)))
        .send()
        .await;
    assert!(res.is_err(), "plain HTTP got an HTTP answer: {res:?}");

    // Connections that never finish a handshake: one that sends nothing, one that sends
    // half a request.
    let addr = format!("127.0.0.1:{}", port(&s));
    let silent = std::net::TcpStream::connect(&addr).unwrap();
    let mut half = std::net::TcpStream::connect(&addr).unwrap();
    half.write_all(b"\x16\x03\x01").unwrap();

    let client = trusting_client(dir.path());
    for _ in 0..3 {
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            client.get(format!("{}/healthz", s.base)).send(),
        )
        .await
        .expect("answered while others hang")
        .unwrap();
        assert_eq!(res.status(), 200);
    }
    drop((silent, half));
    s.stop().await;
}

#[tokio::test]
async fn unusable_certificate_files_stop_the_start_with_a_message_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let files = certificate(dir.path());
    assert!(tls::server_config(&files).is_ok());

    // Another key than the certificate's.
    let other = tempfile::tempdir().unwrap();
    tls::write_signing_request(other.path(), &hosts(), false).unwrap();
    let mismatched = TlsFiles {
        cert: files.cert.clone(),
        key: other.path().join(tls::KEY_FILE),
    };
    let e = tls::server_config(&mismatched).unwrap_err().to_string();
    assert!(e.contains("does not belong"), "{e}");
    assert!(e.contains(&mismatched.key.display().to_string()), "{e}");

    // A file that is not there.
    let missing = TlsFiles {
        cert: dir.path().join("nope.pem"),
        key: files.key.clone(),
    };
    let e = format!("{:#}", tls::server_config(&missing).unwrap_err());
    assert!(e.contains("nope.pem"), "{e}");
    assert!(e.contains("No such file"), "{e}");

    // A certificate file with no certificate, a key file with no key.
    let e = tls::server_config(&TlsFiles {
        cert: files.key.clone(),
        key: files.key.clone(),
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("holds no certificate"), "{e}");
    assert!(e.contains(tls::KEY_FILE), "{e}");
    let e = tls::server_config(&TlsFiles {
        cert: files.cert.clone(),
        key: files.cert.clone(),
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("holds no private key"), "{e}");

    // serve itself refuses before it listens, rather than panicking.
    let (url, _db) = api_tests::fresh_database().await;
    let settings = patrol_server::Settings {
        database_url: patrol_server::settings::Secret(url),
        tls: Some(mismatched),
        ..patrol_server::Settings::default()
    };
    let state = patrol_server::start(settings).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let e = patrol_server::serve(listener, state.clone(), async {})
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not belong"), "{e}");
    state.db.close_by_ref().await.ok();
}

#[test]
fn existing_files_are_kept_unless_forced_and_the_key_is_private() {
    let dir = tempfile::tempdir().unwrap();
    certificate(dir.path());
    let before = std::fs::read(dir.path().join(tls::KEY_FILE)).unwrap();
    let e = tls::write_self_signed(dir.path(), &hosts(), 30, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("exists already") && e.contains("--force"), "{e}");
    assert_eq!(
        std::fs::read(dir.path().join(tls::KEY_FILE)).unwrap(),
        before
    );
    tls::write_self_signed(dir.path(), &hosts(), 30, true).unwrap();
    assert_ne!(
        std::fs::read(dir.path().join(tls::KEY_FILE)).unwrap(),
        before
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(tls::KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let e = tls::write_self_signed(dir.path(), &["not a host".to_owned()], 30, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a host"), "{e}");
    let csr = tls::signing_request(&hosts()).unwrap();
    assert!(
        csr.csr_pem
            .starts_with("-----BEGIN CERTIFICATE REQUEST-----")
    );
    assert!(csr.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
}
