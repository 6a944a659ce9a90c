//! What the node remembers and compares: the apply record and its manifest,
//! the watcher's record, drift comparison and the detector.

pub mod detect;
pub mod drift;
pub mod effective;
pub mod floor;
pub mod lifecycle;
pub mod replacement;
pub mod secret;
pub mod state;
pub mod volatile;
pub mod watch_state;
