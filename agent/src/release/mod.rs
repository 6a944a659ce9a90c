//! The verified release as data: the node spec, the files of the release
//! tree, its encrypted sources (secrets), and the fleet's channel document
//! that names the release to run.

pub mod channel;
pub mod obtain;
pub mod sealed;
pub mod spec;
pub mod tree;
