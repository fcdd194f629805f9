//! The daemon as systemd runs it: sockets passed at descriptors 3 and 4
//! with `LISTEN_FDS`, readiness and watchdog pings on a `NOTIFY_SOCKET`.

mod common;

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Passed sockets are parked this high before being moved to 3 and 4, so
/// moving one cannot overwrite the other.
const PARK_FD_MIN: RawFd = 64;

/// Reads notify messages until a line starts with `wanted`, returning all seen.
fn wait_for_message(socket: &UnixDatagram, wanted: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(length) = socket.recv(&mut buffer) {
            let message = String::from_utf8_lossy(&buffer[..length]).into_owned();
            let found = message.lines().any(|line| line.starts_with(wanted));
            seen.push(message);
            if found {
                return seen;
            }
        }
    }
    panic!("no {wanted} within {limit:?}; got {seen:?}");
}

// The stand-in runs on this runtime while the test blocks reading
// notify messages, so it needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_socket_activation_the_daemon_serves_the_passed_sockets_and_talks_to_systemd() {
    let setup = Setup::new(&[role("duper")], None).await;
    let activation = tempfile::tempdir().unwrap();

    // The sockets systemd would create, bound by "systemd" (this test).
    let unix_path = activation.path().join("activated.sock");
    let unix = std::os::unix::net::UnixListener::bind(&unix_path).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let parked: Vec<OwnedFd> = [unix.as_raw_fd(), tcp.as_raw_fd()]
        .into_iter()
        .map(|fd| {
            // SAFETY: both descriptors are open for the duration of this call.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            rustix::io::fcntl_dupfd_cloexec(borrowed, PARK_FD_MIN).unwrap()
        })
        .collect();
    let moves: Vec<(RawFd, RawFd)> = parked.iter().map(|fd| fd.as_raw_fd()).zip(3..).collect();

    let notify_path = activation.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg("LISTEN_PID=$$ exec \"$0\" serve --config \"$1\"")
        .arg(binary())
        .arg(&setup.config_path)
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "unix:tcp")
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "1000000")
        .env("RUST_LOG", "info")
        .env_remove("WATCHDOG_PID")
        .env_remove("ASSUMED_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs between fork and exec and only calls dup2,
    // which is async-signal-safe; the copies lack close-on-exec, as
    // systemd's descriptors do.
    unsafe {
        command.pre_exec(move || {
            for &(from, to) in &moves {
                let mut target = OwnedFd::from_raw_fd(to);
                let moved = rustix::io::dup2(BorrowedFd::borrow_raw(from), &mut target);
                std::mem::forget(target);
                moved?;
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    drop(parked);

    let messages = wait_for_message(&notify, "READY=1", Duration::from_secs(30));
    let (status, body) = get_with_token(tcp_addr, "/v1/credentials", &setup.token()).await;
    assert_eq!(
        status,
        200,
        "the passed TCP socket serves: {}",
        String::from_utf8_lossy(&body)
    );
    let (status, unix_body) = assumed::client::get(&unix_path, "/v1/credentials")
        .await
        .unwrap();
    assert_eq!(status, 200, "the passed Unix socket serves");
    assert_eq!(body, unix_body);
    assert!(
        !setup.socket.exists(),
        "the configured socket path is not bound when systemd passes one"
    );

    assert!(messages.iter().any(|m| m == "READY=1"), "{messages:?}");
    wait_for_message(&notify, "WATCHDOG=1", Duration::from_secs(5));
    // A status line says how the roles are.
    wait_for_message(
        &notify,
        "STATUS=1 roles, 1 usable, next refresh in",
        Duration::from_secs(5),
    );

    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    wait_for_message(&notify, "STOPPING=1", Duration::from_secs(10));
    assert!(child.wait().unwrap().success());
    assert!(
        unix_path.exists(),
        "a socket systemd owns is left for systemd to remove"
    );
}
