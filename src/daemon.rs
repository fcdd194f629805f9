//! The daemon: configuration → secrets → TOTP ledger → STS → refreshers →
//! listeners, started in that order and stopped in reverse.
//!
//! [`preflight`] loads and checks everything `serve` needs without
//! touching the network; `check-config` is exactly that. [`Daemon::start`]
//! binds the listeners (so a bad socket path fails before anything else
//! happens), starts one refresher per role and the servers, and returns;
//! [`Daemon::wait`] runs until the stop token is cancelled, then stops
//! accepting, drains open connections and removes the socket file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{Clock, StsClock, SystemClock};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::secret::{self, LongTermKey, Seed};
use crate::server::listener::{self, Limits, ListenError};
use crate::server::{self, ServerState};
use crate::session::{Refresher, RoleSlot, RoleTable, Store};
use crate::sts::Sts;
use crate::systemd::{ListenFds, Notifier};
use crate::totp::TotpLedger;

/// How long start-up waits for the first attempts before calling itself
/// ready (with 503s for roles still waiting for a code).
const FIRST_ATTEMPTS_WAIT: Duration = Duration::from_secs(5);
/// How often systemd's status line is refreshed when no watchdog asks for more.
const STATUS_INTERVAL: Duration = Duration::from_secs(30);

/// Everything `serve` needs, loaded and checked.
pub struct Loaded {
    pub config: Config,
    pub seed: Seed,
    pub key: LongTermKey,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{}", .0.join("\n"))]
    Preflight(Vec<String>),
    #[error(transparent)]
    Listen(#[from] ListenError),
}

/// Loads the configuration, the seed and the long-term key, reporting every problem found.
pub fn preflight(config_path: &Path) -> Result<Loaded, Vec<String>> {
    let config = Config::load(config_path).map_err(|error| vec![error.to_string()])?;
    let seed = secret::load_seed(&config.mfa.seed);
    let key = secret::load_long_term_key(&config.aws.credentials, &config.aws.profile);
    match (seed, key) {
        (Ok(seed), Ok(key)) => Ok(Loaded { config, seed, key }),
        (seed, key) => Err([seed.err(), key.err()]
            .into_iter()
            .flatten()
            .map(|e| e.to_string())
            .collect()),
    }
}

/// A running daemon.
pub struct Daemon {
    /// The TCP listener's address (its real port when configured as 0).
    pub tcp_addr: Option<SocketAddr>,
    /// The socket file this process bound (and removes on exit); `None`
    /// when there is none or systemd owns it.
    pub unix_socket: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub store: Arc<Store>,
    notifier: Option<Arc<Notifier>>,
    stop: CancellationToken,
    tasks: TaskTracker,
    servers: TaskTracker,
}

impl Daemon {
    /// Binds the listeners, starts the refreshers and servers, and returns
    /// once every role's first attempt has finished or
    /// [`FIRST_ATTEMPTS_WAIT`] has passed.
    ///
    /// Sockets passed by systemd (`inherited`) are used as they are;
    /// configured listeners without one are bound here.
    pub async fn start(
        loaded: Loaded,
        inherited: ListenFds,
        stop: CancellationToken,
    ) -> Result<Daemon, DaemonError> {
        let Loaded { config, seed, key } = loaded;
        let host: Arc<dyn Clock> = Arc::new(SystemClock);
        let clock = Arc::new(StsClock::new(host));
        let ledger = Arc::new(TotpLedger::new(
            config.mfa.serial_number.clone(),
            &seed,
            clock.clone(),
        ));
        // The ledger's copy is the one that lives on; the loaded seed is zeroed here.
        drop(seed);
        if let Err(error) = ledger.lock_seed() {
            tracing::warn!(%error, "could not lock the seed in memory; it may be swapped out (raise LimitMEMLOCK to allow it)");
        }
        let sts = Sts::new(&config.aws, &key, clock.clone());
        drop(key);

        let listen = &config.listen;
        let (unix, bound_socket) = match (inherited.unix, &listen.unix_socket) {
            (Some(socket), _) => (Some(from_std_unix(socket)?), None),
            (None, Some(path)) => (
                Some(listener::bind_unix(path, listen.socket_group)?),
                Some(path.clone()),
            ),
            (None, None) => (None, None),
        };
        let tcp = match (inherited.tcp, listen.tcp) {
            (Some(socket), _) => Some(from_std_tcp(socket)?),
            (None, Some(addr)) => Some(listener::bind_tcp(addr).await?),
            (None, None) => None,
        };
        let tcp_addr = tcp.as_ref().and_then(|listener| listener.local_addr().ok());
        let token = listener::load_or_create_token(
            "listen.token_file",
            &listen.token_file,
            listen.socket_group,
        )?;

        let mut table = RoleTable {
            default: config.default_role.clone(),
            ..RoleTable::default()
        };
        for spec in &config.roles {
            let mut slot = RoleSlot::new(spec.clone());
            if let Some(path) = &spec.token_file {
                slot.token = Some(listener::load_or_create_token(
                    "role.token_file",
                    path,
                    listen.socket_group,
                )?);
            }
            table.roles.insert(spec.name.clone(), Arc::new(slot));
        }
        let slots: Vec<Arc<RoleSlot>> = table.roles.values().cloned().collect();
        let store = Arc::new(Store::new(table));
        let metrics = Arc::new(Metrics::new(store.clone(), ledger.clone(), clock.clone()));
        let sts = sts.with_metrics(metrics.clone());

        let state = Arc::new(ServerState {
            store: store.clone(),
            clock: clock.clone(),
            ledger: ledger.clone(),
            token,
            listen: listen.clone(),
            metrics: metrics.clone(),
        });
        let router = server::router(state);
        let limits = Limits::new(listen.max_connections);
        let servers = TaskTracker::new();
        if let Some(unix) = unix {
            servers.spawn(listener::serve_unix(
                unix,
                router.clone(),
                limits.clone(),
                stop.clone(),
            ));
        }
        if let Some(tcp) = tcp {
            servers.spawn(listener::serve_tcp(tcp, router, limits, stop.clone()));
        }
        tracing::info!(
            tcp = tcp_addr
                .map(|addr| addr.to_string())
                .as_deref()
                .unwrap_or("-"),
            unix = listen
                .unix_socket
                .as_deref()
                .map(|p| p.display().to_string())
                .as_deref()
                .unwrap_or("-"),
            roles = slots.len(),
            "listening"
        );

        let refresher = Arc::new(Refresher {
            sts,
            ledger,
            clock,
            ahead: config.refresh.ahead,
            sharing: slots.len(),
            metrics,
        });
        let tasks = TaskTracker::new();
        for slot in &slots {
            tasks.spawn(refresher.clone().run(slot.clone(), stop.clone()));
        }
        wait_for_first_attempts(&slots).await;

        let notifier = Notifier::from_env().map(Arc::new);
        if let Some(notifier) = &notifier {
            notify(notifier.ready());
            tasks.spawn(supervise(notifier.clone(), store.clone(), stop.clone()));
        }

        Ok(Daemon {
            tcp_addr,
            unix_socket: bound_socket,
            token_file: config.listen.tcp.map(|_| listen.token_file.clone()),
            store,
            notifier,
            stop,
            tasks,
            servers,
        })
    }

    /// Runs until stopped, then drains and cleans up.
    pub async fn wait(self) {
        self.stop.cancelled().await;
        tracing::info!("stopping: no new connections; draining open ones");
        if let Some(notifier) = &self.notifier {
            notify(notifier.stopping());
        }
        self.tasks.close();
        self.servers.close();
        self.servers.wait().await;
        self.tasks.wait().await;
        if let Some(path) = &self.unix_socket {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!("stopped");
    }
}

fn from_std_unix(
    socket: std::os::unix::net::UnixListener,
) -> Result<tokio::net::UnixListener, ListenError> {
    let io = |source| ListenError::Inherited {
        kind: "unix",
        source,
    };
    socket.set_nonblocking(true).map_err(io)?;
    tokio::net::UnixListener::from_std(socket).map_err(io)
}

fn from_std_tcp(socket: std::net::TcpListener) -> Result<tokio::net::TcpListener, ListenError> {
    let io = |source| ListenError::Inherited {
        kind: "tcp",
        source,
    };
    socket.set_nonblocking(true).map_err(io)?;
    tokio::net::TcpListener::from_std(socket).map_err(io)
}

/// Pets systemd's watchdog from the event loop (never tied to STS
/// success, so an STS outage does not restart the daemon) and keeps the
/// status line current.
async fn supervise(notifier: Arc<Notifier>, store: Arc<Store>, stop: CancellationToken) {
    let watchdog = crate::systemd::watchdog_interval();
    let period = watchdog.map_or(STATUS_INTERVAL, |interval| {
        (interval / 2).min(STATUS_INTERVAL)
    });
    let mut ticks = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        if watchdog.is_some() {
            notify(notifier.watchdog());
        }
        notify(notifier.status(&status_line(&store)));
    }
}

/// "3 roles, 3 usable, next refresh in 21 min".
pub fn status_line(store: &Store) -> String {
    let now = std::time::SystemTime::now();
    let table = store.table();
    let usable = table
        .roles
        .values()
        .filter(|slot| slot.usable(now).is_some())
        .count();
    let next = table
        .roles
        .values()
        .filter_map(|slot| slot.status().next_attempt)
        .min()
        .map(|at| at.duration_since(now).unwrap_or_default());
    let next = match next {
        Some(wait) if wait.as_secs() >= 120 => {
            format!(", next refresh in {} min", wait.as_secs() / 60)
        }
        Some(wait) => format!(", next refresh in {} s", wait.as_secs()),
        None => String::new(),
    };
    format!("{} roles, {usable} usable{next}", table.roles.len())
}

fn notify(result: Result<(), crate::systemd::SystemdError>) {
    if let Err(error) = result {
        tracing::warn!(%error, "could not notify systemd");
    }
}

async fn wait_for_first_attempts(slots: &[Arc<RoleSlot>]) {
    let all_attempted = async {
        for slot in slots {
            let _ = slot
                .usable_or_wait(std::time::SystemTime::now, FIRST_ATTEMPTS_WAIT)
                .await;
        }
    };
    let _ = tokio::time::timeout(FIRST_ATTEMPTS_WAIT, all_attempted).await;
    let ready = slots.iter().filter(|slot| slot.held().is_some()).count();
    tracing::info!(roles_ready = ready, roles = slots.len(), "ready");
}

/// Cancels `stop` on SIGTERM or SIGINT.
pub fn stop_on_signals(stop: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("received SIGTERM"),
            _ = interrupt.recv() => tracing::info!("received SIGINT"),
        }
        stop.cancel();
    });
    Ok(())
}
