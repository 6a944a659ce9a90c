//! Making and keeping the node: plan, accounts, systemd units, apply,
//! health checks, lock, the gate, the release's secrets.

pub mod accounts;
pub mod anchor;
pub mod apply;
pub mod diff;
pub mod effective;
pub mod floor;
pub mod gate;
pub mod health;
pub mod lint;
pub mod lock;
pub mod plan;
pub mod secrets;
pub mod stage;
pub mod systemd;
