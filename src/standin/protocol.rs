//! The STS query protocol as the stand-in speaks it.
//!
//! Requests are form-encoded parameters (`Action=…&Version=2011-06-15&…`);
//! list parameters use STS's `Name.member.N.field` numbering from 1.
//! Answers are XML: `<{Action}Response>` wrapping `<{Action}Result>` and
//! `<ResponseMetadata>`, or an `<ErrorResponse>` carrying `Type`, `Code`,
//! `Message` and `RequestId`. Timestamps in bodies are ISO 8601 UTC with a
//! `Z` suffix, to the second. This module also reads the credential scope of
//! a SigV4 `Authorization` header; it never checks the signature itself.

use std::fmt::Write as _;
use std::time::SystemTime;

use rand::Rng;

/// The STS API version the stand-in implements; requests must name it.
pub(super) const API_VERSION: &str = "2011-06-15";
/// The XML namespace of STS answers (a name, not an address that is contacted).
const XML_NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
/// The only signing algorithm STS accepts in an `Authorization` header.
const SIGV4_ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Form parameters of one request, in the order sent.
#[derive(Debug, Default)]
pub(super) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub(super) fn parse(body: &[u8]) -> Self {
        let pairs = url::form_urlencoded::parse(body).into_owned().collect();
        Self { pairs }
    }

    /// The first value sent for `key`.
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// Values of `{list}.member.N.{field}` for N = 1, 2, … up to the first gap.
    pub(super) fn members(&self, list: &str, field: &str) -> Vec<String> {
        (1..)
            .map_while(|n| {
                self.get(&format!("{list}.member.{n}.{field}"))
                    .map(str::to_owned)
            })
            .collect()
    }
}

/// Temporary credentials as issued to a caller.
#[derive(Clone)]
pub(super) struct IssuedCredentials {
    pub(super) access_key_id: String,
    pub(super) secret_access_key: String,
    pub(super) session_token: String,
    pub(super) expiration: SystemTime,
}

/// A successful answer, one variant per action.
pub(super) enum Reply {
    AssumeRole {
        credentials: IssuedCredentials,
        assumed_role_id: String,
        arn: String,
        source_identity: Option<String>,
    },
    GetSessionToken {
        credentials: IssuedCredentials,
    },
    GetCallerIdentity {
        user_id: String,
        account: String,
        arn: String,
    },
}

impl Reply {
    fn action(&self) -> &'static str {
        match self {
            Self::AssumeRole { .. } => "AssumeRole",
            Self::GetSessionToken { .. } => "GetSessionToken",
            Self::GetCallerIdentity { .. } => "GetCallerIdentity",
        }
    }

    /// The XML body of this answer.
    pub(super) fn render(&self, request_id: &str) -> String {
        let mut result = String::new();
        match self {
            Self::AssumeRole {
                credentials,
                assumed_role_id,
                arn,
                source_identity,
            } => {
                push_credentials(&mut result, credentials);
                result.push_str("<AssumedRoleUser>");
                push_element(&mut result, "AssumedRoleId", assumed_role_id);
                push_element(&mut result, "Arn", arn);
                result.push_str("</AssumedRoleUser>");
                if let Some(source_identity) = source_identity {
                    push_element(&mut result, "SourceIdentity", source_identity);
                }
            }
            Self::GetSessionToken { credentials } => push_credentials(&mut result, credentials),
            Self::GetCallerIdentity {
                user_id,
                account,
                arn,
            } => {
                push_element(&mut result, "UserId", user_id);
                push_element(&mut result, "Account", account);
                push_element(&mut result, "Arn", arn);
            }
        }

        let action = self.action();
        format!(
            "<{action}Response xmlns=\"{XML_NAMESPACE}\">\n\
             <{action}Result>{result}</{action}Result>\n\
             <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata>\n\
             </{action}Response>\n",
            escape(request_id)
        )
    }
}

/// The XML body of an STS error answer.
pub(super) fn render_error(status: u16, code: &str, message: &str, request_id: &str) -> String {
    // STS marks its own failures "Receiver" and the caller's "Sender".
    let kind = if status >= 500 { "Receiver" } else { "Sender" };
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

/// A body that is not an STS document at all: the HTML page a misbehaving
/// proxy answers with. (A truncated STS document would not do: the SDK's
/// lenient XML reader turns one into credentials with empty fields.)
pub(super) fn render_malformed(action: &str) -> String {
    format!(
        "<html><head><title>Bad Gateway</title></head>\n\
         <body><h1>Bad Gateway</h1><p>No answer for {}.</p></body></html>\n",
        escape(action)
    )
}

fn push_credentials(out: &mut String, credentials: &IssuedCredentials) {
    out.push_str("<Credentials>");
    push_element(out, "AccessKeyId", &credentials.access_key_id);
    push_element(out, "SecretAccessKey", &credentials.secret_access_key);
    push_element(out, "SessionToken", &credentials.session_token);
    push_element(out, "Expiration", &iso8601(credentials.expiration));
    out.push_str("</Credentials>");
}

fn push_element(out: &mut String, name: &str, text: &str) {
    // Writing to a String cannot fail.
    let _ = write!(out, "<{name}>{}</{name}>", escape(text));
}

/// Escapes text for an XML element or attribute.
pub(super) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// `2026-12-04T16:40:37Z`: the timestamp form STS uses in bodies.
pub(super) fn iso8601(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// `20261204T164037Z`: SigV4's `X-Amz-Date` form.
pub(super) fn amz_date(time: SystemTime) -> String {
    iso8601(time).replace(['-', ':'], "")
}

/// Reads an `X-Amz-Date` value (`20261204T164037Z`).
pub(super) fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    let well_formed = bytes.len() == 16
        && bytes[8] == b'T'
        && bytes[15] == b'Z'
        && bytes[..8]
            .iter()
            .chain(&bytes[9..15])
            .all(u8::is_ascii_digit);
    if !well_formed {
        return None;
    }
    let extended = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &text[0..4],
        &text[4..6],
        &text[6..8],
        &text[9..11],
        &text[11..13],
        &text[13..15]
    );
    humantime::parse_rfc3339(&extended).ok()
}

/// The `Credential=` scope of a SigV4 `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct CredentialScope {
    pub(super) access_key_id: String,
    pub(super) region: String,
    pub(super) service: String,
}

/// Reads `AWS4-HMAC-SHA256 Credential=AKID/date/region/service/aws4_request,
/// SignedHeaders=…, Signature=…`; `None` if any part is missing.
pub(super) fn parse_authorization(header: &str) -> Option<CredentialScope> {
    let fields = header.strip_prefix(SIGV4_ALGORITHM)?.strip_prefix(' ')?;
    let field = |name: &str| {
        fields
            .split(',')
            .map(str::trim)
            .find_map(|field| field.strip_prefix(name)?.strip_prefix('='))
            .filter(|value| !value.is_empty())
    };
    field("SignedHeaders")?;
    field("Signature")?;

    let scope: Vec<&str> = field("Credential")?.split('/').collect();
    match scope.as_slice() {
        [access_key_id, date, region, service, "aws4_request"]
            if !access_key_id.is_empty() && date.len() == 8 =>
        {
            Some(CredentialScope {
                access_key_id: (*access_key_id).to_owned(),
                region: (*region).to_owned(),
                service: (*service).to_owned(),
            })
        }
        _ => None,
    }
}

/// A request id in the UUID form STS uses.
pub(super) fn request_id() -> String {
    let hex = random_string(b"0123456789abcdef", 32);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// `len` characters drawn uniformly from `alphabet` (ASCII) by a CSPRNG.
pub(super) fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn list_members_are_read_in_order_up_to_the_first_gap() {
        let params = Params::parse(
            b"Tags.member.2.Key=b&Tags.member.1.Key=a&Tags.member.4.Key=d&Action=AssumeRole",
        );

        assert_eq!(params.members("Tags", "Key"), ["a", "b"]);
        assert_eq!(params.get("Action"), Some("AssumeRole"));
    }

    #[test]
    fn form_values_are_percent_decoded() {
        let params = Params::parse(b"RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2FR&X=a+b");

        assert_eq!(
            params.get("RoleArn"),
            Some("arn:aws:iam::123456789012:role/R")
        );
        assert_eq!(params.get("X"), Some("a b"));
    }

    #[test]
    fn text_is_escaped_for_xml() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;"
        );
    }

    #[test]
    fn timestamps_use_utc_with_a_z_suffix() {
        let time = UNIX_EPOCH + Duration::from_secs(1_796_402_437);

        assert_eq!(iso8601(time), "2026-12-04T16:40:37Z");
        assert_eq!(amz_date(time), "20261204T164037Z");
        assert_eq!(parse_amz_date("20261204T164037Z"), Some(time));
        assert_eq!(parse_amz_date("2026-12-04T16:40:37Z"), None);
    }

    #[test]
    fn the_credential_scope_is_read_from_a_sigv4_header() {
        let header = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261204/us-east-1/sts/aws4_request, \
                      SignedHeaders=content-type;host;x-amz-date, Signature=abc123";

        let scope = parse_authorization(header).expect("a well-formed header");
        assert_eq!(scope.access_key_id, "AKIDEXAMPLE");
        assert_eq!(scope.region, "us-east-1");
        assert_eq!(scope.service, "sts");
    }

    #[test]
    fn an_incomplete_authorization_header_is_refused() {
        let unsigned = "AWS4-HMAC-SHA256 Credential=AKID/20261204/us-east-1/sts/aws4_request";
        let short_scope =
            "AWS4-HMAC-SHA256 Credential=AKID/us-east-1/sts, SignedHeaders=host, Signature=a";
        let other_scheme = "Bearer AKID";

        assert_eq!(parse_authorization(unsigned), None);
        assert_eq!(parse_authorization(short_scope), None);
        assert_eq!(parse_authorization(other_scheme), None);
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let id = request_id();

        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }
}
