//! The daemon's side of the systemd service contract: readiness and status
//! notifications, the watchdog, and sockets handed over by socket activation.
//!
//! Notifications follow the `sd_notify` datagram protocol. [`Notifier::from_env`]
//! reads `NOTIFY_SOCKET`, which is either a filesystem path or an abstract
//! socket name written with a leading `@`. Each call sends one datagram of
//! newline-separated `KEY=VALUE` assignments. Without `NOTIFY_SOCKET` the
//! daemon is not supervised and there is nothing to tell, so `from_env` gives
//! `None`. `NOTIFY_SOCKET` is left in the environment: the daemon starts no
//! children that could misuse it.
//!
//! [`watchdog_interval`] reads `WATCHDOG_USEC`, honouring `WATCHDOG_PID` when
//! it is set. The daemon sends `WATCHDOG=1` at half that interval from its
//! event loop, so a stalled loop is noticed whatever the state of STS.
//!
//! [`listen_fds`] takes the sockets that systemd bound for us. It trusts
//! `LISTEN_FDS` only when `LISTEN_PID` names this process, takes ownership of
//! descriptors 3 onwards, marks them close-on-exec, and sorts them by the
//! address family the kernel reports, not by their names. It accepts at most
//! one listening Unix stream socket bound to a path and at most one listening
//! TCP socket bound to a loopback address; anything else is an error, because
//! serving on a socket the configuration did not intend is worse than not
//! starting. `FileDescriptorName=` values `unix` and `tcp` are checked against
//! the family; any other name (systemd's default is the socket unit's name)
//! is ignored. Afterwards `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` are
//! removed from the environment, but only while the process is still
//! single-threaded, since changing the environment is unsound once other
//! threads may read it: call [`listen_fds`] from `main` before starting the
//! async runtime. Should they stay, children still ignore them, because
//! their pid differs from `LISTEN_PID`.

use std::ffi::{OsStr, OsString};
use std::io;
use std::net::{SocketAddr as IpSocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixDatagram, UnixListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::io::{FdFlags, fcntl_getfd, fcntl_setfd};
use rustix::net::sockopt::{socket_acceptconn, socket_type};
use rustix::net::{AddressFamily, SocketType, getsockname};
use rustix::time::{ClockId, clock_gettime};
use thiserror::Error;

/// The first descriptor systemd passes; 0–2 are the standard streams.
const LISTEN_FDS_START: RawFd = 3;

/// How many sockets the daemon can use: one Unix and one TCP listener.
const MAX_LISTEN_FDS: usize = 2;

/// `FileDescriptorName=` of the Unix socket unit.
pub const UNIX_FD_NAME: &str = "unix";

/// `FileDescriptorName=` of the TCP socket unit.
pub const TCP_FD_NAME: &str = "tcp";

/// How long a notification may wait for room in systemd's queue. PID 1 drains
/// it quickly; a longer wait would only stall the event loop that sends the
/// watchdog ping.
const NOTIFY_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the kernel lists this process's threads, one entry each.
const OWN_THREADS_DIR: &str = "/proc/self/task";

/// Set once [`listen_fds`] has taken ownership of the inherited descriptors,
/// so a second call cannot wrap the same descriptors twice.
static LISTEN_FDS_TAKEN: AtomicBool = AtomicBool::new(false);

/// Everything that can go wrong talking to systemd or adopting its sockets.
#[derive(Debug, Error)]
pub enum SystemdError {
    /// `NOTIFY_SOCKET` is neither an absolute path nor an `@` abstract name.
    #[error(
        "NOTIFY_SOCKET {value:?} is not an absolute path or an @abstract name; only those are supported"
    )]
    UnsupportedNotifySocket { value: OsString },

    /// The datagram socket for notifications could not be set up.
    #[error("could not create a datagram socket for systemd notifications")]
    NotifySocket { source: io::Error },

    /// systemd did not receive a notification.
    #[error("could not send {message:?} to systemd at {socket:?}")]
    Notify {
        message: &'static str,
        socket: OsString,
        source: io::Error,
    },

    /// A `LISTEN_*` variable does not hold what systemd puts there.
    #[error("{var}={value:?} is not a valid value; it should be a decimal number")]
    InvalidListenVar { var: &'static str, value: String },

    /// `LISTEN_FDNAMES` names a different number of sockets than `LISTEN_FDS`.
    #[error("LISTEN_FDNAMES has {names} names but LISTEN_FDS says {fds} sockets were passed")]
    ListenNamesMismatch { fds: usize, names: usize },

    /// More sockets were passed than the daemon has listeners.
    #[error(
        "systemd passed {count} sockets; assumed uses at most one Unix and one TCP socket, check the socket units"
    )]
    TooManyListenFds { count: usize },

    /// [`listen_fds`] was called a second time.
    #[error("the sockets passed by systemd were already taken")]
    ListenFdsAlreadyTaken,

    /// A passed descriptor could not be inspected or adjusted.
    #[error("could not {operation} on passed descriptor {fd}")]
    InspectFd {
        fd: RawFd,
        operation: &'static str,
        source: io::Error,
    },

    /// A passed descriptor is not a stream socket.
    #[error("passed descriptor {fd} is not a stream socket; use ListenStream= in the socket unit")]
    NotStream { fd: RawFd },

    /// A passed socket is not listening.
    #[error("passed descriptor {fd} is not a listening socket; set Accept=no in the socket unit")]
    NotListening { fd: RawFd },

    /// A passed socket belongs to an address family the daemon does not serve.
    #[error("passed descriptor {fd} has address family {family}; only Unix and TCP are served")]
    UnsupportedFamily { fd: RawFd, family: u16 },

    /// Two passed sockets are of the same kind.
    #[error("passed descriptor {fd} is a second {kind} socket; only one of each is served")]
    DuplicateListener { fd: RawFd, kind: &'static str },

    /// A socket's `FileDescriptorName=` contradicts its address family.
    #[error("passed descriptor {fd} is named {name:?} but is a {kind} socket")]
    NameMismatch {
        fd: RawFd,
        name: String,
        kind: &'static str,
    },

    /// A TCP socket is bound beyond loopback, where no client should reach
    /// it, or to a loopback address the Host check does not accept.
    #[error(
        "passed TCP socket {fd} is bound to {addr}; credentials are served on 127.0.0.1 or [::1] only: set ListenStream= in assumed.socket to one of them"
    )]
    TcpNotLoopback { fd: RawFd, addr: IpSocketAddr },

    /// A Unix socket has no path, so file permissions cannot guard it.
    #[error(
        "passed Unix socket {fd} is not bound to a filesystem path; abstract sockets are refused"
    )]
    UnixWithoutPath { fd: RawFd },
}

/// Sends `sd_notify` messages to the service manager.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    target: UnixSocketAddr,
    display: OsString,
}

impl Notifier {
    /// The notifier for `NOTIFY_SOCKET`, or `None` when it is unset or empty.
    ///
    /// An unusable value is logged and treated as unset, so a daemon started
    /// by hand or by another supervisor still runs.
    pub fn from_env() -> Option<Notifier> {
        let value = std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty())?;
        match Notifier::new(&value) {
            Ok(notifier) => Some(notifier),
            Err(error) => {
                tracing::warn!(%error, "systemd notifications are off");
                None
            }
        }
    }

    /// A notifier for the socket named as `NOTIFY_SOCKET` would name it:
    /// an absolute path, or `@` followed by an abstract socket name.
    pub fn new(address: &OsStr) -> Result<Notifier, SystemdError> {
        let unsupported = || SystemdError::UnsupportedNotifySocket {
            value: address.to_owned(),
        };
        let bytes = address.as_bytes();
        let target = match bytes.split_first() {
            Some((b'@', name)) => UnixSocketAddr::from_abstract_name(name),
            Some((b'/', _)) => UnixSocketAddr::from_pathname(address),
            _ => return Err(unsupported()),
        }
        .map_err(|_| unsupported())?;

        let socket =
            UnixDatagram::unbound().map_err(|source| SystemdError::NotifySocket { source })?;
        socket
            .set_write_timeout(Some(NOTIFY_SEND_TIMEOUT))
            .map_err(|source| SystemdError::NotifySocket { source })?;
        Ok(Notifier {
            socket,
            target,
            display: address.to_owned(),
        })
    }

    /// Tells systemd that startup (or a reload) finished and the listeners
    /// are bound with their final permissions.
    pub fn ready(&self) -> Result<(), SystemdError> {
        self.send("READY=1", "READY=1")
    }

    /// Sets the one-line status shown by `systemctl status`.
    ///
    /// Line breaks and other control characters become spaces, so the text
    /// cannot smuggle in further assignments such as `READY=1`.
    pub fn status(&self, text: &str) -> Result<(), SystemdError> {
        let line: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        self.send("STATUS=", &format!("STATUS={line}"))
    }

    /// Tells systemd that shutdown has begun.
    pub fn stopping(&self) -> Result<(), SystemdError> {
        self.send("STOPPING=1", "STOPPING=1")
    }

    /// Tells systemd that a reload has begun; [`Notifier::ready`] ends it.
    ///
    /// `MONOTONIC_USEC` lets systemd match this message to the reload it
    /// requested rather than to an earlier one.
    pub fn reloading(&self) -> Result<(), SystemdError> {
        let now = clock_gettime(ClockId::Monotonic);
        let usec = u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000
            + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000;
        self.send(
            "RELOADING=1",
            &format!("RELOADING=1\nMONOTONIC_USEC={usec}"),
        )
    }

    /// Tells the watchdog that the event loop is alive.
    pub fn watchdog(&self) -> Result<(), SystemdError> {
        self.send("WATCHDOG=1", "WATCHDOG=1")
    }

    fn send(&self, message: &'static str, datagram: &str) -> Result<(), SystemdError> {
        self.socket
            .send_to_addr(datagram.as_bytes(), &self.target)
            .map(drop)
            .map_err(|source| SystemdError::Notify {
                message,
                socket: self.display.clone(),
                source,
            })
    }
}

/// The watchdog timeout systemd expects pings within, if it wants them.
///
/// `None` when `WATCHDOG_USEC` is unset, zero or malformed, or when
/// `WATCHDOG_PID` names another process. Ping at half this interval.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if pid.is_some_and(|pid| pid.parse::<u32>().ok() != Some(own_pid)) {
        return None;
    }
    let usec = usec?;
    match usec.parse::<u64>() {
        Ok(0) => None,
        Ok(usec) => Some(Duration::from_micros(usec)),
        Err(_) => {
            tracing::warn!(
                value = usec,
                "WATCHDOG_USEC is not a number; the watchdog is off"
            );
            None
        }
    }
}

/// The listening sockets systemd passed, sorted by kind.
#[derive(Debug, Default)]
pub struct ListenFds {
    /// The Unix stream socket, bound to a filesystem path.
    pub unix: Option<UnixListener>,
    /// The TCP socket, bound to a loopback address.
    pub tcp: Option<TcpListener>,
}

/// Adopts the sockets systemd passed to this process, if any.
///
/// Gives an empty [`ListenFds`] when the process was not socket-activated
/// (no `LISTEN_FDS`, or `LISTEN_PID` naming another process). Call it once,
/// from `main`, before any other thread starts; see the module docs.
pub fn listen_fds() -> Result<ListenFds, SystemdError> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    let passed = parse_listen_env(
        pid.as_deref(),
        fds.as_deref(),
        names.as_deref(),
        std::process::id(),
    );
    forget_listen_env(pid.is_some() || fds.is_some() || names.is_some());

    let passed = passed?;
    if passed.is_empty() {
        return Ok(ListenFds::default());
    }
    if LISTEN_FDS_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(SystemdError::ListenFdsAlreadyTaken);
    }
    adopt(passed)
}

/// A descriptor systemd says it passed, with its name if it gave one.
#[derive(Debug, PartialEq, Eq)]
struct PassedFd {
    fd: RawFd,
    name: Option<String>,
}

fn parse_listen_env(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    own_pid: u32,
) -> Result<Vec<PassedFd>, SystemdError> {
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(Vec::new());
    };
    let pid = parse_positive("LISTEN_PID", pid)?;
    if pid != own_pid {
        return Ok(Vec::new());
    }
    let count: usize = fds.parse().map_err(|_| SystemdError::InvalidListenVar {
        var: "LISTEN_FDS",
        value: fds.to_owned(),
    })?;
    if count == 0 {
        return Ok(Vec::new());
    }
    if count > MAX_LISTEN_FDS {
        return Err(SystemdError::TooManyListenFds { count });
    }

    let names: Vec<Option<String>> = match names {
        Some(names) => names.split(':').map(|n| Some(n.to_owned())).collect(),
        None => vec![None; count],
    };
    if names.len() != count {
        return Err(SystemdError::ListenNamesMismatch {
            fds: count,
            names: names.len(),
        });
    }
    Ok((LISTEN_FDS_START..)
        .zip(names)
        .map(|(fd, name)| PassedFd { fd, name })
        .collect())
}

fn parse_positive(var: &'static str, value: &str) -> Result<u32, SystemdError> {
    match value.parse::<u32>() {
        Ok(parsed) if parsed > 0 => Ok(parsed),
        _ => Err(SystemdError::InvalidListenVar {
            var,
            value: value.to_owned(),
        }),
    }
}

/// Removes the `LISTEN_*` variables while that is still sound.
fn forget_listen_env(present: bool) {
    if !present {
        return;
    }
    if !is_single_threaded() {
        tracing::debug!("other threads are running; leaving LISTEN_* in the environment");
        return;
    }
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: this process has exactly one thread, this one, so nothing
        // can read or write the environment concurrently.
        unsafe { std::env::remove_var(var) };
    }
}

fn is_single_threaded() -> bool {
    std::fs::read_dir(OWN_THREADS_DIR).is_ok_and(|threads| threads.count() == 1)
}

fn adopt(passed: Vec<PassedFd>) -> Result<ListenFds, SystemdError> {
    for p in &passed {
        // SAFETY: `fcntl(F_GETFD)` only queries the descriptor; an fd that is
        // not open yields EBADF, which is reported below.
        let fd = unsafe { BorrowedFd::borrow_raw(p.fd) };
        fcntl_getfd(fd).map_err(|e| inspect_error(p.fd, "query flags", e))?;
    }

    let owned: Vec<(PassedFd, OwnedFd)> = passed
        .into_iter()
        .map(|p| {
            // SAFETY: the descriptor is open (checked above), systemd passed
            // it to this very process (LISTEN_PID matched), and
            // LISTEN_FDS_TAKEN ensures no other owner exists in this process.
            let fd = unsafe { OwnedFd::from_raw_fd(p.fd) };
            (p, fd)
        })
        .collect();

    let mut listeners = ListenFds::default();
    for (passed, fd) in owned {
        classify(&passed, fd, &mut listeners)?;
    }
    Ok(listeners)
}

fn classify(passed: &PassedFd, fd: OwnedFd, into: &mut ListenFds) -> Result<(), SystemdError> {
    let raw = passed.fd;
    fcntl_setfd(&fd, FdFlags::CLOEXEC).map_err(|e| inspect_error(raw, "set close-on-exec", e))?;
    check_listening_stream(raw, fd.as_fd())?;

    let family = getsockname(&fd)
        .map_err(|e| inspect_error(raw, "read the socket address", e))?
        .address_family();
    let kind = if family == AddressFamily::UNIX {
        UNIX_FD_NAME
    } else if family == AddressFamily::INET || family == AddressFamily::INET6 {
        TCP_FD_NAME
    } else {
        return Err(SystemdError::UnsupportedFamily {
            fd: raw,
            family: family.as_raw(),
        });
    };
    if let Some(name) = &passed.name {
        let other = if kind == UNIX_FD_NAME {
            TCP_FD_NAME
        } else {
            UNIX_FD_NAME
        };
        if name == other {
            return Err(SystemdError::NameMismatch {
                fd: raw,
                name: name.clone(),
                kind,
            });
        }
    }

    if kind == UNIX_FD_NAME {
        place_unix(raw, UnixListener::from(fd), into)
    } else {
        place_tcp(raw, TcpListener::from(fd), into)
    }
}

fn check_listening_stream(raw: RawFd, fd: BorrowedFd<'_>) -> Result<(), SystemdError> {
    let kind = socket_type(fd).map_err(|e| inspect_error(raw, "read the socket type", e))?;
    if kind != SocketType::STREAM {
        return Err(SystemdError::NotStream { fd: raw });
    }
    let listening =
        socket_acceptconn(fd).map_err(|e| inspect_error(raw, "read SO_ACCEPTCONN", e))?;
    if !listening {
        return Err(SystemdError::NotListening { fd: raw });
    }
    Ok(())
}

fn place_unix(
    raw: RawFd,
    listener: UnixListener,
    into: &mut ListenFds,
) -> Result<(), SystemdError> {
    let addr = listener
        .local_addr()
        .map_err(|source| SystemdError::InspectFd {
            fd: raw,
            operation: "read the socket path",
            source,
        })?;
    if addr.as_pathname().is_none() {
        return Err(SystemdError::UnixWithoutPath { fd: raw });
    }
    if into.unix.is_some() {
        return Err(SystemdError::DuplicateListener {
            fd: raw,
            kind: UNIX_FD_NAME,
        });
    }
    into.unix = Some(listener);
    Ok(())
}

fn place_tcp(raw: RawFd, listener: TcpListener, into: &mut ListenFds) -> Result<(), SystemdError> {
    let addr = listener
        .local_addr()
        .map_err(|source| SystemdError::InspectFd {
            fd: raw,
            operation: "read the socket address",
            source,
        })?;
    // The same two addresses listen.tcp accepts: the Host check and SDK
    // clients know no other spelling of this host.
    let ip = addr.ip();
    if ip != std::net::Ipv4Addr::LOCALHOST && ip != std::net::Ipv6Addr::LOCALHOST {
        return Err(SystemdError::TcpNotLoopback { fd: raw, addr });
    }
    if into.tcp.is_some() {
        return Err(SystemdError::DuplicateListener {
            fd: raw,
            kind: TCP_FD_NAME,
        });
    }
    into.tcp = Some(listener);
    Ok(())
}

fn inspect_error(fd: RawFd, operation: &'static str, errno: rustix::io::Errno) -> SystemdError {
    SystemdError::InspectFd {
        fd,
        operation,
        source: errno.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let len = socket.recv(&mut buf).expect("a notification arrives");
        String::from_utf8(buf[..len].to_vec()).expect("notifications are UTF-8")
    }

    #[test]
    fn a_passed_tcp_socket_must_be_on_an_address_the_host_check_accepts() {
        use std::os::fd::AsRawFd;
        for (addr, accepted) in [("127.0.0.1:0", true), ("127.0.0.2:0", false)] {
            let listener = TcpListener::bind(addr).unwrap();
            let raw = listener.as_raw_fd();
            let mut fds = ListenFds::default();
            let placed = place_tcp(raw, listener, &mut fds);
            assert_eq!(placed.is_ok(), accepted, "{addr}: {placed:?}");
            if let Err(error) = placed {
                assert!(error.to_string().contains("ListenStream="), "{error}");
            }
        }
    }

    #[test]
    fn notifications_arrive_as_sd_notify_datagrams_on_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let systemd = UnixDatagram::bind(&path).unwrap();
        systemd
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let notifier = Notifier::new(path.as_os_str()).unwrap();

        notifier.ready().unwrap();
        assert_eq!(receive(&systemd), "READY=1");
        notifier.status("2 roles fresh").unwrap();
        assert_eq!(receive(&systemd), "STATUS=2 roles fresh");
        notifier.watchdog().unwrap();
        assert_eq!(receive(&systemd), "WATCHDOG=1");
        notifier.stopping().unwrap();
        assert_eq!(receive(&systemd), "STOPPING=1");
    }

    #[test]
    fn reloading_carries_the_monotonic_clock_in_microseconds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let systemd = UnixDatagram::bind(&path).unwrap();
        systemd
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let notifier = Notifier::new(path.as_os_str()).unwrap();

        let before = clock_gettime(ClockId::Monotonic).tv_sec as u64;
        notifier.reloading().unwrap();
        let message = receive(&systemd);

        let usec = message
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .expect("RELOADING=1 comes first")
            .parse::<u64>()
            .expect("MONOTONIC_USEC is a number");
        assert!(usec / 1_000_000 >= before);
    }

    #[test]
    fn notifications_reach_an_abstract_socket_named_with_an_at_sign() {
        let name = format!("assumed-test-notify-{}", std::process::id());
        let addr = UnixSocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let systemd = UnixDatagram::bind_addr(&addr).unwrap();
        systemd
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();

        let notifier = Notifier::new(OsStr::new(&format!("@{name}"))).unwrap();
        notifier.ready().unwrap();

        assert_eq!(receive(&systemd), "READY=1");
    }

    #[test]
    fn a_status_cannot_inject_other_assignments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let systemd = UnixDatagram::bind(&path).unwrap();
        systemd
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let notifier = Notifier::new(path.as_os_str()).unwrap();

        notifier.status("broken\nREADY=1").unwrap();

        assert_eq!(receive(&systemd), "STATUS=broken READY=1");
    }

    #[test]
    fn a_relative_or_vsock_notify_socket_is_refused() {
        for value in ["notify.sock", "vsock:2:1234", ""] {
            let result = Notifier::new(OsStr::new(value));
            assert!(
                matches!(result, Err(SystemdError::UnsupportedNotifySocket { .. })),
                "{value:?} gave {result:?}"
            );
        }
    }

    #[test]
    fn the_watchdog_interval_comes_from_watchdog_usec() {
        assert_eq!(
            parse_watchdog(Some("30000000"), None, 42),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_watchdog(Some("30000000"), Some("42"), 42),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn the_watchdog_is_off_when_unset_zero_malformed_or_meant_for_another_pid() {
        assert_eq!(parse_watchdog(None, None, 42), None);
        assert_eq!(parse_watchdog(Some("0"), None, 42), None);
        assert_eq!(parse_watchdog(Some("soon"), None, 42), None);
        assert_eq!(parse_watchdog(Some("30000000"), Some("43"), 42), None);
    }

    #[test]
    fn listen_variables_for_another_pid_are_ignored() {
        let passed = parse_listen_env(Some("7"), Some("2"), Some("unix:tcp"), 42).unwrap();
        assert!(passed.is_empty());
    }

    #[test]
    fn listen_variables_without_listen_pid_are_ignored() {
        let passed = parse_listen_env(None, Some("1"), None, 42).unwrap();
        assert!(passed.is_empty());
    }

    #[test]
    fn passed_descriptors_start_at_three_and_carry_their_names() {
        let passed = parse_listen_env(Some("42"), Some("2"), Some("unix:tcp"), 42).unwrap();
        assert_eq!(
            passed,
            vec![
                PassedFd {
                    fd: 3,
                    name: Some("unix".into())
                },
                PassedFd {
                    fd: 4,
                    name: Some("tcp".into())
                },
            ]
        );
    }

    #[test]
    fn malformed_or_inconsistent_listen_variables_are_errors() {
        assert!(matches!(
            parse_listen_env(Some("42"), Some("two"), None, 42),
            Err(SystemdError::InvalidListenVar {
                var: "LISTEN_FDS",
                ..
            })
        ));
        assert!(matches!(
            parse_listen_env(Some("-1"), Some("1"), None, 42),
            Err(SystemdError::InvalidListenVar {
                var: "LISTEN_PID",
                ..
            })
        ));
        assert!(matches!(
            parse_listen_env(Some("42"), Some("2"), Some("unix"), 42),
            Err(SystemdError::ListenNamesMismatch { fds: 2, names: 1 })
        ));
        assert!(matches!(
            parse_listen_env(Some("42"), Some("3"), None, 42),
            Err(SystemdError::TooManyListenFds { count: 3 })
        ));
    }
}
