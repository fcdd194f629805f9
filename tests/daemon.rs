//! The daemon end to end: the real binary, the STS stand-in, real sockets.
//!
//! The long tests (several refresh cycles, an outage) live in this one
//! binary so they run side by side.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use assumed::standin::{Fault, FaultKind};
use common::*;

async fn wait_until_healthy(daemon: &Daemon, limit: Duration) {
    let deadline = Instant::now() + limit;
    let host = daemon.tcp.to_string();
    while get_tcp(daemon.tcp, "/healthz", &[("host", &host)]).await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "not every role became usable within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn expiration(body: &serde_json::Value) -> SystemTime {
    humantime::parse_rfc3339(body["Expiration"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn the_same_credential_is_served_over_tcp_with_the_token_and_over_the_unix_socket() {
    let setup = Setup::new(&[role("duper")], None).await;
    let daemon = Daemon::start(&setup.config_path);

    let (status, tcp_body) = get_with_token(daemon.tcp, "/v1/credentials", &setup.token()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&tcp_body));
    let (status, unix_body) = assumed::client::get(&setup.socket, "/v1/credentials/duper")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        tcp_body, unix_body,
        "both listeners serve the same credential"
    );

    let body = json(&tcp_body);
    let keys: BTreeSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "AccessKeyId",
            "SecretAccessKey",
            "Token",
            "Expiration",
            "AccountId"
        ])
    );
    assert!(body["AccessKeyId"].as_str().unwrap().starts_with("ASIA"));
    assert_eq!(body["AccountId"], ACCOUNT);
    assert!(body["Expiration"].as_str().unwrap().ends_with('Z'));
    assert!(
        expiration(&body) > SystemTime::now() + Duration::from_secs(3000),
        "an hour-long session by default"
    );

    let record = setup.standin.last_assume_role().unwrap();
    assert_eq!(
        record.role_arn,
        format!("arn:aws:iam::{ACCOUNT}:role/duperRole")
    );
    assert_eq!(record.role_session_name, "test-host");
    assert_eq!(setup.standin.stats().codes_accepted, 1);
}

#[tokio::test]
async fn requests_without_the_right_token_or_for_unknown_roles_are_refused_with_json_errors() {
    let setup = Setup::new(&[role("duper")], None).await;
    let daemon = Daemon::start(&setup.config_path);
    let host = daemon.tcp.to_string();

    let (status, body) = get_tcp(daemon.tcp, "/v1/credentials", &[("host", &host)]).await;
    assert_eq!(
        (status, json(&body)["code"].as_str()),
        (401, Some("MissingToken"))
    );
    let wrong = "x".repeat(43);
    let (status, body) = get_tcp(
        daemon.tcp,
        "/v1/credentials",
        &[("host", &host), ("authorization", &wrong)],
    )
    .await;
    assert_eq!(
        (status, json(&body)["code"].as_str()),
        (403, Some("InvalidToken"))
    );
    let with_newline = format!("{}\n", setup.token());
    let (status, _) = get_tcp(
        daemon.tcp,
        "/v1/credentials",
        &[("host", &host), ("authorization", with_newline.trim_end())],
    )
    .await;
    assert_eq!(status, 200, "the exact token is accepted");

    let (status, body) = get_with_token(daemon.tcp, "/v1/credentials/nope", &setup.token()).await;
    assert_eq!(
        (status, json(&body)["code"].as_str()),
        (404, Some("UnknownRole"))
    );
    let (status, body) = get_with_token(daemon.tcp, "/latest/meta-data/", &setup.token()).await;
    assert_eq!(
        (status, json(&body)["code"].as_str()),
        (404, Some("NotFound"))
    );

    let (status, body) = get_tcp(daemon.tcp, "/healthz", &[("host", &host)]).await;
    assert_eq!(status, 200, "health needs no token");
    let health = json(&body);
    assert_eq!(health["roles"]["duper"]["usable"], true);
    let text = String::from_utf8_lossy(&body);
    let (_, credential) = get_with_token(daemon.tcp, "/v1/credentials", &setup.token()).await;
    let secret = json(&credential)["SecretAccessKey"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!text.contains(&secret), "health output holds no secret");
}

#[tokio::test]
async fn two_roles_refresh_for_several_cycles_while_a_client_polls_without_a_single_failure() {
    let setup = Setup::new(
        &[role("alpha"), role("beta")],
        Some(Duration::from_secs(180)),
    )
    .await;
    let daemon = Daemon::start(&setup.config_path);
    let token = setup.token();
    // The second role's first code comes one TOTP step after the first's.
    wait_until_healthy(&daemon, Duration::from_secs(45)).await;

    let mut failures = Vec::new();
    let mut keys: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(200) {
        for name in ["alpha", "beta"] {
            let (status, body) =
                get_with_token(daemon.tcp, &format!("/v1/credentials/{name}"), &token).await;
            if status != 200 {
                failures.push(format!(
                    "{:?} {name}: {status} {}",
                    started.elapsed(),
                    String::from_utf8_lossy(&body)
                ));
                continue;
            }
            let body = json(&body);
            assert!(
                expiration(&body) > SystemTime::now() + Duration::from_secs(55),
                "served a credential about to expire"
            );
            keys.entry(name)
                .or_default()
                .insert(body["AccessKeyId"].as_str().unwrap().to_owned());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    assert!(failures.is_empty(), "non-200 answers: {failures:#?}");
    for (name, seen) in &keys {
        assert!(
            seen.len() >= 3,
            "role {name} was refreshed only {} times",
            seen.len() - 1
        );
    }
    let stats = setup.standin.stats();
    assert_eq!(stats.codes_reused, 0, "{stats:?}");
    assert_eq!(stats.codes_rejected, 0, "{stats:?}");
    assert!(stats.max_verifications_in_window <= 6, "{stats:?}");
    drop(daemon);
}

#[tokio::test]
async fn during_an_outage_the_held_credential_is_served_until_a_minute_before_expiry_then_503_then_recovery()
 {
    let setup = Setup::new(&[role("duper")], Some(Duration::from_secs(120))).await;
    let daemon = Daemon::start(&setup.config_path);
    let token = setup.token();
    let (status, body) = get_with_token(daemon.tcp, "/v1/credentials", &token).await;
    assert_eq!(status, 200);
    let expires = expiration(&json(&body));

    setup.standin.inject(Fault {
        action: Some("AssumeRole".into()),
        times: u32::MAX,
        kind: FaultKind::Error {
            status: 503,
            code: "ServiceUnavailable".into(),
            message: "outage".into(),
        },
    });

    // Served while more than the margin remains; 503 with a JSON error after.
    let unavailable = loop {
        let (status, body) = get_with_token(daemon.tcp, "/v1/credentials", &token).await;
        let now = SystemTime::now();
        if status == 200 {
            assert_eq!(
                expiration(&json(&body)),
                expires,
                "no refresh can succeed during the outage"
            );
            assert!(
                expires.duration_since(now).unwrap() > Duration::from_secs(58),
                "served too close to expiry"
            );
        } else {
            break (status, json(&body), now);
        }
        assert!(now < expires, "never served past expiry");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (status, body, when) = unavailable;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "CredentialsUnavailable");
    assert!(
        body["message"].as_str().unwrap().contains("unavailable"),
        "{body}"
    );
    let left = expires.duration_since(when).unwrap_or_default();
    assert!(
        left <= Duration::from_secs(61) && left >= Duration::from_secs(55),
        "503 began with {left:?} left"
    );
    let (status, _) = get_tcp(daemon.tcp, "/healthz", &[("host", &daemon.tcp.to_string())]).await;
    assert_eq!(status, 503);

    setup.standin.clear_faults();
    let recovered_by = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body) = get_with_token(daemon.tcp, "/v1/credentials", &token).await;
        if status == 200 {
            assert!(expiration(&json(&body)) > expires);
            break;
        }
        assert!(
            Instant::now() < recovered_by,
            "no recovery after the outage ended"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(setup.standin.stats().codes_reused, 0);
}

#[tokio::test]
async fn sigterm_stops_the_daemon_cleanly_and_removes_the_socket() {
    let setup = Setup::new(&[role("duper")], None).await;
    let mut daemon = Daemon::start(&setup.config_path);
    assert!(setup.socket.exists());
    let status = daemon.terminate();
    assert!(status.success(), "{status:?}");
    assert!(!setup.socket.exists(), "the socket file is removed");
}

#[tokio::test]
async fn a_second_daemon_on_the_same_socket_refuses_to_start() {
    let setup = Setup::new(&[role("duper")], None).await;
    let _first = Daemon::start(&setup.config_path);
    let output = std::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(&setup.config_path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another process is answering"), "{stderr}");
}

#[tokio::test]
async fn no_secret_reaches_any_log_line_even_at_trace_level() {
    // Socket peers (root, here) are refused: the role admits another uid.
    let setup = Setup::new(
        &[RoleDef {
            name: "duper",
            extra: "allowed_uids = [4242]",
        }],
        Some(Duration::from_secs(120)),
    )
    .await;
    let role_token_file = setup.dir.path().join("run/duper.token");
    edit_config(&setup, |text| {
        text.replace(
            "name = \"duper\"\n",
            &format!(
                "name = \"duper\"\ntoken_file = \"{}\"\n",
                role_token_file.display()
            ),
        )
    });
    // The first two calls fail in different ways, so both failure paths log.
    for (status, code) in [(500, "InternalFailure"), (400, "Throttling")] {
        setup.standin.inject(Fault {
            action: Some("AssumeRole".into()),
            times: 1,
            kind: FaultKind::Error {
                status,
                code: code.into(),
                message: "boom".into(),
            },
        });
    }
    let daemon = Daemon::start_with_log_level(&setup.config_path, "trace");
    let token = setup.token();
    let role_token = std::fs::read_to_string(&role_token_file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let body = loop {
        let (status, body) = get_with_token(daemon.tcp, "/v1/credentials", &token).await;
        if status == 200 {
            break json(&body);
        }
        assert!(
            Instant::now() < deadline,
            "no credential after the failed first calls"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (status, _) = get_with_token(daemon.tcp, "/v1/credentials/duper", &role_token).await;
    assert_eq!(status, 200);

    // Refusals, each carrying the right token.
    let (status, _) = get_with_token(
        daemon.tcp,
        "/v1/credentials",
        "wrong-token-wrong-token-wrong",
    )
    .await;
    assert_eq!(status, 403);
    let host = daemon.tcp.to_string();
    for (path, extra) in [
        ("/v1/credentials", ("host", "evil.example")),
        ("/v1/credentials", ("x-forwarded-for", "203.0.113.9")),
        ("/v1/credentials", ("origin", "http://evil.example")),
        ("/v1/credentials/%64uper", ("x-test", "1")),
    ] {
        let mut headers = vec![("authorization", token.as_str()), extra];
        if extra.0 != "host" {
            headers.push(("host", &host));
        }
        let (status, _) = get_tcp(daemon.tcp, path, &headers).await;
        assert!((400..500).contains(&status), "{path} {extra:?}: {status}");
    }
    let (status, _) = assumed::client::get(&setup.socket, "/v1/credentials")
        .await
        .unwrap();
    assert_eq!(status, 403, "the socket peer is refused");
    daemon
        .wait_for_line(|line| {
            line.contains("assumed::audit")
                && line.contains("listener=unix")
                && line.contains("status=403")
        })
        .await;

    let logs = daemon.logs().join("\n");
    assert!(
        logs.contains("refresh failed"),
        "the failure path was logged"
    );
    assert!(logs.contains("assumed::audit"), "requests were audited");
    let vended_secret = body["SecretAccessKey"].as_str().unwrap();
    let vended_token = body["Token"].as_str().unwrap();
    for (what, marker) in [
        ("seed (base32)", marker_seed_base32()),
        (
            "seed (raw)",
            String::from_utf8_lossy(MARKER_SEED_BYTES).into_owned(),
        ),
        ("long-term secret key", MARKER_SECRET_KEY.to_owned()),
        ("vended secret key", vended_secret.to_owned()),
        ("vended session token", vended_token.to_owned()),
        ("listener token", token.clone()),
        ("role token", role_token.clone()),
    ] {
        assert!(!logs.contains(&marker), "the {what} appears in the logs");
    }
}
