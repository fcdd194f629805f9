//! The daemon: configuration → secrets → TOTP ledger → STS → refreshers →
//! listeners, started in that order and stopped in reverse.
//!
//! [`preflight`] loads and checks everything `serve` needs without
//! touching the network; `check-config` is exactly that. [`Daemon::start`]
//! binds the listeners (so a bad socket path fails before anything else
//! happens), starts one refresher per role (and, in session-token mode, the
//! MFA session's) and the servers, and returns; [`Daemon::wait`] runs until
//! the stop token is cancelled, then stops accepting, drains open
//! connections and removes the socket file.
//!
//! SIGHUP reloads: the configuration, the seed and the key are read and
//! checked again as at start. A new configuration with any problem is
//! refused, every problem logged, and the running one kept. Otherwise:
//! - roles whose settings are unchanged keep their slot, their held
//!   credential and their refresher; roles added or changed get a new slot
//!   and refresher; roles removed stop being served (404) and their
//!   refreshers stop;
//! - a new key or `[aws]` settings take effect on the next STS call;
//! - a change of `mfa.session` or `refresh.ahead` restarts every
//!   refresher, keeping the credentials held;
//! - roles (and the MFA session) whose last attempt failed in a way only an
//!   operator can fix are retried at once;
//! - listener settings (`[listen]`) are not applied: sockets are bound once,
//!   so a log line says to restart;
//! - a different MFA device (serial number or seed) gets a ledger of its
//!   own, and every refresher restarts on it while the credentials held
//!   keep being served, so a seed is rotated without a gap.
//!
//! systemd hears `RELOADING=1` when a reload starts and `READY=1` when it
//! is over, whatever its outcome.
//!
//! The daemon also watches the wall clock ([`ClockJumps`]) and wakes every
//! refresher when it is set, so refresh times are re-evaluated at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{Clock, ClockJumps, StsClock, SystemClock};
use crate::config::{Config, ListenSettings, RoleName, RoleSpec};
use crate::metrics::Metrics;
use crate::secret::{self, LongTermKey, Seed};
use crate::server::listener::{self, Limits, ListenError};
use crate::server::{self, ServerState};
use crate::session::{MfaSession, Refresher, RoleSlot, RoleTable, Store};
use crate::sts::Sts;
use crate::systemd::{ListenFds, Notifier};
use crate::totp::{CurrentLedger, TotpLedger};

/// How long start-up waits for the first attempts before calling itself
/// ready (with 503s for roles still waiting for a code).
const FIRST_ATTEMPTS_WAIT: Duration = Duration::from_secs(5);
/// How often systemd's status line is refreshed when no watchdog asks for more.
const STATUS_INTERVAL: Duration = Duration::from_secs(30);

/// Everything `serve` needs, loaded and checked.
pub struct Loaded {
    /// Where the configuration was read from, to read it again on reload.
    pub path: PathBuf,
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
    #[error("cannot handle SIGHUP for reloading: {0}")]
    Signal(#[source] std::io::Error),
}

/// Loads the configuration, the seed and the long-term key, reporting every problem found.
pub fn preflight(config_path: &Path) -> Result<Loaded, Vec<String>> {
    let config = Config::load(config_path).map_err(|error| vec![error.to_string()])?;
    let seed = secret::load_seed(&config.mfa.seed);
    let key = secret::load_long_term_key(&config.aws.credentials, &config.aws.profile);
    // Token files are checked here and created at start when missing.
    let listener_token = config
        .listen
        .tcp
        .map(|_| ("listen.token_file", &config.listen.token_file));
    let role_tokens = config
        .roles
        .iter()
        .filter_map(|role| Some(("role.token_file", role.token_file.as_ref()?)));
    let token_problems: Vec<String> = listener_token
        .into_iter()
        .chain(role_tokens)
        .filter_map(|(key, path)| listener::read_token(key, path).err())
        .map(|error| error.to_string())
        .collect();
    match (seed, key) {
        (Ok(seed), Ok(key)) if token_problems.is_empty() => Ok(Loaded {
            path: config_path.to_owned(),
            config,
            seed,
            key,
        }),
        (seed, key) => Err([
            seed.err().map(|e| e.to_string()),
            key.err().map(|e| e.to_string()),
        ]
        .into_iter()
        .flatten()
        .chain(token_problems)
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
    running: Running,
    hangups: Signal,
}

/// What a reload compares the new configuration with, and replaces.
struct Running {
    path: PathBuf,
    /// The configuration in effect (its `[listen]` part is the one bound at start).
    config: Config,
    clock: Arc<StsClock>,
    metrics: Arc<Metrics>,
    /// Shared with health and metrics; replaced when the device changes.
    ledger: CurrentLedger,
    refresher: Arc<Refresher>,
    mfa_task: CancellationToken,
    role_tasks: BTreeMap<RoleName, CancellationToken>,
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
        let Loaded {
            path,
            config,
            seed,
            key,
        } = loaded;
        if let Some(note) = config.default_role_note() {
            tracing::warn!("{note}");
        }
        // Before anything is announced, so an early SIGHUP never kills the daemon.
        let hangups = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;
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
        // Before binding, so a bad token file leaves no socket behind.
        let token = listener::load_or_create_token(
            "listen.token_file",
            &listen.token_file,
            listen.socket_group,
        )?;
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

        let mfa_session = mfa_session(&config);
        let mut table = RoleTable {
            default: config.default_role.clone(),
            mfa_session: mfa_session.clone(),
            ..RoleTable::default()
        };
        for spec in &config.roles {
            table
                .roles
                .insert(spec.name.clone(), Arc::new(new_slot(spec, listen)?));
        }
        let slots: Vec<Arc<RoleSlot>> = table.roles.values().cloned().collect();
        let store = Arc::new(Store::new(table));
        let current_ledger: CurrentLedger = Arc::new(ArcSwap::new(ledger.clone()));
        let metrics = Arc::new(Metrics::new(
            store.clone(),
            current_ledger.clone(),
            clock.clone(),
        ));
        let refresher = Arc::new(Refresher::new(
            sts.with_metrics(metrics.clone()),
            ledger.clone(),
            clock.clone(),
            config.refresh.ahead,
            config.roles.len(),
            mfa_session,
            metrics.clone(),
        ));

        let state = Arc::new(ServerState {
            store: store.clone(),
            clock: clock.clone(),
            ledger: current_ledger.clone(),
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
            mfa_session = config
                .mfa
                .session
                .map(|d| humantime::format_duration(d).to_string())
                .as_deref()
                .unwrap_or("-"),
            "listening"
        );

        let tasks = TaskTracker::new();
        let mut running = Running {
            path,
            config,
            clock,
            metrics: metrics.clone(),
            ledger: current_ledger,
            refresher,
            mfa_task: CancellationToken::new(),
            role_tasks: BTreeMap::new(),
        };
        running.start_mfa_session(&tasks, &stop);
        for slot in &slots {
            running.start_role(slot.clone(), &tasks, &stop);
        }
        tasks.spawn(wake_on_clock_jumps(store.clone(), stop.clone()));
        wait_for_first_attempts(&slots).await;

        let notifier = Notifier::from_env().map(Arc::new);
        if let Some(notifier) = &notifier {
            notify(notifier.ready());
            tasks.spawn(supervise(notifier.clone(), store.clone(), stop.clone()));
        }

        Ok(Daemon {
            tcp_addr,
            unix_socket: bound_socket,
            token_file: running
                .config
                .listen
                .tcp
                .map(|_| running.config.listen.token_file.clone()),
            store,
            notifier,
            stop,
            tasks,
            servers,
            running,
            hangups,
        })
    }

    /// Runs until stopped, reloading on SIGHUP, then drains and cleans up.
    pub async fn wait(mut self) {
        loop {
            tokio::select! {
                () = self.stop.cancelled() => break,
                _ = self.hangups.recv() => self.reload(),
            }
        }
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

    /// Reads the configuration, seed and key again and applies what changed,
    /// or keeps everything as it is when anything is wrong.
    fn reload(&mut self) {
        if let Some(notifier) = &self.notifier {
            notify(notifier.reloading());
        }
        let path = self.running.path.clone();
        tracing::info!(config = %path.display(), "received SIGHUP: reloading");
        match preflight(&path) {
            Ok(loaded) => {
                if let Err(problem) = self.apply(loaded) {
                    tracing::warn!(problem = %problem, "reload refused; the running configuration stays in effect");
                }
            }
            Err(problems) => {
                let lines: Vec<&str> = problems
                    .iter()
                    .flat_map(|problem| problem.lines())
                    .map(|line| line.trim().trim_start_matches("- "))
                    // The list's heading ("… has 2 problem(s):") is not one.
                    .filter(|line| !line.is_empty() && !line.ends_with("problem(s):"))
                    .collect();
                for line in &lines {
                    tracing::warn!(config = %path.display(), problem = %line, "reload refused: problem in the new configuration");
                }
                tracing::warn!(
                    config = %path.display(),
                    "reload refused; the running configuration stays in effect: fix the problems above and reload again"
                );
            }
        }
        if let Some(notifier) = &self.notifier {
            notify(notifier.ready());
        }
    }

    fn apply(&mut self, loaded: Loaded) -> Result<(), ReloadRefused> {
        let Loaded {
            mut config,
            seed,
            key,
            ..
        } = loaded;
        let running = &mut self.running;
        let current = running.refresher.ledger().clone();
        let new_device = config.mfa.serial_number != running.config.mfa.serial_number
            || !current.has_seed(&seed);
        // Another device starts a ledger of its own: the codes spent and the
        // budget used belong to the old device, and do not limit the new one.
        let ledger = if new_device {
            let ledger = Arc::new(TotpLedger::new(
                config.mfa.serial_number.clone(),
                &seed,
                running.clock.clone(),
            ));
            if let Err(error) = ledger.lock_seed() {
                tracing::warn!(%error, "could not lock the new seed in memory; it may be swapped out (raise LimitMEMLOCK to allow it)");
            }
            ledger
        } else {
            current
        };
        drop(seed);
        if config.listen != running.config.listen {
            tracing::warn!(
                "[listen] settings changed; listeners are bound once, so they take effect only on a restart (systemctl restart assumed); keeping the current ones"
            );
            config.listen = running.config.listen.clone();
        }

        // Everything that can fail happens before anything changes.
        let current = self.store.table();
        let mut roles = BTreeMap::new();
        let mut started = Vec::new();
        for spec in &config.roles {
            let slot = match current.roles.get(&spec.name) {
                Some(slot) if slot.spec == *spec => slot.clone(),
                _ => {
                    started.push(spec.name.clone());
                    Arc::new(new_slot(spec, &config.listen).map_err(ReloadRefused::Token)?)
                }
            };
            roles.insert(spec.name.clone(), slot);
        }
        let removed: Vec<RoleName> = current
            .roles
            .keys()
            .filter(|name| !roles.contains_key(*name))
            .cloned()
            .collect();
        drop(current);

        let sts = Sts::new(&config.aws, &key, running.clock.clone())
            .with_metrics(running.metrics.clone());
        drop(key);
        let restart_all = new_device
            || config.mfa.session != running.config.mfa.session
            || config.refresh != running.config.refresh;
        if new_device {
            running.ledger.store(ledger.clone());
            tracing::info!(serial_number = %config.mfa.serial_number, "switched to another MFA device");
        }
        if restart_all {
            running.refresher = Arc::new(Refresher::new(
                sts,
                ledger,
                running.clock.clone(),
                config.refresh.ahead,
                roles.len(),
                mfa_session(&config),
                running.metrics.clone(),
            ));
        } else {
            running.refresher.replace_sts(sts);
            running.refresher.set_sharing(roles.len());
        }

        self.store.replace(RoleTable {
            roles: roles.clone(),
            default: config.default_role.clone(),
            mfa_session: running.refresher.mfa_session().cloned(),
        });
        for name in &removed {
            if let Some(task) = running.role_tasks.remove(name) {
                task.cancel();
            }
        }
        if restart_all {
            running.start_mfa_session(&self.tasks, &self.stop);
        } else if let Some(mfa) = running.refresher.mfa_session()
            && mfa.needs_operator()
        {
            mfa.retry_now();
        }
        let mut retried = Vec::new();
        for (name, slot) in &roles {
            if restart_all || started.contains(name) {
                running.start_role(slot.clone(), &self.tasks, &self.stop);
            } else if slot.needs_operator() {
                slot.retry_now();
                retried.push(name.as_str());
            }
        }
        tracing::info!(
            roles = roles.len(),
            started = %names(&started),
            removed = %names(&removed),
            retried = %retried.join(","),
            refreshers_restarted = restart_all,
            "reloaded"
        );
        if let Some(note) = config.default_role_note() {
            tracing::warn!("{note}");
        }
        running.config = config;
        Ok(())
    }
}

/// Why a configuration that passed its checks was still not applied.
#[derive(Debug, thiserror::Error)]
enum ReloadRefused {
    #[error(transparent)]
    Token(ListenError),
}

fn names(names: &[RoleName]) -> String {
    let names: Vec<&str> = names.iter().map(RoleName::as_str).collect();
    names.join(",")
}

impl Running {
    /// Starts `slot`'s refresher, stopping any refresher of the same name.
    fn start_role(&mut self, slot: Arc<RoleSlot>, tasks: &TaskTracker, stop: &CancellationToken) {
        let token = stop.child_token();
        if let Some(previous) = self
            .role_tasks
            .insert(slot.spec.name.clone(), token.clone())
        {
            previous.cancel();
        }
        tasks.spawn(self.refresher.clone().run(slot, token));
    }

    /// Starts the MFA session's refresher (a no-op without one), stopping the previous one.
    fn start_mfa_session(&mut self, tasks: &TaskTracker, stop: &CancellationToken) {
        let token = stop.child_token();
        std::mem::replace(&mut self.mfa_task, token.clone()).cancel();
        tasks.spawn(self.refresher.clone().run_mfa_session(token));
    }
}

/// The MFA session of session-token mode, if configured.
fn mfa_session(config: &Config) -> Option<Arc<MfaSession>> {
    let duration = config.mfa.session?;
    let account = crate::config::parse_iam_arn(&config.mfa.serial_number, "mfa")
        .map(|(account, _)| account.to_owned())
        .unwrap_or_default();
    Some(Arc::new(MfaSession::new(duration, account)))
}

/// A slot for `spec`, with its own token loaded (or created) when it has one.
fn new_slot(spec: &RoleSpec, listen: &ListenSettings) -> Result<RoleSlot, ListenError> {
    let mut slot = RoleSlot::new(spec.clone());
    if let Some(path) = &spec.token_file {
        slot.token = Some(listener::load_or_create_token(
            "role.token_file",
            path,
            listen.socket_group,
        )?);
    }
    Ok(slot)
}

/// Wakes every refresher when the wall clock is set, so each re-reads it.
async fn wake_on_clock_jumps(store: Arc<Store>, stop: CancellationToken) {
    let mut jumps = match ClockJumps::new() {
        Ok(jumps) => jumps,
        Err(error) => {
            tracing::warn!(%error, "cannot watch the wall clock for jumps; refreshers will notice one within a minute");
            return;
        }
    };
    loop {
        tokio::select! {
            jumped = jumps.next() => if let Err(error) = jumped {
                tracing::warn!(%error, "stopped watching the wall clock for jumps; refreshers will notice one within a minute");
                return;
            },
            () = stop.cancelled() => return,
        }
        tracing::info!(
            "the wall clock was set or the host resumed; re-evaluating every refresh time"
        );
        let table = store.table();
        for slot in table.roles.values() {
            slot.wake();
        }
        if let Some(mfa) = &table.mfa_session {
            mfa.wake();
        }
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
