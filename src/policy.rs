//! The IAM policies a host running `assumed` needs, as JSON documents.
//!
//! [`PolicySet::new`] builds, for one account, user and role:
//!
//! - `user-mfa`: the user's identity policy for its own virtual MFA device,
//!   scoped with `${aws:username}` so one document serves every host user:
//!   exactly the IAM actions `assumed enroll`, `resync` and `disable` call.
//!   Devices must be named after the user (`mfa/<user>*`). Deactivating a
//!   device needs a session that proved MFA, so a stolen access key alone
//!   cannot take the host's device away; deleting one does not, since IAM
//!   refuses to delete a device that is still enabled, and enroll must be
//!   able to delete the device it just created when enabling it fails.
//! - `role-trust`: the role's trust policy, trusting the user only with MFA
//!   (`aws:MultiFactorAuthPresent`), and optionally only while the MFA proof
//!   is younger than a maximum age (`aws:MultiFactorAuthAge`).
//! - `user-assume-role`: the user's permission to call `sts:AssumeRole` on
//!   the role, with MFA only.
//!
//! The same statements are in `deploy/cloudformation.yaml`; keep them in step.

use serde::Serialize;

/// The policy language version every document declares.
const POLICY_VERSION: &str = "2012-10-17";
/// IAM's longest user and role names.
const MAX_NAME_LEN: usize = 64;

/// A shorter MFA age limit would refuse a code that STS accepted a moment
/// before, on ordinary clock differences.
const MIN_MFA_AGE_SECS: u64 = 60;
/// The longest MFA session STS issues (GetSessionToken, 36 h): no proof is older.
const MAX_MFA_AGE_SECS: u64 = 36 * 3600;

/// The names `--document` accepts, in the order they are printed.
pub const DOCUMENT_NAMES: [&str; 3] = ["user-mfa", "role-trust", "user-assume-role"];

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("--account {0:?} is not an AWS account id; give its 12 digits")]
    Account(String),
    #[error("{flag} {value:?} is not an IAM name (1–64 of letters, digits and _+=,.@-)")]
    Name { flag: &'static str, value: String },
    #[error("--partition {0:?} is not an AWS partition like aws, aws-cn or aws-us-gov")]
    Partition(String),
    #[error("--document {0:?} is not one of: user-mfa, role-trust, user-assume-role")]
    UnknownDocument(String),
    #[error(
        "--max-mfa-age {0} is out of range; give seconds from {MIN_MFA_AGE_SECS} to {MAX_MFA_AGE_SECS}, and at least mfa.session when role sessions are chained"
    )]
    MfaAge(u64),
}

/// What the documents are about.
#[derive(Clone, Debug)]
pub struct PolicyRequest {
    pub partition: String,
    pub account_id: String,
    pub user_name: String,
    pub role_name: String,
    /// If set, the trust policy also demands an MFA proof at most this many seconds old.
    pub max_mfa_age_secs: Option<u64>,
}

/// The three documents, printed as one JSON object keyed by document name.
#[derive(Clone, Debug, Serialize)]
pub struct PolicySet {
    #[serde(rename = "user-mfa")]
    pub user_mfa: PolicyDocument,
    #[serde(rename = "role-trust")]
    pub role_trust: PolicyDocument,
    #[serde(rename = "user-assume-role")]
    pub user_assume_role: PolicyDocument,
}

/// An IAM policy document.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyDocument {
    version: &'static str,
    statement: Vec<Statement>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Statement {
    sid: &'static str,
    effect: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    principal: Option<Principal>,
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    condition: Option<Condition>,
}

#[derive(Clone, Debug, Serialize)]
struct Principal {
    #[serde(rename = "AWS")]
    aws: String,
}

/// The MFA conditions; IAM compares condition values as strings.
#[derive(Clone, Debug, Serialize)]
struct Condition {
    #[serde(rename = "Bool")]
    bool: MfaPresent,
    #[serde(rename = "NumericLessThan", skip_serializing_if = "Option::is_none")]
    numeric_less_than: Option<MfaAge>,
}

#[derive(Clone, Debug, Serialize)]
struct MfaPresent {
    #[serde(rename = "aws:MultiFactorAuthPresent")]
    present: &'static str,
}

#[derive(Clone, Debug, Serialize)]
struct MfaAge {
    #[serde(rename = "aws:MultiFactorAuthAge")]
    age: String,
}

impl Condition {
    fn mfa(max_age_secs: Option<u64>) -> Self {
        Condition {
            bool: MfaPresent { present: "true" },
            numeric_less_than: max_age_secs.map(|secs| MfaAge {
                age: secs.to_string(),
            }),
        }
    }
}

impl PolicySet {
    /// Checks the request and builds the documents.
    pub fn new(request: &PolicyRequest) -> Result<PolicySet, PolicyError> {
        check(request)?;
        let arn = |resource: &str| {
            format!(
                "arn:{}:iam::{}:{resource}",
                request.partition, request.account_id
            )
        };
        let own_user = arn("user/${aws:username}");
        let own_devices = arn("mfa/${aws:username}*");
        let role_arn = arn(&format!("role/{}", request.role_name));

        let allow = |sid, action, resource: &String, condition| Statement {
            sid,
            effect: "Allow",
            principal: None,
            action,
            resource: Some(resource.clone()),
            condition,
        };
        let user_mfa = document(vec![
            allow(
                "CreateOwnVirtualMfaDevice",
                "iam:CreateVirtualMFADevice",
                &own_devices,
                None,
            ),
            allow("EnableOwnMfaDevice", "iam:EnableMFADevice", &own_user, None),
            allow("ResyncOwnMfaDevice", "iam:ResyncMFADevice", &own_user, None),
            allow(
                "DeleteOwnVirtualMfaDevice",
                "iam:DeleteVirtualMFADevice",
                &own_devices,
                None,
            ),
            allow(
                "DeactivateOwnMfaDeviceWithMfa",
                "iam:DeactivateMFADevice",
                &own_user,
                Some(Condition::mfa(None)),
            ),
        ]);
        let role_trust = document(vec![Statement {
            sid: "HostUserWithMfa",
            effect: "Allow",
            principal: Some(Principal {
                aws: arn(&format!("user/{}", request.user_name)),
            }),
            action: "sts:AssumeRole",
            resource: None,
            condition: Some(Condition::mfa(request.max_mfa_age_secs)),
        }]);
        let user_assume_role = document(vec![allow(
            "AssumeHostRoleWithMfa",
            "sts:AssumeRole",
            &role_arn,
            Some(Condition::mfa(None)),
        )]);
        Ok(PolicySet {
            user_mfa,
            role_trust,
            user_assume_role,
        })
    }

    /// The document called `name` (one of [`DOCUMENT_NAMES`]).
    pub fn document(&self, name: &str) -> Result<&PolicyDocument, PolicyError> {
        match name {
            "user-mfa" => Ok(&self.user_mfa),
            "role-trust" => Ok(&self.role_trust),
            "user-assume-role" => Ok(&self.user_assume_role),
            other => Err(PolicyError::UnknownDocument(other.to_owned())),
        }
    }
}

fn document(statement: Vec<Statement>) -> PolicyDocument {
    PolicyDocument {
        version: POLICY_VERSION,
        statement,
    }
}

fn check(request: &PolicyRequest) -> Result<(), PolicyError> {
    let partition_ok = matches!(request.partition.as_str(), "aws" | "aws-cn" | "aws-us-gov")
        || request.partition.starts_with("aws-iso");
    if !partition_ok {
        return Err(PolicyError::Partition(request.partition.clone()));
    }
    let account = &request.account_id;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PolicyError::Account(account.clone()));
    }
    if let Some(age) = request
        .max_mfa_age_secs
        .filter(|age| !(MIN_MFA_AGE_SECS..=MAX_MFA_AGE_SECS).contains(age))
    {
        return Err(PolicyError::MfaAge(age));
    }
    for (flag, value) in [
        ("--user", &request.user_name),
        ("--role", &request.role_name),
    ] {
        let valid = |c: char| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c);
        if value.is_empty() || value.len() > MAX_NAME_LEN || !value.chars().all(valid) {
            return Err(PolicyError::Name {
                flag,
                value: value.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(max_mfa_age_secs: Option<u64>) -> PolicyRequest {
        PolicyRequest {
            partition: "aws".into(),
            account_id: "123456789012".into(),
            user_name: "assumed-host-a".into(),
            role_name: "DuperRole".into(),
            max_mfa_age_secs,
        }
    }

    fn json(document: &PolicyDocument) -> serde_json::Value {
        serde_json::to_value(document).unwrap()
    }

    #[test]
    fn the_trust_policy_trusts_the_user_only_with_mfa() {
        let set = PolicySet::new(&request(None)).unwrap();
        let statement = &json(&set.role_trust)["Statement"][0];

        assert_eq!(
            statement["Principal"]["AWS"],
            "arn:aws:iam::123456789012:user/assumed-host-a"
        );
        assert_eq!(statement["Action"], "sts:AssumeRole");
        assert_eq!(
            statement["Condition"]["Bool"]["aws:MultiFactorAuthPresent"],
            "true"
        );
        assert!(statement["Condition"].get("NumericLessThan").is_none());
    }

    #[test]
    fn a_maximum_mfa_age_adds_an_age_condition() {
        let set = PolicySet::new(&request(Some(3600))).unwrap();
        let condition = &json(&set.role_trust)["Statement"][0]["Condition"];

        assert_eq!(
            condition["NumericLessThan"]["aws:MultiFactorAuthAge"],
            "3600"
        );
    }

    #[test]
    fn the_user_manages_only_devices_named_after_itself() {
        let set = PolicySet::new(&request(None)).unwrap();
        let statements = json(&set.user_mfa)["Statement"].clone();
        let statements = statements.as_array().unwrap();

        let actions: Vec<&str> = statements
            .iter()
            .map(|s| s["Action"].as_str().unwrap())
            .collect();
        assert_eq!(
            actions,
            [
                "iam:CreateVirtualMFADevice",
                "iam:EnableMFADevice",
                "iam:ResyncMFADevice",
                "iam:DeleteVirtualMFADevice",
                "iam:DeactivateMFADevice"
            ]
        );
        for statement in statements {
            let resource = statement["Resource"].as_str().unwrap();
            assert!(
                resource.ends_with(":mfa/${aws:username}*")
                    || resource.ends_with(":user/${aws:username}"),
                "{resource}"
            );
        }
    }

    #[test]
    fn the_cloudformation_stack_grants_the_same_iam_actions() {
        let template = include_str!("../deploy/cloudformation.yaml");
        let in_template: std::collections::BTreeSet<String> = template
            .lines()
            .filter_map(|line| line.trim().strip_prefix("- iam:"))
            .map(|action| format!("iam:{action}"))
            .collect();

        let set = PolicySet::new(&request(None)).unwrap();
        let printed: std::collections::BTreeSet<String> = set
            .user_mfa
            .statement
            .iter()
            .map(|statement| statement.action.to_owned())
            .collect();
        assert_eq!(in_template, printed);
    }

    #[test]
    fn malformed_names_are_refused_by_flag() {
        let mut bad = request(None);
        bad.account_id = "12345".into();
        assert_eq!(
            PolicySet::new(&bad).unwrap_err(),
            PolicyError::Account("12345".into())
        );

        let mut bad = request(None);
        bad.role_name = "role/with/slashes".into();
        assert!(matches!(
            PolicySet::new(&bad).unwrap_err(),
            PolicyError::Name { flag: "--role", .. }
        ));
    }

    #[test]
    fn an_mfa_age_that_would_refuse_every_session_is_refused() {
        for age in [0, 59, MAX_MFA_AGE_SECS + 1] {
            let message = PolicySet::new(&request(Some(age))).unwrap_err().to_string();
            assert!(message.starts_with("--max-mfa-age"), "{message}");
        }
        assert!(PolicySet::new(&request(Some(MIN_MFA_AGE_SECS))).is_ok());
    }

    #[test]
    fn every_document_name_selects_a_document() {
        let set = PolicySet::new(&request(None)).unwrap();
        for name in DOCUMENT_NAMES {
            assert!(set.document(name).is_ok(), "{name}");
        }
        assert!(set.document("everything").is_err());
    }
}
