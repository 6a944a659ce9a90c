//! Talking to git servers: the streamed protocol-v2 fetch and its pack
//! parser, the channel poll, libgit2 fetches into the cache (through a
//! quarantine, and pruned), TLS; and to static mirrors of `driftless
//! publish`'s files (`artifact`), read through the same parser and
//! quarantine.

pub mod artifact;
pub mod checked;
pub mod fetch;
pub mod libgit;
pub mod origin;
pub mod pack;
pub mod permanent;
pub mod poll;
pub mod prune;
pub mod quarantine;
pub mod stream;
#[cfg(test)]
pub(crate) mod test_git;
pub mod tls;
