//! The client against small scripted HTTP servers, for what the simulator never does: redirects
//! (never followed, so a client secret or a bearer token never goes where `Location` points) and
//! paging links that go in circles, never end, or point at another host.

#![allow(clippy::unwrap_used)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use secrecy::SecretString;
use sspr_graph::{
    Credential, GraphClient, GraphConfig, GraphError, PagingProblem, ReportPriority, SizeClass,
    Tenant,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const TENANT: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const SECRET: &str = "the-client-secret-that-must-stay-home";

/// One request a server received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    /// The request line and headers.
    head: String,
    body: String,
}

/// An answer: status, extra headers, JSON body.
type Answer = (u16, Vec<(String, String)>, String);

/// A one-connection-per-request HTTP/1.1 server answering with `answer`, recording every
/// request.
struct Server {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    async fn start(answer: impl Fn(&Seen, &str) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let (recorded, own) = (Arc::clone(&seen), base.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (recorded, answer, own) =
                    (Arc::clone(&recorded), Arc::clone(&answer), own.clone());
                tokio::spawn(async move {
                    if let Some(request) = read_request(stream).await {
                        let (mut stream, seen) = request;
                        recorded.lock().unwrap().push(seen.clone());
                        let (status, headers, body) = answer(&seen, &own);
                        let mut head = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                            body.len()
                        );
                        for (k, v) in headers {
                            head.push_str(&format!("{k}: {v}\r\n"));
                        }
                        head.push_str("\r\n");
                        let _ = stream.write_all(head.as_bytes()).await;
                        let _ = stream.write_all(body.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    }
                });
            }
        });
        Self { base, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn read_request(mut stream: TcpStream) -> Option<(TcpStream, Seen)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut parts = head.lines().next()?.split(' ');
    let seen = Seen {
        method: parts.next()?.to_owned(),
        target: parts.next()?.to_owned(),
        head: head.clone(),
        body: String::from_utf8_lossy(&buf[head_end..]).into_owned(),
    };
    Some((stream, seen))
}

fn ok(body: serde_json::Value) -> Answer {
    (200, Vec::new(), body.to_string())
}

fn redirect(status: u16, to: String) -> Answer {
    (status, vec![("location".to_owned(), to)], String::new())
}

fn token() -> Answer {
    ok(serde_json::json!({"access_token": "a.b.c", "expires_in": 3600, "token_type": "Bearer"}))
}

fn is_token(seen: &Seen) -> bool {
    seen.target.ends_with("/oauth2/v2.0/token")
}

fn tenant() -> Tenant {
    Tenant {
        id: TENANT.to_owned(),
        credential: Arc::new(Credential::ClientSecret {
            client_id: "11111111-0000-4000-8000-000000000001".into(),
            secret: SecretString::from(SECRET),
        }),
        size: SizeClass::Small,
    }
}

fn client(base: &str, max_pages: usize) -> GraphClient {
    let mut cfg = GraphConfig::new(base, base);
    cfg.max_pages = max_pages;
    GraphClient::new(cfg).unwrap()
}

/// Guards against a client that loops for ever: the test fails instead of hanging.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f).await.expect("the call never ended")
}

#[tokio::test]
async fn a_redirect_from_the_token_endpoint_is_not_followed() {
    for status in [307, 308] {
        let elsewhere = Server::start(|_, _| token()).await;
        let target = format!("{}/{TENANT}/oauth2/v2.0/token", elsewhere.base);
        let login = Server::start(move |_, _| redirect(status, target.clone())).await;
        let client = client(&login.base, 10);

        let err = within(client.organization(&tenant())).await.unwrap_err();
        assert!(
            matches!(err, GraphError::Redirect { status: s, endpoint: "POST /oauth2/v2.0/token" } if s == status),
            "{err:?}"
        );
        assert!(err.to_string().contains("redirect"), "{err}");
        let err = within(client.probe_token(&tenant())).await.unwrap_err();
        assert!(matches!(err, GraphError::Redirect { .. }), "{err:?}");
        // The form with the client secret reached the login server only.
        assert!(login.seen().iter().any(|s| s.method == "POST" && s.body.contains(SECRET)));
        assert!(elsewhere.seen().is_empty(), "{status}: {:?}", elsewhere.seen());
    }
}

#[tokio::test]
async fn a_redirect_from_graph_is_not_followed() {
    let elsewhere = Server::start(|_, _| ok(serde_json::json!({"value": [{"id": "x"}]}))).await;
    let target = format!("{}/v1.0/organization", elsewhere.base);
    let graph = Server::start(
        move |seen, _| {
            if is_token(seen) { token() } else { redirect(308, target.clone()) }
        },
    )
    .await;
    let err = within(client(&graph.base, 10).organization(&tenant())).await.unwrap_err();
    assert!(
        matches!(err, GraphError::Redirect { status: 308, endpoint: "GET /organization" }),
        "{err:?}"
    );
    assert_eq!(err.reason(), "redirect_308");
    assert!(elsewhere.seen().is_empty(), "{:?}", elsewhere.seen());
}

/// A `/users` page with one user and `next` as its `@odata.nextLink`.
fn users_page(next: Option<String>) -> Answer {
    let mut body = serde_json::json!({"value": [{"id": "u1"}]});
    if let Some(next) = next {
        body["@odata.nextLink"] = next.into();
    }
    ok(body)
}

fn paging_problem(result: Result<(), GraphError>) -> PagingProblem {
    match result {
        Err(GraphError::Paging { endpoint: "GET /users", problem }) => problem,
        other => panic!("expected a paging error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_paging_link_that_repeats_an_earlier_one_ends_the_listing() {
    // Page 1 -> page 2 -> page 1 -> ...
    let graph = Server::start(|seen, base| {
        if is_token(seen) {
            return token();
        }
        let next = if seen.target.contains("skiptoken=2") { 1 } else { 2 };
        users_page(Some(format!("{base}/v1.0/users?$skiptoken={next}")))
    })
    .await;
    let client = client(&graph.base, 10_000);
    let mut users = 0;
    let result = within(client.for_each_user(&tenant(), None, "id", |p| users += p.len())).await;
    assert_eq!(paging_problem(result), PagingProblem::Loop);
    // The first page, then pages 2 and 1 by their links; the repeated link to 2 is not sent
    // (and the page that carried it is not handed over: the listing failed).
    let pages = graph.seen().iter().filter(|s| !is_token(s)).count();
    assert_eq!((pages, users), (3, 2));
}

#[tokio::test]
async fn a_listing_that_never_ends_stops_at_the_page_cap() {
    let graph = Server::start(|seen, base| {
        if is_token(seen) {
            return token();
        }
        let n: u64 = seen.target.rsplit_once("skiptoken=").map_or(0, |(_, n)| n.parse().unwrap());
        users_page(Some(format!("{base}/v1.0/users?$skiptoken={}", n + 1)))
    })
    .await;
    let result = within(client(&graph.base, 5).for_each_user(&tenant(), None, "id", |_| {})).await;
    assert_eq!(paging_problem(result), PagingProblem::TooManyPages(5));
    assert_eq!(graph.seen().iter().filter(|s| !is_token(s)).count(), 5);
}

#[tokio::test]
async fn a_paging_link_to_another_host_is_refused_and_gets_nothing() {
    let elsewhere = Server::start(|_, _| users_page(None)).await;
    let foreign = format!("{}/v1.0/users?$skiptoken=2", elsewhere.base);
    let graph =
        Server::start(
            move |seen, _| {
                if is_token(seen) { token() } else { users_page(Some(foreign.clone())) }
            },
        )
        .await;
    let result = within(client(&graph.base, 10).for_each_user(&tenant(), None, "id", |_| {})).await;
    assert_eq!(paging_problem(result), PagingProblem::ForeignHost);
    assert!(elsewhere.seen().is_empty(), "{:?}", elsewhere.seen());
}

fn tenant_of(id: &str) -> Tenant {
    Tenant { id: id.to_owned(), ..tenant() }
}

/// The `x-ms-throttle-priority` header of a request, if it has one.
fn priority_header(seen: &Seen) -> Option<String> {
    seen.head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("x-ms-throttle-priority").then(|| v.trim().to_owned())
    })
}

fn feature_summary() -> Answer {
    ok(
        serde_json::json!({"totalUserCount": 1, "userRegistrationFeatureCounts": [], "userRoles": "all", "userTypes": "all"}),
    )
}

#[tokio::test]
async fn low_priority_report_reads_say_so_and_nothing_else_does() {
    let server = Server::start(|seen, _| {
        if is_token(seen) {
            token()
        } else if seen.target.contains("/reports/") {
            feature_summary()
        } else {
            ok(serde_json::json!({"value": []}))
        }
    })
    .await;
    let c = client(&server.base, 10);
    let t = tenant();
    c.users_registered_by_feature(&t, ReportPriority::Low).await.unwrap();
    c.users_registered_by_feature(&t, ReportPriority::High).await.unwrap();
    c.groups_named(&t, "x").await.unwrap();
    let graph: Vec<Seen> = server.seen().into_iter().filter(|s| !is_token(s)).collect();
    let headers: Vec<Option<String>> = graph.iter().map(priority_header).collect();
    assert_eq!(headers, vec![Some("low".to_owned()), None, None]);
}

#[tokio::test]
async fn an_app_scoped_report_429_holds_every_tenants_report_reads_and_nothing_else() {
    // The first report read is answered 429 scoped to the app; everything else 200.
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let server = Server::start(move |seen, _| {
        if is_token(seen) {
            token()
        } else if seen.target.contains("/reports/") {
            if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                (
                    429,
                    vec![
                        ("retry-after".to_owned(), "1".to_owned()),
                        (
                            "x-ms-throttle-scope".to_owned(),
                            "Application/Read/11111111-0000-4000-8000-000000000001/".to_owned(),
                        ),
                    ],
                    r#"{"error":{"code":"TooManyRequests","message":"Please retry again later."}}"#
                        .to_owned(),
                )
            } else {
                feature_summary()
            }
        } else {
            ok(serde_json::json!({"value": []}))
        }
    })
    .await;
    let mut cfg = GraphConfig::new(&server.base, &server.base);
    cfg.retry.max_attempts = 1;
    let c = GraphClient::new(cfg).unwrap();
    let (a, b) = (tenant(), tenant_of("bbbbbbbb-0000-4000-8000-000000000002"));
    let err = c.users_registered_by_feature(&a, ReportPriority::High).await.unwrap_err();
    assert_eq!(err.status(), Some(429));
    let held_at = std::time::Instant::now();
    // Identity reads of both tenants are not held...
    c.groups_named(&a, "x").await.unwrap();
    c.groups_named(&b, "x").await.unwrap();
    assert!(held_at.elapsed() < Duration::from_millis(900));
    // ...another tenant's report read is, for the Retry-After.
    c.users_registered_by_feature(&b, ReportPriority::High).await.unwrap();
    assert!(held_at.elapsed() >= Duration::from_millis(950), "{:?}", held_at.elapsed());
    let m = c.metrics();
    let reads = &m.reports()["GET /reports/authenticationMethods/usersRegisteredByFeature"];
    assert_eq!((reads.calls, reads.throttled), (2, 1));
    assert_eq!(m.report_waits["high"].reads, 2);
    assert_eq!(m.report_waits["high"].waited, 1);
}
