//! The guards over real sockets, against the real daemon: what a hostile
//! client on the host actually sees. The router-level tests in
//! `src/server/tests.rs` cover each guard without a network; these cover
//! what only a socket shows (peer credentials, hyper's own limits, timeouts)
//! and that the guards hold on the wire.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A uid the tests (which run as root) are not.
const OTHER_UID: u32 = 4242;
/// The daemon's header read timeout is 10 s; allow for a loaded machine.
const CLOSE_WITHIN: Duration = Duration::from_secs(20);

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

/// A request line and headers for a credential, with the token and Host.
fn credential_request(daemon: &Daemon, token: &str, target: &str, extra: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nAuthorization: {token}\r\nConnection: close\r\n{extra}\r\n",
        daemon.tcp
    )
}

#[tokio::test]
async fn a_socket_peer_outside_the_listeners_allowlist_gets_403() {
    let setup = Setup::new(&[role("duper")], None).await;
    edit_config(&setup, |text| {
        text.replace(
            "[listen]\n",
            &format!("[listen]\nallowed_uids = [{OTHER_UID}]\n"),
        )
    });
    let daemon = Daemon::start(&setup.config_path);
    let (status, body) = assumed::client::get(&setup.socket, "/v1/credentials/duper")
        .await
        .unwrap();
    assert_eq!(status, 403);
    assert_eq!(json(&body)["code"], "PeerNotAllowed");
    let directory = std::fs::metadata(setup.socket.parent().unwrap()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&directory.permissions()) & 0o777,
        0o750,
        "the directory the daemon made for its socket lets the clients' group in, under umask 077"
    );
    let (status, _) = get_with_token(daemon.tcp, "/v1/credentials/duper", &setup.token()).await;
    assert_eq!(
        status, 200,
        "TCP is governed by the token, not the uid list"
    );
    let audit = daemon
        .wait_for_line(|line| line.contains("assumed::audit") && line.contains("listener=unix"))
        .await;
    assert!(
        audit.contains("status=403") && audit.contains("uid=0"),
        "{audit}"
    );
}

#[tokio::test]
async fn a_socket_peer_outside_a_roles_allowlist_gets_403_on_that_role_only() {
    let setup = Setup::new(
        &[
            RoleDef {
                name: "alpha",
                extra: "allowed_uids = [4242]",
            },
            role("beta"),
        ],
        None,
    )
    .await;
    let _daemon = Daemon::start(&setup.config_path);
    let (status, body) = assumed::client::get(&setup.socket, "/v1/credentials/alpha")
        .await
        .unwrap();
    assert_eq!(
        (status.as_u16(), json(&body)["code"].as_str()),
        (403, Some("PeerNotAllowed"))
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _) = assumed::client::get(&setup.socket, "/v1/credentials/beta")
            .await
            .unwrap();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "beta is only waiting for its first session");
        assert!(Instant::now() < deadline, "beta never served: {status}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_roles_own_token_gets_that_role_and_403_on_another() {
    let setup = Setup::new(&[role("alpha"), role("beta")], None).await;
    let alpha_token_file = setup.dir.path().join("run/alpha.token");
    edit_config(&setup, |text| {
        text.replace(
            "name = \"alpha\"\n",
            &format!(
                "name = \"alpha\"\ntoken_file = \"{}\"\n",
                alpha_token_file.display()
            ),
        )
    });
    let daemon = Daemon::start(&setup.config_path);
    let alpha_token = std::fs::read_to_string(&alpha_token_file).unwrap();
    assert_ne!(alpha_token, setup.token());
    // The second role's first code comes a TOTP step after the first's.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) =
            get_with_token(daemon.tcp, "/v1/credentials/alpha", &alpha_token).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
        assert!(Instant::now() < deadline, "alpha never served");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (status, body) = get_with_token(daemon.tcp, "/v1/credentials/beta", &alpha_token).await;
    assert_eq!(
        (status, json(&body)["code"].as_str()),
        (403, Some("InvalidToken"))
    );
}

#[tokio::test]
async fn oversize_headers_get_431_and_a_closed_connection() {
    let setup = Setup::new(&[role("duper")], None).await;
    let daemon = Daemon::start(&setup.config_path);
    let big = format!("X-Padding: {}\r\n", "a".repeat(20 * 1024));
    let answer = raw_tcp(
        daemon.tcp,
        credential_request(&daemon, &setup.token(), "/v1/credentials", &big).as_bytes(),
    )
    .await;
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 431"),
        "{answer:?}"
    );
    assert!(!answer.contains("SecretAccessKey"));
}

#[tokio::test]
async fn too_many_headers_get_431() {
    let setup = Setup::new(&[role("duper")], None).await;
    let daemon = Daemon::start(&setup.config_path);
    let many: String = (0..200).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    let answer = raw_tcp(
        daemon.tcp,
        credential_request(&daemon, &setup.token(), "/v1/credentials", &many).as_bytes(),
    )
    .await;
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 431"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn a_request_line_too_long_for_the_header_buffer_gets_431() {
    let setup = Setup::new(&[role("duper")], None).await;
    let daemon = Daemon::start(&setup.config_path);
    let target = format!("/v1/credentials/{}", "a".repeat(20 * 1024));
    let answer = raw_tcp(
        daemon.tcp,
        credential_request(&daemon, &setup.token(), &target, "").as_bytes(),
    )
    .await;
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 431"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn a_slowloris_client_is_disconnected_by_the_header_read_timeout() {
    let setup = Setup::new(&[role("duper")], None).await;
    let daemon = Daemon::start(&setup.config_path);
    let mut stream = tokio::net::TcpStream::connect(daemon.tcp).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n", daemon.tcp).as_bytes())
        .await
        .unwrap();
    // One more header byte a second, never finishing the head.
    let closed = loop {
        if stream.write_all(b"X").await.is_err() {
            break started.elapsed();
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break started.elapsed(),
            Ok(Ok(_)) => panic!("the daemon answered an unfinished request"),
            Err(_) => {}
        }
        assert!(
            started.elapsed() < CLOSE_WITHIN,
            "a trickling client kept its connection"
        );
    };
    assert!(closed >= Duration::from_secs(9), "closed after {closed:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let setup = Setup::new(&[role("duper")], None).await;
    let daemon = Daemon::start(&setup.config_path);
    let mut stream = tokio::net::TcpStream::connect(daemon.tcp).await.unwrap();
    stream
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", daemon.tcp).as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 "));
    let started = Instant::now();
    let end = tokio::time::timeout(CLOSE_WITHIN, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "an idle connection stayed open");
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "closed after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_absolute_form_request_on_the_wire_gets_400() {
    let setup = Setup::new(&[role("duper")], None).await;
    let daemon = Daemon::start(&setup.config_path);
    for target in [
        "http://evil.example/v1/credentials".to_owned(),
        format!("http://{}/v1/credentials", daemon.tcp),
    ] {
        let request = credential_request(&daemon, &setup.token(), &target, "");
        let answer = raw_tcp(daemon.tcp, request.as_bytes()).await;
        assert!(
            status_line(&answer).starts_with("HTTP/1.1 400")
                && answer.contains("AbsoluteFormRequest"),
            "{target}: {answer:?}"
        );
    }
}

#[tokio::test]
async fn a_smuggling_attempt_with_both_content_length_and_chunked_gets_400() {
    let setup = Setup::new(&[role("duper")], None).await;
    let daemon = Daemon::start(&setup.config_path);
    let request = credential_request(
        &daemon,
        &setup.token(),
        "/v1/credentials",
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
    );
    let answer = raw_tcp(
        daemon.tcp,
        format!("{request}0\r\n\r\nGET /v1/credentials HTTP/1.1\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 400"),
        "{answer:?}"
    );
    assert!(!answer.contains("SecretAccessKey"), "{answer:?}");
}

#[tokio::test]
async fn raw_bytes_that_are_not_utf8_in_the_path_get_400() {
    let setup = Setup::new(&[role("duper")], None).await;
    let daemon = Daemon::start(&setup.config_path);
    let mut request = b"GET /v1/credentials/du\xffper HTTP/1.1\r\n".to_vec();
    request.extend_from_slice(
        format!(
            "Host: {}\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
            daemon.tcp,
            setup.token()
        )
        .as_bytes(),
    );
    let answer = raw_tcp(daemon.tcp, &request).await;
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 400"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn an_http_1_0_request_without_host_gets_403() {
    let setup = Setup::new(&[role("duper")], None).await;
    let daemon = Daemon::start(&setup.config_path);
    let request = format!(
        "GET /v1/credentials HTTP/1.0\r\nAuthorization: {}\r\n\r\n",
        setup.token()
    );
    let answer = raw_tcp(daemon.tcp, request.as_bytes()).await;
    assert!(
        status_line(&answer).starts_with("HTTP/1.0 403") && answer.contains("BadHost"),
        "{answer:?}"
    );
}
