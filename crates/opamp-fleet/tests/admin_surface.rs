//! The admin listener's operator surface over real HTTP on 127.0.0.1: health probes, the
//! OpenAPI document checked against the routes that answer, and the dashboard's sign-in,
//! cookie, CSRF, origin and read-only rules.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use opamp_fleet::config::OperatorSettings;
use opamp_fleet::{FleetServer, FleetServerConfig, RunningFleetServer};
use reqwest::StatusCode;
use reqwest::redirect::Policy;

const TOKEN: &str = "admin-secret";
const VIEWER: &str = "viewer-secret";

async fn start(dir: &std::path::Path) -> RunningFleetServer {
    let mut config = FleetServerConfig::new("127.0.0.1:0".parse().unwrap(), dir, TOKEN);
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    config
        .admin
        .operators
        .push(OperatorSettings::new("viewer", VIEWER).read_only());
    FleetServer::start(config).await.unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn health_probes_answer_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let base = format!("http://{}", server.admin_addr());
    for probe in ["/healthz", "/readyz"] {
        let answer = http().get(format!("{base}{probe}")).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{probe}");
    }
    // The API itself still wants a token.
    let answer = http()
        .get(format!("{base}/api/v1/agents"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    server.shutdown().await;
}

/// GET `path` on `addr` with a blocking socket (no runtime), answering the status line.
fn blocking_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_owned()
}

/// The admin API has a thread of its own: with every worker of the runtime that serves agents
/// stalled, an operator is still answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_admin_api_answers_while_the_agents_runtime_is_stalled() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let (stalled, wait_stalled) = std::sync::mpsc::channel();
    let stall = tokio::spawn(async move {
        stalled.send(()).unwrap();
        std::thread::sleep(std::time::Duration::from_secs(3)); // holds the only worker
    });
    wait_stalled.recv().unwrap();
    let asked = std::time::Instant::now();
    let status = blocking_get(server.admin_addr(), "/healthz");
    let took = asked.elapsed();
    assert!(status.contains(" 200 "), "{status:?}");
    assert!(
        took < std::time::Duration::from_secs(1),
        "answered after {took:?}"
    );
    stall.await.unwrap();
    server.shutdown().await;
}

/// Every operation of the OpenAPI document is a route that exists with that method: the
/// answer is never the router's own 404 (no route) or 405 (no such method).
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let base = format!("http://{}", server.admin_addr());
    let doc = http()
        .get(format!("{base}/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 13, "{:?}", paths.keys());
    for (path, operations) in paths {
        let url = format!("{base}{}", path.replace("{id}", "no-such-rollout"));
        for method in operations.as_object().unwrap().keys() {
            let request = match method.as_str() {
                "get" => http().get(&url),
                "post" => http().post(&url).body(""),
                other => panic!("unexpected method {other} for {path}"),
            };
            let answer = request.bearer_auth(TOKEN).send().await.unwrap();
            let status = answer.status();
            let body = answer.text().await.unwrap_or_default();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            // Our own 404s say what was not found; the router's has an empty body.
            assert!(
                status != StatusCode::NOT_FOUND || body.contains("error"),
                "{method} {path}: not routed"
            );
        }
    }
    server.shutdown().await;
}

fn session_cookie(answer: &reqwest::Response) -> (String, String) {
    let header = answer
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_owned();
    let pair = header.split(';').next().unwrap().to_owned();
    (pair, header)
}

async fn sign_in(base: &str, token: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut request = http()
        .post(format!("{base}/ui/login"))
        .form(&[("token", token)]);
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

fn csrf_of(page: &str) -> String {
    let start = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    page[start..start + 64].to_owned()
}

#[tokio::test]
async fn the_dashboard_signs_in_with_a_cookie_and_guards_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let base = format!("http://{}", server.admin_addr());

    // Not signed in: to the login form, which carries the strict policy.
    let answer = http().get(format!("{base}/ui")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(answer.headers()["location"], "/ui/login");
    let login = http().get(format!("{base}/ui/login")).send().await.unwrap();
    let policy = login.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("default-src 'none'") && policy.contains("script-src 'self'"));
    assert!(
        !login.text().await.unwrap().contains("http://"),
        "no outside asset"
    );

    assert_eq!(
        sign_in(&base, "wrong", &[]).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        sign_in(&base, TOKEN, &[("origin", "http://evil.example")])
            .await
            .status(),
        StatusCode::FORBIDDEN
    );

    let answer = sign_in(&base, TOKEN, &[]).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let (cookie, header) = session_cookie(&answer);
    assert!(
        header.contains("HttpOnly") && header.contains("SameSite=Strict"),
        "{header}"
    );
    assert!(!header.contains("Secure"), "plain HTTP: {header}");
    let behind_tls = sign_in(&base, TOKEN, &[("x-forwarded-proto", "https")]).await;
    assert!(session_cookie(&behind_tls).1.contains("; Secure"));

    let page = http()
        .get(format!("{base}/ui/rollouts"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(
        page.contains("id=\"start-rollout\""),
        "a writer sees the start form"
    );
    let csrf = csrf_of(&page);

    // A write without the right CSRF token, or from another origin, is refused.
    let pause = format!("{base}/ui/rollouts/no-such/pause");
    let wrong = http()
        .post(&pause)
        .header("cookie", &cookie)
        .form(&[("csrf", "0".repeat(64))])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let cross = http()
        .post(&pause)
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    // With both, the write reaches the server, which has no such rollout.
    let right = http()
        .post(&pause)
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), StatusCode::NOT_FOUND);

    // A read-only operator sees no start form and every write is refused anyway.
    let (viewer, _) = session_cookie(&sign_in(&base, VIEWER, &[]).await);
    let page = http()
        .get(format!("{base}/ui/rollouts"))
        .header("cookie", &viewer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("start-rollout"));
    let viewer_csrf = csrf_of(&page);
    let refused = http()
        .post(&pause)
        .header("cookie", &viewer)
        .form(&[("csrf", viewer_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // Signing out ends the session.
    let out = http()
        .post(format!("{base}/ui/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let after = http()
        .get(format!("{base}/ui"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.headers()["location"], "/ui/login");
    server.shutdown().await;
}
