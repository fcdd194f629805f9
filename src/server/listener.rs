//! Listeners: binding the Unix socket and the token file safely, and
//! serving connections with limits.
//!
//! The Unix socket's parent directory is created 0750 when missing. A
//! socket file left by a dead daemon is removed; one that a live process
//! still answers on is refused. The daemon runs with umask 077, so the
//! socket is created 0700 and only then opened to 0660 (and its group set):
//! at no moment is it looser than its final mode.
//!
//! Each connection is HTTP/1.1 with a bounded header buffer and header read
//! timeout; connections beyond `listen.max_connections` are closed at once,
//! so a flood cannot starve the process of descriptors. On shutdown the
//! listeners stop accepting and open connections get a grace period.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::Peer;

/// A request's headers must fit in this; SDK requests use well under 1 KiB.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// A client that has not sent its headers by then is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time open connections get to finish on shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// 128 random bits is the floor for a bearer token; this gives 256.
const TOKEN_BYTES: usize = 32;
const MIN_TOKEN_LENGTH: usize = 22;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "listen.unix_socket {path}: another process is answering on it; stop it, or choose another path"
    )]
    SocketInUse { path: PathBuf },
    #[error(
        "listen.unix_socket {path} exists and is not a socket; remove it, or choose another path"
    )]
    NotASocket { path: PathBuf },
    #[error("{key} {path}: {action}: {source}")]
    Io {
        key: &'static str,
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    #[error("listen.tcp {addr}: cannot listen: {source}")]
    Tcp {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the {kind} socket passed by systemd is unusable: {source}")]
    Inherited {
        kind: &'static str,
        source: std::io::Error,
    },
    #[error("{key} {path}: {problem}")]
    BadToken {
        key: &'static str,
        path: PathBuf,
        problem: String,
    },
}

/// Binds the Unix socket at `path`, mode 0660, owned by `group` if given.
pub fn bind_unix(path: &Path, group: Option<u32>) -> Result<UnixListener, ListenError> {
    let io = |action, source| ListenError::Io {
        key: "listen.unix_socket",
        path: path.to_owned(),
        action,
        source,
    };
    if let Some(parent) = path.parent().filter(|parent| !parent.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(parent)
            .map_err(|e| io("cannot create its directory", e))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ListenError::SocketInUse {
                    path: path.to_owned(),
                });
            }
            tracing::info!(path = %path.display(), "removing a stale socket");
            std::fs::remove_file(path).map_err(|e| io("cannot remove the stale socket", e))?;
        }
        Ok(_) => {
            return Err(ListenError::NotASocket {
                path: path.to_owned(),
            });
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|e| io("cannot listen", e))?;
    // In a setgid directory (as packaged) the group is already right, and
    // the unit's syscall filter forbids chown.
    let metadata = std::fs::metadata(path).map_err(|e| io("cannot inspect", e))?;
    let current_gid = std::os::unix::fs::MetadataExt::gid(&metadata);
    if let Some(gid) = group.filter(|gid| *gid != current_gid) {
        rustix::fs::chown(path, None, Some(rustix::fs::Gid::from_raw(gid)))
            .map_err(|e| io("cannot set its group", e.into()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| io("cannot set its mode", e))?;
    Ok(listener)
}

/// Binds the loopback TCP listener.
pub async fn bind_tcp(addr: std::net::SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Tcp { addr, source })
}

/// Reads the token at `path`, or creates one there: 256 random bits,
/// base64url, no trailing newline, mode 0640 with `group`.
pub fn load_or_create_token(
    key: &'static str,
    path: &Path,
    group: Option<u32>,
) -> Result<SecretString, ListenError> {
    let bad = |problem: String| ListenError::BadToken {
        key,
        path: path.to_owned(),
        problem,
    };
    let io = |action, source| ListenError::Io {
        key,
        path: path.to_owned(),
        action,
        source,
    };
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
    {
        Ok(file) => {
            let mode = file
                .metadata()
                .map_err(|e| io("cannot inspect", e))?
                .permissions()
                .mode()
                & 0o777;
            if mode & 0o007 != 0 {
                return Err(bad(format!(
                    "is readable or writable by others (mode {mode:04o}); run: chmod 640 {}",
                    path.display()
                )));
            }
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::Read::take(file, 4096), &mut text)
                .map_err(|e| io("cannot read", e))?;
            check_token(&text, path).map_err(bad)?;
            Ok(SecretString::from(text))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            create_token(path, group).map_err(|e| io("cannot create", e))
        }
        Err(error) if error.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => Err(
            bad("is a symbolic link; point the key at the file itself".to_owned()),
        ),
        Err(error) => Err(io("cannot open", error)),
    }
}

/// Clients send the file's bytes verbatim, so stray whitespace breaks them.
fn check_token(text: &str, path: &Path) -> Result<(), String> {
    if text.ends_with('\n') || text.ends_with('\r') || text.ends_with(' ') {
        return Err(format!(
            "ends with whitespace, which SDK clients would send as part of the token; rewrite it without (printf %s \"$(cat {0})\" > {0}.new && mv {0}.new {0}), or delete it to have one generated",
            path.display()
        ));
    }
    if text.len() < MIN_TOKEN_LENGTH || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "must be at least {MIN_TOKEN_LENGTH} printable characters with no spaces; delete it to have one generated"
        ));
    }
    Ok(())
}

fn create_token(path: &Path, group: Option<u32>) -> std::io::Result<SecretString> {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut bytes)
        .map_err(std::io::Error::other)?;
    let token = SecretString::from(data_encoding::BASE64URL_NOPAD.encode(&bytes));
    zeroize::Zeroize::zeroize(&mut bytes);

    if let Some(parent) = path.parent().filter(|parent| !parent.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(parent)?;
    }
    // Written beside the target and renamed, so no reader sees half a token.
    let staging = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staging)?;
    let current_gid = std::os::unix::fs::MetadataExt::gid(&file.metadata()?);
    if let Some(gid) = group.filter(|gid| *gid != current_gid) {
        rustix::fs::fchown(&file, None, Some(rustix::fs::Gid::from_raw(gid)))?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(0o640))?;
    file.write_all(token.expose_secret().as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&staging, path)?;
    tracing::info!(path = %path.display(), "created a new token");
    Ok(token)
}

/// Connection limits shared by both listeners.
#[derive(Clone)]
pub struct Limits {
    connections: Arc<Semaphore>,
}

impl Limits {
    pub fn new(max_connections: usize) -> Limits {
        Limits {
            connections: Arc::new(Semaphore::new(max_connections)),
        }
    }
}

/// Accepts TCP connections until `stop`, then drains.
pub async fn serve_tcp(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: CancellationToken,
) {
    let local_port = listener.local_addr().map(|addr| addr.port()).unwrap_or(0);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                serve_connection(
                    stream,
                    Peer::Tcp { local_port },
                    &router,
                    &limits,
                    &graceful,
                );
            }
            Err(error) => accept_failed(error).await,
        }
    }
    drain(graceful).await;
}

/// Accepts Unix connections until `stop`, then drains.
pub async fn serve_unix(
    listener: UnixListener,
    router: Router,
    limits: Limits,
    stop: CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let Ok(credentials) = stream.peer_cred() else {
                    continue;
                };
                let peer = Peer::Unix {
                    uid: credentials.uid(),
                    gid: credentials.gid(),
                    pid: credentials.pid(),
                };
                serve_connection(stream, peer, &router, &limits, &graceful);
            }
            Err(error) => accept_failed(error).await,
        }
    }
    drain(graceful).await;
}

/// Out of descriptors or similar: pause instead of spinning.
async fn accept_failed(error: std::io::Error) {
    tracing::warn!(%error, "accepting a connection failed; pausing briefly");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn drain(graceful: hyper_util::server::graceful::GracefulShutdown) {
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain period were closed");
    }
}

fn serve_connection<S>(
    stream: S,
    peer: Peer,
    router: &Router,
    limits: &Limits,
    graceful: &hyper_util::server::graceful::GracefulShutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(permit) = limits.connections.clone().try_acquire_owned() else {
        tracing::warn!(
            "connection limit reached (listen.max_connections); closing a new connection"
        );
        return;
    };
    let router = router.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(peer.clone());
        router.clone().oneshot(request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "connection ended with an error");
        }
        drop(permit);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_is_long_private_and_has_no_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/token");
        let token = load_or_create_token("listen.token_file", &path, None).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(written, token.expose_secret());
        assert!(written.len() >= 43 && !written.ends_with('\n'));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let again = load_or_create_token("listen.token_file", &path, None).unwrap();
        assert_eq!(
            again.expose_secret(),
            token.expose_secret(),
            "an existing token is kept"
        );
    }

    #[test]
    fn a_token_file_ending_in_a_newline_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "0123456789abcdefghijklmnopqrstuv\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let message = load_or_create_token("listen.token_file", &path, None)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("whitespace") && message.contains("printf %s"),
            "{message}"
        );
    }

    #[test]
    fn a_world_readable_token_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "0123456789abcdefghijklmnopqrstuv").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let message = load_or_create_token("listen.token_file", &path, None)
            .unwrap_err()
            .to_string();
        assert!(message.contains("chmod 640"), "{message}");
    }

    #[tokio::test]
    async fn a_socket_with_a_live_server_is_refused_and_a_stale_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/credentials.sock");
        let live = bind_unix(&path, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let parent_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(parent_mode & 0o007, 0, "the directory is closed to others");
        assert!(matches!(
            bind_unix(&path, None),
            Err(ListenError::SocketInUse { .. })
        ));
        drop(live);
        bind_unix(&path, None).expect("a stale socket is replaced");
    }
}
