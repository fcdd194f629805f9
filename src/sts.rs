//! STS calls and what their failures mean.
//!
//! One [`Sts`] wraps an aws-sdk-sts client signed with the IAM user's
//! long-term key. The SDK's own retries are off: a retry would present the
//! same MFA code twice, and STS refuses a code it has accepted. The session
//! refresher decides when to try again, from the [`FailureClass`] of each
//! error. Every answer's `Date` header feeds the [`StsClock`], and requests
//! are signed on that clock, so a host clock that is minutes off still
//! works.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_sts::config::{BehaviorVersion, Region};
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::types::{PolicyDescriptorType, Tag};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use secrecy::{ExposeSecret, SecretString};

use crate::clock::StsClock;
use crate::config::{AwsSettings, RoleSpec};
use crate::credential::Credential;
use crate::secret::LongTermKey;
use crate::totp::TotpCode;

/// How a failed call should be retried, and what an operator should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum FailureClass {
    /// The code was wrong or already used: try the next step's code.
    CodeRejected,
    /// STS could not validate the code: the device's budget is spent (or
    /// the serial is wrong). Wait for the next 3-minute window.
    MfaBudget,
    /// Rate exceeded: back off.
    Throttled,
    /// 5xx, timeouts, connection failures: back off.
    Unavailable,
    /// An answer that is not STS's: back off.
    Malformed,
    /// The user may not assume the role: retry slowly, an operator must act.
    AccessDenied,
    /// The long-term key is unknown or its signature does not verify.
    InvalidKey,
    /// The long-term credentials have expired.
    ExpiredKey,
    /// STS is disabled in the region for the account.
    RegionDisabled,
    /// STS refused the parameters.
    InvalidRequest,
}

impl FailureClass {
    /// Whether time alone is likely to fix it (quick retries make sense).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            FailureClass::CodeRejected
                | FailureClass::MfaBudget
                | FailureClass::Throttled
                | FailureClass::Unavailable
                | FailureClass::Malformed
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            FailureClass::CodeRejected => "code_rejected",
            FailureClass::MfaBudget => "mfa_budget",
            FailureClass::Throttled => "throttled",
            FailureClass::Unavailable => "unavailable",
            FailureClass::Malformed => "malformed",
            FailureClass::AccessDenied => "access_denied",
            FailureClass::InvalidKey => "invalid_key",
            FailureClass::ExpiredKey => "expired_key",
            FailureClass::RegionDisabled => "region_disabled",
            FailureClass::InvalidRequest => "invalid_request",
        }
    }

    /// What to check or do, for health output and logs.
    pub fn hint(self) -> &'static str {
        match self {
            FailureClass::CodeRejected => {
                "STS refused the MFA code; if this repeats, check the host clock (clock_offset_seconds in /healthz) and that the seed belongs to mfa.serial_number"
            }
            FailureClass::MfaBudget => {
                "STS could not validate the MFA code: the device's verification budget for this 3-minute window is spent, or mfa.serial_number is not the access key's user's device; waiting for the next window"
            }
            FailureClass::Throttled => "STS is throttling requests; backing off",
            FailureClass::Unavailable => {
                "STS could not be reached or failed; check the network path to aws.sts_endpoint; backing off"
            }
            FailureClass::Malformed => {
                "the answer was not a valid STS response; check aws.sts_endpoint and any proxy in between"
            }
            FailureClass::AccessDenied => {
                "the user may not assume this role with MFA; check the role's trust policy and the user's sts:AssumeRole permission (`assumed policy` prints both)"
            }
            FailureClass::InvalidKey => {
                "STS does not accept the access key in aws.credentials_file; check the key is active (or the host clock, if the signature is refused) and replace the file"
            }
            FailureClass::ExpiredKey => {
                "the credentials in aws.credentials_file have expired; put a long-term access key there"
            }
            FailureClass::RegionDisabled => {
                "STS is disabled in aws.region for this account; enable the region in IAM account settings or choose another"
            }
            FailureClass::InvalidRequest => {
                "STS refused the request's parameters; check the role's settings (duration against its MaxSessionDuration, external_id, tags)"
            }
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} failed ({}): {message}", .class.name())]
pub struct StsError {
    pub operation: &'static str,
    pub class: FailureClass,
    /// STS's error code, when it sent one.
    pub code: Option<String>,
    pub message: String,
}

/// The STS client, signed with the long-term key.
#[derive(Clone, Debug)]
pub struct Sts {
    client: aws_sdk_sts::Client,
    clock: Arc<StsClock>,
}

impl Sts {
    pub fn new(settings: &AwsSettings, key: &LongTermKey, clock: Arc<StsClock>) -> Sts {
        let credentials = aws_credential_types::Credentials::new(
            key.access_key_id.clone(),
            key.secret_access_key.expose_secret().to_owned(),
            key.session_token
                .as_ref()
                .map(|token| token.expose_secret().to_owned()),
            None,
            "assumed-credentials-file",
        );
        let timeouts = aws_sdk_sts::config::timeout::TimeoutConfig::builder()
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .operation_timeout(settings.connect_timeout + settings.read_timeout)
            .build();
        let mut builder = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(credentials)
            .retry_config(aws_sdk_sts::config::retry::RetryConfig::disabled())
            .timeout_config(timeouts)
            .time_source(crate::clock::SigningTime(clock.clone()))
            .interceptor(DateObserver {
                clock: clock.clone(),
            });
        if let Some(endpoint) = &settings.sts_endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Sts {
            client: aws_sdk_sts::Client::from_conf(builder.build()),
            clock,
        }
    }

    /// AssumeRole with the long-term key and an MFA code.
    pub async fn assume_role(
        &self,
        role: &RoleSpec,
        serial_number: &str,
        code: &TotpCode,
    ) -> Result<Credential, StsError> {
        let request = self
            .assume_role_request(role)
            .serial_number(serial_number)
            .token_code(code.expose());
        self.finish_assume_role(role, request.send().await).await
    }

    /// AssumeRole with session credentials from GetSessionToken (role chaining: no code).
    pub async fn assume_role_chained(
        &self,
        role: &RoleSpec,
        session: &Credential,
    ) -> Result<Credential, StsError> {
        let session_credentials = aws_credential_types::Credentials::new(
            session.access_key_id.clone(),
            session.secret_access_key.expose_secret().to_owned(),
            Some(session.session_token.expose_secret().to_owned()),
            None,
            "assumed-mfa-session",
        );
        let overrides = aws_sdk_sts::Config::builder().credentials_provider(session_credentials);
        let result = self
            .assume_role_request(role)
            .customize()
            .config_override(overrides)
            .send()
            .await;
        self.finish_assume_role(role, result).await
    }

    fn assume_role_request(
        &self,
        role: &RoleSpec,
    ) -> aws_sdk_sts::operation::assume_role::builders::AssumeRoleFluentBuilder {
        let mut request = self
            .client
            .assume_role()
            .role_arn(&role.arn)
            .role_session_name(&role.session_name)
            .duration_seconds(role.duration.as_secs() as i32)
            .set_external_id(role.external_id.clone())
            .set_source_identity(role.source_identity.clone());
        for arn in &role.policy_arns {
            request = request.policy_arns(PolicyDescriptorType::builder().arn(arn).build());
        }
        for (key, value) in &role.tags {
            if let Ok(tag) = Tag::builder().key(key).value(value).build() {
                request = request.tags(tag);
            }
        }
        request
    }

    async fn finish_assume_role(
        &self,
        role: &RoleSpec,
        result: Result<
            aws_sdk_sts::operation::assume_role::AssumeRoleOutput,
            SdkError<
                aws_sdk_sts::operation::assume_role::AssumeRoleError,
                aws_smithy_runtime_api::http::Response,
            >,
        >,
    ) -> Result<Credential, StsError> {
        let output = result.map_err(|error| classify("AssumeRole", error))?;
        let credentials = output
            .credentials
            .ok_or_else(|| malformed("AssumeRole", "no Credentials in the answer"))?;
        self.credential("AssumeRole", credentials, role.account_id.clone())
    }

    /// GetSessionToken with an MFA code: the session every role is chained from.
    pub async fn get_session_token(
        &self,
        duration: Duration,
        serial_number: &str,
        code: &TotpCode,
        account_id: &str,
    ) -> Result<Credential, StsError> {
        let output = self
            .client
            .get_session_token()
            .duration_seconds(duration.as_secs() as i32)
            .serial_number(serial_number)
            .token_code(code.expose())
            .send()
            .await
            .map_err(|error| classify("GetSessionToken", error))?;
        let credentials = output
            .credentials
            .ok_or_else(|| malformed("GetSessionToken", "no Credentials in the answer"))?;
        self.credential("GetSessionToken", credentials, account_id.to_owned())
    }

    fn credential(
        &self,
        operation: &'static str,
        credentials: aws_sdk_sts::types::Credentials,
        account_id: String,
    ) -> Result<Credential, StsError> {
        let expiration = SystemTime::try_from(credentials.expiration)
            .map_err(|_| malformed(operation, "Expiration is not a time"))?;
        if expiration <= self.clock.now() {
            return Err(malformed(
                operation,
                "the answer's Expiration is already past",
            ));
        }
        if credentials.access_key_id.is_empty()
            || credentials.secret_access_key.is_empty()
            || credentials.session_token.is_empty()
        {
            return Err(malformed(
                operation,
                "the answer has empty credential fields",
            ));
        }
        Ok(Credential::new(
            credentials.access_key_id,
            SecretString::from(credentials.secret_access_key),
            SecretString::from(credentials.session_token),
            self.clock.to_host(expiration),
            account_id,
        ))
    }
}

fn malformed(operation: &'static str, message: &str) -> StsError {
    StsError {
        operation,
        class: FailureClass::Malformed,
        code: None,
        message: message.to_owned(),
    }
}

fn classify<E>(
    operation: &'static str,
    error: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> StsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (class, message) = match &error {
        SdkError::TimeoutError(_) => (FailureClass::Unavailable, "timed out".to_owned()),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            (FailureClass::Unavailable, "timed out".to_owned())
        }
        SdkError::DispatchFailure(_) => (
            FailureClass::Unavailable,
            format!("could not reach STS: {}", chain(&error)),
        ),
        SdkError::ResponseError(_) => (
            FailureClass::Malformed,
            format!("unreadable answer: {}", chain(&error)),
        ),
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let message = error.message().unwrap_or("no message").to_owned();
            (classify_service(status, error.code(), &message), message)
        }
        SdkError::ConstructionFailure(_) => (
            FailureClass::InvalidRequest,
            format!("could not build the request: {}", chain(&error)),
        ),
        _ => (FailureClass::Unavailable, chain(&error)),
    };
    StsError {
        operation,
        class,
        code: error.code().map(str::to_owned),
        message,
    }
}

/// Maps an STS error answer to what it means for retrying.
pub fn classify_service(status: u16, code: Option<&str>, message: &str) -> FailureClass {
    let lower = message.to_ascii_lowercase();
    match code {
        Some("AccessDenied") if lower.contains("invalid mfa one time pass code") => {
            FailureClass::CodeRejected
        }
        Some("AccessDenied") if lower.contains("unable to validate mfa code") => {
            FailureClass::MfaBudget
        }
        Some("AccessDenied") => FailureClass::AccessDenied,
        Some("Throttling" | "ThrottlingException" | "RequestLimitExceeded") => {
            FailureClass::Throttled
        }
        Some(
            "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "IncompleteSignature"
            | "MissingAuthenticationToken",
        ) => FailureClass::InvalidKey,
        Some("ExpiredToken" | "ExpiredTokenException") => FailureClass::ExpiredKey,
        Some("RegionDisabledException") => FailureClass::RegionDisabled,
        Some(
            "ValidationError"
            | "MalformedPolicyDocument"
            | "PackedPolicyTooLarge"
            | "InvalidParameterValue",
        ) => FailureClass::InvalidRequest,
        _ if status >= 500 => FailureClass::Unavailable,
        _ if status == 429 => FailureClass::Throttled,
        _ => FailureClass::Malformed,
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

/// Learns STS's clock from the `Date` header of every answer, errors included.
#[derive(Debug)]
struct DateObserver {
    clock: Arc<StsClock>,
}

impl Intercept for DateObserver {
    fn name(&self) -> &'static str {
        "DateObserver"
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let date = context
            .response()
            .headers()
            .get("date")
            .and_then(|value| httpdate::parse_http_date(value).ok());
        if let Some(date) = date
            && let Some(offset_ms) = self.clock.observe(date)
        {
            let seconds = offset_ms as f64 / 1000.0;
            if offset_ms.unsigned_abs() > crate::clock::OFFSET_WARNING.as_millis() as u64 {
                tracing::warn!(
                    offset_seconds = seconds,
                    "the host clock differs from STS's; codes and signatures use STS's time, but fix the host's time sync (chrony, systemd-timesyncd)"
                );
            } else {
                tracing::debug!(offset_seconds = seconds, "learned STS clock offset");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sts_error_answers_are_classified_by_code_and_message() {
        let cases = [
            (
                403,
                "AccessDenied",
                "MultiFactorAuthentication failed with invalid MFA one time pass code.",
                FailureClass::CodeRejected,
            ),
            (
                403,
                "AccessDenied",
                "MultiFactorAuthentication failed, unable to validate MFA code. Please verify your MFA serial number is valid and associated with this user.",
                FailureClass::MfaBudget,
            ),
            (
                403,
                "AccessDenied",
                "User: arn:aws:iam::123456789012:user/svc is not authorized to perform: sts:AssumeRole",
                FailureClass::AccessDenied,
            ),
            (400, "Throttling", "Rate exceeded", FailureClass::Throttled),
            (
                403,
                "InvalidClientTokenId",
                "The security token included in the request is invalid.",
                FailureClass::InvalidKey,
            ),
            (
                403,
                "ExpiredToken",
                "The security token included in the request is expired",
                FailureClass::ExpiredKey,
            ),
            (
                403,
                "RegionDisabledException",
                "STS is not activated in this region",
                FailureClass::RegionDisabled,
            ),
            (
                400,
                "ValidationError",
                "1 validation error detected",
                FailureClass::InvalidRequest,
            ),
            (503, "ServiceUnavailable", "", FailureClass::Unavailable),
            (500, "InternalFailure", "", FailureClass::Unavailable),
        ];
        for (status, code, message, expected) in cases {
            assert_eq!(
                classify_service(status, Some(code), message),
                expected,
                "{code}: {message}"
            );
        }
    }

    #[test]
    fn only_failures_that_time_can_fix_are_transient() {
        assert!(FailureClass::Unavailable.is_transient());
        assert!(FailureClass::CodeRejected.is_transient());
        assert!(!FailureClass::AccessDenied.is_transient());
        assert!(!FailureClass::InvalidKey.is_transient());
    }
}
