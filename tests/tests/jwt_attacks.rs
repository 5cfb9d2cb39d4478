//! Forged and broken access tokens: each differs from a real token in one property and
//! must be refused with 401 `unauthorized`; a correctly forged control token must pass.

use api_tests::{Answer, JWT_SECRET, Org, PASSWORD, TestServer};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// A real token taken apart (without verifying it).
struct RealToken {
    raw: String,
    header: Value,
    claims: Value,
}

impl RealToken {
    fn parse(raw: &str) -> RealToken {
        let parts: Vec<&str> = raw.split('.').collect();
        assert_eq!(parts.len(), 3, "a JWT has three parts: {raw}");
        let json = |part: &str| -> Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
        };
        RealToken {
            raw: raw.to_owned(),
            header: json(parts[0]),
            claims: json(parts[1]),
        }
    }

    fn kid(&self) -> &str {
        self.header["kid"]
            .as_str()
            .expect("the real token has a kid")
    }

    fn signature(&self) -> &str {
        self.raw.rsplit('.').next().expect("a signature part")
    }

    /// The real claims with fresh times: valid for ten minutes from now.
    fn fresh_claims(&self) -> Value {
        let now = chrono::Utc::now().timestamp();
        let mut c = self.claims.clone();
        c["iat"] = json!(now);
        c["nbf"] = json!(now);
        c["exp"] = json!(now + 600);
        c
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("JSON"))
}

/// Signs claims with an algorithm, an optional `kid` and a secret.
fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, secret: &str) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("an HMAC key");
    encode(&header, claims, &key).expect("token signed")
}

/// The right algorithm, key id and secret: only the claims can be wrong.
fn sign_right(real: &RealToken, claims: &Value) -> String {
    sign(Algorithm::HS256, Some(real.kid()), claims, JWT_SECRET)
}

fn with(claims: &Value, key: &str, value: Value) -> Value {
    let mut c = claims.clone();
    c[key] = value;
    c
}

fn without(claims: &Value, key: &str) -> Value {
    let mut c = claims.clone();
    c.as_object_mut().expect("claims object").remove(key);
    c
}

/// How a case authenticates.
enum Credential {
    /// A bearer token the signature and claims check must refuse.
    Bearer(String),
    /// A bearer token that passes the signature and claims check, so that only the
    /// member and session check can refuse it.
    Signed(String),
    /// A whole `Authorization` header value.
    Header(String),
}

impl Credential {
    /// What the server's token check says (blank for a header that carries no token).
    fn verdict(&self, s: &TestServer) -> String {
        match self {
            Credential::Bearer(token) | Credential::Signed(token) => {
                match s.state.keys.verify(token) {
                    Ok(_) => "signature and claims valid".to_owned(),
                    Err(e) => e.to_string(),
                }
            }
            Credential::Header(_) => String::new(),
        }
    }
}

async fn me(s: &TestServer, credential: &Credential) -> Answer {
    match credential {
        Credential::Bearer(token) | Credential::Signed(token) => {
            s.send(Method::GET, "/api/v1/me", Some(token), None).await
        }
        Credential::Header(value) => {
            let value = value.clone();
            s.raw(move |c, base| {
                c.get(format!("{base}/api/v1/me"))
                    .header("authorization", value)
            })
            .await
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_broken_tokens_are_refused() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;

    // A real admin login, taken apart.
    let login = s.login("admin", PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{login:#?}");
    let real = RealToken::parse(login.body["access_token"].as_str().unwrap());
    let refresh_token = login.body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(real.header["alg"], "HS256");
    assert!(real.claims["sub"].is_string() && real.claims["sid"].is_string());
    let admin_id = real.claims["sub"].as_str().unwrap().to_owned();
    let fresh = real.fresh_claims();

    // An officer's real token, for tampering.
    let officer = RealToken::parse(&s.token("officer1").await);
    assert_eq!(officer.claims["role"], "patrol_officer");

    // A login that is ended by logout, after it has been used (and so is remembered).
    let ended = s.token("admin").await;
    assert_eq!(s.get("/api/v1/me", &ended).await.status, StatusCode::OK);
    let out = s
        .send(Method::POST, "/api/v1/auth/logout", Some(&ended), None)
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{out:#?}");

    // CONTROLS: the real token, and a token forged exactly like the server's, pass.
    let forged = sign_right(&real, &fresh);
    let controls = [
        ("control: the real token", real.raw.clone()),
        (
            "control: forged with the right secret, kid and claims",
            forged,
        ),
        (
            "control: expired 10 s ago, inside the 30 s leeway",
            sign_right(&real, &with(&fresh, "exp", json!(now() - 10))),
        ),
    ];
    let mut table = Vec::new();
    for (name, token) in &controls {
        let credential = Credential::Signed(token.clone());
        let a = me(&s, &credential).await;
        table.push((*name, a.status.as_u16(), credential.verdict(&s)));
        assert_eq!(a.status, StatusCode::OK, "{name}: {a:#?}");
        assert_eq!(a.body["id"], admin_id.as_str(), "{name}");
    }

    let unsigned = |alg: &str, claims: &Value, signature: &str| {
        let header = json!({"typ": "JWT", "alg": alg, "kid": real.kid()});
        format!("{}.{}.{signature}", b64(&header), b64(claims))
    };
    let tampered = |claims: &Value| {
        let header = officer.raw.split('.').next().unwrap();
        format!("{header}.{}.{}", b64(claims), officer.signature())
    };
    let other_session = officer.claims["sid"].clone();
    let basic = format!("admin:{PASSWORD}");
    let bearer = |token: String| Credential::Bearer(token);
    let signed = |token: String| Credential::Signed(token);

    let attacks: Vec<(&str, Credential)> = vec![
        (
            "alg none, empty signature",
            bearer(unsigned("none", &fresh, "")),
        ),
        (
            "alg none, the real signature kept",
            bearer(unsigned("none", &fresh, real.signature())),
        ),
        (
            "alg None (capitalised), empty signature",
            bearer(unsigned("None", &fresh, "")),
        ),
        (
            "signed with another secret",
            bearer(sign(
                Algorithm::HS256,
                Some(real.kid()),
                &fresh,
                "another-secret-0123456789abcdef0123",
            )),
        ),
        (
            "HS384 with the right secret",
            bearer(sign(Algorithm::HS384, Some(real.kid()), &fresh, JWT_SECRET)),
        ),
        (
            "HS512 with the right secret",
            bearer(sign(Algorithm::HS512, Some(real.kid()), &fresh, JWT_SECRET)),
        ),
        (
            "expired 5 minutes ago",
            bearer(sign_right(
                &real,
                &with(
                    &with(
                        &with(&fresh, "exp", json!(now() - 300)),
                        "iat",
                        json!(now() - 1200),
                    ),
                    "nbf",
                    json!(now() - 1200),
                ),
            )),
        ),
        (
            "nbf 10 minutes in the future",
            bearer(sign_right(
                &real,
                &with(
                    &with(&fresh, "nbf", json!(now() + 600)),
                    "exp",
                    json!(now() + 1500),
                ),
            )),
        ),
        (
            "exp as a string",
            bearer(sign_right(
                &real,
                &with(&fresh, "exp", json!((now() + 600).to_string())),
            )),
        ),
        (
            "exp missing",
            bearer(sign_right(&real, &without(&fresh, "exp"))),
        ),
        (
            "aud missing",
            bearer(sign_right(&real, &without(&fresh, "aud"))),
        ),
        (
            "iss missing",
            bearer(sign_right(&real, &without(&fresh, "iss"))),
        ),
        (
            "aud wrong",
            bearer(sign_right(
                &real,
                &with(&fresh, "aud", json!("patrol-admin")),
            )),
        ),
        (
            "iss wrong",
            bearer(sign_right(&real, &with(&fresh, "iss", json!("evil")))),
        ),
        (
            "sub missing",
            bearer(sign_right(&real, &without(&fresh, "sub"))),
        ),
        (
            "kid unknown",
            bearer(sign(
                Algorithm::HS256,
                Some("0000000000000000"),
                &fresh,
                JWT_SECRET,
            )),
        ),
        (
            "kid missing",
            bearer(sign(Algorithm::HS256, None, &fresh, JWT_SECRET)),
        ),
        (
            "the refresh token as an access token",
            bearer(refresh_token.clone()),
        ),
        (
            "officer's token, role changed to admin, signature kept",
            bearer(tampered(&with(&officer.claims, "role", json!("admin")))),
        ),
        (
            "officer's token, sub changed to the admin, signature kept",
            bearer(tampered(&with(&officer.claims, "sub", json!(admin_id)))),
        ),
        ("session revoked by logout", signed(ended.clone())),
        (
            "right secret, a session that does not exist",
            signed(sign_right(
                &real,
                &with(&fresh, "sid", json!(Uuid::now_v7())),
            )),
        ),
        (
            "right secret, another member's session",
            signed(sign_right(&real, &with(&fresh, "sid", other_session))),
        ),
        (
            "right secret, a member that does not exist",
            signed(sign_right(
                &real,
                &with(&fresh, "sub", json!(Uuid::now_v7())),
            )),
        ),
        ("garbage: a word", bearer("garbage".to_owned())),
        ("garbage: three empty parts", bearer("..".to_owned())),
        ("garbage: a.b.c", bearer("a.b.c".to_owned())),
        (
            "garbage: header and payload only",
            bearer(real.raw.rsplit_once('.').unwrap().0.to_owned()),
        ),
        (
            "garbage: the real token with a fourth part",
            bearer(format!("{}.AAAA", real.raw)),
        ),
        (
            "header `Bearer` without a token",
            Credential::Header("Bearer".to_owned()),
        ),
        (
            "header `Bearer ` and blanks",
            Credential::Header("Bearer    ".to_owned()),
        ),
        (
            "header with the real token but no scheme",
            Credential::Header(real.raw.clone()),
        ),
        (
            "header `Token <real token>`",
            Credential::Header(format!("Token {}", real.raw)),
        ),
        (
            "Basic auth with the admin's password",
            Credential::Header(format!("Basic {}", STANDARD.encode(basic))),
        ),
    ];

    let mut answers = Vec::new();
    for (name, credential) in &attacks {
        let a = me(&s, credential).await;
        table.push((*name, a.status.as_u16(), credential.verdict(&s)));
        answers.push((*name, a));
    }
    let width = table.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0);
    println!("{:width$}  status  token check", "case");
    for (name, status, verdict) in &table {
        println!("{name:width$}  {status:>6}  {verdict}");
    }
    println!(
        "jwt attacks: {} attacks refused, {} controls accepted",
        answers.len(),
        controls.len()
    );
    for ((name, a), (_, credential)) in answers.iter().zip(&attacks) {
        println!("checking: {name}");
        a.assert_problem(401, "unauthorized");
        // Each forged token fails where it was meant to: its signature or claims, or, when
        // those are right, the member and session check.
        match credential {
            Credential::Bearer(token) => assert!(
                s.state.keys.verify(token).is_err(),
                "{name}: the token check accepts it"
            ),
            Credential::Signed(token) => assert!(
                s.state.keys.verify(token).is_ok(),
                "{name}: the forged token is not otherwise valid"
            ),
            Credential::Header(_) => {}
        }
    }

    // After all that the real token still works, and the admin is still the admin.
    let a = s.get("/api/v1/me", &real.raw).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["role"], "admin");
    let o = s
        .get(
            &format!("/api/v1/members/{}", org.members["officer1"]),
            &real.raw,
        )
        .await;
    assert_eq!(o.body["role"], "patrol_officer");
}

/// Requests in flight while a login ends must not bring it back: once `logout` has
/// answered and those requests are done, the token is dead: the verified-caller cache
/// must not be refilled by a request that read the session before the logout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_logged_out_token_stays_dead_with_requests_in_flight() {
    let s = std::sync::Arc::new(TestServer::start().await);
    Org::create(&s).await;
    let rounds = 20;
    let mut revived = 0;
    for _ in 0..rounds {
        let token = s.token("officer1").await;
        let mut tasks = Vec::new();
        for i in 0..24 {
            let (s, token) = (s.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                if i == 12 {
                    let out = s
                        .send(Method::POST, "/api/v1/auth/logout", Some(&token), None)
                        .await;
                    assert_eq!(out.status, StatusCode::NO_CONTENT, "{out:#?}");
                } else {
                    s.get("/api/v1/me", &token).await;
                }
            }));
        }
        for t in tasks {
            t.await.expect("request task");
        }
        if s.get("/api/v1/me", &token).await.status == StatusCode::OK {
            revived += 1;
        }
    }
    assert_eq!(
        revived, 0,
        "{revived} of {rounds} logged-out tokens still worked after the logout"
    );
}
