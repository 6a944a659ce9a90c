//! The verified release as data: the node spec, the files of the release
//! tree, its encrypted sources (secrets), and the fleet's channel document
//! that names the release to run, fetched as a candidate into quarantine
//! and admitted once verified.

pub mod candidate;
pub mod channel;
pub mod clock;
pub mod lint;
pub mod local;
pub mod obtain;
pub mod sealed;
pub mod spec;
pub mod tree;
