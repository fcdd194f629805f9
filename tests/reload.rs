//! SIGHUP: the daemon re-reads its configuration, seed and key, applies
//! what changed to the roles, and refuses anything invalid while the
//! running configuration keeps serving.

mod common;
#[path = "common/resilience.rs"]
mod resilience;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use resilience::*;

/// Sessions refreshed every 30 s, so a stopped refresher shows quickly.
const SHORT_SESSION: Duration = Duration::from_secs(120);

fn role_block(name: &str) -> String {
    format!(
        "[[role]]\nname = \"{name}\"\narn = \"arn:aws:iam::{ACCOUNT}:role/{name}Role\"\nsession_name = \"test-host\"\n\n\n"
    )
}

async fn key_of(daemon: &Daemon, setup: &Setup, name: &str) -> (u16, Option<String>) {
    let observation = ask(
        daemon.tcp,
        &format!("/v1/credentials/{name}"),
        &setup.token(),
    )
    .await;
    assert!(observation.problem.is_none(), "{observation:?}");
    (observation.status, observation.access_key_id)
}

/// Waits until `role`'s next refresh is at least `clear` away, so a
/// reload in between cannot be confused with a refresh.
async fn clear_of_refreshes(daemon: &Daemon, role: &str, clear: Duration) {
    loop {
        let (_, body) = health(daemon).await;
        let next = humantime::parse_rfc3339(body["roles"][role]["next_refresh"].as_str().unwrap())
            .unwrap();
        if next > SystemTime::now() + clear {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn sighup_keeps_unchanged_roles_starts_added_ones_and_stops_removed_ones() {
    let setup = Setup::new(&[role("keep"), role("drop")], Some(SHORT_SESSION)).await;
    let daemon = start_daemon(&setup.config_path).await;
    wait_until_healthy(&daemon, Duration::from_secs(45)).await;
    clear_of_refreshes(&daemon, "keep", Duration::from_secs(10)).await;
    let (_, before) = key_of(&daemon, &setup, "keep").await;

    edit_config(&setup, |text| {
        text.replace(&role_block("drop"), "") + &role_block("added")
    });
    hangup(&daemon);
    wait_for_log(&daemon, &["reloaded"], 1, Duration::from_secs(10)).await;
    let (status, after) = key_of(&daemon, &setup, "keep").await;
    assert_eq!(status, 200);
    assert_eq!(after, before, "the unchanged role kept its credential");
    assert_eq!(
        key_of(&daemon, &setup, "drop").await.0,
        404,
        "the removed role is gone"
    );
    let reloaded = log_lines(&daemon, &["reloaded"]).pop().unwrap();
    assert!(
        reloaded.contains("started=added") && reloaded.contains("removed=drop"),
        "{reloaded}"
    );
    let dropped_calls = calls_by_role(&setup)["drop"];

    // The added role gets its first session with the next step's code.
    let deadline = Instant::now() + Duration::from_secs(45);
    while key_of(&daemon, &setup, "added").await.0 != 200 {
        assert!(Instant::now() < deadline, "the added role was never served");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Long enough for every running refresher to refresh once more.
    let keep_calls = calls_by_role(&setup)["keep"];
    tokio::time::sleep(Duration::from_secs(40)).await;
    let calls = calls_by_role(&setup);
    assert!(
        calls["keep"] > keep_calls,
        "the kept refresher still runs: {calls:?}"
    );
    assert_eq!(
        calls["drop"], dropped_calls,
        "the removed refresher stopped: {calls:?}"
    );
    assert_eq!(setup.standin.stats().codes_reused, 0);
}

#[tokio::test]
async fn a_reload_onto_a_second_mfa_device_keeps_serving_and_refreshes_with_the_new_one() {
    const SECOND_SERIAL: &str = "arn:aws:iam::123456789012:mfa/svc-2";
    let second_seed = b"second-device-seed-0123456789ab".to_vec();
    let setup = Setup::new(&[role("duper")], Some(SHORT_SESSION)).await;
    setup.standin.add_device(assumed::standin::MfaDevice {
        serial_number: SECOND_SERIAL.into(),
        seed: second_seed.clone(),
    });
    let daemon = start_daemon(&setup.config_path).await;
    wait_until_healthy(&daemon, Duration::from_secs(45)).await;
    clear_of_refreshes(&daemon, "duper", Duration::from_secs(10)).await;
    let (_, before) = key_of(&daemon, &setup, "duper").await;

    // Rotation: a second device's seed and serial, then SIGHUP.
    let second_path = write_private(
        setup.dir.path(),
        "totp-seed-2",
        &data_encoding::BASE32.encode(&second_seed),
    );
    edit_config(&setup, |text| {
        text.replace(SERIAL, SECOND_SERIAL).replace(
            &setup.dir.path().join("totp-seed").display().to_string(),
            &second_path.display().to_string(),
        )
    });
    hangup(&daemon);
    wait_for_log(
        &daemon,
        &["switched to another MFA device"],
        1,
        Duration::from_secs(10),
    )
    .await;
    let (status, after) = key_of(&daemon, &setup, "duper").await;
    assert_eq!(status, 200, "served without a gap");
    assert_eq!(
        after, before,
        "the credential held is kept across the switch"
    );

    // The next session comes from the new device.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let record = setup.standin.last_assume_role().unwrap();
        if record.serial_number.as_deref() == Some(SECOND_SERIAL) && record.error_code.is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no session with the new device: {record:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, _) = key_of(&daemon, &setup, "duper").await;
    assert_eq!(status, 200);
    let (_, body) = health(&daemon).await;
    assert_eq!(
        body["mfa"]["serial_number"], SECOND_SERIAL,
        "health shows the new device"
    );
    let stats = setup.standin.stats();
    assert_eq!(
        (stats.codes_reused, stats.codes_rejected),
        (0, 0),
        "{stats:?}"
    );
}

// Several threads: the test blocks on the notify socket while the stand-in answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_configuration_is_refused_with_every_problem_logged_while_the_old_one_serves() {
    let setup = Setup::new(&[role("duper")], None).await;
    let notify_path = setup.dir.path().join("notify.sock");
    let systemd = UnixDatagram::bind(&notify_path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let env = vec![(
        "NOTIFY_SOCKET".to_owned(),
        notify_path.display().to_string(),
    )];
    let daemon = start_daemon_with_env(&setup.config_path, env).await;
    assert_eq!(next_notification(&systemd), "READY=1");
    let (_, before) = key_of(&daemon, &setup, "duper").await;
    let good = std::fs::read_to_string(&setup.config_path).unwrap();

    // Two problems at once: both are logged, nothing changes.
    edit_config(&setup, |text| {
        text.replace("duperRole", "not a role") + "[refresh]\nahead = \"1s\"\n"
    });
    hangup(&daemon);
    assert!(next_notification(&systemd).starts_with("RELOADING=1\nMONOTONIC_USEC="));
    assert_eq!(next_notification(&systemd), "READY=1");
    wait_for_log(&daemon, &["reload refused"], 3, Duration::from_secs(10)).await;
    let problems = log_lines(&daemon, &["problem in the new configuration"]).join("\n");
    assert!(problems.contains("role[0].arn"), "{problems}");
    assert!(problems.contains("refresh.ahead"), "{problems}");
    assert_eq!(key_of(&daemon, &setup, "duper").await.1, before);
    let (status, body) = health(&daemon).await;
    assert_eq!(status, 200, "{body}\n{}", daemon.logs().join("\n"));

    // A listener change is valid but needs a restart; the rest applies.
    std::fs::write(&setup.config_path, &good).unwrap();
    edit_config(&setup, |text| {
        text.replace("tcp = \"127.0.0.1:0\"", "tcp = \"127.0.0.1:1\"")
    });
    hangup(&daemon);
    wait_for_log(&daemon, &["reloaded"], 1, Duration::from_secs(10)).await;
    assert_eq!(
        log_lines(&daemon, &["[listen] settings changed", "restart"]).len(),
        1
    );
    assert_eq!(
        key_of(&daemon, &setup, "duper").await.1,
        before,
        "still served on the old port"
    );
    assert_eq!(
        setup.standin.stats().assume_role_calls,
        1,
        "nothing was refreshed by the reloads"
    );
}

/// The next message to the notify socket that is not a status line.
fn next_notification(systemd: &UnixDatagram) -> String {
    let mut buffer = [0u8; 512];
    loop {
        let length = systemd.recv(&mut buffer).expect("a notification");
        let message = String::from_utf8_lossy(&buffer[..length]).into_owned();
        if !message.starts_with("STATUS=") {
            return message;
        }
    }
}
