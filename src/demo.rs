//! `assumed demo`: the whole daemon against the built-in STS stand-in, so
//! anyone can watch it work without an AWS account.
//!
//! It generates a TOTP seed and a fake long-term key, starts the stand-in
//! on a loopback port with two-minute sessions, writes a configuration
//! into a private temporary directory, and runs the real daemon on it. The
//! daemon refreshes every role session well before it expires, so each
//! minute or so a refresh line appears in the log. The temporary directory
//! is removed on exit. Nothing leaves this host.

use std::fmt::Write as _;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::daemon::{self, Daemon};
use crate::standin::{MfaDevice, StandIn, StandInConfig};

/// Short enough that refreshes happen while someone watches.
pub const DEMO_SESSION: Duration = Duration::from_secs(120);
const DEMO_ACCOUNT: &str = "123456789012";
const DEMO_SERIAL: &str = "arn:aws:iam::123456789012:mfa/demo";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot prepare the demo: {0}")]
    Setup(#[from] std::io::Error),
    #[error("the demo configuration was refused:\n{}", .0.join("\n"))]
    Preflight(Vec<String>),
    #[error(transparent)]
    Daemon(#[from] daemon::DaemonError),
}

pub struct DemoOptions {
    /// The loopback TCP port to serve on; 0 picks a free one.
    pub port: u16,
    /// Stop after this long; `None` runs until interrupted.
    pub run_for: Option<Duration>,
}

pub async fn run(options: DemoOptions, stop: CancellationToken) -> Result<(), DemoError> {
    let mut rng = rand::rng();
    let seed: Vec<u8> = (0..20).map(|_| rng.random()).collect();
    let access_key_id = format!("AKIA{}", random_upper(&mut rng, 16));
    let secret_access_key = random_upper(&mut rng, 40);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let standin = StandIn::start(
        listener,
        StandInConfig {
            access_key_id: access_key_id.clone(),
            account_id: DEMO_ACCOUNT.into(),
            devices: vec![MfaDevice {
                serial_number: DEMO_SERIAL.into(),
                seed: seed.clone(),
            }],
            session_lifetime: Some(DEMO_SESSION),
        },
    )
    .await?;

    let dir = tempfile::Builder::new().prefix("assumed-demo-").tempdir()?;
    let path = |name: &str| dir.path().join(name);
    write_private(&path("totp-seed"), &data_encoding::BASE32.encode(&seed))?;
    write_private(
        &path("aws-credentials"),
        &format!(
            "[default]\naws_access_key_id = {access_key_id}\naws_secret_access_key = {secret_access_key}\n"
        ),
    )?;
    let mut config = String::new();
    let _ = write!(
        config,
        "[aws]\nregion = \"us-east-1\"\nsts_endpoint = \"{}\"\ncredentials_file = \"{}\"\n\n\
         [mfa]\nserial_number = \"{DEMO_SERIAL}\"\nseed_file = \"{}\"\n\n\
         [[role]]\nname = \"demo\"\narn = \"arn:aws:iam::{DEMO_ACCOUNT}:role/DemoRole\"\nsession_name = \"assumed-demo\"\n\n\
         [listen]\nunix_socket = \"{}\"\ntcp = \"127.0.0.1:{}\"\ntoken_file = \"{}\"\n",
        standin.endpoint(),
        path("aws-credentials").display(),
        path("totp-seed").display(),
        path("credentials.sock").display(),
        options.port,
        path("token").display(),
    );
    write_private(&path("assumed.toml"), &config)?;

    let loaded = daemon::preflight(&path("assumed.toml")).map_err(DemoError::Preflight)?;
    let daemon = Daemon::start(loaded, Default::default(), stop.clone()).await?;
    let tcp = daemon
        .tcp_addr
        .map(|addr| addr.to_string())
        .unwrap_or_default();
    println!(
        "# assumed demo: STS stand-in at {}, sessions last {} s",
        standin.endpoint(),
        DEMO_SESSION.as_secs()
    );
    println!("export AWS_CONTAINER_CREDENTIALS_FULL_URI=http://{tcp}/v1/credentials");
    println!(
        "export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={}",
        path("token").display()
    );
    println!("unset AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_CONTAINER_AUTHORIZATION_TOKEN");
    println!(
        "# try: curl -s -H \"Authorization: $(cat {})\" http://{tcp}/v1/credentials",
        path("token").display()
    );
    println!(
        "# or:  curl -s --unix-socket {} http://localhost/healthz",
        path("credentials.sock").display()
    );
    println!(
        "# Ctrl-C stops the demo and removes {}",
        dir.path().display()
    );

    if let Some(run_for) = options.run_for {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(run_for).await;
            stop.cancel();
        });
    }
    daemon.wait().await;
    standin.shutdown().await;
    Ok(())
}

fn random_upper(rng: &mut impl Rng, length: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..length)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}
