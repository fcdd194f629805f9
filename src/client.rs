//! Talking to a running daemon over its Unix socket: the
//! `credential-process` and `status` commands.
//!
//! `credential-process` turns the ECS answer into the JSON that an AWS
//! config profile's `credential_process` expects (`Version: 1`), so tools
//! that cannot use `AWS_CONTAINER_CREDENTIALS_FULL_URI` still get the
//! daemon's credentials. `status` prints each role's health and exits 0
//! when every role is usable, 1 when some are not, and 2 when the daemon
//! cannot be reached.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;

/// Where the packaged daemon listens.
pub const DEFAULT_SOCKET: &str = "/run/assumed/credentials.sock";
/// The daemon answers from memory; waiting longer means something is wrong.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {source}{hint}", hint = connect_hint(.source))]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("request to {path} failed: {message}")]
    Http { path: PathBuf, message: String },
    #[error("no answer from {path} within {} s", REQUEST_TIMEOUT.as_secs())]
    Timeout { path: PathBuf },
}

fn connect_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            " (is `assumed serve` running? systemctl status assumed)"
        }
        std::io::ErrorKind::PermissionDenied => {
            " (join the socket's group, e.g. usermod -aG assumed-clients USER, and log in again)"
        }
        _ => "",
    }
}

/// `GET path` over the Unix socket at `socket`: the status and body.
pub async fn get(socket: &Path, path: &str) -> Result<(StatusCode, Bytes), ClientError> {
    tokio::time::timeout(REQUEST_TIMEOUT, get_unbounded(socket, path))
        .await
        .map_err(|_| ClientError::Timeout {
            path: socket.to_owned(),
        })?
}

async fn get_unbounded(socket: &Path, path: &str) -> Result<(StatusCode, Bytes), ClientError> {
    let http = |error: hyper::Error| ClientError::Http {
        path: socket.to_owned(),
        message: error.to_string(),
    };
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            path: socket.to_owned(),
            source,
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .map_err(|error| ClientError::Http {
            path: socket.to_owned(),
            message: error.to_string(),
        })?;
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(http)?
        .to_bytes();
    Ok((status, body))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EcsBody {
    access_key_id: String,
    secret_access_key: String,
    token: String,
    expiration: String,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct ProcessBody<'a> {
    version: u8,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    session_token: &'a str,
    expiration: &'a str,
}

/// Fetches a role's credential and renders `credential_process` JSON.
pub async fn credential_process(socket: &Path, role: Option<&str>) -> Result<String, String> {
    let path = match role {
        Some(role) if crate::config::RoleName::is_valid(role) => format!("/v1/credentials/{role}"),
        Some(role) => {
            return Err(format!(
                "--role {role:?} is not a role name: up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            ));
        }
        None => "/v1/credentials".to_owned(),
    };
    let (status, body) = get(socket, &path)
        .await
        .map_err(|error| error.to_string())?;
    if status != StatusCode::OK {
        return Err(format!(
            "the daemon answered {status}: {}",
            error_message(&body)
        ));
    }
    let ecs: EcsBody = serde_json::from_slice(&body)
        .map_err(|_| "the daemon's answer is not a credential".to_owned())?;
    let output = ProcessBody {
        version: 1,
        access_key_id: &ecs.access_key_id,
        secret_access_key: &ecs.secret_access_key,
        session_token: &ecs.token,
        expiration: &ecs.expiration,
    };
    serde_json::to_string(&output).map_err(|error| error.to_string())
}

fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| {
            value
                .get("message")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}

/// What `status` found, as its exit code says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Usable = 0,
    Degraded = 1,
    Unreachable = 2,
}

/// Reads `/healthz` and renders it as a table (or the JSON itself).
pub async fn status(socket: &Path, json: bool) -> (Health, String) {
    let (status, body) = match get(socket, "/healthz").await {
        Ok(answer) => answer,
        Err(error) => return (Health::Unreachable, error.to_string()),
    };
    let health = if status == StatusCode::OK {
        Health::Usable
    } else {
        Health::Degraded
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (
            Health::Unreachable,
            format!("the daemon's health answer is not JSON ({status})"),
        );
    };
    if json {
        return (health, value.to_string());
    }
    (health, render_status(&value))
}

fn render_status(value: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    let mut lines = vec![format!(
        "{:<20} {:<9} {:<10} {:<21} {}",
        "ROLE", "STATE", "EXPIRES IN", "LAST REFRESH", "LAST ERROR"
    )];
    let empty = serde_json::Map::new();
    let roles = value["roles"].as_object().unwrap_or(&empty);
    for (name, role) in roles {
        let state = if role["usable"].as_bool() == Some(true) {
            "usable"
        } else {
            "degraded"
        };
        let expires_in = role["expires_in_seconds"]
            .as_u64()
            .map(format_seconds)
            .unwrap_or_else(|| "-".into());
        let error = match &role["last_error"] {
            serde_json::Value::Null => "-".to_owned(),
            failure => format!("{} ({})", text(&failure["message"]), text(&failure["hint"])),
        };
        lines.push(format!(
            "{name:<20} {state:<9} {expires_in:<10} {:<21} {error}",
            text(&role["last_refresh"])
        ));
    }
    if let Some(offset) = value["clock_offset_seconds"].as_f64() {
        lines.push(format!("clock offset to STS: {offset:+.1} s"));
    }
    lines.join("\n")
}

fn format_seconds(seconds: u64) -> String {
    match seconds {
        0..=119 => format!("{seconds}s"),
        120..=7199 => format!("{}m", seconds / 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_role_that_is_not_a_name_is_refused_before_asking_the_daemon() {
        let nowhere = Path::new("/nonexistent/assumed.sock");
        for role in ["a b", "", "../healthz"] {
            let message = credential_process(nowhere, Some(role)).await.unwrap_err();
            assert!(message.starts_with("--role"), "{role:?}: {message}");
        }
        let message = credential_process(nowhere, Some("duper"))
            .await
            .unwrap_err();
        assert!(!message.starts_with("--role"), "a valid name is asked for");
    }
}
