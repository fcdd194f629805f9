//! The IAM actions the stand-in answers: the life of a virtual MFA device.
//!
//! IAM speaks the same query protocol as STS with API version `2010-05-08`
//! and signing service `iam`, so it shares the stand-in's listener and is
//! told apart by its `Action`. It answers `CreateVirtualMFADevice`,
//! `EnableMFADevice`, `ResyncMFADevice`, `DeactivateMFADevice` and
//! `DeleteVirtualMFADevice`, following what IAM does:
//!
//! - a new device gets a random 40-byte seed, returned as `Base32StringSeed`
//!   (a blob whose bytes are the base32 text), and a `QRCodePNG` blob (here
//!   a 1×1 placeholder image rather than a scannable code);
//! - a device's path and name must be unique (`409 EntityAlreadyExists`);
//!   the user may hold at most 8 devices, and since the stand-in plays one
//!   user, every device it knows counts, enabled or not (`409
//!   LimitExceeded`);
//! - enabling and resynchronising take the codes of two consecutive steps,
//!   both within ±2 steps of the stand-in's clock (`403
//!   InvalidAuthenticationCode`); these checks spend nothing from STS's
//!   budget and mark no code used;
//! - an enabled device is handed to the STS side at once (real STS sees it
//!   after 10–15 s), and a deactivated one is taken away;
//! - an enabled device cannot be deleted (`409 DeleteConflict`).
//!
//! Callers sign as STS callers do, with the long-term key or an issued
//! session, scoped to service `iam`; the signing time is not checked. Only
//! the user `svc` exists (`404 NoSuchEntity` for any other). After
//! [`super::StandIn::set_mfa_required_to_deactivate`], DeactivateMFADevice
//! is refused (`403 AccessDenied`) unless the caller's session proved MFA,
//! as under the policy `assumed policy` prints.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use rand::RngCore;
use zeroize::Zeroizing;

use super::mfa;
use super::protocol::{self, escape};
use super::sts::{Account, Ledger, Request, StsError, USER_NAME};

/// The IAM API version; requests for IAM actions must name it.
pub(super) const API_VERSION: &str = "2010-05-08";
/// The XML namespace of IAM answers (a name, not an address that is contacted).
const XML_NAMESPACE: &str = "https://iam.amazonaws.com/doc/2010-05-08/";
/// IAM's quota of MFA devices per user.
const MAX_DEVICES_PER_USER: usize = 8;
/// The length of the seeds IAM issues.
const SEED_BYTES: usize = 40;
/// The longest virtual MFA device name IAM accepts.
const MAX_DEVICE_NAME: usize = 226;
/// A valid 1×1 PNG, standing in for the QR code of the seed.
const PLACEHOLDER_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// The actions answered here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    CreateVirtual,
    Enable,
    Resync,
    Deactivate,
    DeleteVirtual,
}

impl Action {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "CreateVirtualMFADevice" => Some(Self::CreateVirtual),
            "EnableMFADevice" => Some(Self::Enable),
            "ResyncMFADevice" => Some(Self::Resync),
            "DeactivateMFADevice" => Some(Self::Deactivate),
            "DeleteVirtualMFADevice" => Some(Self::DeleteVirtual),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::CreateVirtual => "CreateVirtualMFADevice",
            Self::Enable => "EnableMFADevice",
            Self::Resync => "ResyncMFADevice",
            Self::Deactivate => "DeactivateMFADevice",
            Self::DeleteVirtual => "DeleteVirtualMFADevice",
        }
    }
}

/// Whether `action` is one of the IAM actions answered here.
pub(super) fn is_iam_action(action: &str) -> bool {
    Action::parse(action).is_some()
}

/// An IAM error answer; `Display` is the message sent to the client.
#[derive(Debug, thiserror::Error)]
pub(super) enum IamError {
    #[error("{0}")]
    Authentication(StsError),
    #[error("Credential should be scoped to correct service: 'iam'.")]
    WrongService,
    #[error("Could not find operation {action} for version {version}")]
    UnknownAction { action: String, version: String },
    #[error("{0}")]
    Validation(String),
    #[error("The user with name {0} cannot be found.")]
    NoSuchUser(String),
    #[error("VirtualMFADevice with serial number {0} doesn't exist.")]
    NoSuchDevice(String),
    #[error("MFA device {0} is not enabled for user {USER_NAME}.")]
    NotEnabled(String),
    #[error("MFADevice entity at the same path and name already exists.")]
    DeviceExists,
    #[error("MFA device {0} is already in use.")]
    AlreadyEnabled(String),
    #[error("Cannot exceed quota for MFADevicesPerUser: {MAX_DEVICES_PER_USER}")]
    TooManyDevices,
    #[error("Authentication code for device is not valid.")]
    InvalidCodes,
    #[error("MFA device {0} is still enabled; deactivate it first.")]
    StillEnabled(String),
    #[error(
        "User: {user_arn} is not authorized to perform: iam:{action} on resource: user {USER_NAME} \
         because no identity-based policy allows the iam:{action} action"
    )]
    NotAuthorized {
        user_arn: String,
        action: &'static str,
    },
}

impl IamError {
    pub(super) fn status(&self) -> StatusCode {
        match self {
            Self::Authentication(error) => error.status(),
            Self::UnknownAction { .. } | Self::Validation(_) => StatusCode::BAD_REQUEST,
            Self::WrongService | Self::InvalidCodes | Self::NotAuthorized { .. } => {
                StatusCode::FORBIDDEN
            }
            Self::NoSuchUser(_) | Self::NoSuchDevice(_) | Self::NotEnabled(_) => {
                StatusCode::NOT_FOUND
            }
            Self::DeviceExists
            | Self::AlreadyEnabled(_)
            | Self::TooManyDevices
            | Self::StillEnabled(_) => StatusCode::CONFLICT,
        }
    }

    pub(super) fn code(&self) -> &'static str {
        match self {
            Self::Authentication(error) => error.code(),
            Self::WrongService => "SignatureDoesNotMatch",
            Self::UnknownAction { .. } => "InvalidAction",
            Self::Validation(_) => "ValidationError",
            Self::NoSuchUser(_) | Self::NoSuchDevice(_) | Self::NotEnabled(_) => "NoSuchEntity",
            Self::DeviceExists | Self::AlreadyEnabled(_) => "EntityAlreadyExists",
            Self::TooManyDevices => "LimitExceeded",
            Self::InvalidCodes => "InvalidAuthenticationCode",
            Self::StillEnabled(_) => "DeleteConflict",
            Self::NotAuthorized { .. } => "AccessDenied",
        }
    }
}

/// A virtual MFA device as the stand-in's IAM knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualMfaDevice {
    pub serial_number: String,
    /// The user it is enabled for; `None` while it is not enabled.
    pub enabled_for: Option<String>,
}

/// Every virtual MFA device created through IAM, by serial number.
#[derive(Default)]
pub(super) struct Directory {
    devices: BTreeMap<String, DeviceRecord>,
    pub(super) mfa_required_to_deactivate: bool,
}

struct DeviceRecord {
    seed: Zeroizing<Vec<u8>>,
    enabled_for: Option<String>,
}

impl Directory {
    pub(super) fn devices(&self) -> Vec<VirtualMfaDevice> {
        self.devices
            .iter()
            .map(|(serial_number, record)| VirtualMfaDevice {
                serial_number: serial_number.clone(),
                enabled_for: record.enabled_for.clone(),
            })
            .collect()
    }
}

/// A successful IAM answer.
pub(super) enum IamReply {
    Created {
        serial_number: String,
        base32_seed: Zeroizing<String>,
    },
    /// Actions whose answer carries no result.
    Done(&'static str),
}

impl IamReply {
    /// The XML body of this answer.
    pub(super) fn render(&self, request_id: &str) -> String {
        let (action, result) = match self {
            Self::Created {
                serial_number,
                base32_seed,
            } => {
                let mut result = String::from("<VirtualMFADevice>");
                push_element(&mut result, "SerialNumber", serial_number);
                let seed_blob =
                    Zeroizing::new(data_encoding::BASE64.encode(base32_seed.as_bytes()));
                push_element(&mut result, "Base32StringSeed", &seed_blob);
                push_element(
                    &mut result,
                    "QRCodePNG",
                    &data_encoding::BASE64.encode(PLACEHOLDER_PNG),
                );
                result.push_str("</VirtualMFADevice>");
                let action = Action::CreateVirtual.name();
                (action, format!("<{action}Result>{result}</{action}Result>"))
            }
            Self::Done(action) => (*action, String::new()),
        };
        format!(
            "<{action}Response xmlns=\"{XML_NAMESPACE}\">\n{result}\n\
             <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata>\n\
             </{action}Response>\n",
            escape(request_id)
        )
    }
}

/// The XML body of an IAM error answer.
pub(super) fn render_error(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
) -> String {
    // IAM, like STS, marks its own failures "Receiver" and the caller's "Sender".
    let kind = if status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    format!(
        "<ErrorResponse xmlns=\"{XML_NAMESPACE}\">\n\
         <Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message></Error>\n\
         <RequestId>{}</RequestId>\n\
         </ErrorResponse>\n",
        escape(code),
        escape(message),
        escape(request_id)
    )
}

/// Who signed an IAM request.
#[derive(Clone, Copy, Debug)]
struct Caller {
    mfa_authenticated: bool,
}

/// Authenticates and answers one IAM request at the stand-in's time `now`.
pub(super) fn answer(
    ledger: &mut Ledger,
    directory: &mut Directory,
    account: &Account,
    request: &Request<'_>,
    now: SystemTime,
) -> Result<IamReply, IamError> {
    let version = request.params.get("Version").unwrap_or_default();
    let action = Action::parse(request.action)
        .filter(|_| version == API_VERSION)
        .ok_or_else(|| IamError::UnknownAction {
            action: request.action.to_owned(),
            version: version.to_owned(),
        })?;
    let caller = authenticate(ledger, account, request, now)?;
    let params = request.params;
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());

    match action {
        Action::CreateVirtual => create(directory, account, params),
        Action::Enable => {
            user(params)?;
            let serial_number = required(params, "SerialNumber")?;
            let record = directory
                .devices
                .get_mut(serial_number)
                .ok_or_else(|| IamError::NoSuchDevice(serial_number.to_owned()))?;
            if record.enabled_for.is_some() {
                return Err(IamError::AlreadyEnabled(serial_number.to_owned()));
            }
            check_codes(&record.seed, params, now_secs)?;
            record.enabled_for = Some(USER_NAME.to_owned());
            ledger.devices.add(serial_number, &record.seed);
            Ok(IamReply::Done(action.name()))
        }
        Action::Resync => {
            let record = enabled_device(directory, params)?;
            check_codes(&record.seed, params, now_secs)?;
            Ok(IamReply::Done(action.name()))
        }
        Action::Deactivate => {
            if directory.mfa_required_to_deactivate && !caller.mfa_authenticated {
                return Err(IamError::NotAuthorized {
                    user_arn: format!("arn:aws:iam::{}:user/{USER_NAME}", account.account_id),
                    action: action.name(),
                });
            }
            let record = enabled_device(directory, params)?;
            record.enabled_for = None;
            ledger.devices.remove(required(params, "SerialNumber")?);
            Ok(IamReply::Done(action.name()))
        }
        Action::DeleteVirtual => {
            let serial_number = required(params, "SerialNumber")?;
            let record = directory
                .devices
                .get(serial_number)
                .ok_or_else(|| IamError::NoSuchDevice(serial_number.to_owned()))?;
            if record.enabled_for.is_some() {
                return Err(IamError::StillEnabled(serial_number.to_owned()));
            }
            directory.devices.remove(serial_number);
            Ok(IamReply::Done(action.name()))
        }
    }
}

fn authenticate(
    ledger: &Ledger,
    account: &Account,
    request: &Request<'_>,
    now: SystemTime,
) -> Result<Caller, IamError> {
    let header = request
        .headers
        .get(AUTHORIZATION)
        .ok_or(IamError::Authentication(StsError::MissingAuthentication))?;
    let scope = header
        .to_str()
        .ok()
        .and_then(protocol::parse_authorization)
        .ok_or(IamError::Authentication(StsError::IncompleteSignature))?;
    if scope.service != "iam" {
        return Err(IamError::WrongService);
    }
    let token = request
        .headers
        .get("x-amz-security-token")
        .map(|value| value.to_str().unwrap_or_default());
    if scope.access_key_id == account.access_key_id {
        return match token {
            None => Ok(Caller {
                mfa_authenticated: false,
            }),
            Some(_) => Err(IamError::Authentication(StsError::UnknownAccessKey)),
        };
    }
    let mfa_authenticated = ledger
        .session_mfa_authenticated(&scope.access_key_id, token, now)
        .map_err(IamError::Authentication)?;
    Ok(Caller { mfa_authenticated })
}

fn create(
    directory: &mut Directory,
    account: &Account,
    params: &protocol::Params,
) -> Result<IamReply, IamError> {
    let name = required(params, "VirtualMFADeviceName")?;
    check_name(name, "virtualMFADeviceName", MAX_DEVICE_NAME)?;
    let path = params.get("Path").unwrap_or("/");
    let path_ok = path.starts_with('/')
        && path.ends_with('/')
        && path.len() <= 512
        && path.chars().all(|c| ('!'..='~').contains(&c));
    if !path_ok {
        return Err(invalid(path, "path", "Member must start and end with /"));
    }
    let serial_number = format!("arn:aws:iam::{}:mfa{path}{name}", account.account_id);
    if directory.devices.contains_key(&serial_number) {
        return Err(IamError::DeviceExists);
    }
    if directory.devices.len() >= MAX_DEVICES_PER_USER {
        return Err(IamError::TooManyDevices);
    }

    let mut seed = Zeroizing::new(vec![0u8; SEED_BYTES]);
    rand::rng().fill_bytes(&mut seed);
    let base32_seed = Zeroizing::new(data_encoding::BASE32.encode(&seed));
    directory.devices.insert(
        serial_number.clone(),
        DeviceRecord {
            seed,
            enabled_for: None,
        },
    );
    Ok(IamReply::Created {
        serial_number,
        base32_seed,
    })
}

/// The device named by `SerialNumber`, enabled for the user named by `UserName`.
fn enabled_device<'a>(
    directory: &'a mut Directory,
    params: &protocol::Params,
) -> Result<&'a mut DeviceRecord, IamError> {
    user(params)?;
    let serial_number = required(params, "SerialNumber")?;
    directory
        .devices
        .get_mut(serial_number)
        .filter(|record| record.enabled_for.as_deref() == Some(USER_NAME))
        .ok_or_else(|| IamError::NotEnabled(serial_number.to_owned()))
}

/// `UserName`, which must name the one user the stand-in plays.
fn user(params: &protocol::Params) -> Result<(), IamError> {
    let name = required(params, "UserName")?;
    check_name(name, "userName", 64)?;
    if name != USER_NAME {
        return Err(IamError::NoSuchUser(name.to_owned()));
    }
    Ok(())
}

fn check_codes(seed: &[u8], params: &protocol::Params, now_secs: u64) -> Result<(), IamError> {
    let first = required(params, "AuthenticationCode1")?;
    let second = required(params, "AuthenticationCode2")?;
    for (code, field) in [
        (first, "authenticationCode1"),
        (second, "authenticationCode2"),
    ] {
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                code,
                field,
                "Member must satisfy regular expression pattern: [\\d]+",
            ));
        }
    }
    if mfa::are_consecutive_codes(seed, first, second, now_secs) {
        Ok(())
    } else {
        Err(IamError::InvalidCodes)
    }
}

fn required<'a>(params: &'a protocol::Params, name: &str) -> Result<&'a str, IamError> {
    params.get(name).ok_or_else(|| {
        IamError::Validation(format!(
            "1 validation error detected: Value null at '{name}' failed to satisfy constraint: \
             Member must not be null"
        ))
    })
}

fn check_name(value: &str, field: &str, max_len: usize) -> Result<(), IamError> {
    let valid = |c: char| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c);
    if value.is_empty() || value.len() > max_len || !value.chars().all(valid) {
        return Err(invalid(
            value,
            field,
            &format!("Member must satisfy regular expression pattern: [\\w+=,.@-]{{1,{max_len}}}"),
        ));
    }
    Ok(())
}

fn invalid(value: &str, field: &str, constraint: &str) -> IamError {
    IamError::Validation(format!(
        "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: \
         {constraint}"
    ))
}

fn push_element(out: &mut String, name: &str, text: &str) {
    // Writing to a String cannot fail.
    let _ = write!(out, "<{name}>{}</{name}>", escape(text));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_placeholder_qr_code_is_a_png() {
        assert_eq!(&PLACEHOLDER_PNG[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(
            &PLACEHOLDER_PNG[PLACEHOLDER_PNG.len() - 8..PLACEHOLDER_PNG.len() - 4],
            b"IEND"
        );
    }

    #[test]
    fn every_error_maps_to_the_status_iam_uses_for_its_code() {
        let cases = [
            (IamError::DeviceExists, 409, "EntityAlreadyExists"),
            (IamError::TooManyDevices, 409, "LimitExceeded"),
            (IamError::InvalidCodes, 403, "InvalidAuthenticationCode"),
            (IamError::StillEnabled(String::new()), 409, "DeleteConflict"),
            (IamError::NoSuchUser(String::new()), 404, "NoSuchEntity"),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status().as_u16(), status);
            assert_eq!(error.code(), code);
        }
    }

    #[test]
    fn only_the_codes_of_two_consecutive_current_steps_pass() {
        let seed = b"12345678901234567890";
        let now = 1_800_000_015;
        let code = |step: u64| {
            totp_rs::Builder::new()
                .with_secret(seed.to_vec())
                .build_noncompliant()
                .generate(step * 30)
                .to_string()
        };
        let current = now / 30;

        assert!(mfa::are_consecutive_codes(
            seed,
            &code(current - 1),
            &code(current),
            now
        ));
        assert!(mfa::are_consecutive_codes(
            seed,
            &code(current),
            &code(current + 1),
            now
        ));
        assert!(!mfa::are_consecutive_codes(
            seed,
            &code(current + 1),
            &code(current),
            now
        ));
        assert!(!mfa::are_consecutive_codes(
            seed,
            &code(current),
            &code(current),
            now
        ));
        assert!(!mfa::are_consecutive_codes(
            seed,
            &code(current - 5),
            &code(current - 4),
            now
        ));
    }
}
