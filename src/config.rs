//! Configuration: one TOML file, every scalar key overridable from the
//! environment, validated as a whole.
//!
//! The file is read through the `config` crate. A variable named
//! `ASSUMED_<SECTION>__<KEY>` overrides `<section>.<key>`, for example
//! `ASSUMED_AWS__REGION=eu-west-1` or `ASSUMED_REFRESH__AHEAD=20m`. Roles are
//! an array of tables and can only be written in the file.
//!
//! [`Config::load`] never stops at the first mistake: it collects every
//! problem, each naming its key and saying how to fix it, so an operator
//! fixes a file in one pass. Durations are written as `"1h"`, `"30m"`,
//! `"90s"` or as a number of seconds. Nothing here touches the network or
//! reads a secret; files named by the configuration are opened by
//! [`crate::secret`].

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where the configuration lives unless `--config` or `ASSUMED_CONFIG` say otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/assumed/assumed.toml";

/// STS refuses `DurationSeconds` below 15 minutes.
pub const MIN_ROLE_DURATION: Duration = Duration::from_secs(900);
/// The longest `MaxSessionDuration` a role can have.
pub const MAX_ROLE_DURATION: Duration = Duration::from_secs(12 * 3600);
/// Sessions chained from a GetSessionToken session last at most an hour.
pub const MAX_CHAINED_DURATION: Duration = Duration::from_secs(3600);
/// GetSessionToken accepts 15 minutes to 36 hours.
const MIN_MFA_SESSION: Duration = Duration::from_secs(900);
const MAX_MFA_SESSION: Duration = Duration::from_secs(36 * 3600);
/// STS's own default, and long enough that botocore's 15-minute window
/// never sees a fresh credential as already stale.
const DEFAULT_ROLE_DURATION: Duration = Duration::from_secs(3600);
/// botocore refreshes at 15 minutes left; at 30 minutes a client that comes
/// back in its window gets a new session, not the one it is replacing.
const DEFAULT_REFRESH_AHEAD: Duration = Duration::from_secs(30 * 60);
const MIN_REFRESH_AHEAD: Duration = Duration::from_secs(120);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(20);
/// STS answers within a second or two; a timeout below this fails every
/// call, one above it holds a refresh for longer than a session's margin.
const MIN_STS_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_STS_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_TOKEN_FILE: &str = "/run/assumed/token";
/// Enough for every SDK client on a busy host, well inside a raised fd limit.
const DEFAULT_MAX_CONNECTIONS: usize = 2048;
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// STS limits on session policies and tags.
const MAX_POLICY_ARNS: usize = 10;
const MAX_TAGS: usize = 50;

/// A validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub aws: AwsSettings,
    pub mfa: MfaSettings,
    pub roles: Vec<RoleSpec>,
    /// The role served at `/v1/credentials`: the only one, or the one marked `default = true`.
    pub default_role: Option<RoleName>,
    pub refresh: RefreshSettings,
    pub listen: ListenSettings,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AwsSettings {
    pub region: String,
    /// `None` means the SDK's regional endpoint.
    pub sts_endpoint: Option<String>,
    /// The INI file holding the IAM user's long-term access key.
    pub credentials: SecretSource,
    pub profile: String,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MfaSettings {
    pub serial_number: String,
    pub seed: SecretSource,
    /// With a duration, one GetSessionToken with MFA feeds every role by
    /// role chaining; without, each role is assumed with its own code.
    pub session: Option<Duration>,
}

/// Where a secret is read from: a file, or a systemd credential (a file in
/// `$CREDENTIALS_DIRECTORY`; the path is empty when that is not set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    File {
        key: &'static str,
        path: PathBuf,
    },
    Credential {
        key: &'static str,
        name: String,
        path: PathBuf,
    },
}

impl SecretSource {
    /// The configuration key that named this secret, for messages.
    pub fn key(&self) -> &'static str {
        match self {
            SecretSource::File { key, .. } | SecretSource::Credential { key, .. } => key,
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            SecretSource::File { path, .. } | SecretSource::Credential { path, .. } => path,
        }
    }
}

/// A role name: a safe URL path segment, served at `/v1/credentials/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoleName(String);

impl RoleName {
    pub fn parse(name: &str) -> Option<RoleName> {
        RoleName::is_valid(name).then(|| RoleName(name.to_owned()))
    }

    /// Up to 64 of letters, digits, `.`, `_` and `-`, starting with a
    /// letter or digit.
    pub fn is_valid(name: &str) -> bool {
        let mut chars = name.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        first_ok && rest_ok && name.len() <= 64
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One role to keep a session for.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleSpec {
    pub name: RoleName,
    pub arn: String,
    /// The account the role lives in, served as `AccountId`.
    pub account_id: String,
    pub session_name: String,
    pub duration: Duration,
    pub external_id: Option<String>,
    pub policy_arns: Vec<String>,
    pub tags: Vec<(String, String)>,
    pub source_identity: Option<String>,
    /// Unix peers allowed for this role, on top of the listener's own allowlist.
    pub allowed_uids: Vec<u32>,
    pub allowed_gids: Vec<u32>,
    /// A token that grants this role alone over TCP.
    pub token_file: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RefreshSettings {
    /// Fetch a new session when this much of the old one remains.
    pub ahead: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ListenSettings {
    pub unix_socket: Option<PathBuf>,
    pub tcp: Option<SocketAddr>,
    /// The token TCP clients present; created at start when absent.
    pub token_file: PathBuf,
    pub allowed_uids: Vec<u32>,
    pub allowed_gids: Vec<u32>,
    /// The group that owns the socket, so its members may connect.
    pub socket_group: Option<u32>,
    pub max_connections: usize,
}

/// One thing wrong with the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration {path}: {problem}")]
    Read { path: PathBuf, problem: String },
    #[error("configuration {path} has {} problem(s):\n{}", .problems.len(), list(.problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
    lines.join("\n")
}

/// The config crate's message, with its key spelt as in the file
/// (`role[0].duration`, where it writes `role[0]duration`), and the
/// environment variable named when an unknown key came from one.
fn describe_read_error(error: &config::ConfigError, override_names: &[String]) -> String {
    let mut text = error.to_string();
    if let Some(at) = text.find("for key `") {
        let (head, key) = text.split_at(at);
        let mut fixed = String::with_capacity(text.len() + 4);
        let mut chars = key.chars().peekable();
        while let Some(c) = chars.next() {
            fixed.push(c);
            if c == ']' && chars.peek().is_some_and(|next| next.is_alphanumeric()) {
                fixed.push('.');
            }
        }
        text = format!("{head}{fixed}");
    }
    let unknown = text
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
        .map(str::to_uppercase);
    // ASSUMED_SECTION__KEY: an unknown key ends the name, an unknown
    // section starts it.
    let from_environment = unknown.and_then(|field| {
        override_names.iter().find(|name| {
            name.ends_with(&format!("__{field}")) || name.starts_with(&format!("ASSUMED_{field}__"))
        })
    });
    if let Some(name) = from_environment {
        text.push_str(&format!(
            "; it comes from the environment variable {name}: correct its name or unset it"
        ));
    } else if let Some(name) = override_names
        .iter()
        .find(|name| name.starts_with("ASSUMED_ROLE__"))
        .filter(|_| text.contains("for key `role"))
    {
        text.push_str(&format!(
            "; roles are [[role]] tables of the file and cannot be set from the environment: unset {name}"
        ));
    } else if text.contains("not found") {
        text.push_str("; give the file with --config or ASSUMED_CONFIG");
    }
    text
}

/// The file as written, before validation. Every key is optional here so
/// that a missing one becomes a [`Problem`] naming it, not a parse error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    aws: RawAws,
    #[serde(default)]
    mfa: RawMfa,
    #[serde(default, rename = "role")]
    roles: Vec<RawRole>,
    #[serde(default)]
    refresh: RawRefresh,
    #[serde(default)]
    listen: RawListen,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAws {
    region: Option<String>,
    sts_endpoint: Option<String>,
    credentials_file: Option<PathBuf>,
    credentials_credential: Option<String>,
    profile: Option<String>,
    connect_timeout: Option<RawDuration>,
    read_timeout: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMfa {
    serial_number: Option<String>,
    seed_file: Option<PathBuf>,
    seed_credential: Option<String>,
    session: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    name: Option<String>,
    arn: Option<String>,
    session_name: Option<String>,
    duration: Option<RawDuration>,
    external_id: Option<String>,
    #[serde(default)]
    policy_arns: Vec<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    source_identity: Option<String>,
    #[serde(default)]
    default: bool,
    #[serde(default, deserialize_with = "one_or_many")]
    allowed_uids: Vec<u32>,
    #[serde(default, deserialize_with = "one_or_many")]
    allowed_gids: Vec<u32>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRefresh {
    ahead: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    unix_socket: Option<PathBuf>,
    tcp: Option<String>,
    token_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "one_or_many")]
    allowed_uids: Vec<u32>,
    #[serde(default, deserialize_with = "one_or_many")]
    allowed_gids: Vec<u32>,
    socket_group: Option<RawGroup>,
    max_connections: Option<usize>,
}

/// A value the file may give as a number or as text. Environment
/// overrides always arrive as text.
enum Scalar {
    Number(u64),
    Text(String),
}

/// Reads a [`Scalar`]; anything else is refused with `expected`, which the
/// configuration error shows next to the key.
struct ScalarVisitor(&'static str);

impl<'de> serde::de::Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str(self.0)
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Scalar, E> {
        Ok(Scalar::Number(value))
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Scalar, E> {
        u64::try_from(value)
            .map(Scalar::Number)
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(value), &self))
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Scalar, E> {
        Ok(Scalar::Text(value.to_owned()))
    }
}

const ID_EXPECTED: &str = "a numeric uid or gid, or a list of them";

/// One uid or gid, as a number or as digits.
fn id_from<E: serde::de::Error>(scalar: Scalar) -> Result<u32, E> {
    let number = match scalar {
        Scalar::Number(number) => number,
        Scalar::Text(text) => text
            .trim()
            .parse()
            .map_err(|_| E::custom(format!("{text:?} is not a numeric uid or gid")))?,
    };
    u32::try_from(number).map_err(|_| E::custom(format!("{number} is not a valid uid or gid")))
}

/// An id list, or one id. Environment overrides arrive as text: a list as
/// strings, a single value as a number.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<u32>, D::Error> {
    struct Id(u32);
    impl<'de> Deserialize<'de> for Id {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Id, D::Error> {
            id_from(deserializer.deserialize_any(ScalarVisitor(ID_EXPECTED))?).map(Id)
        }
    }
    struct Ids;
    impl<'de> serde::de::Visitor<'de> for Ids {
        type Value = Vec<u32>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str(ID_EXPECTED)
        }

        // One id: read as the list of it.
        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Vec<u32>, E> {
            Ok(vec![id_from(ScalarVisitor(ID_EXPECTED).visit_u64(value)?)?])
        }

        fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Vec<u32>, E> {
            Ok(vec![id_from(ScalarVisitor(ID_EXPECTED).visit_i64(value)?)?])
        }

        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Vec<u32>, E> {
            Ok(vec![id_from(ScalarVisitor(ID_EXPECTED).visit_str(value)?)?])
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u32>, A::Error> {
            let mut ids = Vec::new();
            while let Some(Id(id)) = seq.next_element()? {
                ids.push(id);
            }
            Ok(ids)
        }
    }
    deserializer.deserialize_any(Ids)
}

#[derive(Debug)]
enum RawDuration {
    Seconds(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let visitor =
            ScalarVisitor(r#"a duration such as "1h", "90m" or "900s", or a number of seconds"#);
        Ok(match deserializer.deserialize_any(visitor)? {
            Scalar::Number(secs) => RawDuration::Seconds(secs),
            Scalar::Text(text) => RawDuration::Text(text),
        })
    }
}

#[derive(Debug)]
enum RawGroup {
    Id(u32),
    Name(String),
}

impl<'de> Deserialize<'de> for RawGroup {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match deserializer.deserialize_any(ScalarVisitor("a group name or a numeric gid"))? {
            Scalar::Text(name) if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(RawGroup::Name(name))
            }
            // A gid from an environment override arrives as digits.
            scalar => id_from(scalar).map(RawGroup::Id),
        }
    }
}

/// Collects problems while validating.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn require<T>(&mut self, key: &str, value: Option<T>, hint: &str) -> Option<T> {
        if value.is_none() {
            self.add(key, format!("is missing; {hint}"));
        }
        value
    }

    fn duration(&mut self, key: &str, raw: Option<RawDuration>) -> Option<Duration> {
        match raw? {
            RawDuration::Seconds(secs) => Some(Duration::from_secs(secs)),
            RawDuration::Text(text) => {
                match humantime::parse_duration(text.trim()) {
                    Ok(duration) => Some(duration),
                    Err(_) => {
                        self.add(
                        key,
                        format!("{text:?} is not a duration; write it like \"1h\", \"30m\" or \"900s\""),
                    );
                        None
                    }
                }
            }
        }
    }

    fn within(&mut self, key: &str, value: Duration, min: Duration, max: Duration) -> bool {
        let ok = value >= min && value <= max;
        if !ok {
            self.add(
                key,
                format!(
                    "{} is outside {}–{}",
                    humantime::format_duration(value),
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            );
        }
        ok
    }
}

impl Config {
    /// Reads `path`, applies `ASSUMED_*` overrides from the environment and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let overrides: config::Map<String, String> = std::env::vars()
            .filter(|(name, _)| name.starts_with("ASSUMED_") && name.contains("__"))
            .collect();
        Config::load_with(path, overrides)
    }

    /// Like [`Config::load`] with the overrides given explicitly.
    pub fn load_with(
        path: &Path,
        overrides: config::Map<String, String>,
    ) -> Result<Config, ConfigError> {
        let override_names: Vec<String> = overrides.keys().cloned().collect();
        let read_error = |error: config::ConfigError| ConfigError::Read {
            path: path.to_owned(),
            problem: describe_read_error(&error, &override_names),
        };
        let environment = config::Environment::with_prefix("ASSUMED")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("listen.allowed_uids")
            .with_list_parse_key("listen.allowed_gids")
            .source(Some(overrides));
        let raw: RawConfig = config::Config::builder()
            .add_source(config::File::new(
                &path.to_string_lossy(),
                config::FileFormat::Toml,
            ))
            .add_source(environment)
            .build()
            .map_err(read_error)?
            .try_deserialize()
            .map_err(read_error)?;
        validate(raw).map_err(|problems| ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }

    /// A warning when `/v1/credentials` has no role to answer for: a second
    /// role added without `default = true` turns it into a 404.
    pub fn default_role_note(&self) -> Option<String> {
        (self.default_role.is_none() && self.roles.len() > 1).then(|| {
            "several roles and none is marked default = true, so /v1/credentials answers 404; clients must ask /v1/credentials/NAME, or mark one role default".to_owned()
        })
    }

    pub fn role(&self, name: &RoleName) -> Option<&RoleSpec> {
        self.roles.iter().find(|role| &role.name == name)
    }
}

fn validate(raw: RawConfig) -> Result<Config, Vec<Problem>> {
    let mut problems = Problems::default();
    let aws = validate_aws(raw.aws, &mut problems);
    let mfa = validate_mfa(raw.mfa, &mut problems);
    let chained = mfa.as_ref().is_some_and(|mfa| mfa.session.is_some());
    let (roles, default_role) = validate_roles(raw.roles, chained, &mut problems);
    let refresh = validate_refresh(raw.refresh, &mut problems);
    let listen = validate_listen(raw.listen, &mut problems);
    match (aws, mfa, refresh, listen) {
        (Some(aws), Some(mfa), Some(refresh), Some(listen)) if problems.0.is_empty() => {
            Ok(Config {
                aws,
                mfa,
                roles,
                default_role,
                refresh,
                listen,
            })
        }
        _ => Err(problems.0),
    }
}

fn validate_aws(raw: RawAws, problems: &mut Problems) -> Option<AwsSettings> {
    let region = problems.require(
        "aws.region",
        raw.region,
        "set it to the region of STS to use, e.g. \"us-east-1\"",
    );
    if let Some(region) = &region {
        let valid = !region.is_empty()
            && region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            problems.add(
                "aws.region",
                format!("{region:?} is not a region name like \"us-east-1\""),
            );
        }
    }
    if let Some(endpoint) = &raw.sts_endpoint {
        check_endpoint("aws.sts_endpoint", endpoint, problems);
    }
    let credentials = secret_source(
        ("aws.credentials_file", raw.credentials_file),
        ("aws.credentials_credential", raw.credentials_credential),
        problems,
    );
    let connect_timeout = problems.duration("aws.connect_timeout", raw.connect_timeout);
    let read_timeout = problems.duration("aws.read_timeout", raw.read_timeout);
    for (key, timeout) in [
        ("aws.connect_timeout", connect_timeout),
        ("aws.read_timeout", read_timeout),
    ] {
        if let Some(timeout) = timeout {
            problems.within(key, timeout, MIN_STS_TIMEOUT, MAX_STS_TIMEOUT);
        }
    }
    Some(AwsSettings {
        region: region?,
        sts_endpoint: raw.sts_endpoint,
        credentials: credentials?,
        profile: raw.profile.unwrap_or_else(|| "default".to_owned()),
        connect_timeout: connect_timeout.unwrap_or(DEFAULT_TIMEOUT),
        read_timeout: read_timeout.unwrap_or(DEFAULT_READ_TIMEOUT),
    })
}

/// An STS endpoint must be HTTPS, except plain HTTP to this host (the stand-in).
fn check_endpoint(key: &str, endpoint: &str, problems: &mut Problems) {
    if let Some(problem) = endpoint_problem(endpoint) {
        problems.add(key, problem);
    }
}

/// What is wrong with an AWS endpoint URL, if anything: it must be HTTPS,
/// except plain HTTP to this host (the stand-in).
pub fn endpoint_problem(endpoint: &str) -> Option<String> {
    let Ok(url) = url::Url::parse(endpoint) else {
        return Some(format!(
            "{endpoint:?} is not a URL; write it like \"https://sts.us-east-1.amazonaws.com\""
        ));
    };
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => None,
        "http" if loopback => None,
        _ => Some(format!(
            "{endpoint:?} must use https:// (plain http:// is allowed only to 127.0.0.1 or localhost)"
        )),
    }
}

fn secret_source(
    (file_key, file): (&'static str, Option<PathBuf>),
    (credential_key, credential): (&'static str, Option<String>),
    problems: &mut Problems,
) -> Option<SecretSource> {
    match (file, credential) {
        (Some(path), None) => {
            if !path.is_absolute() {
                problems.add(
                    file_key,
                    format!("{} is not an absolute path", path.display()),
                );
            }
            Some(SecretSource::File {
                key: file_key,
                path,
            })
        }
        (None, Some(name)) => credential_path(credential_key, name, problems),
        (Some(_), Some(_)) => {
            problems.add(
                file_key,
                format!("set either {file_key} or {credential_key}, not both"),
            );
            None
        }
        (None, None) => {
            problems.add(file_key, format!("is missing; set {file_key} to a file, or {credential_key} to a systemd credential name"));
            None
        }
    }
}

/// systemd passes credentials as files in `$CREDENTIALS_DIRECTORY`.
fn credential_path(
    key: &'static str,
    name: String,
    problems: &mut Problems,
) -> Option<SecretSource> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        problems.add(
            key,
            format!("{name:?} is not a credential name (no slashes)"),
        );
        return None;
    }
    // Resolved now, checked when the secret is read: validation stays the
    // same outside systemd, and check-config reports a missing directory.
    let path = std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(|directory| PathBuf::from(directory).join(&name))
        .unwrap_or_default();
    Some(SecretSource::Credential { key, name, path })
}

fn validate_mfa(raw: RawMfa, problems: &mut Problems) -> Option<MfaSettings> {
    let serial = problems.require(
        "mfa.serial_number",
        raw.serial_number,
        "set it to the MFA device's ARN, arn:aws:iam::ACCOUNT:mfa/NAME (assumed enroll prints it)",
    );
    if let Some(serial) = &serial
        && parse_iam_arn(serial, "mfa").is_none()
    {
        problems.add(
            "mfa.serial_number",
            format!(
                "{serial:?} is not a virtual MFA device ARN like arn:aws:iam::123456789012:mfa/NAME"
            ),
        );
    }
    let seed = secret_source(
        ("mfa.seed_file", raw.seed_file),
        ("mfa.seed_credential", raw.seed_credential),
        problems,
    );
    let session = problems.duration("mfa.session", raw.session);
    if let Some(session) = session {
        problems.within("mfa.session", session, MIN_MFA_SESSION, MAX_MFA_SESSION);
    }
    Some(MfaSettings {
        serial_number: serial?,
        seed: seed?,
        session,
    })
}

/// Splits `arn:PARTITION:iam::ACCOUNT:KIND/PATH/NAME` into the account and the resource name.
pub fn parse_iam_arn<'a>(arn: &'a str, kind: &str) -> Option<(&'a str, &'a str)> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let partition_ok =
        matches!(partition, "aws" | "aws-cn" | "aws-us-gov") || partition.starts_with("aws-iso");
    let account_ok = account.len() == 12 && account.chars().all(|c| c.is_ascii_digit());
    let path = resource.strip_prefix(kind)?.strip_prefix('/')?;
    let name = path.rsplit('/').next()?;
    let path_ok = path
        .split('/')
        .all(|segment| !segment.is_empty() && segment.chars().all(is_iam_name_char));
    (partition_ok && account_ok && path_ok && name.len() <= 64).then_some((account, name))
}

/// The characters IAM allows in user, role and session names.
fn is_iam_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)
}

fn validate_roles(
    raw_roles: Vec<RawRole>,
    chained: bool,
    problems: &mut Problems,
) -> (Vec<RoleSpec>, Option<RoleName>) {
    if raw_roles.is_empty() {
        problems.add(
            "role",
            "no role is configured; add a [[role]] table with name and arn",
        );
    }
    let mut seen = HashSet::new();
    let mut defaults = Vec::new();
    let mut roles = Vec::new();
    for (index, raw) in raw_roles.into_iter().enumerate() {
        let key = format!("role[{index}]");
        if raw.default {
            defaults.push(raw.name.clone().unwrap_or_default());
        }
        if let Some(role) = validate_role(&key, raw, chained, problems) {
            if !seen.insert(role.name.clone()) {
                problems.add(
                    format!("{key}.name"),
                    format!(
                        "{:?} is used by another role; names must be unique",
                        role.name.as_str()
                    ),
                );
            }
            roles.push(role);
        }
    }
    let default_role = match (defaults.as_slice(), roles.as_slice()) {
        ([], [only]) => Some(only.name.clone()),
        ([], _) => None,
        ([name], _) => RoleName::parse(name),
        (names, _) => {
            problems.add(
                "role.default",
                format!(
                    "{} roles are marked default ({}); mark one",
                    names.len(),
                    names.join(", ")
                ),
            );
            None
        }
    };
    (roles, default_role)
}

fn validate_role(
    key: &str,
    raw: RawRole,
    chained: bool,
    problems: &mut Problems,
) -> Option<RoleSpec> {
    let name_key = format!("{key}.name");
    let name = problems.require(
        &name_key,
        raw.name,
        "give the role a name; it is served at /v1/credentials/NAME",
    );
    let name = name.and_then(|name| {
        let parsed = RoleName::parse(&name);
        if parsed.is_none() {
            problems.add(
                &name_key,
                format!("{name:?} is not a safe URL path segment; use letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64"),
            );
        }
        parsed
    });

    let arn_key = format!("{key}.arn");
    let arn = problems.require(
        &arn_key,
        raw.arn,
        "set it to the role's ARN, arn:aws:iam::ACCOUNT:role/NAME",
    );
    let account_id = arn.as_deref().and_then(|arn| {
        let parsed = parse_iam_arn(arn, "role").map(|(account, _)| account.to_owned());
        if parsed.is_none() {
            problems.add(
                &arn_key,
                format!("{arn:?} is not a role ARN like arn:aws:iam::123456789012:role/NAME"),
            );
        }
        parsed
    });

    let session_name = raw.session_name.unwrap_or_else(default_session_name);
    if !(2..=64).contains(&session_name.len()) || !session_name.chars().all(is_iam_name_char) {
        problems.add(
            format!("{key}.session_name"),
            format!("{session_name:?} must be 2–64 of letters, digits and +=,.@_-"),
        );
    }

    let duration_key = format!("{key}.duration");
    let duration = problems
        .duration(&duration_key, raw.duration)
        .unwrap_or(DEFAULT_ROLE_DURATION);
    problems.within(
        &duration_key,
        duration,
        MIN_ROLE_DURATION,
        MAX_ROLE_DURATION,
    );
    if chained && duration > MAX_CHAINED_DURATION {
        problems.add(
            &duration_key,
            format!(
                "{} is longer than 1h, the most STS allows for a role assumed with mfa.session credentials; shorten it or remove mfa.session",
                humantime::format_duration(duration)
            ),
        );
    }

    check_optional_text(
        &format!("{key}.external_id"),
        raw.external_id.as_deref(),
        2..=1224,
        "+=,.@:/-",
        problems,
    );
    check_optional_text(
        &format!("{key}.source_identity"),
        raw.source_identity.as_deref(),
        2..=64,
        "+=,.@-",
        problems,
    );
    if raw.policy_arns.len() > MAX_POLICY_ARNS {
        problems.add(
            format!("{key}.policy_arns"),
            format!(
                "lists {}; STS takes at most {MAX_POLICY_ARNS}",
                raw.policy_arns.len()
            ),
        );
    }
    for (index, policy) in raw.policy_arns.iter().enumerate() {
        let valid = policy.starts_with("arn:") && policy.contains(":policy/");
        if !valid {
            problems.add(
                format!("{key}.policy_arns[{index}]"),
                format!(
                    "{policy:?} is not a policy ARN like arn:aws:iam::aws:policy/ReadOnlyAccess"
                ),
            );
        }
    }
    if raw.tags.len() > MAX_TAGS {
        problems.add(
            format!("{key}.tags"),
            format!("has {}; STS takes at most {MAX_TAGS}", raw.tags.len()),
        );
    }
    for (tag, value) in &raw.tags {
        if !(1..=128).contains(&tag.len()) || value.len() > 256 {
            problems.add(
                format!("{key}.tags.{tag}"),
                "tag keys are 1–128 characters and values at most 256",
            );
        }
    }
    if let Some(path) = &raw.token_file
        && !path.is_absolute()
    {
        problems.add(
            format!("{key}.token_file"),
            format!("{} is not an absolute path", path.display()),
        );
    }

    Some(RoleSpec {
        name: name?,
        arn: arn?,
        account_id: account_id?,
        session_name,
        duration,
        external_id: raw.external_id,
        policy_arns: raw.policy_arns,
        tags: raw.tags.into_iter().collect(),
        source_identity: raw.source_identity,
        allowed_uids: raw.allowed_uids,
        allowed_gids: raw.allowed_gids,
        token_file: raw.token_file,
    })
}

fn check_optional_text(
    key: &str,
    value: Option<&str>,
    length: std::ops::RangeInclusive<usize>,
    punctuation: &str,
    problems: &mut Problems,
) {
    let Some(value) = value else { return };
    let chars_ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || punctuation.contains(c));
    if !length.contains(&value.len()) || !chars_ok {
        problems.add(
            key,
            format!(
                "must be {}–{} of letters, digits and _{punctuation}",
                length.start(),
                length.end()
            ),
        );
    }
}

/// The host name, trimmed to what RoleSessionName accepts, so CloudTrail
/// shows which host a session came from.
fn default_session_name() -> String {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let cleaned: String = host
        .chars()
        .filter(|&c| is_iam_name_char(c))
        .take(55)
        .collect();
    format!("assumed-{cleaned}")
        .trim_end_matches('-')
        .to_owned()
}

fn validate_refresh(raw: RawRefresh, problems: &mut Problems) -> Option<RefreshSettings> {
    let ahead = problems
        .duration("refresh.ahead", raw.ahead)
        .unwrap_or(DEFAULT_REFRESH_AHEAD);
    problems.within("refresh.ahead", ahead, MIN_REFRESH_AHEAD, MAX_ROLE_DURATION);
    Some(RefreshSettings { ahead })
}

fn validate_listen(raw: RawListen, problems: &mut Problems) -> Option<ListenSettings> {
    if raw.unix_socket.is_none() && raw.tcp.is_none() {
        problems.add(
            "listen",
            "no listener is configured; set listen.unix_socket, listen.tcp or both",
        );
    }
    if let Some(path) = &raw.unix_socket {
        if !path.is_absolute() {
            problems.add(
                "listen.unix_socket",
                format!("{} is not an absolute path", path.display()),
            );
        }
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            problems.add(
                "listen.unix_socket",
                format!(
                    "is {} bytes long; Unix socket paths hold at most {MAX_SOCKET_PATH}",
                    path.as_os_str().len()
                ),
            );
        }
    }
    let tcp = raw.tcp.as_deref().and_then(|text| match text.parse::<SocketAddr>() {
        // Other 127.x addresses are loopback too, but SDK clients and the
        // Host check accept only these two.
        Ok(addr) if addr.ip() == std::net::Ipv4Addr::LOCALHOST || addr.ip() == std::net::Ipv6Addr::LOCALHOST => Some(addr),
        Ok(addr) => {
            problems.add("listen.tcp", format!("{addr} is not 127.0.0.1 or [::1]; credentials are served only to this host, at the addresses every SDK accepts: use 127.0.0.1:PORT or [::1]:PORT"));
            None
        }
        Err(_) => {
            problems.add("listen.tcp", format!("{text:?} is not an address like \"127.0.0.1:9911\""));
            None
        }
    });
    let token_file = raw
        .token_file
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TOKEN_FILE));
    if !token_file.is_absolute() {
        problems.add(
            "listen.token_file",
            format!("{} is not an absolute path", token_file.display()),
        );
    }
    let socket_group = match raw.socket_group {
        None => None,
        Some(RawGroup::Id(gid)) => Some(gid),
        Some(RawGroup::Name(name)) => {
            let gid = lookup_group(&name);
            if gid.is_none() {
                problems.add("listen.socket_group", format!("group {name:?} does not exist in /etc/group; create it (groupadd {name}) or give a numeric gid"));
            }
            gid
        }
    };
    let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        problems.add("listen.max_connections", "must be at least 1");
    }
    Some(ListenSettings {
        unix_socket: raw.unix_socket,
        tcp,
        token_file,
        allowed_uids: raw.allowed_uids,
        allowed_gids: raw.allowed_gids,
        socket_group,
        max_connections,
    })
}

/// Finds a group's id in `/etc/group`, or takes a number as the id.
fn lookup_group(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse() {
        return Some(gid);
    }
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        let group = fields.next()?;
        let gid = fields.nth(1)?;
        (group == name).then(|| gid.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const GOOD: &str = r#"
        [aws]
        region = "us-east-1"
        credentials_file = "/etc/assumed/aws-credentials"

        [mfa]
        serial_number = "arn:aws:iam::123456789012:mfa/svc"
        seed_file = "/etc/assumed/totp-seed"

        [[role]]
        name = "duper"
        arn = "arn:aws:iam::123456789012:role/DuperRole"
        session_name = "host-a"
        duration = "1h"

        [listen]
        unix_socket = "/run/assumed/credentials.sock"
        tcp = "127.0.0.1:9911"
    "#;

    fn load(text: &str, overrides: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        let overrides = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_with(file.path(), overrides)
    }

    fn problem_keys(text: &str) -> Vec<String> {
        match load(text, &[]) {
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.into_iter().map(|p| p.key).collect()
            }
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn a_complete_file_loads_with_defaults_filled_in() {
        let config = load(GOOD, &[]).unwrap();
        assert_eq!(config.aws.profile, "default");
        assert_eq!(config.refresh.ahead, Duration::from_secs(1800));
        assert_eq!(config.roles[0].account_id, "123456789012");
        assert_eq!(config.roles[0].duration, Duration::from_secs(3600));
        assert_eq!(
            config.default_role.as_ref().map(RoleName::as_str),
            Some("duper")
        );
        assert_eq!(
            config.listen.token_file,
            PathBuf::from("/run/assumed/token")
        );
    }

    #[test]
    fn the_example_configuration_is_valid() {
        load(include_str!("../config/assumed.toml"), &[]).unwrap();
    }

    #[test]
    fn environment_variables_override_keys_of_the_file() {
        let config = load(
            GOOD,
            &[
                ("ASSUMED_AWS__REGION", "eu-west-1"),
                ("ASSUMED_REFRESH__AHEAD", "20m"),
                ("ASSUMED_LISTEN__ALLOWED_UIDS", "1000,1001"),
            ],
        )
        .unwrap();
        assert_eq!(config.aws.region, "eu-west-1");
        assert_eq!(config.refresh.ahead, Duration::from_secs(1200));
        assert_eq!(config.listen.allowed_uids, vec![1000, 1001]);
        let one = load(GOOD, &[("ASSUMED_LISTEN__ALLOWED_UIDS", "1000")]).unwrap();
        assert_eq!(
            one.listen.allowed_uids,
            vec![1000],
            "a single id is a list of one"
        );
    }

    #[test]
    fn a_missing_file_says_how_to_name_another() {
        let message = Config::load_with(Path::new("/nonexistent/assumed.toml"), Default::default())
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("/nonexistent/assumed.toml") && message.contains("--config"),
            "{message}"
        );
    }

    #[test]
    fn sts_timeouts_that_would_fail_every_call_are_refused() {
        for (key, value) in [("connect_timeout", "0s"), ("read_timeout", "1000h")] {
            let text = GOOD.replace(
                "region = \"us-east-1\"",
                &format!("region = \"us-east-1\"\n{key} = \"{value}\""),
            );
            assert_eq!(problem_keys(&text), vec![format!("aws.{key}")], "{value}");
        }
    }

    #[test]
    fn a_misspelt_override_is_named_as_an_environment_variable() {
        let message = load(GOOD, &[("ASSUMED_AWS__REGOIN", "eu-west-1")])
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("unknown field `regoin`")
                && message.contains("environment variable ASSUMED_AWS__REGOIN"),
            "{message}"
        );
        let message = load(GOOD, &[("ASSUMED_ROLE__NAME", "x")])
            .unwrap_err()
            .to_string();
        assert!(message.contains("unset ASSUMED_ROLE__NAME"), "{message}");
        let message = load(GOOD, &[("ASSUMED_BOGUS__KEY", "1")])
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("environment variable ASSUMED_BOGUS__KEY"),
            "{message}"
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_with_what_is_expected() {
        let cases = [
            (
                r#"duration = "1h""#,
                "duration = true",
                "a duration such as \"1h\"",
            ),
            (r#"duration = "1h""#, "duration = -5", "a duration such as"),
            (
                r#"tcp = "127.0.0.1:9911""#,
                "tcp = \"127.0.0.1:9911\"\nallowed_uids = [true]",
                "a numeric uid or gid",
            ),
            (
                r#"tcp = "127.0.0.1:9911""#,
                "tcp = \"127.0.0.1:9911\"\nsocket_group = 1.5",
                "a group name or a numeric gid",
            ),
        ];
        for (from, to, expected) in cases {
            let message = load(&GOOD.replace(from, to), &[]).unwrap_err().to_string();
            assert!(
                message.contains(expected)
                    && !message.contains("untagged")
                    && !message.contains("]duration"),
                "{to}: {message}"
            );
        }
        let config = load(GOOD, &[("ASSUMED_LISTEN__SOCKET_GROUP", "1234")]).unwrap();
        assert_eq!(config.listen.socket_group, Some(1234), "digits are a gid");
    }

    #[test]
    fn only_the_loopback_addresses_sdks_accept_may_be_listened_on() {
        for bad in ["127.0.0.2:9911", "0.0.0.0:9911", "10.0.0.1:9911"] {
            let text = GOOD.replace("127.0.0.1:9911", bad);
            assert_eq!(problem_keys(&text), vec!["listen.tcp"], "{bad}");
        }
        load(&GOOD.replace("127.0.0.1:9911", "[::1]:9911"), &[]).unwrap();
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key() {
        let text = r#"
            [aws]
            sts_endpoint = "http://sts.example.com"
            credentials_file = "relative/path"
            [mfa]
            serial_number = "arn:aws:iam::123:mfa/x"
            seed_file = "/etc/assumed/totp-seed"
            [[role]]
            name = "a/b"
            arn = "arn:aws:iam::123456789012:user/NotARole"
            duration = "13h"
            [[role]]
            name = "dup"
            arn = "arn:aws:iam::123456789012:role/R"
            duration = "5m"
            [[role]]
            name = "dup"
            arn = "arn:aws:iam::123456789012:role/R"
            duration = "soon"
            [listen]
            tcp = "0.0.0.0:9911"
        "#;
        let keys = problem_keys(text);
        for expected in [
            "aws.region",
            "aws.sts_endpoint",
            "aws.credentials_file",
            "mfa.serial_number",
            "role[0].name",
            "role[0].arn",
            "role[0].duration",
            "role[1].duration",
            "role[2].duration",
            "role[2].name",
            "listen.tcp",
        ] {
            assert!(
                keys.iter().any(|k| k == expected),
                "no problem for {expected} in {keys:?}"
            );
        }
    }

    #[test]
    fn a_configuration_without_listeners_or_roles_is_refused() {
        let text = r#"
            [aws]
            region = "us-east-1"
            credentials_file = "/k"
            [mfa]
            serial_number = "arn:aws:iam::123456789012:mfa/svc"
            seed_file = "/s"
        "#;
        let keys = problem_keys(text);
        assert!(keys.contains(&"listen".to_owned()), "{keys:?}");
        assert!(keys.contains(&"role".to_owned()), "{keys:?}");
    }

    #[test]
    fn session_mode_refuses_roles_longer_than_an_hour() {
        let text = GOOD
            .replace(
                "seed_file = \"/etc/assumed/totp-seed\"",
                "seed_file = \"/s\"\nsession = \"12h\"",
            )
            .replace("\"1h\"", "\"2h\"");
        assert_eq!(problem_keys(&text), vec!["role[0].duration"]);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let text = GOOD
            .replace("[refresh]", "")
            .replace("[listen]", "[listen]\nport = 3");
        let message = load(&text, &[]).unwrap_err().to_string();
        assert!(message.contains("port"), "{message}");
    }

    #[test]
    fn two_default_roles_are_refused_and_none_means_no_default() {
        let two =
            format!("{GOOD}\n[[role]]\nname = \"b\"\narn = \"arn:aws:iam::123456789012:role/B\"\n");
        let config = load(&two, &[]).unwrap();
        assert_eq!(config.default_role, None);
        let marked = two.replace("name = \"b\"", "name = \"b\"\ndefault = true");
        assert_eq!(
            load(&marked, &[]).unwrap().default_role.unwrap().as_str(),
            "b"
        );
        let both = marked.replace(
            "session_name = \"host-a\"",
            "session_name = \"host-a\"\ndefault = true",
        );
        assert_eq!(problem_keys(&both), vec!["role.default"]);
    }

    #[test]
    fn role_names_must_be_safe_path_segments() {
        for bad in ["", "..", "a/b", "a b", "%2e", "-x", "a?b"] {
            assert!(RoleName::parse(bad).is_none(), "{bad:?} accepted");
        }
        for good in ["duper", "a.b_c-d", "0"] {
            assert!(RoleName::parse(good).is_some(), "{good:?} refused");
        }
    }

    #[test]
    fn iam_arns_are_split_into_account_and_name() {
        assert_eq!(
            parse_iam_arn("arn:aws:iam::123456789012:role/path/Name", "role"),
            Some(("123456789012", "Name"))
        );
        assert_eq!(
            parse_iam_arn("arn:aws:iam::123456789012:mfa/svc", "mfa"),
            Some(("123456789012", "svc"))
        );
        assert_eq!(
            parse_iam_arn("arn:aws:iam::123456789012:role/", "role"),
            None
        );
        assert_eq!(
            parse_iam_arn("arn:aws:sts::123456789012:role/x", "role"),
            None
        );
    }
}
