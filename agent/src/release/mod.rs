//! The verified release as data: the node spec, the files of the release
//! tree, and the fleet's channel document that names the release to run.

pub mod channel;
pub mod lint;
pub mod local;
pub mod obtain;
pub mod spec;
pub mod tree;
