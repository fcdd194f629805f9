//! Secrets: the TOTP seed and the IAM user's long-term key.
//!
//! Secret files are opened without following a symbolic link and must be
//! regular files owned by the daemon's user or root with no group or other
//! permission bits, the rule OpenSSH applies to private keys. A file that
//! breaks the rule stops the daemon with the path, what was found and the
//! command that fixes it.
//!
//! Every value read here lives in a [`secrecy`] wrapper (redacted `Debug`,
//! zeroized on drop), and every error describes the input without echoing
//! it. The credentials file is parsed here rather than by the SDK's profile
//! parser so that no parse error can ever quote a line of it.
//!
//! [`harden_process`] turns off core dumps and ptrace-style access, and
//! [`lock_in_memory`] keeps a secret out of swap where the limit allows.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};
use secrecy::{ExposeSecret, SecretBox, SecretSlice, SecretString};
use zeroize::Zeroizing;

use crate::config::SecretSource;

/// Neither file is ever more than a few hundred bytes; a bigger one is a mistake.
const MAX_SECRET_FILE: u64 = 64 * 1024;
/// Shorter seeds are guessable; AWS issues 40-byte seeds.
const MIN_SEED_BYTES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{key} {path}: cannot open: {source}{hint}", hint = open_hint(.source))]
    Open {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{key} = {name:?}: CREDENTIALS_DIRECTORY is not set; run under systemd with LoadCredential= or LoadCredentialEncrypted=, or use the *_file key instead"
    )]
    NoCredentialsDirectory { key: &'static str, name: String },
    #[error("{key} {path} is a symbolic link; point {key} at the file itself")]
    Symlink { key: &'static str, path: PathBuf },
    #[error("{key} {path} is not a regular file")]
    NotRegular { key: &'static str, path: PathBuf },
    #[error(
        "{key} {path} is accessible to group or others (mode {mode:04o}); run: chmod 600 {path}"
    )]
    Permissions {
        key: &'static str,
        path: PathBuf,
        mode: u32,
    },
    #[error(
        "{key} {path} is owned by uid {owner}, not by the daemon's user (uid {uid}) or root; run: chown {uid} {path}"
    )]
    Owner {
        key: &'static str,
        path: PathBuf,
        owner: u32,
        uid: u32,
    },
    #[error("{key} {path} is larger than {MAX_SECRET_FILE} bytes; it is not a secret file")]
    TooLarge { key: &'static str, path: PathBuf },
    #[error("{key} {path}: {problem}")]
    Content {
        key: &'static str,
        path: PathBuf,
        problem: String,
    },
}

fn open_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::NotFound => "; create it, or fix the path",
        std::io::ErrorKind::PermissionDenied => "; the daemon's user must be able to read it",
        _ => "",
    }
}

/// The raw TOTP seed (already base32-decoded).
pub type Seed = SecretSlice<u8>;

/// The IAM user's long-term access key.
pub struct LongTermKey {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    /// Present when the file holds temporary credentials instead.
    pub session_token: Option<SecretString>,
}

impl std::fmt::Debug for LongTermKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LongTermKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[redacted]")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// Reads a secret file under the ownership and permission rule.
pub fn read_secret_file(source: &SecretSource) -> Result<SecretBox<Vec<u8>>, SecretError> {
    let key = source.key();
    let path = source.path();
    if let SecretSource::Credential { name, .. } = source
        && path.as_os_str().is_empty()
    {
        return Err(SecretError::NoCredentialsDirectory {
            key,
            name: name.clone(),
        });
    }
    let fail = |make: fn(&'static str, PathBuf) -> SecretError| make(key, path.to_owned());

    let fd: OwnedFd = match rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) => {
            return Err(fail(|key, path| SecretError::Symlink { key, path }));
        }
        Err(errno) => {
            let source = std::io::Error::from(errno);
            return Err(SecretError::Open {
                key,
                path: path.to_owned(),
                source,
            });
        }
    };
    let stat = rustix::fs::fstat(&fd).map_err(|errno| SecretError::Open {
        key,
        path: path.to_owned(),
        source: errno.into(),
    })?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(fail(|key, path| SecretError::NotRegular { key, path }));
    }
    let uid = rustix::process::geteuid().as_raw();
    if stat.st_uid != uid && stat.st_uid != 0 {
        return Err(SecretError::Owner {
            key,
            path: path.to_owned(),
            owner: stat.st_uid,
            uid,
        });
    }
    let mode = stat.st_mode & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretError::Permissions {
            key,
            path: path.to_owned(),
            mode,
        });
    }
    if stat.st_size as u64 > MAX_SECRET_FILE {
        return Err(fail(|key, path| SecretError::TooLarge { key, path }));
    }

    let mut contents = Zeroizing::new(Vec::with_capacity(stat.st_size as usize));
    File::from(fd)
        .take(MAX_SECRET_FILE)
        .read_to_end(&mut contents)
        .map_err(|source| SecretError::Open {
            key,
            path: path.to_owned(),
            source,
        })?;
    Ok(SecretBox::new(Box::new(std::mem::take(&mut *contents))))
}

/// Loads and decodes the TOTP seed named by the configuration.
pub fn load_seed(source: &SecretSource) -> Result<Seed, SecretError> {
    let contents = read_secret_file(source)?;
    let content_error = |problem: SeedError| SecretError::Content {
        key: source.key(),
        path: source.path().to_owned(),
        problem: problem.to_string(),
    };
    let text = std::str::from_utf8(contents.expose_secret())
        .map_err(|_| content_error(SeedError::NotText))?;
    parse_seed(text).map_err(content_error)
}

/// Why a seed was refused. No variant carries any part of the input.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SeedError {
    #[error("the seed is not text; expected base32 (as AWS issues it) or an otpauth://totp/ URI")]
    NotText,
    #[error("the seed is empty")]
    Empty,
    #[error(
        "the seed is not base32 text (only letters A–Z and digits 2–7, optionally '=' padded); expected the Base32StringSeed AWS issued, or an otpauth://totp/ URI"
    )]
    NotBase32,
    #[error("the seed decodes to {0} bytes; a TOTP seed has at least {MIN_SEED_BYTES}")]
    TooShort(usize),
    #[error("the otpauth URI is malformed: {0}")]
    BadUri(&'static str),
    #[error(
        "the otpauth URI asks for {0}; AWS virtual MFA devices use SHA1, 6 digits and a 30 s period"
    )]
    UnsupportedUri(&'static str),
}

/// Decodes a seed given as AWS's base32 text (any case, with or without
/// padding, spaces and line breaks) or as an `otpauth://totp/` URI.
pub fn parse_seed(text: &str) -> Result<Seed, SeedError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(SeedError::Empty);
    }
    if trimmed.len() >= 10 && trimmed[..10].eq_ignore_ascii_case("otpauth://") {
        return parse_otpauth(trimmed);
    }
    decode_base32(trimmed)
}

fn decode_base32(text: &str) -> Result<Seed, SeedError> {
    let cleaned: Zeroizing<Vec<u8>> = Zeroizing::new(
        text.bytes()
            .filter(|b| !b.is_ascii_whitespace() && *b != b'=' && *b != b'-')
            .map(|b| b.to_ascii_uppercase())
            .collect(),
    );
    let decoded = data_encoding::BASE32_NOPAD
        .decode(&cleaned)
        .map(Zeroizing::new)
        .map_err(|_| SeedError::NotBase32)?;
    if decoded.len() < MIN_SEED_BYTES {
        return Err(SeedError::TooShort(decoded.len()));
    }
    Ok(SecretSlice::from(decoded.to_vec()))
}

fn parse_otpauth(text: &str) -> Result<Seed, SeedError> {
    let url = url::Url::parse(text).map_err(|_| SeedError::BadUri("not a URL"))?;
    if !url
        .host_str()
        .is_some_and(|host| host.eq_ignore_ascii_case("totp"))
    {
        return Err(SeedError::BadUri("the type must be totp"));
    }
    let mut secret = None;
    for (name, value) in url.query_pairs() {
        match name.to_ascii_lowercase().as_str() {
            "secret" => secret = Some(Zeroizing::new(value.into_owned())),
            "algorithm" if !value.eq_ignore_ascii_case("sha1") => {
                return Err(SeedError::UnsupportedUri("another algorithm than SHA1"));
            }
            "digits" if value != "6" => {
                return Err(SeedError::UnsupportedUri("another number of digits than 6"));
            }
            "period" if value != "30" => {
                return Err(SeedError::UnsupportedUri("another period than 30 s"));
            }
            _ => {}
        }
    }
    let secret = secret.ok_or(SeedError::BadUri("it has no secret= parameter"))?;
    decode_base32(&secret)
}

/// Loads the long-term key of `profile` from the INI credentials file.
pub fn load_long_term_key(
    source: &SecretSource,
    profile: &str,
) -> Result<LongTermKey, SecretError> {
    let contents = read_secret_file(source)?;
    let content_error = |problem: String| SecretError::Content {
        key: source.key(),
        path: source.path().to_owned(),
        problem,
    };
    let text = std::str::from_utf8(contents.expose_secret())
        .map_err(|_| content_error("is not UTF-8 text".to_owned()))?;
    parse_credentials(text, profile).map_err(content_error)
}

/// Reads `[profile]` with `aws_access_key_id` and `aws_secret_access_key`
/// (and `aws_session_token` if present) from credentials-file text.
fn parse_credentials(text: &str, profile: &str) -> Result<LongTermKey, String> {
    let mut in_profile = false;
    let mut found_profile = false;
    let mut access_key_id = None;
    let mut secret_access_key = None;
    let mut session_token = None;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            let section = section.trim();
            in_profile = section == profile || section == format!("profile {profile}");
            found_profile |= in_profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!(
                "line {} of profile [{profile}] is not `key = value`",
                number + 1
            ));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => access_key_id = Some(value.to_owned()),
            "aws_secret_access_key" => {
                secret_access_key = Some(SecretString::from(value.to_owned()))
            }
            "aws_session_token" => session_token = Some(SecretString::from(value.to_owned())),
            _ => {}
        }
    }
    if !found_profile {
        return Err(format!(
            "has no [{profile}] profile; add it, or set aws.profile to the profile that holds the key"
        ));
    }
    let access_key_id = access_key_id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| format!("profile [{profile}] has no aws_access_key_id"))?;
    let valid_id =
        access_key_id.len() >= 16 && access_key_id.chars().all(|c| c.is_ascii_alphanumeric());
    if !valid_id {
        return Err(format!(
            "profile [{profile}] has an aws_access_key_id that is not an access key id (like AKIA…)"
        ));
    }
    let secret_access_key = secret_access_key
        .filter(|secret| !secret.expose_secret().is_empty())
        .ok_or_else(|| format!("profile [{profile}] has no aws_secret_access_key"))?;
    Ok(LongTermKey {
        access_key_id,
        secret_access_key,
        session_token,
    })
}

/// Makes the process undumpable: no core files, no ptrace attach by
/// same-uid processes, no reading of `/proc/PID/mem`.
pub fn harden_process() -> std::io::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
    let zero = rustix::process::Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    rustix::process::setrlimit(rustix::process::Resource::Core, zero)?;
    Ok(())
}

/// Keeps a secret's pages out of swap. Fails when `RLIMIT_MEMLOCK` forbids it;
/// callers warn and carry on, since the secret is still usable.
pub fn lock_in_memory(bytes: &[u8]) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    // SAFETY: the slice is live and valid for its length; mlock only pins pages.
    unsafe { rustix::mm::mlock(bytes.as_ptr() as *mut _, bytes.len()) }?;
    Ok(())
}

/// Where a secret file is: for messages that must not say more.
pub fn describe(source: &SecretSource) -> String {
    match source {
        SecretSource::File { path, .. } => path.display().to_string(),
        SecretSource::Credential { name, .. } => format!("systemd credential {name}"),
    }
}

/// The path of a secret file, for tests and messages.
pub fn path_of(source: &SecretSource) -> &Path {
    source.path()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A seed whose bytes spell a marker, to find it if it ever leaks.
    const SEED_TEXT: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

    fn file_source(path: &Path) -> SecretSource {
        SecretSource::File {
            key: "mfa.seed_file",
            path: path.to_owned(),
        }
    }

    fn write(dir: &Path, name: &str, contents: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn base32_is_accepted_in_every_form_aws_and_people_write_it() {
        let expected = parse_seed(SEED_TEXT).unwrap();
        for form in [
            "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\n",
            "jbswy3dpehpk3pxpjbswy3dpehpk3pxp",
            "JBSW Y3DP EHPK 3PXP JBSW Y3DP EHPK 3PXP",
            "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP====",
            "otpauth://totp/AWS:svc?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=AWS",
            "otpauth://totp/x?secret=jbswy3dpehpk3pxpjbswy3dpehpk3pxp&algorithm=SHA1&digits=6&period=30",
        ] {
            let seed = parse_seed(form).unwrap_or_else(|e| panic!("{form:?}: {e}"));
            assert_eq!(seed.expose_secret(), expected.expose_secret(), "{form:?}");
        }
    }

    #[test]
    fn bad_seeds_are_refused_without_echoing_them() {
        for (input, expected) in [
            ("", SeedError::Empty),
            ("NOT-BASE32-!!!MARKERVALUE", SeedError::NotBase32),
            ("JBSWY3DP", SeedError::TooShort(5)),
            (
                "otpauth://hotp/x?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
                SeedError::BadUri("the type must be totp"),
            ),
            (
                "otpauth://totp/x?issuer=MARKERVALUE",
                SeedError::BadUri("it has no secret= parameter"),
            ),
            (
                "otpauth://totp/x?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&digits=8",
                SeedError::UnsupportedUri("another number of digits than 6"),
            ),
        ] {
            let error = parse_seed(input).unwrap_err();
            assert_eq!(error, expected, "{input:?}");
            assert!(!error.to_string().contains("MARKERVALUE"));
        }
    }

    #[test]
    fn a_private_seed_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "seed", SEED_TEXT, 0o600);
        let seed = load_seed(&file_source(&path)).unwrap();
        assert_eq!(seed.expose_secret().len(), 20);
    }

    #[test]
    fn a_seed_file_readable_by_others_is_refused_with_the_chmod_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "seed", SEED_TEXT, 0o644);
        let message = load_seed(&file_source(&path)).unwrap_err().to_string();
        assert!(message.contains("mode 0644"), "{message}");
        assert!(
            message.contains(&format!("chmod 600 {}", path.display())),
            "{message}"
        );
        assert!(!message.contains(SEED_TEXT));
    }

    #[test]
    fn a_symlinked_seed_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = write(dir.path(), "seed", SEED_TEXT, 0o600);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let message = load_seed(&file_source(&link)).unwrap_err().to_string();
        assert!(message.contains("symbolic link"), "{message}");
    }

    #[test]
    fn a_seed_file_owned_by_another_user_is_refused_with_the_chown_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "seed", SEED_TEXT, 0o600);
        let other = if rustix::process::geteuid().is_root() {
            4242
        } else {
            0
        };
        if rustix::fs::chown(&path, Some(rustix::fs::Uid::from_raw(other)), None).is_err() {
            // Only root can give a file away; as another user, a root-owned file
            // is allowed by the rule, so there is nothing to refuse here.
            return;
        }
        let message = load_seed(&file_source(&path)).unwrap_err().to_string();
        assert!(message.contains("owned by uid 4242"), "{message}");
        assert!(message.contains("chown"), "{message}");
    }

    #[test]
    fn a_systemd_credential_outside_systemd_says_how_to_run_it() {
        let source = SecretSource::Credential {
            key: "mfa.seed_credential",
            name: "totp-seed".into(),
            path: PathBuf::new(),
        };
        let message = load_seed(&source).unwrap_err().to_string();
        assert!(
            message.contains("CREDENTIALS_DIRECTORY is not set"),
            "{message}"
        );
        assert!(message.contains("LoadCredential"), "{message}");
    }

    #[test]
    fn a_missing_file_says_to_create_it() {
        let message = load_seed(&file_source(Path::new("/nonexistent/seed")))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("mfa.seed_file /nonexistent/seed"),
            "{message}"
        );
        assert!(message.contains("create it"), "{message}");
    }

    #[test]
    fn the_credentials_file_yields_the_selected_profile() {
        let text = "[default]\naws_access_key_id = AKIADEFAULT0000000\naws_secret_access_key = s1\n\n[svc]\naws_access_key_id=AKIASERVICE0000000\naws_secret_access_key=MARKERSECRET\n";
        let key = parse_credentials(text, "svc").unwrap();
        assert_eq!(key.access_key_id, "AKIASERVICE0000000");
        assert_eq!(key.secret_access_key.expose_secret(), "MARKERSECRET");
        assert!(!format!("{key:?}").contains("MARKERSECRET"));
    }

    #[test]
    fn debug_output_of_a_key_with_a_session_token_hides_both_secrets() {
        let text = "[svc]\naws_access_key_id = ASIASERVICE0000000\naws_secret_access_key = MARKERSECRET\naws_session_token = MARKERTOKEN\n";
        let key = parse_credentials(text, "svc").unwrap();
        let debug = format!("{key:?}");
        assert!(!debug.contains("MARKER"), "{debug}");
        assert!(debug.contains("session_token: Some"), "{debug}");
    }

    #[test]
    fn debug_output_of_a_seed_is_redacted() {
        let seed = parse_seed(SEED_TEXT).unwrap();
        let debug = format!("{seed:?}");
        assert!(!debug.contains("72, 101"), "raw bytes: {debug}");
        assert!(debug.contains("REDACTED"), "{debug}");
    }

    #[test]
    fn credentials_file_errors_never_quote_the_file() {
        let text = "[svc]\naws_access_key_id = AKIASERVICE0000000\nMARKERSECRET\n";
        let error = parse_credentials(text, "svc").unwrap_err();
        assert!(!error.contains("MARKERSECRET"), "{error}");
        assert!(error.contains("line 3"), "{error}");
        assert!(
            parse_credentials(text, "other")
                .unwrap_err()
                .contains("no [other] profile")
        );
        let no_secret = "[svc]\naws_access_key_id = AKIASERVICE0000000\n";
        assert!(
            parse_credentials(no_secret, "svc")
                .unwrap_err()
                .contains("aws_secret_access_key")
        );
    }
}
