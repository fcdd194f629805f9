//! Operating the daemon: `/metrics` parsed as Prometheus text, `status`
//! exit codes for scripts, `credential-process` through aws-config's own
//! provider, the log formats, and the generated completions and man page.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use assumed::standin::{Fault, FaultKind};
use aws_credential_types::provider::ProvideCredentials;
use common::*;

const ACCESS_DENIED: &str =
    "User: arn:aws:iam::123456789012:user/svc is not authorized to perform: sts:AssumeRole";

async fn wait_until_healthy(daemon: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let host = daemon.tcp.to_string();
    while get_tcp(daemon.tcp, "/healthz", &[("host", &host)]).await.0 != 200 {
        assert!(Instant::now() < deadline, "the role never became usable");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn access_denied() -> Fault {
    Fault::new(FaultKind::error(403, "AccessDenied", ACCESS_DENIED))
        .on_action("AssumeRole")
        .until_cleared()
}

/// `GET /metrics` over TCP without a token: the content type and the text.
async fn scrape(daemon: &Daemon) -> (String, String) {
    let stream = tokio::net::TcpStream::connect(daemon.tcp).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get("/metrics")
        .header("host", daemon.tcp.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (content_type, String::from_utf8(body.to_vec()).unwrap())
}

/// One sample line: the metric name, its labels and its value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict reader of the Prometheus text format (0.0.4): every line must
/// be a `# HELP`, a `# TYPE` or a sample; names and label names must be
/// valid; label values must be quoted with only `\\`, `\"` and `\n`
/// escapes; values must be numbers; a family's samples must follow its
/// TYPE line, and a family must appear once; a histogram's `+Inf` bucket
/// must equal its `_count`. Panics on the first violation.
fn parse_strictly(text: &str) -> Vec<Sample> {
    assert!(text.ends_with('\n'), "the text ends with a newline");
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(valid_name(name, true), "bad name in {line:?}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(valid_name(name, true), "bad name in {line:?}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "unknown type in {line:?}"
            );
            assert!(
                families.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{name} declared twice"
            );
            current = Some((name.to_owned(), kind.to_owned()));
        } else {
            assert!(
                !line.starts_with('#') && !line.is_empty(),
                "not a sample: {line:?}"
            );
            let sample = parse_sample(line);
            let (family, kind) = current.as_ref().expect("a sample before any TYPE line");
            let allowed = match kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| sample.name == format!("{family}{suffix}")),
                _ => &sample.name == family,
            };
            assert!(
                allowed,
                "{} outside its family (in {family}): {line}",
                sample.name
            );
            samples.push(sample);
        }
    }
    for (family, kind) in &families {
        if kind == "histogram" {
            for count in samples
                .iter()
                .filter(|s| s.name == format!("{family}_count"))
            {
                let mut labels = count.labels.clone();
                labels.insert("le".into(), "+Inf".into());
                let infinite = samples
                    .iter()
                    .find(|s| s.name == format!("{family}_bucket") && s.labels == labels)
                    .expect("a +Inf bucket");
                assert_eq!(infinite.value, count.value, "{family}: +Inf bucket = count");
            }
        }
    }
    samples
}

fn valid_name(name: &str, colons: bool) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':'));
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':'))
}

fn parse_sample(line: &str) -> Sample {
    let name_end = line.find(['{', ' ']).expect("a value after the name");
    let name = &line[..name_end];
    assert!(valid_name(name, true), "bad metric name in {line:?}");
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        loop {
            let start = chars.peek().map(|(i, _)| *i).expect("unterminated labels");
            if after[start..].starts_with('}') {
                chars.next();
                break;
            }
            let eq = after[start..].find('=').expect("label=value") + start;
            let key = &after[start..eq];
            assert!(valid_name(key, false), "bad label name {key:?} in {line:?}");
            while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                chars.next();
            }
            assert_eq!(
                chars.next().map(|(_, c)| c),
                Some('"'),
                "unquoted value in {line:?}"
            );
            let mut value = String::new();
            loop {
                match chars.next().expect("unterminated label value").1 {
                    '"' => break,
                    '\\' => match chars.next().expect("dangling escape").1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => panic!("bad escape \\{other} in {line:?}"),
                    },
                    c => value.push(c),
                }
            }
            assert!(
                labels.insert(key.to_owned(), value).is_none(),
                "repeated label in {line:?}"
            );
            match chars.next().expect("unterminated labels").1 {
                ',' => {}
                '}' => break,
                other => panic!("unexpected {other:?} in {line:?}"),
            }
        }
        let consumed = chars.peek().map_or(after.len(), |(i, _)| *i);
        rest = &after[consumed..];
    }
    let mut fields = rest
        .strip_prefix(' ')
        .expect("a space before the value")
        .split(' ');
    let value = match fields.next().expect("a value") {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        number => number
            .parse()
            .unwrap_or_else(|_| panic!("not a number in {line:?}")),
    };
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .unwrap_or_else(|_| panic!("bad timestamp in {line:?}"));
    }
    assert!(fields.next().is_none(), "trailing text in {line:?}");
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

#[test]
fn the_strict_reader_refuses_malformed_text() {
    let good =
        "# HELP a_total A.\n# TYPE a_total counter\na_total{path=\"/x/{name}\",q=\"a\\\"b\"} 1\n";
    let samples = parse_strictly(good);
    assert_eq!(samples[0].labels["path"], "/x/{name}");
    assert_eq!(samples[0].labels["q"], "a\"b");
    for bad in [
        "# TYPE a_total counter\na_total{path=/x} 1\n",
        "# TYPE a_total counter\na_total 1 2 3\n",
        "# TYPE a_total counter\na_total one\n",
        "a_total 1\n",
        "# TYPE a_total counter\nb_total 1\n",
        "# TYPE a_total counter\n# EOF\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1\nh_sum 1\n",
    ] {
        let refused = std::panic::catch_unwind(|| parse_strictly(bad)).is_err();
        assert!(refused, "accepted: {bad:?}");
    }
}

/// The value of the one sample of `name` whose labels include `labels`.
fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert!(
        matching.len() <= 1,
        "{name} {labels:?} matches {} samples",
        matching.len()
    );
    matching.first().map(|s| s.value)
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_with_every_family_and_plausible_values() {
    let setup = Setup::new(&[role("duper")], None).await;
    let daemon = Daemon::start(&setup.config_path);
    wait_until_healthy(&daemon).await;
    let token = setup.token();
    assert_eq!(
        get_with_token(daemon.tcp, "/v1/credentials", &token)
            .await
            .0,
        200
    );
    let (status, _) = assumed::client::get(&setup.socket, "/v1/credentials/duper")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let host = daemon.tcp.to_string();
    assert_eq!(
        get_tcp(daemon.tcp, "/no/such/path/12345", &[("host", &host)])
            .await
            .0,
        404
    );

    let (content_type, text) = scrape(&daemon).await;
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let metrics = parse_strictly(&text);
    let role = [("role", "duper")];

    let refreshes = [("role", "duper"), ("outcome", "success")];
    assert_eq!(
        sample(&metrics, "assumed_refreshes_total", &refreshes),
        Some(1.0)
    );
    let expiry = sample(&metrics, "assumed_credential_expiry_seconds", &role).unwrap();
    assert!(
        (3000.0..=3600.0).contains(&expiry),
        "an hour-long session expires in {expiry} s"
    );
    assert_eq!(sample(&metrics, "assumed_role_usable", &role), Some(1.0));
    assert_eq!(
        sample(&metrics, "assumed_totp_codes_used_total", &[]),
        Some(1.0)
    );
    let in_window = sample(&metrics, "assumed_mfa_verifications_current_window", &[]).unwrap();
    assert!(
        in_window <= 1.0,
        "one code so far, this window or the last: {in_window}"
    );
    assert_eq!(
        sample(&metrics, "assumed_mfa_verifications_window_limit", &[]),
        Some(6.0)
    );
    let offset = sample(&metrics, "assumed_sts_clock_offset_seconds", &[]).unwrap();
    assert!(
        offset.abs() < 5.0,
        "the stand-in shares this host's clock: {offset}"
    );
    let calls = [("operation", "AssumeRole")];
    let bucket = |le| {
        let labels = [("operation", "AssumeRole"), ("le", le)];
        sample(
            &metrics,
            "assumed_sts_request_duration_seconds_bucket",
            &labels,
        )
    };
    assert_eq!(bucket("+Inf"), Some(1.0));
    assert_eq!(
        bucket("60"),
        Some(1.0),
        "the stand-in answers within a minute"
    );
    assert_eq!(
        sample(
            &metrics,
            "assumed_sts_request_duration_seconds_count",
            &calls
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "assumed_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );

    let requests = |listener, path, status| {
        sample(
            &metrics,
            "assumed_http_requests_total",
            &[("listener", listener), ("path", path), ("status", status)],
        )
    };
    assert_eq!(requests("tcp", "/v1/credentials", "200"), Some(1.0));
    assert_eq!(requests("unix", "/v1/credentials/{name}", "200"), Some(1.0));
    assert_eq!(
        requests("tcp", "unmatched", "404"),
        Some(1.0),
        "the raw path never becomes a label"
    );
    assert!(requests("tcp", "/healthz", "200").unwrap() >= 1.0);
    assert!(!text.contains("12345"), "the raw path never appears");

    // The guards apply to /metrics too, and refusals are counted.
    let refused = get_tcp(
        daemon.tcp,
        "/metrics",
        &[("host", &host), ("origin", "http://evil.example")],
    )
    .await
    .0;
    assert_eq!(refused, 403);
    let (_, text) = scrape(&daemon).await;
    let metrics = parse_strictly(&text);
    let requests = |path, status| {
        sample(
            &metrics,
            "assumed_http_requests_total",
            &[("listener", "tcp"), ("path", path), ("status", status)],
        )
    };
    assert_eq!(
        requests("/metrics", "200"),
        Some(1.0),
        "the first scrape was counted"
    );
    assert_eq!(requests("/metrics", "403"), Some(1.0));
}

#[tokio::test]
async fn a_refused_refresh_is_counted_with_its_class_and_leaves_no_expiry_sample() {
    let setup = Setup::new(&[role("duper")], None).await;
    setup.standin.inject(access_denied());
    let daemon = Daemon::start(&setup.config_path);
    daemon
        .wait_for_line(|line| line.contains("refresh failed"))
        .await;

    let (_, text) = scrape(&daemon).await;
    let metrics = parse_strictly(&text);
    let failed = [
        ("role", "duper"),
        ("outcome", "failure"),
        ("class", "access_denied"),
    ];
    assert_eq!(
        sample(&metrics, "assumed_refreshes_total", &failed),
        Some(1.0)
    );
    let succeeded = [("role", "duper"), ("outcome", "success")];
    assert_eq!(
        sample(&metrics, "assumed_refreshes_total", &succeeded),
        None
    );
    let role = [("role", "duper")];
    assert_eq!(
        sample(&metrics, "assumed_credential_expiry_seconds", &role),
        None
    );
    assert_eq!(sample(&metrics, "assumed_role_usable", &role), Some(0.0));
    assert_eq!(
        sample(
            &metrics,
            "assumed_sts_request_duration_seconds_count",
            &[("operation", "AssumeRole")]
        ),
        Some(1.0),
        "failed calls are timed too"
    );
}

fn status(socket: &Path, json: bool) -> (Option<i32>, String, String) {
    let mut command = Command::new(binary());
    command.arg("status").arg("--socket").arg(socket);
    if json {
        command.arg("--json");
    }
    let output = command.env_remove("ASSUMED_CONFIG").output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn status_exits_0_when_every_role_is_usable() {
    let setup = Setup::new(&[role("duper")], None).await;
    let daemon = Daemon::start(&setup.config_path);
    wait_until_healthy(&daemon).await;

    let (code, stdout, stderr) = status(&setup.socket, false);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let row = stdout
        .lines()
        .find(|line| line.starts_with("duper"))
        .unwrap_or_else(|| panic!("no row for the role: {stdout}"));
    assert!(row.contains("usable"), "{row}");

    let (code, stdout, _) = status(&setup.socket, true);
    assert_eq!(code, Some(0));
    assert_eq!(json(stdout.as_bytes())["status"], "ok");
}

#[tokio::test]
async fn status_exits_1_with_the_error_and_its_hint_when_a_role_is_degraded() {
    let setup = Setup::new(&[role("duper")], None).await;
    setup.standin.inject(access_denied());
    let daemon = Daemon::start(&setup.config_path);
    daemon
        .wait_for_line(|line| line.contains("refresh failed"))
        .await;

    let (code, stdout, stderr) = status(&setup.socket, false);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let row = stdout
        .lines()
        .find(|line| line.starts_with("duper"))
        .unwrap();
    assert!(row.contains("degraded"), "{row}");
    assert!(
        row.contains("not authorized") && row.contains("assumed policy"),
        "the error and its hint: {row}"
    );

    let (code, stdout, _) = status(&setup.socket, true);
    assert_eq!(code, Some(1));
    let health = json(stdout.as_bytes());
    assert_eq!(
        health["roles"]["duper"]["last_error"]["class"],
        "access_denied"
    );
}

#[tokio::test]
async fn status_exits_2_when_nothing_answers_on_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    let (code, stdout, stderr) = status(&missing, false);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("cannot connect") && stderr.contains("missing.sock"),
        "{stderr}"
    );

    // A socket file left behind by a daemon that is gone.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let (code, _, stderr) = status(&stale, true);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("assumed serve"), "the hint: {stderr}");
}

fn credential_process_command(socket: &Path, role: Option<&str>) -> String {
    let mut command = format!(
        "'{}' credential-process --socket '{}'",
        binary(),
        socket.display()
    );
    if let Some(role) = role {
        command.push_str(&format!(" --role {role}"));
    }
    command
}

#[tokio::test]
async fn aws_configs_credential_process_provider_accepts_the_output_and_sts_accepts_the_session() {
    let setup = Setup::new(&[role("duper")], None).await;
    let daemon = Daemon::start(&setup.config_path);
    wait_until_healthy(&daemon).await;
    let (_, served) = assumed::client::get(&setup.socket, "/v1/credentials/duper")
        .await
        .unwrap();
    let served = json(&served);

    let provider = aws_config::credential_process::CredentialProcessProvider::new(
        credential_process_command(&setup.socket, Some("duper")),
    );
    let credentials = provider
        .provide_credentials()
        .await
        .expect("the provider accepts the output");
    assert_eq!(
        credentials.access_key_id(),
        served["AccessKeyId"].as_str().unwrap()
    );
    assert_eq!(
        credentials.session_token(),
        served["Token"].as_str(),
        "the session token is passed on"
    );
    let expiry = credentials.expiry().expect("Expiration is passed on");
    let served_expiry = humantime::parse_rfc3339(served["Expiration"].as_str().unwrap()).unwrap();
    assert_eq!(expiry, served_expiry);
    assert!(expiry > SystemTime::now() + Duration::from_secs(3000));

    let config = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .endpoint_url(setup.standin.endpoint())
        .credentials_provider(provider)
        .build();
    let identity = aws_sdk_sts::Client::from_conf(config)
        .get_caller_identity()
        .send()
        .await
        .expect("the stand-in accepts the session");
    assert_eq!(identity.account(), Some(ACCOUNT));
}

#[tokio::test]
async fn credential_process_fails_with_the_reason_on_stderr_when_no_credential_is_usable() {
    let setup = Setup::new(&[role("duper")], None).await;
    setup.standin.inject(access_denied());
    let daemon = Daemon::start(&setup.config_path);
    daemon
        .wait_for_line(|line| line.contains("refresh failed"))
        .await;

    let output = Command::new("sh")
        .arg("-c")
        .arg(credential_process_command(&setup.socket, None))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "nothing on stdout");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("503") && stderr.contains("not authorized"),
        "{stderr}"
    );

    let provider = aws_config::credential_process::CredentialProcessProvider::new(
        credential_process_command(&setup.socket, None),
    );
    let error = provider.provide_credentials().await.unwrap_err();
    let message = aws_smithy_types::error::display::DisplayErrorContext(&error).to_string();
    assert!(message.contains("not authorized"), "{message}");

    let unknown = Command::new("sh")
        .arg("-c")
        .arg(credential_process_command(&setup.socket, Some("nobody")))
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("404"));
}

/// The daemon with JSON logs (chosen through the environment), its
/// stderr lines parsed as they arrive.
struct JsonDaemon {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<serde_json::Value>,
}

impl JsonDaemon {
    fn start(config: &Path) -> JsonDaemon {
        let mut child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(config)
            .env("ASSUMED_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("ASSUMED_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        JsonDaemon {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for the first line whose message is `message`, without
    /// blocking the runtime the stand-in runs on.
    async fn wait_for(&mut self, message: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(found) = self.seen.iter().find(|line| line["message"] == message) {
                return found.clone();
            }
            match self.lines.try_recv() {
                Ok(line) => {
                    let parsed = serde_json::from_str(&line)
                        .unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
                    self.seen.push(parsed);
                }
                Err(_) => {
                    assert!(
                        Instant::now() < deadline,
                        "no {message:?} line in {:?}",
                        self.seen
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

impl Drop for JsonDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn json_logs_carry_a_refresh_failures_class_next_attempt_and_hint_at_warn() {
    let setup = Setup::new(&[role("duper")], None).await;
    setup.standin.inject(access_denied());
    let mut daemon = JsonDaemon::start(&setup.config_path);
    let listening = daemon.wait_for("listening").await;
    assert_eq!(listening["level"], "INFO");
    assert!(listening["timestamp"].is_string());

    let failure = daemon.wait_for("role session refresh failed").await;
    assert_eq!(failure["level"], "WARN");
    assert_eq!(failure["role"], "duper");
    assert_eq!(failure["class"], "access_denied");
    let next = humantime::parse_rfc3339(failure["next_attempt"].as_str().unwrap()).unwrap();
    assert!(
        next > SystemTime::now() + Duration::from_secs(200),
        "access denied is retried in minutes"
    );
    assert!(
        failure["hint"].as_str().unwrap().contains("assumed policy"),
        "{failure}"
    );
}

#[tokio::test]
async fn json_logs_carry_each_refresh_with_its_expiry_and_next_refresh_at_info() {
    let setup = Setup::new(&[role("duper")], None).await;
    let mut daemon = JsonDaemon::start(&setup.config_path);
    let refreshed = daemon.wait_for("refreshed role session").await;
    assert_eq!(refreshed["level"], "INFO");
    for field in ["role", "expires", "next_refresh"] {
        assert!(refreshed[field].is_string(), "{field} in {refreshed}");
    }
}

/// Runs `serve` on a configuration that does not exist, stderr to a file,
/// with `JOURNAL_STREAM` set by `journal_stream` (given the file's dev:inode).
fn fatal_start_log(journal_stream: impl Fn(&str) -> String) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let file = std::fs::File::create(&log).unwrap();
    let stat = rustix::fs::fstat(&file).unwrap();
    let identity = format!("{}:{}", stat.st_dev, stat.st_ino);
    let status = Command::new(binary())
        .args(["serve", "--config"])
        .arg(dir.path().join("missing.toml"))
        .env("JOURNAL_STREAM", journal_stream(&identity))
        .env_remove("ASSUMED_LOG_FORMAT")
        .stderr(file)
        .status()
        .unwrap();
    assert!(!status.success());
    std::fs::read_to_string(log).unwrap()
}

#[test]
fn under_journald_text_logs_carry_a_priority_prefix_and_no_timestamp() {
    let journal = fatal_start_log(|identity| identity.to_owned());
    let line = journal.lines().next().unwrap();
    assert!(
        line.starts_with("<3>ERROR") && line.contains("missing.toml"),
        "{line}"
    );

    // A JOURNAL_STREAM inherited by a process whose stderr goes elsewhere.
    let elsewhere = fatal_start_log(|_| "1:1".to_owned());
    let line = elsewhere.lines().next().unwrap();
    assert!(
        line.starts_with(|c: char| c.is_ascii_digit()) && line.contains("ERROR"),
        "a timestamp first: {line}"
    );
}

fn dist_files() -> Vec<(PathBuf, Vec<u8>)> {
    use clap_complete::Shell;
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist");
    vec![
        (
            dist.join("completions/assumed.bash"),
            assumed::cli::completions(Shell::Bash),
        ),
        (
            dist.join("completions/_assumed"),
            assumed::cli::completions(Shell::Zsh),
        ),
        (
            dist.join("completions/assumed.fish"),
            assumed::cli::completions(Shell::Fish),
        ),
    ]
    .into_iter()
    .chain(
        assumed::cli::man_pages()
            .into_iter()
            .map(|page| (dist.join("man").join(page.file_name), page.roff)),
    )
    .collect()
}

/// The packaged completions and man page are generated from the CLI
/// definition; after changing it, run this test with
/// `ASSUMED_REGENERATE_DIST=1` to rewrite them.
#[test]
fn the_packaged_completions_and_man_page_match_the_command_line() {
    let regenerate = std::env::var_os("ASSUMED_REGENERATE_DIST").is_some();
    for (path, generated) in dist_files() {
        if regenerate {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is stale; regenerate it: ASSUMED_REGENERATE_DIST=1 cargo test --test ops packaged",
            path.display()
        );
    }
}

#[test]
fn the_completions_and_man_commands_print_what_is_packaged() {
    let bash = Command::new(binary())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(bash.status.success());
    assert_eq!(
        bash.stdout,
        assumed::cli::completions(clap_complete::Shell::Bash)
    );
    assert!(String::from_utf8_lossy(&bash.stdout).contains("credential-process"));

    let man = Command::new(binary()).arg("man").output().unwrap();
    assert!(man.status.success());
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(
        page.contains(".TH assumed 1") && page.contains("status"),
        "{page}"
    );

    // assumed(1) names a page for each command; each of them is packaged.
    let packaged: Vec<String> = dist_files()
        .iter()
        .filter_map(|(path, _)| Some(path.file_name()?.to_str()?.to_owned()))
        .collect();
    let referenced: Vec<&str> = page
        .lines()
        .filter_map(|line| line.strip_suffix("(1)"))
        .collect();
    assert!(referenced.len() >= 10, "{page}");
    for name in referenced {
        let file_name = format!("{}.1", name.replace("\\-", "-"));
        assert!(packaged.contains(&file_name), "{file_name} is not packaged");
    }

    let serve = Command::new(binary())
        .args(["man", "serve"])
        .output()
        .unwrap();
    assert!(serve.status.success());
    let page = String::from_utf8_lossy(&serve.stdout);
    assert!(
        page.contains(".TH assumed-serve 1") && page.contains("config"),
        "{page}"
    );
    let unknown = Command::new(binary())
        .args(["man", "nope"])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
}
