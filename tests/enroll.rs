//! The MFA device's life through the real binary: enroll, serve with the
//! enrolled device, resync, disable, and the policies, against the IAM side
//! of the stand-in. Every command gets the stand-in as its IAM and STS
//! endpoint, an explicit key file and an emptied environment, so nothing
//! can fall back to AWS.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use assumed::standin::{Fault, FaultKind, VirtualMfaDevice};
use common::*;

/// What a finished command left: exit status, standard output and error.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `assumed ARGS` against the stand-in, with the stand-in's key, in an
/// emptied environment.
async fn assumed(setup: &Setup, args: &[&str]) -> Run {
    assumed_with_stdin(setup, args, None).await
}

async fn assumed_with_stdin(setup: &Setup, args: &[&str], stdin: Option<&str>) -> Run {
    use tokio::io::AsyncWriteExt;

    let endpoint = setup.standin.endpoint();
    let mut command = tokio::process::Command::new(binary());
    command
        .args(args)
        .args(["--iam-endpoint", &endpoint, "--sts-endpoint", &endpoint])
        .arg("--credentials-file")
        .arg(setup.credentials_file())
        .env_clear()
        .env("HOME", setup.dir.path())
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    let output = child.wait_with_output().await.unwrap();
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `assumed policy …`, which needs no endpoint or key.
async fn policy(args: &[&str]) -> Run {
    let output = tokio::process::Command::new(binary())
        .arg("policy")
        .args(args)
        .env_clear()
        .output()
        .await
        .unwrap();
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Enrolls `device` for `svc` with the seed written to `seed_out`.
async fn enroll(setup: &Setup, device: &str, seed_out: &Path) -> Run {
    let seed_out = seed_out.to_str().unwrap();
    assumed(
        setup,
        &[
            "enroll",
            "--user",
            "svc",
            "--device-name",
            device,
            "--seed-out",
            seed_out,
        ],
    )
    .await
}

fn serial_of(device: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:mfa/{device}")
}

fn enabled(serial: &str) -> VirtualMfaDevice {
    VirtualMfaDevice {
        serial_number: serial.to_owned(),
        enabled_for: Some("svc".to_owned()),
    }
}

fn seed_path(setup: &Setup, name: &str) -> PathBuf {
    setup.dir.path().join(name)
}

#[tokio::test]
async fn an_enrolled_device_serves_live_credentials_through_the_daemon() {
    let setup = Setup::new(&[role("duper")], None).await;
    let seed_out = seed_path(&setup, "enrolled-seed");

    let run = enroll(&setup, "svc-2", &seed_out).await;
    assert!(run.ok, "{}", run.stderr);
    let serial = serial_of("svc-2");
    assert!(
        run.stdout
            .contains(&format!("serial_number = \"{serial}\"")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("seed_file = \"{}\"", seed_out.display())),
        "{}",
        run.stdout
    );
    let mode = std::fs::metadata(&seed_out).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let seed = std::fs::read_to_string(&seed_out).unwrap();
    assert!(assumed::secret::parse_seed(&seed).is_ok());
    assert!(!run.stdout.contains(seed.trim()) && !run.stderr.contains(seed.trim()));
    assert_eq!(setup.standin.virtual_mfa_devices(), [enabled(&serial)]);

    setup.use_device(&serial, &seed_out);
    let daemon = Daemon::start(&setup.config_path);
    let (status, body) = get_with_token(daemon.tcp, "/v1/credentials/duper", &setup.token()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        json(&body)["AccessKeyId"]
            .as_str()
            .unwrap()
            .starts_with("ASIA")
    );
    let last = setup.standin.last_assume_role().unwrap();
    assert_eq!(last.serial_number.as_deref(), Some(serial.as_str()));
    assert!(
        !daemon.logs().join("\n").contains(seed.trim()),
        "the seed never reaches a log line"
    );
}

#[tokio::test]
async fn a_failed_enable_leaves_no_device_and_no_seed_behind() {
    let setup = Setup::new(&[role("duper")], None).await;
    let seed_out = seed_path(&setup, "enrolled-seed");
    setup.standin.inject(
        Fault::new(FaultKind::error(
            403,
            "InvalidAuthenticationCode",
            "Authentication code for device is not valid.",
        ))
        .on_action("EnableMFADevice"),
    );

    let run = enroll(&setup, "svc-2", &seed_out).await;
    assert!(!run.ok);
    assert!(
        run.stderr.contains("deleted again") && run.stderr.contains("InvalidAuthenticationCode"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("clock"), "{}", run.stderr);
    assert_eq!(setup.standin.virtual_mfa_devices(), []);
    assert!(
        !seed_out.exists(),
        "the seed of a deleted device is removed"
    );
    let calls = setup.standin.stats().iam_calls;
    assert_eq!(calls.get("DeleteVirtualMFADevice"), Some(&1));
}

#[tokio::test]
async fn enroll_never_overwrites_a_seed_file_and_then_creates_no_device() {
    let setup = Setup::new(&[role("duper")], None).await;
    let seed_out = seed_path(&setup, "enrolled-seed");
    let first = enroll(&setup, "svc-2", &seed_out).await;
    assert!(first.ok, "{}", first.stderr);
    let seed = std::fs::read(&seed_out).unwrap();

    let second = enroll(&setup, "svc-3", &seed_out).await;
    assert!(!second.ok);
    assert!(
        second.stderr.contains("already exists"),
        "{}",
        second.stderr
    );
    assert_eq!(
        std::fs::read(&seed_out).unwrap(),
        seed,
        "the file is untouched"
    );
    assert_eq!(
        setup.standin.virtual_mfa_devices(),
        [enabled(&serial_of("svc-2"))],
        "no second device"
    );
    let calls = setup.standin.stats().iam_calls;
    assert_eq!(calls.get("CreateVirtualMFADevice"), Some(&1));
}

#[tokio::test]
async fn seed_out_dash_prints_only_the_seed_on_standard_output() {
    let setup = Setup::new(&[role("duper")], None).await;

    let run = assumed(&setup, &["enroll", "--user", "svc", "--seed-out", "-"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    assert!(assumed::secret::parse_seed(&run.stdout).is_ok());
    assert!(!run.stderr.contains(run.stdout.trim()));
    assert!(
        run.stderr.contains(&serial_of("svc")),
        "the serial goes to standard error: {}",
        run.stderr
    );
}

#[tokio::test]
async fn iam_refusals_are_explained_with_what_to_do() {
    let setup = Setup::new(&[role("duper")], None).await;
    let first = enroll(&setup, "svc", &seed_path(&setup, "a")).await;
    assert!(first.ok, "{}", first.stderr);

    let duplicate = enroll(&setup, "svc", &seed_path(&setup, "b")).await;
    assert!(!duplicate.ok);
    assert!(
        duplicate.stderr.contains("EntityAlreadyExists")
            && duplicate.stderr.contains("--device-name"),
        "{}",
        duplicate.stderr
    );
    assert!(!seed_path(&setup, "b").exists());

    setup.standin.inject(
        Fault::new(FaultKind::error(
            403,
            "AccessDenied",
            "User: arn:aws:iam::123456789012:user/svc is not authorized to perform: iam:CreateVirtualMFADevice",
        ))
        .on_action("CreateVirtualMFADevice"),
    );
    let denied = enroll(&setup, "svc-2", &seed_path(&setup, "c")).await;
    assert!(!denied.ok);
    assert!(
        denied.stderr.contains("iam:CreateVirtualMFADevice")
            && denied.stderr.contains("assumed policy"),
        "{}",
        denied.stderr
    );
}

#[tokio::test]
async fn a_ninth_device_is_refused_by_the_limit() {
    let setup = Setup::new(&[role("duper")], None).await;
    for n in 1..=8 {
        let run = enroll(
            &setup,
            &format!("svc-{n}"),
            &seed_path(&setup, &format!("s{n}")),
        )
        .await;
        assert!(run.ok, "device {n}: {}", run.stderr);
    }

    let ninth = enroll(&setup, "svc-9", &seed_path(&setup, "s9")).await;
    assert!(!ninth.ok);
    assert!(
        ninth.stderr.contains("LimitExceeded") && ninth.stderr.contains("assumed disable"),
        "{}",
        ninth.stderr
    );
    assert_eq!(setup.standin.virtual_mfa_devices().len(), 8);
}

#[tokio::test]
async fn verify_role_assumes_the_role_with_the_new_device() {
    let setup = Setup::new(&[role("duper")], None).await;
    let role_arn = format!("arn:aws:iam::{ACCOUNT}:role/DuperRole");
    let seed_out = seed_path(&setup, "enrolled-seed");

    let run = assumed(
        &setup,
        &[
            "enroll",
            "--user",
            "svc",
            "--device-name",
            "svc-2",
            "--seed-out",
            seed_out.to_str().unwrap(),
            "--verify-role",
            &role_arn,
            "--verify-after",
            "0s",
        ],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    assert!(
        run.stdout.contains("STS accepted the device"),
        "{}",
        run.stdout
    );
    let last = setup.standin.last_assume_role().unwrap();
    assert_eq!(last.role_arn, role_arn);
    assert_eq!(last.serial_number, Some(serial_of("svc-2")));
    assert_eq!(last.error_code, None);
}

#[tokio::test]
async fn a_device_is_resynced_then_disabled_only_when_confirmed() {
    let setup = Setup::new(&[role("duper")], None).await;
    let seed_out = seed_path(&setup, "enrolled-seed");
    assert!(enroll(&setup, "svc-2", &seed_out).await.ok);
    let serial = serial_of("svc-2");
    let seed_file = seed_out.to_str().unwrap();

    let exposed = seed_path(&setup, "exposed-seed");
    std::fs::copy(&seed_out, &exposed).unwrap();
    std::fs::set_permissions(&exposed, std::fs::Permissions::from_mode(0o644)).unwrap();
    let exposed = exposed.to_str().unwrap();
    let refused = assumed(
        &setup,
        &[
            "resync",
            "--user",
            "svc",
            "--serial",
            &serial,
            "--seed-file",
            exposed,
        ],
    )
    .await;
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("--seed-file") && refused.stderr.contains("chmod 600"),
        "{}",
        refused.stderr
    );

    let resync = assumed(
        &setup,
        &[
            "resync",
            "--user",
            "svc",
            "--serial",
            &serial,
            "--seed-file",
            seed_file,
        ],
    )
    .await;
    assert!(resync.ok, "{}", resync.stderr);
    let calls = setup.standin.stats().iam_calls;
    assert_eq!(calls.get("ResyncMFADevice"), Some(&1));

    let unconfirmed = assumed(&setup, &["disable", "--user", "svc", "--serial", &serial]).await;
    assert!(!unconfirmed.ok);
    assert!(
        unconfirmed.stderr.contains("--yes-really"),
        "{}",
        unconfirmed.stderr
    );
    assert_eq!(setup.standin.virtual_mfa_devices(), [enabled(&serial)]);

    let calls_before = setup.standin.stats().iam_calls;
    for command in ["resync", "disable"] {
        let mut args = vec![
            command,
            "--user",
            "svc",
            "--serial",
            "svc-2",
            "--seed-file",
            seed_file,
        ];
        if command == "disable" {
            args.push("--yes-really");
        }
        let malformed = assumed(&setup, &args).await;
        assert!(!malformed.ok);
        assert!(
            malformed.stderr.contains("--serial \"svc-2\"")
                && malformed.stderr.contains("arn:aws:iam::"),
            "{}",
            malformed.stderr
        );
    }
    assert_eq!(
        setup.standin.stats().iam_calls,
        calls_before,
        "a malformed serial is refused before IAM is asked"
    );

    let disable = assumed(
        &setup,
        &[
            "disable",
            "--user",
            "svc",
            "--serial",
            &serial,
            "--yes-really",
        ],
    )
    .await;
    assert!(disable.ok, "{}", disable.stderr);
    assert_eq!(setup.standin.virtual_mfa_devices(), []);
}

#[tokio::test]
async fn disable_proves_mfa_with_the_seed_when_the_policy_demands_it() {
    let setup = Setup::new(&[role("duper")], None).await;
    setup.standin.set_mfa_required_to_deactivate(true);
    let seed_out = seed_path(&setup, "enrolled-seed");
    assert!(enroll(&setup, "svc-2", &seed_out).await.ok);
    let serial = serial_of("svc-2");

    let without_mfa = assumed(
        &setup,
        &[
            "disable",
            "--user",
            "svc",
            "--serial",
            &serial,
            "--yes-really",
        ],
    )
    .await;
    assert!(!without_mfa.ok);
    assert!(
        without_mfa.stderr.contains("AccessDenied") && without_mfa.stderr.contains("--seed-file"),
        "{}",
        without_mfa.stderr
    );
    assert_eq!(setup.standin.virtual_mfa_devices(), [enabled(&serial)]);

    let seed = std::fs::read_to_string(&seed_out).unwrap();
    let with_mfa = assumed_with_stdin(
        &setup,
        &[
            "disable",
            "--user",
            "svc",
            "--serial",
            &serial,
            "--seed-file",
            "-",
            "--yes-really",
        ],
        Some(&seed),
    )
    .await;
    assert!(with_mfa.ok, "{}", with_mfa.stderr);
    assert_eq!(setup.standin.virtual_mfa_devices(), []);
    assert_eq!(setup.standin.stats().get_session_token_calls, 1);
}

#[tokio::test]
async fn the_printed_policies_are_json_with_the_mfa_conditions() {
    let all = policy(&[
        "--account",
        ACCOUNT,
        "--user",
        "svc",
        "--role",
        "DuperRole",
        "--max-mfa-age",
        "43200",
    ])
    .await;
    assert!(all.ok, "{}", all.stderr);
    let documents = json(all.stdout.as_bytes());
    let trust = &documents["role-trust"]["Statement"][0];
    assert_eq!(
        trust["Condition"]["Bool"]["aws:MultiFactorAuthPresent"],
        "true"
    );
    assert_eq!(
        trust["Condition"]["NumericLessThan"]["aws:MultiFactorAuthAge"],
        "43200"
    );
    assert_eq!(
        trust["Principal"]["AWS"],
        format!("arn:aws:iam::{ACCOUNT}:user/svc")
    );
    let assume = &documents["user-assume-role"]["Statement"][0];
    assert_eq!(
        assume["Resource"],
        format!("arn:aws:iam::{ACCOUNT}:role/DuperRole")
    );
    assert_eq!(
        assume["Condition"]["Bool"]["aws:MultiFactorAuthPresent"],
        "true"
    );
    assert!(documents["user-mfa"]["Statement"].is_array());

    let one = policy(&[
        "--account",
        ACCOUNT,
        "--user",
        "svc",
        "--role",
        "DuperRole",
        "--document",
        "user-mfa",
    ])
    .await;
    assert!(one.ok, "{}", one.stderr);
    assert_eq!(json(one.stdout.as_bytes())["Version"], "2012-10-17");

    let bad = policy(&["--account", "12345", "--user", "svc", "--role", "R"]).await;
    assert!(
        !bad.ok && bad.stderr.contains("--account"),
        "{}",
        bad.stderr
    );
}
