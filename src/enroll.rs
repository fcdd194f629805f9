//! Enrollment and the rest of a virtual MFA device's life, through IAM.
//!
//! [`enroll`] creates a virtual MFA device, stores its seed, enables it with
//! two consecutive codes and optionally proves it works with one AssumeRole.
//! Its contract:
//!
//! - Nothing is created in IAM unless the seed (and QR code) outputs are
//!   new files in writable directories: an existing file is never
//!   overwritten, and each is written to a private temporary file (mode
//!   0600, created exclusively) in its target directory before IAM is called.
//! - The seed is stored before the device is enabled, so there is never an
//!   enabled device whose seed is lost: a file is fsynced and linked into
//!   place without replacing anything; `--seed-out -` writes it to standard
//!   output, which is the only place it is ever printed.
//! - If anything after CreateVirtualMFADevice fails, the device is deleted
//!   again so it does not count against the user's 8 devices, and the files
//!   written for it are removed.
//!
//! [`resync`] and [`disable`] cover the device's later life; disable can
//! first prove MFA with the device's own seed (GetSessionToken), because
//! the policy `assumed policy` prints lets only an MFA session deactivate
//! a device. Codes are computed on AWS's clock as learned from the `Date`
//! of IAM's answers. The SDK's retries are off: IAM refuses codes it has
//! seen, and a retried create would meet its own device.
//!
//! Base credentials come from `--credentials-file` (read under the same
//! file rule as the daemon's), the daemon's configuration (`--use-config`),
//! or else the AWS SDK's default chain (environment, shared files, SSO,
//! instance roles). Endpoints are AWS's unless `--iam-endpoint` or
//! `--sts-endpoint` say otherwise; `AWS_ENDPOINT_URL` is not consulted.
//! No seed, code or secret key reaches a message or log line.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_iam::config::Region;
use aws_sdk_iam::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::clock::{StsClock, SystemClock};
use crate::config::{Config, SecretSource};
use crate::secret::{self, LongTermKey, Seed};
use crate::sts::{DateObserver, FailureClass};
use crate::totp;

/// STS starts accepting a new device's codes about 10–15 s after IAM has
/// enabled it (observed), so the first AssumeRole waits this long.
pub const VERIFY_DELAY: Duration = Duration::from_secs(15);
/// IAM is global; the `aws` partition signs its requests for this region.
const IAM_SIGNING_REGION: &str = "us-east-1";
/// Long enough for a slow link to AWS, short enough that a wrong endpoint
/// fails while the operator still watches.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// GetSessionToken's shortest session: enough to deactivate and delete.
const MFA_SESSION_SECS: i32 = 900;
/// The session name of `--verify-role`'s AssumeRole, and its shortest duration.
const VERIFY_SESSION_NAME: &str = "assumed-enroll-check";
const VERIFY_SESSION_SECS: i32 = 900;
/// IAM's longest virtual MFA device name.
const MAX_DEVICE_NAME: usize = 226;

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("{flag} {value:?}: {problem}")]
    Argument {
        flag: &'static str,
        value: String,
        problem: String,
    },
    #[error(
        "{flag} {path} already exists; assumed never overwrites a seed or QR code: move the file away or choose another path"
    )]
    OutputExists { flag: &'static str, path: PathBuf },
    #[error("{flag} {path}: cannot write: {source}")]
    Output {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the seed to standard output: {0}")]
    Stdout(#[source] std::io::Error),
    #[error("cannot read the seed from standard input: {0}")]
    Stdin(#[source] std::io::Error),
    #[error(
        "{flag}: the seed on standard input is not usable: {0}",
        flag = "--seed-file -"
    )]
    StdinSeed(#[source] secret::SeedError),
    #[error("cannot read the configuration for --use-config")]
    Config(#[source] Box<crate::config::ConfigError>),
    #[error("cannot load the base credentials")]
    Credentials(#[source] secret::SecretError),
    #[error("cannot load the device's seed")]
    Seed(#[source] secret::SecretError),
    #[error("{action} failed ({code}): {message}\n  {hint}")]
    Iam {
        action: &'static str,
        code: String,
        message: String,
        hint: String,
    },
    #[error("IAM's Base32StringSeed for {serial_number} is not usable: {problem}")]
    BadSeed {
        serial_number: String,
        problem: secret::SeedError,
    },
    #[error(
        "enrollment failed, and the device {serial_number} was deleted again so it does not count against the user's 8 devices{discard}"
    )]
    RolledBack {
        serial_number: String,
        discard: &'static str,
        source: Box<EnrollError>,
    },
    #[error(
        "enrollment failed, and deleting the device {serial_number} failed too ({delete_error}); delete it with: assumed disable --user {user} --serial {serial_number} --yes-really"
    )]
    RollbackFailed {
        serial_number: String,
        user: String,
        delete_error: String,
        source: Box<EnrollError>,
    },
    #[error("--verify-role {role_arn}: AssumeRole with the new device failed ({}): {message}\n  {}", .class.name(), .class.hint())]
    VerifyRole {
        role_arn: String,
        class: FailureClass,
        message: String,
    },
    #[error("GetSessionToken with the device's code failed ({}): {message}\n  {}", .class.name(), .class.hint())]
    MfaSession {
        class: FailureClass,
        message: String,
    },
    #[error(
        "disable removes the MFA device {serial_number} for good, and the daemon cannot assume roles without a device; add --yes-really once the daemon uses another device"
    )]
    NotConfirmed { serial_number: String },
}

/// Where the base credentials and endpoints come from (the flags shared by
/// `enroll`, `resync` and `disable`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct AwsAccess {
    /// The region for STS (and IAM's signing); default: the SDK's, else us-east-1.
    #[arg(long)]
    pub region: Option<String>,
    /// Call IAM here instead of AWS's endpoint (https, or http to loopback).
    #[arg(long, value_name = "URL")]
    pub iam_endpoint: Option<String>,
    /// Call STS here instead of the region's endpoint (https, or http to loopback).
    #[arg(long, value_name = "URL")]
    pub sts_endpoint: Option<String>,
    /// Sign with the key in this INI credentials file (mode 0600, as for the daemon)
    /// instead of the AWS SDK's default credential chain.
    #[arg(long, value_name = "FILE", conflicts_with = "use_config")]
    pub credentials_file: Option<PathBuf>,
    /// The profile in --credentials-file, or of the default chain.
    #[arg(long)]
    pub profile: Option<String>,
    /// Take the region, STS endpoint and key from the daemon's configuration (--config).
    #[arg(long)]
    pub use_config: bool,
}

/// What `assumed enroll` was asked to do.
#[derive(Clone, Debug)]
pub struct EnrollRequest {
    pub user: String,
    pub device_name: String,
    pub path: String,
    pub seed_out: SeedOut,
    pub qr_out: Option<PathBuf>,
    pub verify_role: Option<String>,
    pub verify_after: Duration,
}

/// Where the seed goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeedOut {
    Stdout,
    File(PathBuf),
}

impl SeedOut {
    pub fn parse(text: &str) -> SeedOut {
        if text == "-" {
            SeedOut::Stdout
        } else {
            SeedOut::File(PathBuf::from(text))
        }
    }
}

/// A finished enrollment.
#[derive(Clone, Debug)]
pub struct Enrolled {
    pub serial_number: String,
    pub seed_out: SeedOut,
    pub verified_role: Option<String>,
}

impl Enrolled {
    /// What the operator adds to the daemon's configuration.
    pub fn config_lines(&self) -> String {
        let seed = match &self.seed_out {
            SeedOut::File(path) => {
                let absolute = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                format!("seed_file = \"{}\"", absolute.display())
            }
            SeedOut::Stdout => "seed_credential = \"totp-seed\"   # the --name given to systemd-creds encrypt\n# or: seed_file = \"/etc/assumed/totp-seed\"   # wherever the seed went".to_owned(),
        };
        format!(
            "[mfa]\nserial_number = \"{}\"\n{seed}\n",
            self.serial_number
        )
    }
}

/// The IAM and STS clients, signed with the base credentials.
pub struct AwsClients {
    iam: aws_sdk_iam::Client,
    sts: aws_sdk_sts::Client,
    clock: Arc<StsClock>,
    iam_settings: IamSettings,
}

#[derive(Clone)]
struct IamSettings {
    region: String,
    endpoint: Option<String>,
}

impl AwsClients {
    /// Resolves credentials, region and endpoints; calls nothing yet.
    pub async fn connect(
        access: &AwsAccess,
        config_path: &Path,
    ) -> Result<AwsClients, EnrollError> {
        for (flag, endpoint) in [
            ("--iam-endpoint", &access.iam_endpoint),
            ("--sts-endpoint", &access.sts_endpoint),
        ] {
            if let Some(endpoint) = endpoint
                && let Some(problem) = crate::config::endpoint_problem(endpoint)
            {
                return Err(argument(flag, endpoint, problem));
            }
        }

        let mut region = access.region.clone();
        let mut sts_endpoint = access.sts_endpoint.clone();
        let credentials = if access.use_config {
            let config =
                Config::load(config_path).map_err(|error| EnrollError::Config(Box::new(error)))?;
            region = region.or(Some(config.aws.region.clone()));
            sts_endpoint = sts_endpoint.or(config.aws.sts_endpoint.clone());
            static_provider(
                secret::load_long_term_key(&config.aws.credentials, &config.aws.profile)
                    .map_err(EnrollError::Credentials)?,
            )
        } else if let Some(path) = &access.credentials_file {
            let source = SecretSource::File {
                key: "--credentials-file",
                path: path.clone(),
            };
            let profile = access.profile.as_deref().unwrap_or("default");
            static_provider(
                secret::load_long_term_key(&source, profile).map_err(EnrollError::Credentials)?,
            )
        } else {
            let mut loader = aws_config::defaults(BehaviorVersion::latest());
            if let Some(profile) = &access.profile {
                loader = loader.profile_name(profile);
            }
            let shared = loader.load().await;
            region = region.or(shared.region().map(|region| region.to_string()));
            shared.credentials_provider().ok_or_else(|| {
                argument(
                    "--credentials-file",
                    "",
                    "no AWS credentials were found; pass --credentials-file FILE or --use-config, or set AWS_SHARED_CREDENTIALS_FILE".to_owned(),
                )
            })?
        };

        let clock = Arc::new(StsClock::new(Arc::new(SystemClock)));
        let iam_settings = IamSettings {
            region: IAM_SIGNING_REGION.to_owned(),
            endpoint: access.iam_endpoint.clone(),
        };
        let iam = iam_client(&iam_settings, credentials.clone(), &clock);
        let sts_region = region.unwrap_or_else(|| IAM_SIGNING_REGION.to_owned());
        let sts = sts_client(&sts_region, sts_endpoint.as_deref(), credentials, &clock);
        Ok(AwsClients {
            iam,
            sts,
            clock,
            iam_settings,
        })
    }
}

fn static_provider(key: LongTermKey) -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(aws_credential_types::Credentials::new(
        key.access_key_id.clone(),
        key.secret_access_key.expose_secret().to_owned(),
        key.session_token
            .as_ref()
            .map(|token| token.expose_secret().to_owned()),
        None,
        "assumed-enroll",
    ))
}

fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

fn iam_client(
    settings: &IamSettings,
    credentials: SharedCredentialsProvider,
    clock: &Arc<StsClock>,
) -> aws_sdk_iam::Client {
    let mut builder = aws_sdk_iam::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(settings.region.clone()))
        .credentials_provider(credentials)
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts())
        .time_source(crate::clock::SigningTime(clock.clone()))
        .interceptor(DateObserver {
            clock: clock.clone(),
        });
    if let Some(endpoint) = &settings.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_iam::Client::from_conf(builder.build())
}

fn sts_client(
    region: &str,
    endpoint: Option<&str>,
    credentials: SharedCredentialsProvider,
    clock: &Arc<StsClock>,
) -> aws_sdk_sts::Client {
    let mut builder = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new(region.to_owned()))
        .credentials_provider(credentials)
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts())
        .time_source(crate::clock::SigningTime(clock.clone()))
        .interceptor(DateObserver {
            clock: clock.clone(),
        });
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_sts::Client::from_conf(builder.build())
}

/// Creates, stores and enables a virtual MFA device (see the module docs).
pub async fn enroll(
    clients: &AwsClients,
    request: &EnrollRequest,
) -> Result<Enrolled, EnrollError> {
    check_request(request)?;
    let seed_file = match &request.seed_out {
        SeedOut::File(path) => Some(PendingFile::prepare("--seed-out", path)?),
        SeedOut::Stdout => None,
    };
    let qr_file = match &request.qr_out {
        Some(path) => Some(PendingFile::prepare("--qr-out", path)?),
        None => None,
    };

    let created = clients
        .iam
        .create_virtual_mfa_device()
        .virtual_mfa_device_name(&request.device_name)
        .path(&request.path)
        .send()
        .await
        .map_err(|error| iam_failure("CreateVirtualMFADevice", error))?;
    let device = created.virtual_mfa_device;
    let serial_number = device
        .as_ref()
        .map(|device| device.serial_number().to_owned())
        .unwrap_or_default();
    if serial_number.is_empty() {
        return Err(EnrollError::Iam {
            action: "CreateVirtualMFADevice",
            code: "Malformed".to_owned(),
            message: "the answer names no device".to_owned(),
            hint: "check --iam-endpoint points at IAM".to_owned(),
        });
    }
    tracing::info!(%serial_number, user = %request.user, "created the virtual MFA device");

    let mut written = Vec::new();
    let enabled = store_and_enable(
        clients,
        request,
        &serial_number,
        device.as_ref(),
        (seed_file, qr_file),
        &mut written,
    )
    .await;
    let seed = match enabled {
        Ok(seed) => seed,
        Err(error) => {
            for path in &written {
                let _ = std::fs::remove_file(path);
            }
            return Err(roll_back(clients, request, &serial_number, error).await);
        }
    };

    let verified_role = match &request.verify_role {
        Some(role_arn) => {
            verify_role(
                clients,
                &serial_number,
                &seed,
                role_arn,
                request.verify_after,
            )
            .await?;
            Some(role_arn.clone())
        }
        None => None,
    };
    Ok(Enrolled {
        serial_number,
        seed_out: request.seed_out.clone(),
        verified_role,
    })
}

/// Stores the seed (and QR code), then enables the device and returns the
/// seed; `written` lists the files placed, for removal if a later step fails.
async fn store_and_enable(
    clients: &AwsClients,
    request: &EnrollRequest,
    serial_number: &str,
    device: Option<&aws_sdk_iam::types::VirtualMfaDevice>,
    (seed_file, qr_file): (Option<PendingFile>, Option<PendingFile>),
    written: &mut Vec<PathBuf>,
) -> Result<Seed, EnrollError> {
    let seed_text = device
        .and_then(|device| device.base32_string_seed())
        .map(|blob| Zeroizing::new(blob.as_ref().to_vec()))
        .unwrap_or_default();
    let seed_text = Zeroizing::new(String::from_utf8_lossy(&seed_text).trim().to_owned());
    let seed = secret::parse_seed(&seed_text).map_err(|problem| EnrollError::BadSeed {
        serial_number: serial_number.to_owned(),
        problem,
    })?;
    let line = Zeroizing::new(format!("{}\n", seed_text.as_str()));

    match seed_file {
        Some(file) => written.push(file.persist(line.as_bytes())?),
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(line.as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(EnrollError::Stdout)?;
        }
    }
    if let Some(file) = qr_file {
        let png = device
            .and_then(|device| device.qr_code_png())
            .map(|blob| Zeroizing::new(blob.as_ref().to_vec()))
            .unwrap_or_default();
        written.push(file.persist(&png)?);
    }

    let [first, second] = totp::consecutive_codes(&seed, clients.clock.now());
    clients
        .iam
        .enable_mfa_device()
        .user_name(&request.user)
        .serial_number(serial_number)
        .authentication_code1(first.expose())
        .authentication_code2(second.expose())
        .send()
        .await
        .map_err(|error| iam_failure("EnableMFADevice", error))?;
    tracing::info!(%serial_number, user = %request.user, "enabled the virtual MFA device");
    Ok(seed)
}

/// Deletes the device created for a failed enrollment.
async fn roll_back(
    clients: &AwsClients,
    request: &EnrollRequest,
    serial_number: &str,
    error: EnrollError,
) -> EnrollError {
    let deleted = clients
        .iam
        .delete_virtual_mfa_device()
        .serial_number(serial_number)
        .send()
        .await;
    match deleted {
        Ok(_) => EnrollError::RolledBack {
            serial_number: serial_number.to_owned(),
            discard: match request.seed_out {
                SeedOut::Stdout => "; discard the seed already written to standard output",
                SeedOut::File(_) => "",
            },
            source: Box::new(error),
        },
        Err(delete_error) => EnrollError::RollbackFailed {
            serial_number: serial_number.to_owned(),
            user: request.user.clone(),
            delete_error: iam_failure("DeleteVirtualMFADevice", delete_error).to_string(),
            source: Box::new(error),
        },
    }
}

/// Waits for STS to see the device, then assumes `role_arn` once with it.
async fn verify_role(
    clients: &AwsClients,
    serial_number: &str,
    seed: &Seed,
    role_arn: &str,
    wait: Duration,
) -> Result<(), EnrollError> {
    tracing::info!(
        wait_seconds = wait.as_secs(),
        "waiting for STS to see the new device"
    );
    tokio::time::sleep(wait).await;
    // The current step's code may be one just used to enable the device;
    // that is fine, since IAM's checks do not consume codes for STS.
    let [_, code] = totp::consecutive_codes(seed, clients.clock.now());
    clients
        .sts
        .assume_role()
        .role_arn(role_arn)
        .role_session_name(VERIFY_SESSION_NAME)
        .duration_seconds(VERIFY_SESSION_SECS)
        .serial_number(serial_number)
        .token_code(code.expose())
        .send()
        .await
        .map_err(|error| {
            let (class, message) = sts_failure(error);
            EnrollError::VerifyRole {
                role_arn: role_arn.to_owned(),
                class,
                message,
            }
        })?;
    tracing::info!(%role_arn, "assumed the role with the new device");
    Ok(())
}

fn check_request(request: &EnrollRequest) -> Result<(), EnrollError> {
    check_name("--user", &request.user, 64)?;
    check_name("--device-name", &request.device_name, MAX_DEVICE_NAME)?;
    let path = &request.path;
    let path_ok = path.starts_with('/')
        && path.ends_with('/')
        && path.len() <= 512
        && path.chars().all(|c| ('!'..='~').contains(&c));
    if !path_ok {
        return Err(argument(
            "--path",
            path,
            "must start and end with / (the default is /)".to_owned(),
        ));
    }
    if let Some(role_arn) = &request.verify_role
        && crate::config::parse_iam_arn(role_arn, "role").is_none()
    {
        return Err(argument(
            "--verify-role",
            role_arn,
            "is not a role ARN like arn:aws:iam::123456789012:role/NAME".to_owned(),
        ));
    }
    if !request.device_name.starts_with(&request.user) || path != "/" {
        tracing::warn!(
            device_name = %request.device_name,
            path = %request.path,
            "the policy `assumed policy` prints lets a user create only devices at path / named after itself (mfa/<user>*); this one may be refused"
        );
    }
    Ok(())
}

fn check_name(flag: &'static str, value: &str, max_len: usize) -> Result<(), EnrollError> {
    let valid = |c: char| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c);
    if value.is_empty() || value.len() > max_len || !value.chars().all(valid) {
        return Err(argument(
            flag,
            value,
            format!("is not an IAM name (1–{max_len} of letters, digits and _+=,.@-)"),
        ));
    }
    Ok(())
}

/// Checks `--user` and `--serial` of `resync` and `disable`, before any
/// seed, credential or network is touched.
pub fn check_device(user: &str, serial_number: &str) -> Result<(), EnrollError> {
    check_name("--user", user, 64)?;
    if crate::config::parse_iam_arn(serial_number, "mfa").is_none() {
        return Err(argument(
            "--serial",
            serial_number,
            "is not a virtual MFA device ARN like arn:aws:iam::123456789012:mfa/NAME (assumed enroll printed it; mfa.serial_number holds it)".to_owned(),
        ));
    }
    Ok(())
}

fn argument(flag: &'static str, value: &str, problem: String) -> EnrollError {
    EnrollError::Argument {
        flag,
        value: value.to_owned(),
        problem,
    }
}

/// Resynchronises an enabled device with two consecutive codes from its seed.
pub async fn resync(
    clients: &AwsClients,
    user: &str,
    serial_number: &str,
    seed: &Seed,
) -> Result<(), EnrollError> {
    check_device(user, serial_number)?;
    let [first, second] = totp::consecutive_codes(seed, clients.clock.now());
    clients
        .iam
        .resync_mfa_device()
        .user_name(user)
        .serial_number(serial_number)
        .authentication_code1(first.expose())
        .authentication_code2(second.expose())
        .send()
        .await
        .map_err(|error| iam_failure("ResyncMFADevice", error))?;
    Ok(())
}

/// What `assumed disable` was asked to do.
pub struct DisableRequest<'a> {
    pub user: &'a str,
    pub serial_number: &'a str,
    /// The device's seed, to prove MFA with before deactivating it.
    pub seed: Option<Seed>,
    pub confirmed: bool,
}

/// Deactivates the device (if enabled) and deletes it.
pub async fn disable(clients: &AwsClients, request: DisableRequest<'_>) -> Result<(), EnrollError> {
    if !request.confirmed {
        return Err(EnrollError::NotConfirmed {
            serial_number: request.serial_number.to_owned(),
        });
    }
    check_device(request.user, request.serial_number)?;
    let iam = match &request.seed {
        Some(seed) => mfa_session_iam(clients, request.serial_number, seed).await?,
        None => clients.iam.clone(),
    };

    let deactivated = iam
        .deactivate_mfa_device()
        .user_name(request.user)
        .serial_number(request.serial_number)
        .send()
        .await;
    match deactivated {
        Ok(_) => {
            tracing::info!(serial_number = %request.serial_number, "deactivated the MFA device")
        }
        // A device that was never enabled (an interrupted enrollment) only needs deleting.
        Err(error) if error.code() == Some("NoSuchEntity") => tracing::info!(
            serial_number = %request.serial_number,
            "the MFA device is not enabled for the user; deleting it"
        ),
        Err(error) => {
            let failure = iam_failure("DeactivateMFADevice", error);
            return Err(match (failure, request.seed.is_some()) {
                (EnrollError::Iam { action, code, message, .. }, false) if code == "AccessDenied" => {
                    EnrollError::Iam {
                        action,
                        code,
                        message,
                        hint: "the policy from `assumed policy` lets only an MFA-authenticated session deactivate a device: pass --seed-file with this device's seed (- reads standard input), or run this with an administrator's credentials".to_owned(),
                    }
                }
                (failure, _) => failure,
            });
        }
    }
    iam.delete_virtual_mfa_device()
        .serial_number(request.serial_number)
        .send()
        .await
        .map_err(|error| iam_failure("DeleteVirtualMFADevice", error))?;
    tracing::info!(serial_number = %request.serial_number, "deleted the MFA device");
    Ok(())
}

/// An IAM client signed with a GetSessionToken session that proved MFA with `seed`.
async fn mfa_session_iam(
    clients: &AwsClients,
    serial_number: &str,
    seed: &Seed,
) -> Result<aws_sdk_iam::Client, EnrollError> {
    let [_, code] = totp::consecutive_codes(seed, clients.clock.now());
    let output = clients
        .sts
        .get_session_token()
        .duration_seconds(MFA_SESSION_SECS)
        .serial_number(serial_number)
        .token_code(code.expose())
        .send()
        .await
        .map_err(|error| {
            let (class, message) = sts_failure(error);
            EnrollError::MfaSession { class, message }
        })?;
    let Some(session) = output.credentials else {
        return Err(EnrollError::MfaSession {
            class: FailureClass::Malformed,
            message: "no Credentials in the answer".to_owned(),
        });
    };
    let provider = SharedCredentialsProvider::new(aws_credential_types::Credentials::new(
        session.access_key_id,
        session.secret_access_key,
        Some(session.session_token),
        None,
        "assumed-mfa-session",
    ));
    Ok(iam_client(&clients.iam_settings, provider, &clients.clock))
}

/// Reads a seed from `--seed-file`: a file under the daemon's file rule, or
/// `-` for standard input (`systemd-creds decrypt FILE.cred - | …`).
pub fn read_seed(path: &Path) -> Result<Seed, EnrollError> {
    if path == Path::new("-") {
        let mut text = Zeroizing::new(String::new());
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)
            .map_err(EnrollError::Stdin)?;
        return secret::parse_seed(&text).map_err(EnrollError::StdinSeed);
    }
    secret::load_seed(&SecretSource::File {
        key: "--seed-file",
        path: path.to_owned(),
    })
    .map_err(EnrollError::Seed)
}

/// What an IAM error answer means for the operator.
fn iam_failure<E>(
    action: &'static str,
    error: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> EnrollError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = error.code().unwrap_or("Unavailable").to_owned();
    let message = match error.message() {
        Some(message) => message.to_owned(),
        None => chain(&error),
    };
    let hint = match code.as_str() {
        "EntityAlreadyExists" if action == "CreateVirtualMFADevice" => {
            "a device with this path and name already exists: choose another --device-name (starting with the user's name), or remove the old device with `assumed disable`".to_owned()
        }
        "EntityAlreadyExists" => "the device is already enabled".to_owned(),
        "LimitExceeded" => {
            "the user already has IAM's maximum of 8 MFA devices: remove one it no longer uses with `assumed disable --user NAME --serial ARN --yes-really`".to_owned()
        }
        "InvalidAuthenticationCode" => {
            "IAM refused the two consecutive codes: check this host's clock is synchronised (timedatectl), and for resync that the seed belongs to --serial".to_owned()
        }
        "AccessDenied" | "AccessDeniedException" => format!(
            "the credentials may not call iam:{action}: attach the user policy that `assumed policy --document user-mfa` prints (deploy/cloudformation.yaml creates it while MfaEnrollmentOpen is true), or run this with an administrator's credentials"
        ),
        "NoSuchEntity" => "IAM knows no such user or device: check --user and --serial".to_owned(),
        "DeleteConflict" => "the device is still enabled: deactivate it first".to_owned(),
        "InvalidClientTokenId" | "SignatureDoesNotMatch" | "ExpiredToken" => {
            "IAM does not accept the base credentials: check the access key is active and this host's clock".to_owned()
        }
        _ => "check the network path to IAM (--iam-endpoint) and the base credentials".to_owned(),
    };
    EnrollError::Iam {
        action,
        code,
        message,
        hint,
    }
}

fn sts_failure<E>(
    error: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> (FailureClass, String)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &error {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let message = error.message().unwrap_or("no message").to_owned();
            let class = crate::sts::classify_service(status, error.code(), &message);
            (class, message)
        }
        _ => (FailureClass::Unavailable, chain(&error)),
    }
}

/// An error and its sources, on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A secret output file being prepared: a private temporary file beside
/// its target, which must not exist yet.
struct PendingFile {
    flag: &'static str,
    path: PathBuf,
    temp: tempfile::NamedTempFile,
}

impl PendingFile {
    fn prepare(flag: &'static str, path: &Path) -> Result<PendingFile, EnrollError> {
        if path.symlink_metadata().is_ok() {
            return Err(EnrollError::OutputExists {
                flag,
                path: path.to_owned(),
            });
        }
        let output_error = |source| EnrollError::Output {
            flag,
            path: path.to_owned(),
            source,
        };
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        // tempfile creates with O_EXCL and mode 0600.
        let temp = tempfile::Builder::new()
            .prefix(".assumed-")
            .tempfile_in(directory)
            .map_err(output_error)?;
        Ok(PendingFile {
            flag,
            path: path.to_owned(),
            temp,
        })
    }

    /// Writes `contents`, syncs, and links the file into place without
    /// replacing anything; returns the final path.
    fn persist(mut self, contents: &[u8]) -> Result<PathBuf, EnrollError> {
        let flag = self.flag;
        let path = self.path.clone();
        let output_error = |source| EnrollError::Output {
            flag,
            path: path.clone(),
            source,
        };
        self.temp.write_all(contents).map_err(output_error)?;
        self.temp.as_file().sync_all().map_err(output_error)?;
        self.temp
            .persist_noclobber(&path)
            .map_err(|error| match error.error.kind() {
                std::io::ErrorKind::AlreadyExists => EnrollError::OutputExists {
                    flag,
                    path: path.clone(),
                },
                _ => output_error(error.error),
            })?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // The new name is durable only once its directory is synced.
            std::fs::File::open(parent)
                .and_then(|directory| directory.sync_all())
                .map_err(output_error)?;
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_secret_file_is_written_private_and_never_replaces_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed");

        let pending = PendingFile::prepare("--seed-out", &path).unwrap();
        pending.persist(b"SEED\n").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"SEED\n");

        let again = PendingFile::prepare("--seed-out", &path);
        assert!(matches!(again, Err(EnrollError::OutputExists { .. })));
    }

    #[test]
    fn a_file_appearing_after_preparation_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed");
        let pending = PendingFile::prepare("--seed-out", &path).unwrap();
        std::fs::write(&path, b"someone else's").unwrap();

        let outcome = pending.persist(b"SEED\n");
        assert!(matches!(outcome, Err(EnrollError::OutputExists { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "the temporary file is gone");
    }

    #[test]
    fn the_config_lines_name_the_serial_and_the_seed_file() {
        let enrolled = Enrolled {
            serial_number: "arn:aws:iam::123456789012:mfa/svc".into(),
            seed_out: SeedOut::File("/etc/assumed/totp-seed".into()),
            verified_role: None,
        };
        let lines = enrolled.config_lines();
        assert!(
            lines.contains("serial_number = \"arn:aws:iam::123456789012:mfa/svc\"\n"),
            "{lines}"
        );
        assert!(
            lines.contains("seed_file = \"/etc/assumed/totp-seed\"\n"),
            "{lines}"
        );
    }

    #[test]
    fn device_and_user_names_follow_iam_rules() {
        let mut request = EnrollRequest {
            user: "svc".into(),
            device_name: "svc".into(),
            path: "/".into(),
            seed_out: SeedOut::Stdout,
            qr_out: None,
            verify_role: None,
            verify_after: Duration::ZERO,
        };
        assert!(check_request(&request).is_ok());

        request.device_name = "svc/2".into();
        assert!(matches!(
            check_request(&request),
            Err(EnrollError::Argument {
                flag: "--device-name",
                ..
            })
        ));

        request.device_name = "svc".into();
        request.path = "no-slashes".into();
        assert!(matches!(
            check_request(&request),
            Err(EnrollError::Argument { flag: "--path", .. })
        ));
    }
}
