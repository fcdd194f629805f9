//! The command line as an operator meets it: `check-config` and `serve`
//! refusing bad input with messages that name the key and the fix.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;

fn check_config(config: &std::path::Path) -> (bool, String, String) {
    let output = Command::new(binary())
        .args(["check-config", "--config"])
        .arg(config)
        .env_remove("ASSUMED_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), stdout, stderr)
}

#[tokio::test]
async fn check_config_accepts_a_good_setup_without_touching_the_network() {
    let setup = Setup::new(&[role("duper")], None).await;
    let (ok, stdout, stderr) = check_config(&setup.config_path);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
    let stats = setup.standin.stats();
    assert_eq!(
        stats.assume_role_calls + stats.get_caller_identity_calls,
        0,
        "no STS call"
    );
}

#[tokio::test]
async fn each_configuration_error_exits_non_zero_naming_its_key() {
    let setup = Setup::new(&[role("duper")], None).await;
    let good = std::fs::read_to_string(&setup.config_path).unwrap();
    let cases = [
        ("region = \"us-east-1\"", "", "aws.region"),
        (
            "serial_number = \"arn:aws:iam::123456789012:mfa/svc\"",
            "serial_number = \"GAHT12345678\"",
            "mfa.serial_number",
        ),
        ("name = \"duper\"", "name = \"du/per\"", "role[0].name"),
        (
            "arn = \"arn:aws:iam::123456789012:role/duperRole\"",
            "arn = \"arn:aws:iam::123456789012:user/x\"",
            "role[0].arn",
        ),
        (
            "session_name = \"test-host\"",
            "session_name = \"test-host\"\nduration = \"10m\"",
            "role[0].duration",
        ),
        (
            "session_name = \"test-host\"",
            "session_name = \"test-host\"\nduration = \"13h\"",
            "role[0].duration",
        ),
        (
            "tcp = \"127.0.0.1:0\"",
            "tcp = \"0.0.0.0:9911\"",
            "listen.tcp",
        ),
        (
            "[[role]]",
            "[[role]]\nname = \"duper\"\narn = \"arn:aws:iam::123456789012:role/X\"\n[[role]]",
            "role[1].name",
        ),
        (
            "sts_endpoint = \"http://127.0.0.1",
            "sts_endpoint = \"http://sts.example.com",
            "aws.sts_endpoint",
        ),
    ];
    for (from, to, key) in cases {
        let path = setup.dir.path().join("case.toml");
        std::fs::write(&path, good.replacen(from, to, 1)).unwrap();
        let (ok, _, stderr) = check_config(&path);
        assert!(!ok, "accepted with {to:?}");
        assert!(stderr.contains(key), "no mention of {key} in:\n{stderr}");
    }

    let no_listener = good
        .replace("unix_socket", "# unix_socket")
        .replace("tcp = ", "# tcp = ");
    let path = setup.dir.path().join("case.toml");
    std::fs::write(&path, no_listener).unwrap();
    let (ok, _, stderr) = check_config(&path);
    assert!(!ok && stderr.contains("no listener"), "{stderr}");
}

#[tokio::test]
async fn missing_and_unsafe_secret_files_are_all_reported_with_the_fix() {
    let setup = Setup::new(&[role("duper")], None).await;
    let seed = setup.dir.path().join("totp-seed");
    std::fs::set_permissions(&seed, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::remove_file(setup.dir.path().join("aws-credentials")).unwrap();
    let (ok, _, stderr) = check_config(&setup.config_path);
    assert!(!ok);
    assert!(
        stderr.contains("mfa.seed_file") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    assert!(
        stderr.contains("aws.credentials_file") && stderr.contains("create it"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&marker_seed_base32()),
        "the seed is never echoed"
    );
}

#[tokio::test]
async fn serve_refuses_a_bad_configuration_before_listening() {
    let setup = Setup::new(&[role("duper")], None).await;
    let seed = setup.dir.path().join("totp-seed");
    std::fs::write(&seed, "not base32 at all: MARKER!").unwrap();
    let output = Command::new(binary())
        .args(["serve", "--config"])
        .arg(&setup.config_path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not base32"), "{stderr}");
    assert!(!stderr.contains("MARKER"), "{stderr}");
    assert!(!setup.socket.exists(), "nothing was bound");
}

#[tokio::test]
async fn check_config_reports_a_token_file_that_serve_would_refuse() {
    let setup = Setup::new(&[role("duper")], None).await;
    std::fs::create_dir_all(setup.token_file.parent().unwrap()).unwrap();
    std::fs::write(&setup.token_file, "0123456789abcdefghijklmnopqrstuv\n").unwrap();
    std::fs::set_permissions(&setup.token_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (ok, _, stderr) = check_config(&setup.config_path);
    assert!(!ok, "accepted a token ending in a newline");
    assert!(
        stderr.contains("listen.token_file") && stderr.contains("whitespace"),
        "{stderr}"
    );
}

// The stand-in needs a thread of its own while this test blocks on `status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_finds_the_socket_named_in_the_configuration() {
    let setup = Setup::new(&[role("duper")], None).await;
    let _daemon = Daemon::start(&setup.config_path);
    // The first session arrives just after the daemon starts listening.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let output = Command::new(binary())
            .args(["status", "--config"])
            .arg(&setup.config_path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_ne!(
            output.status.code(),
            Some(2),
            "the socket was not found: {stdout}"
        );
        if output.status.code() == Some(0) {
            assert!(
                stdout.contains("duper") && stdout.contains("usable"),
                "{stdout}"
            );
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never usable: {stdout}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[tokio::test]
async fn env_prints_a_roles_endpoint_and_refuses_a_role_that_is_not_configured() {
    let setup = Setup::new(&[role("duper"), role("other")], None).await;
    let with_port_0 = std::fs::read_to_string(&setup.config_path).unwrap();
    let port_0 = Command::new(binary())
        .args(["env", "--config"])
        .arg(&setup.config_path)
        .output()
        .unwrap();
    assert!(!port_0.status.success(), "no address to give clients");
    assert!(String::from_utf8_lossy(&port_0.stderr).contains("fixed port"));
    std::fs::write(
        &setup.config_path,
        with_port_0.replace("tcp = \"127.0.0.1:0\"", "tcp = \"127.0.0.1:9911\""),
    )
    .unwrap();
    let env = |role: &str| {
        Command::new(binary())
            .args(["env", "--role", role, "--config"])
            .arg(&setup.config_path)
            .output()
            .unwrap()
    };

    let known = env("other");
    let stdout = String::from_utf8_lossy(&known.stdout);
    assert!(known.status.success());
    assert!(
        stdout.contains(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:9911/v1/credentials/other\n"
        ) && stdout.contains(&format!(
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={}\n",
            setup.token_file.display()
        )),
        "{stdout}"
    );

    let unknown = env("nope");
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(!unknown.status.success());
    assert!(
        unknown.stdout.is_empty(),
        "no export lines for a wrong role"
    );
    assert!(
        stderr.contains("--role nope") && stderr.contains("duper, other"),
        "{stderr}"
    );
}
