//! driftless: the node agent of an immutable fleet.
//!
//! At first boot it fetches one signed, pinned release from git, verifies it,
//! makes the node exactly what the release's node spec says, locks that
//! configuration, and from then on only watches; when the fleet's desired
//! release changes it asks to be replaced instead of upgrading in place.
//!
//! # The map
//!
//! One folder a stage of the pipeline (drawn in `docs/design.md`). The
//! table is also the import order: a module uses only the rows above its
//! own, never one below (`tests/layout.rs` checks it, with the other rules
//! of the tree: no import loops, nothing outside `cli` names `cli`, no
//! source file over 600 lines).
//!
//! | module | owns | never does |
//! |---|---|---|
//! | [`types`], [`error`], [`events`] | validated value types (node and tree paths, durations, modes); one-line error text; journald message ids | depend on any stage |
//! | [`root`] | the root directory handle every filesystem access goes through; managed paths resolved one component at a time; file attributes and mounts | follow a symlink on the way to a managed path |
//! | [`verify`] | SSH signatures (SSHSIG) with ring; allowed_signers; git tag and commit payloads: the verdict a node acts on | I/O beyond reading trust files; reading a release tree |
//! | [`config`] | the agent config, strict YAML, its defaults and checks; the node's id | network; writing anything |
//! | [`source`] | talking to git servers and static mirrors: the streamed protocol-v2 fetch and its pack parser, the channel poll, libgit2 fetches into the cache, `driftless publish`'s files, TLS | trust decisions (it hands bytes to `verify`) |
//! | [`release`] | the verified release as data: obtaining it verified, its node spec, the files of its tree, its encrypted sources; the channel document naming the release to run | write to the node |
//! | [`record`] | what the node remembers and compares: `state.json` and its manifest, `watch.json`, failures, the replacement request, drift comparison, the detector, the node's lifecycle state machine | network; decide what to write |
//! | [`node`] | making and keeping the node: plan (pure), accounts, systemd units, apply under a root, health checks, lock, the gate; which stage an error belongs to | poll the channel; ask to be replaced |
//! | [`fleet`] | the node in its fleet: the watcher daemon, metrics, the rollout policy (pure), etcd coordination, replacement requests | change the node (it never upgrades in place) |
//! | [`exit`] | exit codes, so systemd units and scripts can branch | anything but classify |
//! | [`cli`] | the command line, one file a subcommand | be imported by any module above |
//!
//! `main.rs` only parses the command line and exits with the code
//! [`cli::run`] returns.

pub mod cli;
pub mod config;
pub mod error;
pub mod events;
pub mod exit;
pub mod fleet;
pub mod node;
pub mod record;
pub mod release;
pub mod root;
pub mod source;
pub mod types;
pub mod verify;
