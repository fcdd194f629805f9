//! `assumed` keeps MFA-protected AWS role sessions fresh and serves them to
//! local processes in the ECS container-credentials format.

pub mod systemd;
