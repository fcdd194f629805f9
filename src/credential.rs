//! A vended credential and the exact bytes served for it.
//!
//! The answer body is rendered once, when the credential arrives, in the
//! ECS container-credentials shape every SDK reads:
//!
//! ```json
//! {"AccessKeyId":"ASIA…","SecretAccessKey":"…","Token":"…",
//!  "Expiration":"2026-12-04T16:40:37Z","AccountId":"123456789012"}
//! ```
//!
//! Key names are case-sensitive for Python and Java; `Expiration` is UTC
//! with a `Z` because Rust and JS refuse offsets and botocore needs a zone.
//! Serving then costs a reference-count increment. The rendered body holds
//! the secret key and token, so its buffer is zeroed when the last response
//! using it is gone; copies hyper makes into its socket buffers are not.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroize;

/// Temporary credentials from STS, with `expiration` on the host's clock.
pub struct Credential {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: SecretString,
    pub expiration: SystemTime,
    pub account_id: String,
    body: Bytes,
}

impl Credential {
    pub fn new(
        access_key_id: String,
        secret_access_key: SecretString,
        session_token: SecretString,
        expiration: SystemTime,
        account_id: String,
    ) -> Credential {
        let body = render(
            &access_key_id,
            &secret_access_key,
            &session_token,
            expiration,
            &account_id,
        );
        Credential {
            access_key_id,
            secret_access_key,
            session_token,
            expiration,
            account_id,
            body,
        }
    }

    /// The ECS JSON answer for this credential.
    pub fn body(&self) -> Bytes {
        self.body.clone()
    }

    /// Time left before expiry at `now` (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expiration.duration_since(now).unwrap_or_default()
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &rfc3339(self.expiration))
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

/// `2026-12-04T16:40:37Z`.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct EcsBody<'a> {
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: &'a str,
    account_id: &'a str,
}

fn render(
    access_key_id: &str,
    secret_access_key: &SecretString,
    session_token: &SecretString,
    expiration: SystemTime,
    account_id: &str,
) -> Bytes {
    let body = EcsBody {
        access_key_id,
        secret_access_key: secret_access_key.expose_secret(),
        token: session_token.expose_secret(),
        expiration: &rfc3339(expiration),
        account_id,
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    Bytes::from_owner(ZeroizedOnDrop(json))
}

/// A buffer that is zeroed when the last `Bytes` sharing it is dropped.
struct ZeroizedOnDrop(Vec<u8>);

impl AsRef<[u8]> for ZeroizedOnDrop {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for ZeroizedOnDrop {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_exactly_the_ecs_keys_and_a_utc_expiration() {
        let expiration = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_402_437);
        let credential = Credential::new(
            "ASIAEXAMPLE".into(),
            SecretString::from("secret".to_owned()),
            SecretString::from("token".to_owned()),
            expiration,
            "123456789012".into(),
        );
        let body: serde_json::Value = serde_json::from_slice(&credential.body()).unwrap();
        let expected = serde_json::json!({
            "AccessKeyId": "ASIAEXAMPLE",
            "SecretAccessKey": "secret",
            "Token": "token",
            "Expiration": "2026-12-04T16:40:37Z",
            "AccountId": "123456789012",
        });
        assert_eq!(body, expected);
    }

    #[test]
    fn debug_output_hides_the_secret_key_and_token() {
        let credential = Credential::new(
            "ASIAEXAMPLE".into(),
            SecretString::from("MARKERSECRET".to_owned()),
            SecretString::from("MARKERTOKEN".to_owned()),
            SystemTime::UNIX_EPOCH,
            "123456789012".into(),
        );
        let debug = format!("{credential:?}");
        assert!(
            !debug.contains("MARKERSECRET") && !debug.contains("MARKERTOKEN"),
            "{debug}"
        );
    }
}
