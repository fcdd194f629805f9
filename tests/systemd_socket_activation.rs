//! Socket activation end to end: this binary starts itself again as a child
//! that finds real sockets at descriptors 3 and 4, as systemd passes them,
//! and reports what `assumed::systemd::listen_fds` made of them.
//!
//! It runs without libtest's harness. libtest runs every test on a thread of
//! its own, while `listen_fds` removes the `LISTEN_*` variables only in a
//! single-threaded process, which is how the daemon's `main` calls it. Each
//! scenario gets its own child, so no test changes this process's
//! environment. The binary understands the few arguments test runners pass:
//! name filters, `--exact` and `--list`.

use std::io::Write;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode};

use assumed::systemd::listen_fds;
use rustix::io::{FdFlags, fcntl_dupfd_cloexec, fcntl_getfd};

/// Set in the child; the parent leaves it unset.
const CHILD_VAR: &str = "ASSUMED_TEST_SOCKET_ACTIVATION_CHILD";

/// Starts the child's report line on its standard output.
const REPORT_PREFIX: &str = "listen_fds report: ";

/// Where systemd puts the first passed descriptor.
const FIRST_PASSED_FD: RawFd = 3;

/// Descriptors are parked at or above this number before being moved to 3
/// and up, so moving one cannot overwrite another.
const PARK_FD_MIN: RawFd = 64;

/// How the child's environment announces the passed sockets.
struct Activation<'a> {
    /// `LISTEN_FDNAMES`, or `None` to leave it unset.
    names: Option<&'a str>,
    /// `LISTEN_PID`, as shell text: `$$` is the child's own pid.
    pid: &'a str,
}

const OWN_PID: &str = "$$";

/// libtest options whose value is a separate argument.
const OPTIONS_WITH_VALUE: &[&str] = &[
    "--format",
    "--color",
    "--test-threads",
    "--skip",
    "--logfile",
    "--shuffle-seed",
    "-Z",
];

type Scenario = fn() -> Result<(), String>;

const SCENARIOS: &[(&str, Scenario)] = &[
    (
        "systemd::socket_activation_hands_over_a_unix_and_a_tcp_listener",
        hands_over_a_unix_and_a_tcp_listener,
    ),
    (
        "systemd::socket_activation_sorts_by_family_when_names_are_systemds_defaults",
        sorts_by_family_when_names_are_systemds_defaults,
    ),
    (
        "systemd::socket_activation_works_without_listen_fdnames",
        works_without_listen_fdnames,
    ),
    (
        "systemd::socket_activation_refuses_a_name_that_contradicts_the_family",
        refuses_a_name_that_contradicts_the_family,
    ),
    (
        "systemd::socket_activation_refuses_a_socket_that_is_not_listening",
        refuses_a_socket_that_is_not_listening,
    ),
    (
        "systemd::socket_activation_leaves_sockets_passed_to_another_pid_alone",
        leaves_sockets_passed_to_another_pid_alone,
    ),
];

fn main() -> ExitCode {
    if std::env::var_os(CHILD_VAR).is_some() {
        report_as_child();
        return ExitCode::SUCCESS;
    }

    let args: Vec<String> = std::env::args().skip(1).collect();
    let exact = args.iter().any(|a| a == "--exact");
    let filters = name_filters(&args);
    let selected = SCENARIOS.iter().filter(|(name, _)| {
        filters.is_empty()
            || filters
                .iter()
                .any(|f| if exact { name == f } else { name.contains(f) })
    });

    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            selected.for_each(|(name, _)| println!("{name}: test"));
        }
        return ExitCode::SUCCESS;
    }

    let (mut passed, mut failed) = (0, 0);
    for (name, scenario) in selected {
        match scenario() {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok");
            }
            Err(why) => {
                failed += 1;
                println!("test {name} ... FAILED\n{why}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    std::io::stdout().flush().ok();
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The positional arguments, which select tests by name; the values of
/// libtest options such as `--format terse` are not names.
fn name_filters(args: &[String]) -> Vec<&str> {
    let mut filters = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if OPTIONS_WITH_VALUE.contains(&arg.as_str()) {
            args.next();
        } else if !arg.starts_with('-') {
            filters.push(arg.as_str());
        }
    }
    filters
}

/// The child: adopt whatever was passed, the way the daemon does, and say
/// what came of it in one line.
fn report_as_child() {
    let outcome = match listen_fds() {
        Ok(fds) => {
            let unix = fds.unix.as_ref().map(|l| {
                let addr = l.local_addr().expect("a bound socket has an address");
                let path = addr.as_pathname().expect("a path socket").display();
                format!("{path} cloexec={}", is_cloexec(l))
            });
            let tcp = fds.tcp.as_ref().map(|l| {
                let addr = l.local_addr().expect("a bound socket has an address");
                format!("{addr} cloexec={}", is_cloexec(l))
            });
            format!("unix={unix:?} tcp={tcp:?}")
        }
        Err(error) => format!("error={error}"),
    };
    let env_left: Vec<&str> = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"]
        .into_iter()
        .filter(|var| std::env::var_os(var).is_some())
        .collect();
    println!("{REPORT_PREFIX}{outcome} env_left={env_left:?}");
}

fn is_cloexec(fd: impl std::os::fd::AsFd) -> bool {
    fcntl_getfd(fd).is_ok_and(|flags| flags.contains(FdFlags::CLOEXEC))
}

/// Starts the child with `sockets` at descriptors 3, 4, … and returns its
/// report, with the temp socket path and TCP address replaced by
/// `UNIX_PATH` and `TCP_ADDR` so expectations read plainly.
fn activate(
    sockets: &[&dyn std::os::fd::AsFd],
    activation: Activation<'_>,
    unix_path: &Path,
    tcp: &TcpListener,
) -> Result<String, String> {
    let parked: Vec<OwnedFd> = sockets
        .iter()
        .map(|s| fcntl_dupfd_cloexec(s.as_fd(), PARK_FD_MIN).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let moves: Vec<(RawFd, RawFd)> = parked
        .iter()
        .zip(FIRST_PASSED_FD..)
        .map(|(fd, target)| (fd.as_raw_fd(), target))
        .collect();

    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(format!("LISTEN_PID={} exec \"$0\"", activation.pid))
        .arg(std::env::current_exe().map_err(|e| e.to_string())?)
        .env(CHILD_VAR, "1")
        .env("LISTEN_FDS", sockets.len().to_string())
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES");
    if let Some(names) = activation.names {
        command.env("LISTEN_FDNAMES", names);
    }
    // SAFETY: the closure runs between fork and exec and only calls dup2,
    // which is async-signal-safe. The copies it makes lack close-on-exec, so
    // they survive both execs, as systemd's descriptors do.
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

    let output = command
        .output()
        .map_err(|e| format!("the child did not start: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "the child failed with {}:\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let report = stdout
        .lines()
        .find_map(|line| line.strip_prefix(REPORT_PREFIX))
        .ok_or_else(|| format!("the child printed no report:\n{stdout}"))?;
    let tcp_addr = tcp.local_addr().map_err(|e| e.to_string())?.to_string();
    Ok(report
        .replace(&unix_path.display().to_string(), "UNIX_PATH")
        .replace(&tcp_addr, "TCP_ADDR"))
}

/// A loopback TCP listener on a free port and a Unix listener in a temp
/// directory, as the two socket units would bind them.
struct Listeners {
    dir: tempfile::TempDir,
    unix: UnixListener,
    tcp: TcpListener,
}

impl Listeners {
    fn bind() -> Result<Listeners, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let unix =
            UnixListener::bind(dir.path().join("credentials.sock")).map_err(|e| e.to_string())?;
        let tcp = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        Ok(Listeners { dir, unix, tcp })
    }

    fn unix_path(&self) -> std::path::PathBuf {
        self.dir.path().join("credentials.sock")
    }
}

fn expect(report: &str, wanted: &str) -> Result<(), String> {
    if report == wanted {
        Ok(())
    } else {
        Err(format!("  wanted: {wanted}\n     got: {report}"))
    }
}

const BOTH_ADOPTED: &str = "unix=Some(\"UNIX_PATH cloexec=true\") \
     tcp=Some(\"TCP_ADDR cloexec=true\") env_left=[]";

fn hands_over_a_unix_and_a_tcp_listener() -> Result<(), String> {
    let l = Listeners::bind()?;
    let activation = Activation {
        names: Some("tcp:unix"),
        pid: OWN_PID,
    };
    let report = activate(&[&l.tcp, &l.unix], activation, &l.unix_path(), &l.tcp)?;
    expect(&report, BOTH_ADOPTED)
}

fn sorts_by_family_when_names_are_systemds_defaults() -> Result<(), String> {
    let l = Listeners::bind()?;
    let activation = Activation {
        names: Some("assumed.socket:assumed-tcp.socket"),
        pid: OWN_PID,
    };
    let report = activate(&[&l.unix, &l.tcp], activation, &l.unix_path(), &l.tcp)?;
    expect(&report, BOTH_ADOPTED)
}

fn works_without_listen_fdnames() -> Result<(), String> {
    let l = Listeners::bind()?;
    let activation = Activation {
        names: None,
        pid: OWN_PID,
    };
    let report = activate(&[&l.unix, &l.tcp], activation, &l.unix_path(), &l.tcp)?;
    expect(&report, BOTH_ADOPTED)
}

fn refuses_a_name_that_contradicts_the_family() -> Result<(), String> {
    let l = Listeners::bind()?;
    let activation = Activation {
        names: Some("unix:tcp"),
        pid: OWN_PID,
    };
    let report = activate(&[&l.tcp, &l.unix], activation, &l.unix_path(), &l.tcp)?;
    expect(
        &report,
        "error=passed descriptor 3 is named \"unix\" but is a tcp socket env_left=[]",
    )
}

fn refuses_a_socket_that_is_not_listening() -> Result<(), String> {
    let l = Listeners::bind()?;
    let (connected, _peer) = UnixStream::pair().map_err(|e| e.to_string())?;
    let activation = Activation {
        names: Some("unix:tcp"),
        pid: OWN_PID,
    };
    let report = activate(&[&connected, &l.tcp], activation, &l.unix_path(), &l.tcp)?;
    expect(
        &report,
        "error=passed descriptor 3 is not a listening socket; set Accept=no in the socket unit \
         env_left=[]",
    )
}

fn leaves_sockets_passed_to_another_pid_alone() -> Result<(), String> {
    let l = Listeners::bind()?;
    let activation = Activation {
        names: Some("tcp:unix"),
        pid: "1",
    };
    let report = activate(&[&l.tcp, &l.unix], activation, &l.unix_path(), &l.tcp)?;
    expect(&report, "unix=None tcp=None env_left=[]")
}
