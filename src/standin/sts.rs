//! The STS actions the stand-in answers and the rules for who may call them.
//!
//! Callers sign with either the one configured long-term key (acting as the
//! IAM user `svc`) or a session key this stand-in issued, sent with that
//! session's `X-Amz-Security-Token` while the session lasts. Signatures are
//! read for their credential scope only; their HMAC is not checked. When the
//! signing-time check is on, a request signed more than 5 minutes away from
//! the stand-in's clock is refused, as STS does.
//!
//! Every role trusts the user only with MFA, as in the deployment the daemon
//! serves: AssumeRole with the long-term key needs `SerialNumber` and
//! `TokenCode`. Sessions from GetSessionToken with MFA carry the MFA context,
//! so roles assumed with them (role chaining) need no code, but last at most
//! an hour; the same holds for roles assumed with role sessions. Any well-formed role ARN names an existing role whose maximum
//! session is 12 hours.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};

use super::mfa::{MfaRegistry, Verdict};
use super::protocol::{self, IssuedCredentials, Params, Reply};
use super::{AssumeRoleRecord, Stats};

/// How far a request's signing time may be from the stand-in's clock (SigV4's rule).
const SIGNING_TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// AssumeRole's DurationSeconds bounds: 15 min to the largest MaxSessionDuration, 12 h.
const ASSUME_ROLE_SECS: RangeInclusive<u64> = 900..=43_200;
/// AssumeRole's DurationSeconds when none is given.
const ASSUME_ROLE_DEFAULT_SECS: u64 = 3_600;
/// The longest session STS grants when a role is assumed with session credentials.
const ROLE_CHAINING_MAX_SECS: u64 = 3_600;
/// GetSessionToken's DurationSeconds bounds: 15 min to 36 h.
const SESSION_TOKEN_SECS: RangeInclusive<u64> = 900..=129_600;
/// GetSessionToken's DurationSeconds when none is given (12 h).
const SESSION_TOKEN_DEFAULT_SECS: u64 = 43_200;
/// The IAM user that owns the long-term key and the MFA devices.
pub(super) const USER_NAME: &str = "svc";
/// Characters of IAM ids and access key ids after their four-letter prefix.
const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// Characters of secret keys and session tokens (base64's).
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// Length of an issued secret access key, as STS issues them.
const SECRET_KEY_LEN: usize = 40;
/// Length of an issued session token; real ones run to several hundred characters.
const SESSION_TOKEN_LEN: usize = 356;

/// An STS error answer; `Display` is the message sent to the client.
#[derive(Debug, thiserror::Error)]
pub(super) enum StsError {
    #[error("Request is missing Authentication Token")]
    MissingAuthentication,
    #[error("Authorization header is not a complete AWS4-HMAC-SHA256 signature")]
    IncompleteSignature,
    #[error("Credential should be scoped to correct service: 'sts'.")]
    WrongService,
    #[error("Signature expired: {signed_at} is now earlier than {earliest} ({now} - 5 min.)")]
    SignatureExpired {
        signed_at: String,
        earliest: String,
        now: String,
    },
    #[error("Signature not yet current: {signed_at} is still later than {latest} ({now} + 5 min.)")]
    SignatureNotYetCurrent {
        signed_at: String,
        latest: String,
        now: String,
    },
    #[error("The security token included in the request is invalid.")]
    UnknownAccessKey,
    #[error("The security token included in the request is expired")]
    ExpiredSession,
    #[error("Could not find operation {action} for version {version}")]
    UnknownAction { action: String, version: String },
    #[error("{0}")]
    Validation(String),
    #[error(
        "User: {caller_arn} is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
    )]
    NotAuthorized {
        caller_arn: String,
        role_arn: String,
    },
    #[error("MultiFactorAuthentication failed with invalid MFA one time pass code.")]
    InvalidMfaCode,
    #[error(
        "MultiFactorAuthentication failed, unable to validate MFA code. \
         Please verify your MFA serial number is valid and associated with this user."
    )]
    MfaUnavailable,
    #[error("Cannot call GetSessionToken with session credentials")]
    SessionCannotGetSessionToken,
}

impl StsError {
    pub(super) fn status(&self) -> StatusCode {
        match self {
            Self::IncompleteSignature | Self::UnknownAction { .. } | Self::Validation(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::MissingAuthentication
            | Self::WrongService
            | Self::SignatureExpired { .. }
            | Self::SignatureNotYetCurrent { .. }
            | Self::UnknownAccessKey
            | Self::ExpiredSession
            | Self::NotAuthorized { .. }
            | Self::InvalidMfaCode
            | Self::MfaUnavailable
            | Self::SessionCannotGetSessionToken => StatusCode::FORBIDDEN,
        }
    }

    pub(super) fn code(&self) -> &'static str {
        match self {
            Self::MissingAuthentication => "MissingAuthenticationToken",
            Self::IncompleteSignature => "IncompleteSignature",
            Self::WrongService
            | Self::SignatureExpired { .. }
            | Self::SignatureNotYetCurrent { .. } => "SignatureDoesNotMatch",
            Self::UnknownAccessKey => "InvalidClientTokenId",
            Self::ExpiredSession => "ExpiredToken",
            Self::UnknownAction { .. } => "InvalidAction",
            Self::Validation(_) => "ValidationError",
            Self::NotAuthorized { .. }
            | Self::InvalidMfaCode
            | Self::MfaUnavailable
            | Self::SessionCannotGetSessionToken => "AccessDenied",
        }
    }
}

/// The actions the stand-in implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    AssumeRole,
    GetSessionToken,
    GetCallerIdentity,
}

impl Action {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "AssumeRole" => Some(Self::AssumeRole),
            "GetSessionToken" => Some(Self::GetSessionToken),
            "GetCallerIdentity" => Some(Self::GetCallerIdentity),
            _ => None,
        }
    }
}

/// The account and long-term key the stand-in plays; fixed at start.
pub(super) struct Account {
    pub(super) access_key_id: String,
    pub(super) account_id: String,
    pub(super) session_lifetime: Option<Duration>,
    /// Overrides `session_lifetime` for AssumeRole sessions.
    pub(super) role_session_lifetime: std::sync::Mutex<Option<Duration>>,
}

impl Account {
    fn user_arn(&self) -> String {
        format!("arn:aws:iam::{}:user/{USER_NAME}", self.account_id)
    }
}

/// Who signed a request.
#[derive(Clone, Debug)]
enum Caller {
    /// The IAM user, with its long-term key.
    User,
    /// The IAM user, with credentials from GetSessionToken.
    UserSession { mfa_authenticated: bool },
    /// A role session from AssumeRole.
    RoleSession(AssumedRole),
}

impl Caller {
    fn arn(&self, account: &Account) -> String {
        match self {
            Self::User | Self::UserSession { .. } => account.user_arn(),
            Self::RoleSession(role) => role.arn(),
        }
    }

    fn is_session(&self) -> bool {
        match self {
            Self::User => false,
            Self::UserSession { .. } | Self::RoleSession(_) => true,
        }
    }

    fn mfa_authenticated(&self) -> bool {
        match self {
            Self::User => false,
            Self::UserSession { mfa_authenticated } => *mfa_authenticated,
            // Role sessions are only ever issued after MFA, and carry it on.
            Self::RoleSession(_) => true,
        }
    }
}

/// The identity of an assumed-role session.
#[derive(Clone, Debug)]
struct AssumedRole {
    account_id: String,
    role_name: String,
    role_id: String,
    session_name: String,
}

impl AssumedRole {
    fn arn(&self) -> String {
        format!(
            "arn:aws:sts::{}:assumed-role/{}/{}",
            self.account_id, self.role_name, self.session_name
        )
    }

    fn user_id(&self) -> String {
        format!("{}:{}", self.role_id, self.session_name)
    }
}

/// An issued session, kept to authenticate calls made with it.
struct Session {
    session_token: String,
    expires_at: SystemTime,
    caller: Caller,
}

/// Everything the stand-in remembers: devices, sessions, ids and counts.
pub(super) struct Ledger {
    pub(super) devices: MfaRegistry,
    pub(super) stats: Stats,
    pub(super) last_assume_role: Option<AssumeRoleRecord>,
    /// Issued sessions by access key id.
    sessions: HashMap<String, Session>,
    /// Stable `AROA…` ids by role ARN.
    role_ids: HashMap<String, String>,
    user_id: String,
}

impl Ledger {
    pub(super) fn new() -> Self {
        Self {
            devices: MfaRegistry::default(),
            stats: Stats::default(),
            last_assume_role: None,
            sessions: HashMap::new(),
            role_ids: HashMap::new(),
            user_id: format!("AIDA{}", protocol::random_string(ID_ALPHABET, 17)),
        }
    }

    /// Forgets every GetSessionToken session, as if revoked: calls signed
    /// with one are refused as `InvalidClientTokenId`.
    pub(super) fn revoke_session_tokens(&mut self) {
        self.sessions
            .retain(|_, session| !matches!(session.caller, Caller::UserSession { .. }));
    }

    /// Counts a request as it arrives, before faults, authentication or validation.
    pub(super) fn count_call(&mut self, action: &str, params: &Params) {
        match Action::parse(action) {
            Some(Action::AssumeRole) => {
                self.stats.assume_role_calls += 1;
                if let Some(role_arn) = params.get("RoleArn") {
                    *self
                        .stats
                        .calls_by_role
                        .entry(role_arn.to_owned())
                        .or_default() += 1;
                }
            }
            Some(Action::GetSessionToken) => self.stats.get_session_token_calls += 1,
            Some(Action::GetCallerIdentity) => self.stats.get_caller_identity_calls += 1,
            None => {}
        }
    }

    /// Authenticates and answers one request at the stand-in's time `now`.
    pub(super) fn answer(
        &mut self,
        account: &Account,
        request: &Request<'_>,
        now: SystemTime,
    ) -> Result<Reply, StsError> {
        let version = request.params.get("Version").unwrap_or_default();
        let action = Action::parse(request.action)
            .filter(|_| version == protocol::API_VERSION)
            .ok_or_else(|| StsError::UnknownAction {
                action: request.action.to_owned(),
                version: version.to_owned(),
            })?;
        let caller = self.authenticate(account, request, now)?;

        match action {
            Action::AssumeRole => self.assume_role_recorded(account, caller, request.params, now),
            Action::GetSessionToken => self.get_session_token(account, caller, request.params, now),
            Action::GetCallerIdentity => Ok(self.get_caller_identity(account, caller)),
        }
    }

    fn authenticate(
        &self,
        account: &Account,
        request: &Request<'_>,
        now: SystemTime,
    ) -> Result<Caller, StsError> {
        let header = request
            .headers
            .get(AUTHORIZATION)
            .ok_or(StsError::MissingAuthentication)?;
        let scope = header
            .to_str()
            .ok()
            .and_then(protocol::parse_authorization)
            .ok_or(StsError::IncompleteSignature)?;
        if scope.service != "sts" {
            return Err(StsError::WrongService);
        }
        if request.check_signing_time {
            check_signing_time(request.headers, now)?;
        }

        let token = request
            .headers
            .get("x-amz-security-token")
            .map(|value| value.to_str().unwrap_or_default());
        if scope.access_key_id == account.access_key_id {
            // A long-term key never comes with a session token.
            return match token {
                None => Ok(Caller::User),
                Some(_) => Err(StsError::UnknownAccessKey),
            };
        }

        let session = self
            .sessions
            .get(&scope.access_key_id)
            .filter(|session| token == Some(session.session_token.as_str()))
            .ok_or(StsError::UnknownAccessKey)?;
        if now >= session.expires_at {
            return Err(StsError::ExpiredSession);
        }
        Ok(session.caller.clone())
    }

    /// Whether the session `access_key_id` (sent with `token`) proved MFA,
    /// for the IAM side, which accepts the sessions STS issued.
    pub(super) fn session_mfa_authenticated(
        &self,
        access_key_id: &str,
        token: Option<&str>,
        now: SystemTime,
    ) -> Result<bool, StsError> {
        let session = self
            .sessions
            .get(access_key_id)
            .filter(|session| token == Some(session.session_token.as_str()))
            .ok_or(StsError::UnknownAccessKey)?;
        if now >= session.expires_at {
            return Err(StsError::ExpiredSession);
        }
        Ok(session.caller.mfa_authenticated())
    }

    /// AssumeRole, leaving a record of what arrived and how it ended.
    fn assume_role_recorded(
        &mut self,
        account: &Account,
        caller: Caller,
        params: &Params,
        now: SystemTime,
    ) -> Result<Reply, StsError> {
        let mut record = AssumeRoleRecord::from_params(params);
        record.role_chaining = caller.is_session();

        let outcome = self.assume_role(account, caller, params, now);
        record.error_code = outcome.as_ref().err().map(|error| error.code().to_owned());
        self.last_assume_role = Some(record);
        outcome
    }

    fn assume_role(
        &mut self,
        account: &Account,
        caller: Caller,
        params: &Params,
        now: SystemTime,
    ) -> Result<Reply, StsError> {
        let role_arn = required(params, "RoleArn", "roleArn")?;
        let (role_account, role_name) = parse_role_arn(role_arn).ok_or_else(|| {
            invalid(
                role_arn,
                "roleArn",
                "Member must satisfy the IAM role ARN format",
            )
        })?;
        let session_name = required(params, "RoleSessionName", "roleSessionName")?;
        check_name(session_name, "roleSessionName", 2..=64)?;
        let duration = duration_seconds(params, &ASSUME_ROLE_SECS, ASSUME_ROLE_DEFAULT_SECS)?;
        if caller.is_session() && duration > ROLE_CHAINING_MAX_SECS {
            return Err(StsError::Validation(
                "The requested DurationSeconds exceeds the 1 hour session limit \
                 for roles assumed by role chaining."
                    .to_owned(),
            ));
        }
        let mfa = mfa_params(params)?;
        if let Some(external_id) = params.get("ExternalId") {
            check_external_id(external_id)?;
        }
        let source_identity = params.get("SourceIdentity");
        if let Some(source_identity) = source_identity {
            check_name(source_identity, "sourceIdentity", 2..=64)?;
        }

        let mfa_present = match mfa {
            Some((serial_number, code)) => {
                self.verify_mfa(serial_number, code, now)?;
                true
            }
            None => caller.mfa_authenticated(),
        };
        if !mfa_present {
            return Err(StsError::NotAuthorized {
                caller_arn: caller.arn(account),
                role_arn: role_arn.to_owned(),
            });
        }

        let role = AssumedRole {
            account_id: role_account.to_owned(),
            role_name: role_name.to_owned(),
            role_id: self.role_id(role_arn),
            session_name: session_name.to_owned(),
        };
        let assumed_role_id = role.user_id();
        let arn = role.arn();
        let credentials = self.issue(account, Caller::RoleSession(role), duration, now);
        Ok(Reply::AssumeRole {
            credentials,
            assumed_role_id,
            arn,
            source_identity: source_identity.map(str::to_owned),
        })
    }

    fn get_session_token(
        &mut self,
        account: &Account,
        caller: Caller,
        params: &Params,
        now: SystemTime,
    ) -> Result<Reply, StsError> {
        if caller.is_session() {
            return Err(StsError::SessionCannotGetSessionToken);
        }
        let duration = duration_seconds(params, &SESSION_TOKEN_SECS, SESSION_TOKEN_DEFAULT_SECS)?;
        let mfa = mfa_params(params)?;

        let mfa_authenticated = match mfa {
            Some((serial_number, code)) => {
                self.verify_mfa(serial_number, code, now)?;
                true
            }
            None => false,
        };
        let session_caller = Caller::UserSession { mfa_authenticated };
        let credentials = self.issue(account, session_caller, duration, now);
        Ok(Reply::GetSessionToken { credentials })
    }

    fn get_caller_identity(&self, account: &Account, caller: Caller) -> Reply {
        match caller {
            Caller::User | Caller::UserSession { .. } => Reply::GetCallerIdentity {
                user_id: self.user_id.clone(),
                account: account.account_id.clone(),
                arn: account.user_arn(),
            },
            Caller::RoleSession(role) => Reply::GetCallerIdentity {
                user_id: role.user_id(),
                arn: role.arn(),
                account: role.account_id,
            },
        }
    }

    fn verify_mfa(
        &mut self,
        serial_number: &str,
        code: &str,
        now: SystemTime,
    ) -> Result<(), StsError> {
        let verification = self.devices.verify(serial_number, code, unix_secs(now));
        let stats = &mut self.stats;
        stats.max_verifications_in_window = stats
            .max_verifications_in_window
            .max(verification.in_window);

        match verification.verdict {
            Verdict::Accepted => {
                stats.codes_accepted += 1;
                Ok(())
            }
            Verdict::Rejected => {
                stats.codes_rejected += 1;
                Err(StsError::InvalidMfaCode)
            }
            Verdict::Reused => {
                stats.codes_reused += 1;
                Err(StsError::InvalidMfaCode)
            }
            Verdict::UnknownSerial => {
                stats.codes_rejected += 1;
                Err(StsError::MfaUnavailable)
            }
            Verdict::OverBudget => {
                stats.budget_refusals += 1;
                Err(StsError::MfaUnavailable)
            }
        }
    }

    fn role_id(&mut self, role_arn: &str) -> String {
        self.role_ids
            .entry(role_arn.to_owned())
            .or_insert_with(|| format!("AROA{}", protocol::random_string(ID_ALPHABET, 17)))
            .clone()
    }

    /// Issues and remembers a session for `caller` lasting `duration_secs`,
    /// or the configured lifetime (for role sessions, the role session
    /// lifetime first) if one is set.
    fn issue(
        &mut self,
        account: &Account,
        caller: Caller,
        duration_secs: u64,
        now: SystemTime,
    ) -> IssuedCredentials {
        let role_lifetime = match caller {
            Caller::RoleSession(_) => *super::lock(&account.role_session_lifetime),
            Caller::User | Caller::UserSession { .. } => None,
        };
        let lifetime = role_lifetime
            .or(account.session_lifetime)
            .unwrap_or(Duration::from_secs(duration_secs));
        // Whole seconds, so the expiry the client reads is exactly the one enforced.
        let expiration = UNIX_EPOCH + Duration::from_secs(unix_secs(now + lifetime));
        let credentials = IssuedCredentials {
            access_key_id: format!("ASIA{}", protocol::random_string(ID_ALPHABET, 16)),
            secret_access_key: protocol::random_string(SECRET_ALPHABET, SECRET_KEY_LEN),
            session_token: protocol::random_string(SECRET_ALPHABET, SESSION_TOKEN_LEN),
            expiration,
        };

        let session = Session {
            session_token: credentials.session_token.clone(),
            expires_at: expiration,
            caller,
        };
        self.sessions
            .insert(credentials.access_key_id.clone(), session);
        self.stats.sessions_issued += 1;
        credentials
    }
}

/// One request as the ledger sees it.
pub(super) struct Request<'a> {
    pub(super) action: &'a str,
    pub(super) params: &'a Params,
    pub(super) headers: &'a HeaderMap,
    pub(super) check_signing_time: bool,
}

impl AssumeRoleRecord {
    fn from_params(params: &Params) -> Self {
        let owned = |name: &str| params.get(name).map(str::to_owned);
        let tags = params
            .members("Tags", "Key")
            .into_iter()
            .zip(params.members("Tags", "Value"))
            .collect();
        Self {
            role_arn: owned("RoleArn").unwrap_or_default(),
            role_session_name: owned("RoleSessionName").unwrap_or_default(),
            duration_seconds: params
                .get("DurationSeconds")
                .and_then(|text| text.parse().ok()),
            serial_number: owned("SerialNumber"),
            external_id: owned("ExternalId"),
            policy_arns: params.members("PolicyArns", "arn"),
            tags,
            source_identity: owned("SourceIdentity"),
            role_chaining: false,
            error_code: None,
        }
    }
}

fn check_signing_time(headers: &HeaderMap, now: SystemTime) -> Result<(), StsError> {
    let Some(header) = headers.get("x-amz-date") else {
        return Ok(());
    };
    let signed_at = header
        .to_str()
        .ok()
        .and_then(protocol::parse_amz_date)
        .ok_or(StsError::IncompleteSignature)?;

    let earliest = now - SIGNING_TOLERANCE;
    let latest = now + SIGNING_TOLERANCE;
    if signed_at < earliest {
        return Err(StsError::SignatureExpired {
            signed_at: protocol::amz_date(signed_at),
            earliest: protocol::amz_date(earliest),
            now: protocol::amz_date(now),
        });
    }
    if signed_at > latest {
        return Err(StsError::SignatureNotYetCurrent {
            signed_at: protocol::amz_date(signed_at),
            latest: protocol::amz_date(latest),
            now: protocol::amz_date(now),
        });
    }
    Ok(())
}

/// `SerialNumber` and `TokenCode`, which must come together or not at all.
fn mfa_params(params: &Params) -> Result<Option<(&str, &str)>, StsError> {
    let serial_number = params.get("SerialNumber");
    if let Some(serial_number) = serial_number {
        let valid = |c: char| is_name_char(c) || c == '/' || c == ':';
        check_pattern(
            serial_number,
            "serialNumber",
            9..=256,
            valid,
            r"[\w+=/:,.@-]*",
        )?;
    }
    let code = params.get("TokenCode");
    if let Some(code) = code {
        check_pattern(code, "tokenCode", 6..=6, |c| c.is_ascii_digit(), r"[\d]*")?;
    }

    match (serial_number, code) {
        (Some(serial_number), Some(code)) => Ok(Some((serial_number, code))),
        (None, None) => Ok(None),
        (Some(_), None) | (None, Some(_)) => Err(StsError::MfaUnavailable),
    }
}

/// Reads `DurationSeconds`, or `default` when absent.
fn duration_seconds(
    params: &Params,
    bounds: &RangeInclusive<u64>,
    default: u64,
) -> Result<u64, StsError> {
    let Some(text) = params.get("DurationSeconds") else {
        return Ok(default);
    };
    let seconds: u64 = text
        .parse()
        .map_err(|_| invalid(text, "durationSeconds", "Member must be an integer"))?;

    if seconds < *bounds.start() {
        let constraint = format!(
            "Member must have value greater than or equal to {}",
            bounds.start()
        );
        return Err(invalid(text, "durationSeconds", &constraint));
    }
    if seconds > *bounds.end() {
        let constraint = format!(
            "Member must have value less than or equal to {}",
            bounds.end()
        );
        return Err(invalid(text, "durationSeconds", &constraint));
    }
    Ok(seconds)
}

fn required<'a>(params: &'a Params, name: &str, field: &str) -> Result<&'a str, StsError> {
    params.get(name).ok_or_else(|| {
        StsError::Validation(format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: \
             Member must not be null"
        ))
    })
}

/// The account and role name of `arn:aws:iam::<12 digits>:role/<path/>name`.
fn parse_role_arn(arn: &str) -> Option<(&str, &str)> {
    let (account_id, resource) = arn.strip_prefix("arn:aws:iam::")?.split_once(':')?;
    let path_and_name = resource.strip_prefix("role/")?;
    let well_formed = is_account_id(account_id)
        && path_and_name
            .split('/')
            .all(|part| !part.is_empty() && part.chars().all(is_name_char));
    let role_name = path_and_name.rsplit('/').next()?;
    (well_formed && role_name.len() <= 64).then_some((account_id, role_name))
}

/// Whether `text` is an AWS account id: exactly 12 digits.
pub(super) fn is_account_id(text: &str) -> bool {
    text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit())
}

fn check_name(value: &str, field: &str, lengths: RangeInclusive<usize>) -> Result<(), StsError> {
    check_pattern(value, field, lengths, is_name_char, r"[\w+=,.@-]*")
}

fn check_external_id(value: &str) -> Result<(), StsError> {
    let valid = |c: char| is_name_char(c) || c == ':' || c == '/';
    check_pattern(value, "externalId", 2..=1224, valid, r"[\w+=,.@:\/-]*")
}

fn check_pattern(
    value: &str,
    field: &str,
    lengths: RangeInclusive<usize>,
    valid: impl Fn(char) -> bool,
    pattern: &str,
) -> Result<(), StsError> {
    let length = value.chars().count();
    if length < *lengths.start() {
        let constraint = format!(
            "Member must have length greater than or equal to {}",
            lengths.start()
        );
        return Err(invalid(value, field, &constraint));
    }
    if length > *lengths.end() {
        let constraint = format!(
            "Member must have length less than or equal to {}",
            lengths.end()
        );
        return Err(invalid(value, field, &constraint));
    }
    if !value.chars().all(valid) {
        let constraint = format!("Member must satisfy regular expression pattern: {pattern}");
        return Err(invalid(value, field, &constraint));
    }
    Ok(())
}

fn invalid(value: &str, field: &str, constraint: &str) -> StsError {
    StsError::Validation(format!(
        "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: \
         {constraint}"
    ))
}

/// `[\w+=,.@-]`, the characters of IAM names and session names.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_with_paths_name_the_last_segment() {
        let parsed = parse_role_arn("arn:aws:iam::123456789012:role/service/DuperRole");

        assert_eq!(parsed, Some(("123456789012", "DuperRole")));
    }

    #[test]
    fn malformed_role_arns_are_refused() {
        for arn in [
            "arn:aws:iam::12345678901:role/Short",
            "arn:aws:iam::123456789012:user/NotARole",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role/a//b",
            "arn:aws:iam::123456789012:role/bad*name",
            "arn:aws:sts::123456789012:role/WrongService",
        ] {
            assert_eq!(parse_role_arn(arn), None, "{arn}");
        }
    }

    #[test]
    fn every_error_maps_to_the_status_sts_uses_for_its_code() {
        let cases = [
            (StsError::UnknownAccessKey, 403, "InvalidClientTokenId"),
            (StsError::ExpiredSession, 403, "ExpiredToken"),
            (StsError::InvalidMfaCode, 403, "AccessDenied"),
            (StsError::Validation(String::new()), 400, "ValidationError"),
        ];

        for (error, status, code) in cases {
            assert_eq!(error.status().as_u16(), status);
            assert_eq!(error.code(), code);
        }
    }

    #[test]
    fn the_mfa_failure_messages_match_sts() {
        assert_eq!(
            StsError::InvalidMfaCode.to_string(),
            "MultiFactorAuthentication failed with invalid MFA one time pass code."
        );
        assert!(StsError::MfaUnavailable.to_string().starts_with(
            "MultiFactorAuthentication failed, unable to validate MFA code. Please verify"
        ));
    }
}
