//! Listeners: binding the Unix socket and the token file safely, and
//! serving connections with limits.
//!
//! The Unix socket's parent directory is created 0750 when missing. A
//! socket file left by a dead daemon is removed; one that a live process
//! still answers on is refused. The daemon runs with umask 077, so the
//! socket is created 0700 and only then opened to 0660 (and its group set):
//! at no moment is it looser than its final mode.
//!
//! Each connection is HTTP/1.1, and no client can hold one without making
//! progress:
//!
//! - a request's head must fit in [`MAX_HEADER_BYTES`] (431 otherwise) and
//!   arrive within [`HEADER_READ_TIMEOUT`]; hyper starts that clock when the
//!   connection opens and again each time it goes idle after an answer, so
//!   it is the keep-alive idle timeout too;
//! - a request's answer must be ready within [`REQUEST_TIMEOUT`] (503);
//! - a connection takes no new request after [`MAX_CONNECTION_AGE`] and is
//!   cut [`CONNECTION_GRACE`] later, which bounds a client that pipelines
//!   requests and never reads the answers;
//! - connections beyond `listen.max_connections` are closed at once, so a
//!   flood cannot starve the process of descriptors.
//!
//! A request body is never read: hyper closes the connection after the
//! answer rather than drain it. On shutdown the listeners stop accepting
//! and open connections get a grace period.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::Peer;

/// A request's headers must fit in this; SDK requests use well under 1 KiB.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// A client that has not sent a request's headers this long after the
/// connection opened or went idle is dropped. SDKs send theirs at once.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a request may take to answer: a cold role's first
/// credential is waited for up to `FIRST_CREDENTIAL_WAIT` (10 s).
const REQUEST_TIMEOUT: Duration =
    Duration::from_secs(crate::session::FIRST_CREDENTIAL_WAIT.as_secs() + 5);
/// A connection takes no new request after this; clients reconnect, as
/// they do after any keep-alive close.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);
/// Time after [`MAX_CONNECTION_AGE`] to write the answers in progress.
const CONNECTION_GRACE: Duration = Duration::from_secs(5);
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
    if let Some(parent) = path.parent() {
        create_directories(parent, group).map_err(|e| io("cannot create its directory", e))?;
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

/// Creates `dir` and any missing parent, each 0750 with `group`, so the
/// clients' group can reach the socket and token inside. The daemon's
/// umask (077) would leave them 0700, so the mode is set explicitly.
/// Directories that exist are left as they are.
fn create_directories(dir: &Path, group: Option<u32>) -> std::io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|ancestor| !ancestor.as_os_str().is_empty() && !ancestor.exists())
        .collect();
    for directory in missing.into_iter().rev() {
        std::fs::DirBuilder::new().mode(0o750).create(directory)?;
        let metadata = std::fs::metadata(directory)?;
        let current_gid = std::os::unix::fs::MetadataExt::gid(&metadata);
        // Only when it differs: the packaged unit's syscall filter forbids
        // chown, and there the setgid /run/assumed already has the group.
        if let Some(gid) = group.filter(|gid| *gid != current_gid) {
            rustix::fs::chown(directory, None, Some(rustix::fs::Gid::from_raw(gid)))?;
        }
        std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o750))?;
    }
    Ok(())
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
    match read_token(key, path)? {
        Some(token) => Ok(token),
        None => create_token(path, group).map_err(|source| ListenError::Io {
            key,
            path: path.to_owned(),
            action: "cannot create",
            source,
        }),
    }
}

/// Reads and checks the token at `path`; `None` when there is no file yet
/// (start-up creates one). `check-config` uses this to check without creating.
pub fn read_token(key: &'static str, path: &Path) -> Result<Option<SecretString>, ListenError> {
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
            Ok(Some(SecretString::from(text)))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) if error.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            Err(bad(format!(
                "is a symbolic link; point {key} at the file itself"
            )))
        }
        Err(error) => Err(io("cannot open", error)),
    }
}

/// Clients send the file's bytes verbatim, so stray whitespace breaks them.
fn check_token(text: &str, path: &Path) -> Result<(), String> {
    if text.ends_with('\n') || text.ends_with('\r') || text.ends_with(' ') {
        return Err(format!(
            "ends with whitespace, which SDK clients would send as part of the token or refuse to send; strip it in place, keeping the file's mode and group (sed -i -z 's/[[:space:]]*$//' {0}), or delete the file to have one generated",
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

    if let Some(parent) = path.parent() {
        create_directories(parent, group)?;
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
        let answer = router.clone().oneshot(request);
        async move {
            // A cached credential is ready at the first poll; only an
            // answer that has to wait gets a timer.
            let mut answer = std::pin::pin!(answer);
            let first = std::future::poll_fn(|cx| Poll::Ready(answer.as_mut().poll(cx))).await;
            if let Poll::Ready(answered) = first {
                return answered;
            }
            match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
                Ok(answered) => answered,
                Err(_) => Ok(super::error(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "RequestTimeout",
                    "the answer took too long; try again",
                )),
            }
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(AgeLimited::new(stream)), service);
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "connection ended with an error");
        }
        drop(permit);
    });
}

/// A connection's stream with an age limit: after [`MAX_CONNECTION_AGE`]
/// reads see end-of-file, so hyper closes the connection once the answer
/// in progress is written; after [`CONNECTION_GRACE`] more, every read and
/// write fails, which ends a connection stuck writing to a client that
/// does not read.
///
/// The deadlines are compared with the clock on each read and write; the
/// timer that wakes a stuck connection is only polled when the stream has
/// to wait, so a busy connection costs no timer work per request.
struct AgeLimited<S> {
    inner: S,
    retire_at: Instant,
    cutoff_at: Instant,
    cutoff: Pin<Box<Sleep>>,
}

impl<S> AgeLimited<S> {
    fn new(inner: S) -> AgeLimited<S> {
        let opened = Instant::now();
        let cutoff_at = opened + MAX_CONNECTION_AGE + CONNECTION_GRACE;
        AgeLimited {
            inner,
            retire_at: opened + MAX_CONNECTION_AGE,
            cutoff_at,
            cutoff: Box::pin(tokio::time::sleep_until(cutoff_at)),
        }
    }

    /// Runs one operation on the inner stream unless the connection is
    /// past its cut-off. When the operation has to wait, the cut-off timer
    /// is armed, so a stream that waits past it is woken to fail.
    fn limited<T>(
        &mut self,
        cx: &mut Context<'_>,
        operation: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>>
    where
        S: Unpin,
    {
        if Instant::now() >= self.cutoff_at {
            return Poll::Ready(Err(too_old()));
        }
        match operation(Pin::new(&mut self.inner), cx) {
            Poll::Pending => match self.cutoff.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(too_old())),
                Poll::Pending => Poll::Pending,
            },
            ready => ready,
        }
    }
}

fn too_old() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the connection outlived its age limit",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for AgeLimited<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        // Retired: end-of-file until the cut-off, an error after it.
        let now = Instant::now();
        if now >= this.retire_at && now < this.cutoff_at {
            return Poll::Ready(Ok(()));
        }
        this.limited(cx, |inner, cx| inner.poll_read(cx, buf))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AgeLimited<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut()
            .limited(cx, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut()
            .limited(cx, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().limited(cx, |inner, cx| inner.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
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
            message.contains("whitespace") && message.contains("sed -i -z"),
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

    use axum::routing::get;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::server::graceful::GracefulShutdown;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const UNIX_ROOT: Peer = Peer::Unix {
        uid: 0,
        gid: 0,
        pid: None,
    };

    fn test_router() -> Router {
        Router::new()
            .route("/small", get(|| async { "ok" }))
            .route("/big", get(|| async { "x".repeat(8 * 1024) }))
            .route(
                "/stuck",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    "late"
                }),
            )
    }

    /// One connection served over an in-memory pipe of `pipe_bytes`; the
    /// limits' single permit is held while the connection is open.
    fn serve_in_memory(pipe_bytes: usize) -> (DuplexStream, Limits, GracefulShutdown) {
        let (client, server) = tokio::io::duplex(pipe_bytes);
        let limits = Limits::new(1);
        let graceful = GracefulShutdown::new();
        serve_connection(server, UNIX_ROOT, &test_router(), &limits, &graceful);
        (client, limits, graceful)
    }

    fn is_open(limits: &Limits) -> bool {
        limits.connections.available_permits() == 0
    }

    async fn client(
        stream: DuplexStream,
    ) -> hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>> {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        sender
    }

    async fn send(
        sender: &mut hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>,
        path: &str,
    ) -> Result<(u16, bytes::Bytes), hyper::Error> {
        let request = hyper::Request::get(path)
            .header("host", "localhost")
            .body(Empty::new())
            .unwrap();
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        Ok((status, response.into_body().collect().await?.to_bytes()))
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
        let (stream, limits, _graceful) = serve_in_memory(64 * 1024);
        let mut sender = client(stream).await;
        assert_eq!(send(&mut sender, "/small").await.unwrap().0, 200);
        tokio::time::sleep(HEADER_READ_TIMEOUT - Duration::from_secs(1)).await;
        assert!(is_open(&limits), "still open just inside the timeout");
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::task::yield_now().await;
        assert!(!is_open(&limits), "closed once idle past the timeout");
        assert!(send(&mut sender, "/small").await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_keep_alive_connection_takes_no_new_request_after_its_age_limit() {
        let (stream, limits, _graceful) = serve_in_memory(64 * 1024);
        let mut sender = client(stream).await;
        let started = tokio::time::Instant::now();
        // Never idle long enough for the header read timeout to close it.
        let pause = HEADER_READ_TIMEOUT - Duration::from_secs(3);
        while started.elapsed() < MAX_CONNECTION_AGE {
            assert_eq!(send(&mut sender, "/small").await.unwrap().0, 200);
            tokio::time::sleep(pause).await;
        }
        assert!(send(&mut sender, "/small").await.is_err());
        tokio::task::yield_now().await;
        assert!(!is_open(&limits), "the connection was retired");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_reads_its_answers_is_cut_off_after_the_age_limit() {
        let (mut stream, limits, _graceful) = serve_in_memory(1024);
        // Pipelined requests whose answers fill the pipe, which nobody reads.
        let writer = tokio::spawn(async move {
            let request = b"GET /big HTTP/1.1\r\nhost: localhost\r\n\r\n";
            for _ in 0..64 {
                if stream.write_all(request).await.is_err() {
                    break;
                }
            }
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
        });
        tokio::time::sleep(MAX_CONNECTION_AGE / 2).await;
        assert!(is_open(&limits), "stuck writing, not yet cut off");
        tokio::time::sleep(MAX_CONNECTION_AGE / 2 + CONNECTION_GRACE + Duration::from_secs(1))
            .await;
        tokio::task::yield_now().await;
        assert!(!is_open(&limits), "cut off after the age limit and grace");
        writer.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_that_takes_too_long_is_a_503() {
        let (stream, _limits, _graceful) = serve_in_memory(64 * 1024);
        let mut sender = client(stream).await;
        let started = tokio::time::Instant::now();
        let (status, body) = send(&mut sender, "/stuck").await.unwrap();
        assert_eq!(status, 503);
        assert!(String::from_utf8_lossy(&body).contains("RequestTimeout"));
        assert_eq!(started.elapsed(), REQUEST_TIMEOUT);
    }

    #[tokio::test]
    async fn a_connection_beyond_the_cap_is_closed_at_once() {
        let (first, limits, graceful) = serve_in_memory(64 * 1024);
        let mut sender = client(first).await;
        assert_eq!(send(&mut sender, "/small").await.unwrap().0, 200);
        let (mut second, server) = tokio::io::duplex(1024);
        serve_connection(server, UNIX_ROOT, &test_router(), &limits, &graceful);
        second
            .write_all(b"GET /small HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .ok();
        let mut answer = Vec::new();
        second.read_to_end(&mut answer).await.unwrap();
        assert!(answer.is_empty(), "no answer, just a close");
        assert_eq!(send(&mut sender, "/small").await.unwrap().0, 200);
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
        assert_eq!(
            parent_mode, 0o750,
            "the group can reach the socket, others cannot"
        );
        assert!(matches!(
            bind_unix(&path, None),
            Err(ListenError::SocketInUse { .. })
        ));
        drop(live);
        bind_unix(&path, None).expect("a stale socket is replaced");
    }
}
