//! The node in its fleet: the watcher, metrics, the rollout policy, etcd
//! coordination, replacement requests.

pub mod coordinate;
pub mod etcd;
pub mod lint;
pub mod metrics;
pub mod rollout;
pub mod roster;
pub mod terminate;
pub mod watch;
