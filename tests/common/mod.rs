//! Shared test harness: the STS stand-in in this process, the real
//! `assumed` binary in a child process, and plain HTTP clients.
//!
//! Everything listens on 127.0.0.1 port 0 or on sockets in a temporary
//! directory; the daemon's STS endpoint is always the stand-in.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use assumed::standin::{MfaDevice, StandIn, StandInConfig};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

pub const ACCOUNT: &str = "123456789012";
pub const SERIAL: &str = "arn:aws:iam::123456789012:mfa/svc";
pub const ACCESS_KEY_ID: &str = "AKIATESTSERVICEUSER1";
/// Markers that must never show up in a log line.
pub const MARKER_SECRET_KEY: &str = "MARKERlongTermSecretKey0000000000000000000";
pub const MARKER_SEED_BYTES: &[u8] = b"MARKER-seed-bytes-0123456789abcd";

pub fn marker_seed_base32() -> String {
    data_encoding::BASE32.encode(MARKER_SEED_BYTES)
}

/// One role for the configuration file.
pub struct RoleDef {
    pub name: &'static str,
    pub extra: &'static str,
}

pub fn role(name: &'static str) -> RoleDef {
    RoleDef { name, extra: "" }
}

/// A temporary directory holding a configuration, a seed and a key file,
/// and a stand-in that knows the same seed and key.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub standin: StandIn,
    pub config_path: PathBuf,
    pub socket: PathBuf,
    pub token_file: PathBuf,
}

impl Setup {
    pub async fn new(roles: &[RoleDef], session_lifetime: Option<Duration>) -> Setup {
        Setup::with_options(roles, session_lifetime, "").await
    }

    /// `extra_config` is appended to the file, for additional sections.
    pub async fn with_options(
        roles: &[RoleDef],
        session_lifetime: Option<Duration>,
        extra_config: &str,
    ) -> Setup {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let standin = StandIn::start(
            listener,
            StandInConfig {
                access_key_id: ACCESS_KEY_ID.into(),
                account_id: ACCOUNT.into(),
                devices: vec![MfaDevice {
                    serial_number: SERIAL.into(),
                    seed: MARKER_SEED_BYTES.to_vec(),
                }],
                session_lifetime,
            },
        )
        .await
        .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let seed_path = write_private(
            dir.path(),
            "totp-seed",
            &format!("{}\n", marker_seed_base32()),
        );
        let key_path = write_private(
            dir.path(),
            "aws-credentials",
            &format!(
                "[default]\naws_access_key_id = {ACCESS_KEY_ID}\naws_secret_access_key = {MARKER_SECRET_KEY}\n"
            ),
        );
        let socket = dir.path().join("run/credentials.sock");
        let token_file = dir.path().join("run/token");
        let mut text = format!(
            "[aws]\nregion = \"us-east-1\"\nsts_endpoint = \"{}\"\ncredentials_file = \"{}\"\nconnect_timeout = \"2s\"\nread_timeout = \"3s\"\n\n\
             [mfa]\nserial_number = \"{SERIAL}\"\nseed_file = \"{}\"\n\n\
             [listen]\nunix_socket = \"{}\"\ntcp = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n\n",
            standin.endpoint(),
            key_path.display(),
            seed_path.display(),
            socket.display(),
            token_file.display(),
        );
        for role in roles {
            text.push_str(&format!(
                "[[role]]\nname = \"{0}\"\narn = \"arn:aws:iam::{ACCOUNT}:role/{0}Role\"\nsession_name = \"test-host\"\n{1}\n\n",
                role.name, role.extra
            ));
        }
        text.push_str(extra_config);
        let config_path = dir.path().join("assumed.toml");
        std::fs::write(&config_path, text).unwrap();
        Setup {
            dir,
            standin,
            config_path,
            socket,
            token_file,
        }
    }

    /// Points the configuration at another MFA device and seed file, such as
    /// one `assumed enroll` just created.
    pub fn use_device(&self, serial: &str, seed_path: &Path) {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        let old_seed = format!(
            "seed_file = \"{}\"",
            self.dir.path().join("totp-seed").display()
        );
        assert!(text.contains(&old_seed), "{text}");
        let text = text
            .replacen(
                &format!("serial_number = \"{SERIAL}\""),
                &format!("serial_number = \"{serial}\""),
                1,
            )
            .replacen(
                &old_seed,
                &format!("seed_file = \"{}\"", seed_path.display()),
                1,
            );
        std::fs::write(&self.config_path, text).unwrap();
    }

    /// The long-term key file the stand-in accepts.
    pub fn credentials_file(&self) -> PathBuf {
        self.dir.path().join("aws-credentials")
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(&self.token_file).unwrap()
    }
}

pub fn write_private(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_assumed")
}

/// The daemon in a child process, its stderr collected line by line.
pub struct Daemon {
    pub child: Child,
    pub tcp: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        Daemon::start_with_log_level(config, "info")
    }

    pub fn start_with_log_level(config: &Path, level: &str) -> Daemon {
        let mut command = Command::new(binary());
        command
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", level)
            .env_remove("ASSUMED_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Daemon::spawn(command)
    }

    /// Runs `command` (which must pipe stderr) and waits for its `listening` line.
    pub fn spawn(mut command: Command) -> Daemon {
        let mut child = command.spawn().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (found, listening) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let collected = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    let _ = found.send(line.clone());
                }
                collected.lock().unwrap().push(line);
            }
        });
        let line = listening
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "the daemon did not start listening:\n{}",
                    logs.lock().unwrap().join("\n")
                )
            });
        let tcp = field(&line, "tcp").parse().unwrap();
        Daemon { child, tcp, logs }
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The first log line (colours stripped) that `matches`, waited for up
    /// to 30 s: the daemon's workers write their lines when they go idle,
    /// and a thread of this test reads them. Waits without blocking the
    /// test's runtime, which may be running the stand-in.
    pub async fn wait_for_line(&self, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self
                .logs()
                .iter()
                .map(|line| strip_ansi(line))
                .find(|line| matches(line));
            if let Some(line) = found {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no such log line:\n{}",
                self.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `name=value` in a log line (text format, ANSI colours allowed).
fn field(line: &str, name: &str) -> String {
    let plain = strip_ansi(line);
    let start = plain
        .find(&format!("{name}="))
        .unwrap_or_else(|| panic!("no {name}= in {plain}"))
        + name.len()
        + 1;
    plain[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_matches('"')
        .to_owned()
}

pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A GET over TCP with the given headers: the status and body.
pub async fn get_tcp(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    request(stream, "GET", path, headers).await
}

/// A request over any stream: the status and body.
pub async fn request<S>(
    stream: S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Bytes)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut builder = hyper::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = sender
        .send_request(builder.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

/// A GET over TCP with a loopback Host and the token.
pub async fn get_with_token(addr: SocketAddr, path: &str, token: &str) -> (u16, Bytes) {
    let host = addr.to_string();
    get_tcp(addr, path, &[("host", &host), ("authorization", token)]).await
}

pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)))
}

/// Rewrites the configuration file, for keys in sections `Setup` writes.
pub fn edit_config(setup: &Setup, edit: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(&setup.config_path).unwrap();
    std::fs::write(&setup.config_path, edit(text)).unwrap();
}

/// Writes `bytes` to a fresh TCP connection and returns everything the
/// daemon sends back until it closes the connection (or 15 s pass).
pub async fn raw_tcp(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The daemon may answer and close before it has read everything.
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}
