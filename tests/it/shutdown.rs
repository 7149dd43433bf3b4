//! Graceful shutdown through the cancellation token.

use std::time::Duration;

use sspr_fleet_tests::spawn_app;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Waits, without sleeping, until the listener refuses connections. Connections that are still
/// accepted meanwhile are closed at once.
async fn until_refused(addr: std::net::SocketAddr) {
    let wait = async {
        loop {
            match TcpStream::connect(addr).await {
                Ok(stream) => drop(stream),
                // Queued when the listener closed: the next attempt tells.
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
                Err(err) => {
                    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
                    return;
                }
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("the listener still accepts connections 10 s after shutdown began");
}

#[tokio::test]
async fn cancelling_stops_the_server_cleanly_and_refuses_new_connections() {
    let app = spawn_app().await;
    let addr = app.addr;
    let key = app.admin_key().await;
    let client = app.client_with(&key);
    client.get("/v1/me", 200).await;
    // The client's pooled keep-alive connection would hold up a graceful stop until it times
    // out; a real client going away closes it.
    drop(client);
    let result = tokio::time::timeout(Duration::from_secs(20), app.stop())
        .await
        .expect("run_until_stopped returns after the token is cancelled");
    result.expect("run_until_stopped returns Ok");
    let err = TcpStream::connect(addr).await.expect_err("a new connection after shutdown");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}

/// Reads one HTTP/1.1 response with a `content-length` body from `stream`.
async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a content-length");
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed inside the body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
            return (head, body);
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn a_request_in_flight_when_shutdown_begins_is_answered() {
    let mut app = spawn_app().await;
    let addr = app.addr;
    let key = app.admin_key().await;
    let body = br#"{"name": "created-during-shutdown", "role": "viewer"}"#;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/api-keys HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\
         x-request-id: in-flight\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // `100 Continue` means the request has been dispatched and waits for its body: it is in
    // flight.
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");

    let server = app.take_server();
    app.cancel();
    until_refused(addr).await;
    assert!(!server.is_finished(), "the server stopped with a request in flight");

    stream.write_all(body).await.unwrap();
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 201"), "{head}\n{body}");
    assert!(head.to_ascii_lowercase().contains("x-request-id: in-flight"), "{head}");
    let created: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = created["api_key"]["id"].as_str().unwrap().to_owned();

    let result = tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("run_until_stopped returns once the last request is answered")
        .unwrap();
    result.expect("run_until_stopped returns Ok");
    // The write was committed before the database was closed.
    let token = created["key"].as_str().unwrap();
    assert_eq!(app.stored_token_hash(&id).await, Some(sspr_api::hash_token(token)));
}
