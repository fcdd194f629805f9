//! `assumed` keeps MFA-protected AWS role sessions fresh and serves them to
//! local processes in the ECS container-credentials format.
//!
//! Data flows one way, and the modules follow it:
//!
//! - [`config`]: the TOML file and `ASSUMED_*` overrides, validated whole.
//! - [`secret`]: the TOTP seed and the long-term key, read under OpenSSH's
//!   file rule and held in zeroizing wrappers; process hardening.
//! - [`clock`]: the host clock and STS's, learned from `Date` headers.
//! - [`totp`]: the per-device ledger that hands out each code once, one per
//!   step, within STS's verification budget.
//! - [`sts`]: AssumeRole and GetSessionToken, and what their errors mean.
//! - [`credential`]: a vended credential and its ECS JSON body.
//! - [`session`]: per-role state and the refresher that keeps it fresh.
//! - [`server`]: the router, its guards, and the Unix and TCP listeners.
//! - [`metrics`]: the Prometheus metrics behind `/metrics`.
//! - [`systemd`]: readiness, status and watchdog notifications, and
//!   sockets passed by socket activation.
//! - [`daemon`]: wires the above together and runs it.
//! - [`standin`]: a local STS that speaks the real protocol, for `demo`
//!   and the tests.
//! - [`demo`]: the daemon against the stand-in, with no AWS account.
//! - [`client`]: the `credential-process` and `status` commands, which
//!   talk to a running daemon over its socket.
//! - [`enroll`]: creating, enabling, resynchronising and removing the
//!   virtual MFA device through IAM, and storing its seed safely.
//! - [`policy`]: the IAM policies and trust policy a host needs.
//! - [`cli`]: the command line.
//! - [`logging`]: where log lines go, gathered into few writes under load.

pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod credential;
pub mod daemon;
pub mod demo;
pub mod enroll;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod secret;
pub mod server;
pub mod session;
pub mod standin;
pub mod sts;
pub mod systemd;
pub mod totp;
