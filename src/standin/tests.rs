//! The stand-in driven by the real `aws-sdk-sts` client over loopback HTTP.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_sts::Client;
use aws_sdk_sts::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::RequestId;
use aws_sdk_sts::types::{PolicyDescriptorType, Tag};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

const ACCESS_KEY_ID: &str = "AKIASTANDINTEST00001";
const SECRET_ACCESS_KEY: &str = "stand-in-test-secret-not-a-real-key-0000";
const ACCOUNT_ID: &str = "123456789012";
const SERIAL: &str = "arn:aws:iam::123456789012:mfa/svc";
const SEED: &[u8] = b"stand-in test seed, 40 bytes long ......";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/DuperRole";
/// Where each test puts the stand-in's clock within a budget window: 75 s in,
/// which is also 15 s into a TOTP step, so no boundary passes mid-test.
const SETTLED_WINDOW_SECS: u64 = 75;
/// Long enough for a loopback round trip; short enough to keep hang tests quick.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

fn config() -> StandInConfig {
    StandInConfig {
        access_key_id: ACCESS_KEY_ID.to_owned(),
        account_id: ACCOUNT_ID.to_owned(),
        devices: vec![MfaDevice {
            serial_number: SERIAL.to_owned(),
            seed: SEED.to_vec(),
        }],
        session_lifetime: None,
    }
}

async fn start(config: StandInConfig) -> StandIn {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let stand_in = StandIn::start(listener, config)
        .await
        .expect("start stand-in");
    settle_clock(&stand_in);
    stand_in
}

/// Offsets the stand-in's clock so it sits [`SETTLED_WINDOW_SECS`] into a budget window.
fn settle_clock(stand_in: &StandIn) {
    let host = host_secs();
    let offset = SETTLED_WINDOW_SECS as i64 - (host % 180) as i64;
    stand_in.set_clock_offset(offset);
}

fn host_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The code for the step `steps` away from the stand-in's current one.
fn code(stand_in: &StandIn, steps: i64) -> String {
    let at = stand_in.shared.clock.now();
    let at = at
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    totp_rs::Builder::new()
        .with_secret(SEED.to_vec())
        .build_noncompliant()
        .generate((at + steps * 30) as u64)
        .to_string()
}

fn client(stand_in: &StandIn, credentials: Credentials) -> Client {
    client_with_retries(stand_in, credentials, RetryConfig::disabled())
}

fn client_with_retries(stand_in: &StandIn, credentials: Credentials, retry: RetryConfig) -> Client {
    let config = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(credentials)
        .endpoint_url(stand_in.endpoint())
        .retry_config(retry)
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        )
        .build();
    Client::from_conf(config)
}

fn long_term_client(stand_in: &StandIn) -> Client {
    let credentials = Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "test");
    client(stand_in, credentials)
}

fn session_client(stand_in: &StandIn, issued: &aws_sdk_sts::types::Credentials) -> Client {
    let credentials = Credentials::new(
        issued.access_key_id(),
        issued.secret_access_key(),
        Some(issued.session_token().to_owned()),
        None,
        "test-session",
    );
    client(stand_in, credentials)
}

async fn assume_role_with_code(
    client: &Client,
    code: &str,
) -> Result<
    aws_sdk_sts::operation::assume_role::AssumeRoleOutput,
    SdkError<aws_sdk_sts::operation::assume_role::AssumeRoleError>,
> {
    client
        .assume_role()
        .role_arn(ROLE_ARN)
        .role_session_name("host-a")
        .serial_number(SERIAL)
        .token_code(code)
        .send()
        .await
}

/// The STS error code and message of a failed call.
fn service_error<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    error: SdkError<E, R>,
) -> (String, String) {
    let code = error
        .code()
        .unwrap_or_else(|| panic!("no error code in {error:?}"));
    (
        code.to_owned(),
        error.message().unwrap_or_default().to_owned(),
    )
}

/// Sends a raw HTTP/1.1 request and returns the status line, headers and body.
async fn raw_post(stand_in: &StandIn, headers: &str, body: &str) -> (String, String) {
    let mut stream = TcpStream::connect(stand_in.address).await.expect("connect");
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        stand_in.address,
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("receive");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    (head.to_owned(), body.to_owned())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[tokio::test]
async fn the_sdk_assumes_a_role_with_an_mfa_code() {
    let stand_in = start(config()).await;
    let client = long_term_client(&stand_in);

    let output = assume_role_with_code(&client, &code(&stand_in, 0))
        .await
        .expect("assume role");

    let credentials = output.credentials().expect("credentials");
    assert!(credentials.access_key_id().starts_with("ASIA"));
    assert_eq!(credentials.access_key_id().len(), 20);
    assert_eq!(credentials.secret_access_key().len(), 40);
    assert!(credentials.session_token().len() > 100);
    let expires_in = SystemTime::try_from(*credentials.expiration())
        .expect("a time")
        .duration_since(stand_in.shared.clock.now())
        .expect("expiry in the future");
    assert!(expires_in > Duration::from_secs(3590) && expires_in <= Duration::from_secs(3600));

    let user = output.assumed_role_user().expect("assumed role user");
    assert_eq!(
        user.arn(),
        "arn:aws:sts::123456789012:assumed-role/DuperRole/host-a"
    );
    assert!(user.assumed_role_id().starts_with("AROA"));
    assert!(output.request_id().is_some());

    let stats = stand_in.stats();
    assert_eq!(stats.assume_role_calls, 1);
    assert_eq!(stats.sessions_issued, 1);
    assert_eq!(stats.codes_accepted, 1);
    assert_eq!(stats.calls_by_role.get(ROLE_ARN), Some(&1));
}

#[tokio::test]
async fn the_sdk_gets_a_session_token_and_caller_identities() {
    let stand_in = start(config()).await;
    let client = long_term_client(&stand_in);

    let identity = client
        .get_caller_identity()
        .send()
        .await
        .expect("caller identity");
    assert_eq!(identity.arn(), Some("arn:aws:iam::123456789012:user/svc"));
    assert_eq!(identity.account(), Some(ACCOUNT_ID));

    let output = client
        .get_session_token()
        .serial_number(SERIAL)
        .token_code(code(&stand_in, 0))
        .duration_seconds(129_600)
        .send()
        .await
        .expect("session token");
    let credentials = output.credentials().expect("credentials");
    let session_identity = session_client(&stand_in, credentials)
        .get_caller_identity()
        .send()
        .await
        .expect("session caller identity");
    assert_eq!(
        session_identity.arn(),
        Some("arn:aws:iam::123456789012:user/svc")
    );

    let stats = stand_in.stats();
    assert_eq!(stats.get_caller_identity_calls, 2);
    assert_eq!(stats.get_session_token_calls, 1);
}

#[tokio::test]
async fn an_assumed_role_session_identifies_as_the_assumed_role() {
    let stand_in = start(config()).await;
    let output = assume_role_with_code(&long_term_client(&stand_in), &code(&stand_in, 0))
        .await
        .expect("assume role");

    let role_client = session_client(&stand_in, output.credentials().expect("credentials"));
    let identity = role_client
        .get_caller_identity()
        .send()
        .await
        .expect("caller identity");

    assert_eq!(
        identity.arn(),
        Some("arn:aws:sts::123456789012:assumed-role/DuperRole/host-a")
    );
    assert_eq!(
        identity.user_id(),
        output
            .assumed_role_user()
            .map(|user| user.assumed_role_id())
    );
}

#[tokio::test]
async fn errors_reach_the_sdk_as_sts_error_codes() {
    let stand_in = start(config()).await;

    let error = long_term_client(&stand_in)
        .assume_role()
        .role_arn(ROLE_ARN)
        .role_session_name("host-a")
        .send()
        .await
        .expect_err("no MFA");

    let (code, message) = service_error(error);
    assert_eq!(code, "AccessDenied");
    assert_eq!(
        message,
        "User: arn:aws:iam::123456789012:user/svc is not authorized to perform: \
         sts:AssumeRole on resource: arn:aws:iam::123456789012:role/DuperRole"
    );
}

#[tokio::test]
async fn a_wrong_access_key_is_an_invalid_client_token() {
    let stand_in = start(config()).await;
    let credentials = Credentials::new("AKIAWRONGWRONGWRONG1", SECRET_ACCESS_KEY, None, None, "t");

    let error = client(&stand_in, credentials)
        .get_caller_identity()
        .send()
        .await
        .expect_err("unknown key");

    assert_eq!(service_error(error).0, "InvalidClientTokenId");
}

#[tokio::test]
async fn a_session_key_with_the_wrong_token_is_refused() {
    let stand_in = start(config()).await;
    let output = assume_role_with_code(&long_term_client(&stand_in), &code(&stand_in, 0))
        .await
        .expect("assume role");
    let issued = output.credentials().expect("credentials");
    let forged = Credentials::new(
        issued.access_key_id(),
        issued.secret_access_key(),
        Some("not-the-token".to_owned()),
        None,
        "forged",
    );

    let error = client(&stand_in, forged)
        .get_caller_identity()
        .send()
        .await
        .expect_err("wrong token");

    assert_eq!(service_error(error).0, "InvalidClientTokenId");
}

#[tokio::test]
async fn a_reused_code_is_refused_and_counted() {
    let stand_in = start(config()).await;
    let client = long_term_client(&stand_in);
    let code = code(&stand_in, 0);

    assume_role_with_code(&client, &code)
        .await
        .expect("first use");
    let error = assume_role_with_code(&client, &code)
        .await
        .expect_err("second use");

    let (error_code, message) = service_error(error);
    assert_eq!(error_code, "AccessDenied");
    assert_eq!(
        message,
        "MultiFactorAuthentication failed with invalid MFA one time pass code."
    );
    let stats = stand_in.stats();
    assert_eq!(stats.codes_accepted, 1);
    assert_eq!(stats.codes_reused, 1);
    assert_eq!(stats.codes_rejected, 0);
}

#[tokio::test]
async fn codes_within_two_steps_of_the_stand_in_clock_are_accepted() {
    let stand_in = start(config()).await;
    let client = long_term_client(&stand_in);

    for steps in -3..=3_i64 {
        let outcome = assume_role_with_code(&client, &code(&stand_in, steps)).await;
        if steps.abs() <= 2 {
            outcome.unwrap_or_else(|error| panic!("step {steps} refused: {error:?}"));
        } else {
            let (error_code, _) = service_error(outcome.expect_err("out of window"));
            assert_eq!(error_code, "AccessDenied", "step {steps}");
        }
    }

    let stats = stand_in.stats();
    assert_eq!(stats.codes_accepted, 5);
    assert_eq!(stats.codes_rejected, 2);
    assert_eq!(stats.max_verifications_in_window, 7);
}

#[tokio::test]
async fn the_window_follows_the_stand_in_clock_not_the_host_clock() {
    let stand_in = start(config()).await;
    let client = long_term_client(&stand_in);
    let current = code(&stand_in, 0);

    // Move the stand-in three steps ahead: the host's current code is now too old.
    let settled = stand_in.shared.clock.offset_secs.load(Ordering::Relaxed);
    stand_in.set_clock_offset(settled + 90);

    let error = assume_role_with_code(&client, &current)
        .await
        .expect_err("too old");
    assert_eq!(service_error(error).0, "AccessDenied");
    assert_eq!(stand_in.stats().codes_rejected, 1);
}

#[tokio::test]
async fn a_wrong_code_is_rejected_and_counted() {
    let stand_in = start(config()).await;
    let right = code(&stand_in, 0);
    let wrong = if right == "000000" {
        "000001"
    } else {
        "000000"
    };

    let error = assume_role_with_code(&long_term_client(&stand_in), wrong)
        .await
        .expect_err("wrong code");

    let (code, message) = service_error(error);
    assert_eq!(code, "AccessDenied");
    assert_eq!(
        message,
        "MultiFactorAuthentication failed with invalid MFA one time pass code."
    );
    assert_eq!(stand_in.stats().codes_rejected, 1);
}

#[tokio::test]
async fn an_unknown_serial_number_cannot_be_validated() {
    let stand_in = start(config()).await;

    let error = long_term_client(&stand_in)
        .assume_role()
        .role_arn(ROLE_ARN)
        .role_session_name("host-a")
        .serial_number("arn:aws:iam::123456789012:mfa/nobody")
        .token_code(code(&stand_in, 0))
        .send()
        .await
        .expect_err("unknown serial");

    let (code, message) = service_error(error);
    assert_eq!(code, "AccessDenied");
    assert_eq!(
        message,
        "MultiFactorAuthentication failed, unable to validate MFA code. \
         Please verify your MFA serial number is valid and associated with this user."
    );
}

#[tokio::test]
async fn a_device_added_later_is_accepted() {
    let mut config = config();
    config.devices.clear();
    let stand_in = start(config).await;
    stand_in.add_device(MfaDevice {
        serial_number: SERIAL.to_owned(),
        seed: SEED.to_vec(),
    });

    assume_role_with_code(&long_term_client(&stand_in), &code(&stand_in, 0))
        .await
        .expect("assume role");
}

#[tokio::test]
async fn the_budget_refuses_the_tenth_verification_in_a_window() {
    let stand_in = start(config()).await;
    let client = long_term_client(&stand_in);
    let right = code(&stand_in, 0);
    let wrong = if right == "000000" {
        "000001"
    } else {
        "000000"
    };

    for _ in 0..9 {
        let error = assume_role_with_code(&client, wrong)
            .await
            .expect_err("wrong code");
        assert_eq!(
            service_error(error).1,
            "MultiFactorAuthentication failed with invalid MFA one time pass code."
        );
    }
    let error = assume_role_with_code(&client, &right)
        .await
        .expect_err("over budget");
    let (error_code, message) = service_error(error);
    assert_eq!(error_code, "AccessDenied");
    assert!(message.starts_with("MultiFactorAuthentication failed, unable to validate MFA code."));

    let stats = stand_in.stats();
    assert_eq!(stats.codes_rejected, 9);
    assert_eq!(stats.budget_refusals, 1);
    assert_eq!(stats.max_verifications_in_window, 10);

    // The next 3-minute window brings a fresh budget.
    let settled = stand_in.shared.clock.offset_secs.load(Ordering::Relaxed);
    stand_in.set_clock_offset(settled + 180);
    assume_role_with_code(&client, &code(&stand_in, 0))
        .await
        .expect("next window");
}

#[tokio::test]
async fn role_chaining_needs_no_code_but_is_limited_to_an_hour() {
    let stand_in = start(config()).await;
    let output = long_term_client(&stand_in)
        .get_session_token()
        .serial_number(SERIAL)
        .token_code(code(&stand_in, 0))
        .send()
        .await
        .expect("session token");
    let chained = session_client(&stand_in, output.credentials().expect("credentials"));

    let too_long = chained
        .assume_role()
        .role_arn(ROLE_ARN)
        .role_session_name("chained")
        .duration_seconds(3601)
        .send()
        .await
        .expect_err("over an hour");
    assert_eq!(service_error(too_long).0, "ValidationError");

    let role = chained
        .assume_role()
        .role_arn(ROLE_ARN)
        .role_session_name("chained")
        .duration_seconds(3600)
        .send()
        .await
        .expect("chained role");
    assert_eq!(
        role.assumed_role_user().map(|user| user.arn()),
        Some("arn:aws:sts::123456789012:assumed-role/DuperRole/chained")
    );

    let record = stand_in.last_assume_role().expect("a record");
    assert!(record.role_chaining);
    assert_eq!(record.error_code, None);
    assert_eq!(stand_in.stats().codes_accepted, 1);
}

#[tokio::test]
async fn a_session_without_mfa_cannot_assume_a_role() {
    let stand_in = start(config()).await;
    let output = long_term_client(&stand_in)
        .get_session_token()
        .send()
        .await
        .expect("session token without MFA");

    let error = session_client(&stand_in, output.credentials().expect("credentials"))
        .assume_role()
        .role_arn(ROLE_ARN)
        .role_session_name("chained")
        .send()
        .await
        .expect_err("no MFA context");

    assert_eq!(service_error(error).0, "AccessDenied");
}

#[tokio::test]
async fn session_credentials_cannot_get_a_session_token() {
    let stand_in = start(config()).await;
    let output = assume_role_with_code(&long_term_client(&stand_in), &code(&stand_in, 0))
        .await
        .expect("assume role");

    let error = session_client(&stand_in, output.credentials().expect("credentials"))
        .get_session_token()
        .send()
        .await
        .expect_err("session credentials");

    let (code, message) = service_error(error);
    assert_eq!(code, "AccessDenied");
    assert_eq!(
        message,
        "Cannot call GetSessionToken with session credentials"
    );
}

#[tokio::test]
async fn an_expired_session_is_refused() {
    let mut config = config();
    config.session_lifetime = Some(Duration::from_secs(60));
    let stand_in = start(config).await;
    let output = assume_role_with_code(&long_term_client(&stand_in), &code(&stand_in, 0))
        .await
        .expect("assume role");
    let role_client = session_client(&stand_in, output.credentials().expect("credentials"));
    role_client
        .get_caller_identity()
        .send()
        .await
        .expect("fresh session works");

    let settled = stand_in.shared.clock.offset_secs.load(Ordering::Relaxed);
    stand_in.set_clock_offset(settled + 61);
    let error = role_client
        .get_caller_identity()
        .send()
        .await
        .expect_err("expired");

    assert_eq!(service_error(error).0, "ExpiredToken");
}

#[tokio::test]
async fn the_session_lifetime_overrides_the_requested_duration() {
    let mut config = config();
    config.session_lifetime = Some(Duration::from_secs(120));
    let stand_in = start(config).await;

    let output = long_term_client(&stand_in)
        .assume_role()
        .role_arn(ROLE_ARN)
        .role_session_name("host-a")
        .duration_seconds(43_200)
        .serial_number(SERIAL)
        .token_code(code(&stand_in, 0))
        .send()
        .await
        .expect("assume role");

    let expiration = *output.credentials().expect("credentials").expiration();
    let expires_in = SystemTime::try_from(expiration)
        .expect("a time")
        .duration_since(stand_in.shared.clock.now())
        .expect("in the future");
    assert!(expires_in <= Duration::from_secs(120) && expires_in > Duration::from_secs(110));
}

#[tokio::test]
async fn role_sessions_can_be_made_shorter_than_the_session_token_they_are_chained_from() {
    let mut config = config();
    config.session_lifetime = Some(Duration::from_secs(600));
    let stand_in = start(config).await;
    stand_in.set_role_session_lifetime(Some(Duration::from_secs(150)));
    let expires_in = |expiration: aws_smithy_types::DateTime| {
        SystemTime::try_from(expiration)
            .expect("a time")
            .duration_since(stand_in.shared.clock.now())
            .expect("in the future")
    };

    let output = long_term_client(&stand_in)
        .get_session_token()
        .serial_number(SERIAL)
        .token_code(code(&stand_in, 0))
        .send()
        .await
        .expect("session token");
    let session = output.credentials().expect("credentials");
    assert!(expires_in(*session.expiration()) > Duration::from_secs(590));
    let role = session_client(&stand_in, session)
        .assume_role()
        .role_arn(ROLE_ARN)
        .role_session_name("chained")
        .send()
        .await
        .expect("chained role");
    let role_expires_in = expires_in(*role.credentials().expect("credentials").expiration());
    assert!(
        role_expires_in <= Duration::from_secs(150) && role_expires_in > Duration::from_secs(140)
    );
}

#[tokio::test]
async fn optional_assume_role_parameters_arrive_and_are_recorded() {
    let stand_in = start(config()).await;
    let tag = Tag::builder().key("host").value("a").build().expect("tag");
    let policy = PolicyDescriptorType::builder()
        .arn("arn:aws:iam::aws:policy/ReadOnlyAccess")
        .build();

    let output = long_term_client(&stand_in)
        .assume_role()
        .role_arn(ROLE_ARN)
        .role_session_name("host-a")
        .duration_seconds(7200)
        .serial_number(SERIAL)
        .token_code(code(&stand_in, 0))
        .external_id("ext-1234")
        .policy_arns(policy)
        .tags(tag)
        .source_identity("operator@example")
        .send()
        .await
        .expect("assume role");

    assert_eq!(output.source_identity(), Some("operator@example"));
    let record = stand_in.last_assume_role().expect("a record");
    assert_eq!(
        record,
        AssumeRoleRecord {
            role_arn: ROLE_ARN.to_owned(),
            role_session_name: "host-a".to_owned(),
            duration_seconds: Some(7200),
            serial_number: Some(SERIAL.to_owned()),
            external_id: Some("ext-1234".to_owned()),
            policy_arns: vec!["arn:aws:iam::aws:policy/ReadOnlyAccess".to_owned()],
            tags: vec![("host".to_owned(), "a".to_owned())],
            source_identity: Some("operator@example".to_owned()),
            role_chaining: false,
            error_code: None,
        }
    );
}

#[tokio::test]
async fn invalid_parameters_are_validation_errors_and_spend_no_code() {
    let stand_in = start(config()).await;
    let client = long_term_client(&stand_in);
    let code = code(&stand_in, 0);
    let cases: [(&str, &str, i32); 4] = [
        ("arn:aws:iam::123:role/Short", "host-a", 3600),
        (ROLE_ARN, "x", 3600),
        (ROLE_ARN, "host a", 3600),
        (ROLE_ARN, "host-a", 899),
    ];

    for (role_arn, session_name, duration) in cases {
        let error = client
            .assume_role()
            .role_arn(role_arn)
            .role_session_name(session_name)
            .duration_seconds(duration)
            .serial_number(SERIAL)
            .token_code(&code)
            .send()
            .await
            .expect_err("invalid");
        assert_eq!(
            service_error(error).0,
            "ValidationError",
            "{role_arn} {session_name} {duration}"
        );
    }
    assert_eq!(
        stand_in
            .last_assume_role()
            .and_then(|r| r.error_code)
            .as_deref(),
        Some("ValidationError")
    );

    assume_role_with_code(&client, &code)
        .await
        .expect("the code is still unused");
}

#[tokio::test]
async fn get_session_token_durations_are_bounded() {
    let stand_in = start(config()).await;
    let client = long_term_client(&stand_in);

    for duration in [899, 129_601] {
        let error = client
            .get_session_token()
            .duration_seconds(duration)
            .send()
            .await
            .expect_err("out of bounds");
        assert_eq!(service_error(error).0, "ValidationError", "{duration}");
    }
}

#[tokio::test]
async fn an_injected_error_reaches_the_sdk_then_runs_out() {
    let stand_in = start(config()).await;
    let client = long_term_client(&stand_in);
    stand_in.inject(
        Fault::new(FaultKind::throttling())
            .on_action("GetCallerIdentity")
            .repeated(2),
    );

    for _ in 0..2 {
        let error = client
            .get_caller_identity()
            .send()
            .await
            .expect_err("throttled");
        assert_eq!(
            service_error(error),
            ("Throttling".to_owned(), "Rate exceeded".to_owned())
        );
    }
    client
        .get_caller_identity()
        .send()
        .await
        .expect("fault used up");
    assert_eq!(stand_in.stats().get_caller_identity_calls, 3);
}

#[tokio::test]
async fn an_injected_server_error_is_retried_by_the_sdk() {
    let stand_in = start(config()).await;
    let credentials = Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "test");
    let retry = RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(1));
    let client = client_with_retries(&stand_in, credentials, retry);
    stand_in
        .inject(Fault::new(FaultKind::error(503, "ServiceUnavailable", "try again")).repeated(2));

    client
        .get_caller_identity()
        .send()
        .await
        .expect("third attempt succeeds");

    assert_eq!(stand_in.stats().get_caller_identity_calls, 3);
}

#[tokio::test]
async fn a_delay_holds_the_answer_then_processes_the_request() {
    let stand_in = start(config()).await;
    let client = long_term_client(&stand_in);
    let delay = Duration::from_millis(200);
    stand_in.inject(Fault::new(FaultKind::Delay(delay)).on_action("AssumeRole"));

    let started = Instant::now();
    assume_role_with_code(&client, &code(&stand_in, 0))
        .await
        .expect("delayed answer");

    assert!(started.elapsed() >= delay);
    assert_eq!(stand_in.stats().sessions_issued, 1);
}

#[tokio::test]
async fn a_hang_makes_the_sdk_time_out_and_spends_no_code() {
    let stand_in = start(config()).await;
    let client = long_term_client(&stand_in);
    let code = code(&stand_in, 0);
    stand_in.inject(Fault::new(FaultKind::Hang).on_action("AssumeRole"));

    let error = assume_role_with_code(&client, &code)
        .await
        .expect_err("hang");
    assert!(matches!(error, SdkError::TimeoutError(_)), "{error:?}");

    assume_role_with_code(&client, &code)
        .await
        .expect("code unspent");
    assert_eq!(stand_in.stats().assume_role_calls, 2);
}

#[tokio::test]
async fn a_malformed_answer_is_not_parsed_as_credentials() {
    let stand_in = start(config()).await;
    let client = long_term_client(&stand_in);
    stand_in.inject(Fault::new(FaultKind::Malformed).until_cleared());

    for _ in 0..2 {
        let error = assume_role_with_code(&client, &code(&stand_in, 0))
            .await
            .expect_err("malformed");
        let error = error.into_service_error();
        assert_eq!(error.code(), None, "{error:?}");
    }
    stand_in.clear_faults();
    assume_role_with_code(&client, &code(&stand_in, 0))
        .await
        .expect("faults cleared");
    assert_eq!(stand_in.stats().codes_accepted, 1);
}

#[tokio::test]
async fn every_answer_carries_a_date_from_the_stand_in_clock_and_a_request_id() {
    let stand_in = start(config()).await;
    stand_in.set_clock_offset(3 * 3600);

    let (head, body) = raw_post(&stand_in, "", "Action=GetCallerIdentity&Version=2011-06-15").await;

    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(
        body.contains("<Code>MissingAuthenticationToken</Code>"),
        "{body}"
    );
    let date = httpdate::parse_http_date(header(&head, "date").expect("a Date header"))
        .expect("an HTTP date");
    let ahead = date
        .duration_since(SystemTime::now())
        .expect("the stand-in is ahead");
    assert!(ahead > Duration::from_secs(3 * 3600 - 5), "{ahead:?}");
    let request_id = header(&head, "x-amzn-requestid").expect("a request id");
    assert!(body.contains(&format!("<RequestId>{request_id}</RequestId>")));
}

#[tokio::test]
async fn an_unknown_action_is_an_invalid_action() {
    let stand_in = start(config()).await;

    let (head, body) = raw_post(
        &stand_in,
        "",
        "Action=GetFederationToken&Version=2011-06-15",
    )
    .await;

    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(body.contains("<Code>InvalidAction</Code>"), "{body}");
    assert!(header(&head, "date").is_some());
}

#[tokio::test]
async fn an_unsigned_header_is_an_incomplete_signature() {
    let stand_in = start(config()).await;
    let authorization = format!(
        "Authorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20260101/us-east-1/sts/aws4_request\r\n"
    );

    let (head, body) = raw_post(
        &stand_in,
        &authorization,
        "Action=GetCallerIdentity&Version=2011-06-15",
    )
    .await;

    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(body.contains("<Code>IncompleteSignature</Code>"), "{body}");
}

#[tokio::test]
async fn with_the_signing_time_check_a_skewed_request_is_refused() {
    let stand_in = start(config()).await;
    stand_in.set_signing_time_check(true);
    stand_in.set_clock_offset(10 * 60);

    let error = long_term_client(&stand_in)
        .get_caller_identity()
        .send()
        .await
        .expect_err("signed 10 min behind");

    let (code, message) = service_error(error);
    assert_eq!(code, "SignatureDoesNotMatch");
    assert!(message.starts_with("Signature expired: "), "{message}");
}

#[tokio::test]
async fn with_the_signing_time_check_the_sdk_corrects_its_clock_on_retry() {
    let stand_in = start(config()).await;
    stand_in.set_signing_time_check(true);
    stand_in.set_clock_offset(10 * 60);
    let credentials = Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "test");
    let retry = RetryConfig::standard().with_initial_backoff(Duration::from_millis(1));
    let client = client_with_retries(&stand_in, credentials, retry);

    client
        .get_caller_identity()
        .send()
        .await
        .expect("retried with the stand-in's time");

    assert_eq!(stand_in.stats().get_caller_identity_calls, 2);
}

#[test]
fn addresses_off_loopback_are_refused() {
    let wildcard: SocketAddr = "0.0.0.0:8080".parse().expect("address");
    let private: SocketAddr = "10.0.0.1:8080".parse().expect("address");
    let loopback: SocketAddr = "127.0.0.1:8080".parse().expect("address");

    assert_eq!(
        refuse_off_loopback(wildcard).map_err(|e| e.kind()),
        Err(io::ErrorKind::InvalidInput)
    );
    assert!(refuse_off_loopback(private).is_err());
    assert!(refuse_off_loopback(loopback).is_ok());
}

#[tokio::test]
async fn shutdown_releases_a_hung_request() {
    let stand_in = start(config()).await;
    stand_in.inject(Fault::new(FaultKind::Hang));
    let address = stand_in.address;
    let hung = tokio::spawn(async move {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        let body = "Action=GetCallerIdentity&Version=2011-06-15";
        let request = format!(
            "POST / HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        response
    });
    while stand_in.stats().get_caller_identity_calls == 0 {
        tokio::task::yield_now().await;
    }

    let started = Instant::now();
    stand_in.shutdown().await;

    assert!(started.elapsed() < SHUTDOWN_GRACE);
    let response = String::from_utf8(hung.await.expect("client task")).expect("text");
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
}

#[test]
fn a_device_debug_never_shows_its_seed() {
    let device = MfaDevice {
        serial_number: SERIAL.to_owned(),
        seed: b"MARKER-SEED-0123456789".to_vec(),
    };

    let printed = format!("{device:?} {:?}", config());

    assert!(!printed.contains("MARKER"), "{printed}");
    assert!(printed.contains("redacted"));
}

#[tokio::test]
async fn shutdown_is_prompt_while_the_sdk_holds_idle_connections() {
    let stand_in = start(config()).await;
    let address = stand_in.address;
    let client = long_term_client(&stand_in);
    client
        .get_caller_identity()
        .send()
        .await
        .expect("caller identity");

    let started = Instant::now();
    stand_in.shutdown().await;

    assert!(started.elapsed() < SHUTDOWN_GRACE);
    assert!(
        TcpStream::connect(address).await.is_err(),
        "still accepting"
    );
}

/// A log sink for [`secrets_never_reach_the_logs`].
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let logs = LogBuffer::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("assumed=trace"))
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .without_time()
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut config = config();
    config.devices[0].seed = b"MARKER-SEED-0123456789".to_vec();
    let stand_in = start(config).await;

    let totp = totp_rs::Builder::new()
        .with_secret(b"MARKER-SEED-0123456789".to_vec())
        .build_noncompliant();
    let now = stand_in
        .shared
        .clock
        .now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    let code = totp.generate(now.as_secs()).to_string();
    let output = assume_role_with_code(&long_term_client(&stand_in), &code)
        .await
        .expect("assume role");
    let issued = output.credentials().expect("credentials");
    session_client(&stand_in, issued)
        .get_caller_identity()
        .send()
        .await
        .expect("caller identity");
    stand_in.shutdown().await;

    let logs = String::from_utf8(lock(&logs.0).clone()).expect("text logs");
    assert!(logs.contains("STS stand-in answered"), "{logs}");
    for secret in [
        "MARKER",
        SECRET_ACCESS_KEY,
        issued.secret_access_key(),
        issued.session_token(),
        code.as_str(),
    ] {
        assert!(!logs.contains(secret), "{secret} logged:\n{logs}");
    }
}

#[tokio::test]
async fn an_account_id_that_is_not_twelve_digits_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let mut config = config();
    config.account_id = "1234".to_owned();

    let error = StandIn::start(listener, config)
        .await
        .err()
        .expect("refused");

    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
}
