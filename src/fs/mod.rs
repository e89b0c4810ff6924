//! Filesystem readers and builders. Each filesystem module reads a volume into a
//! [`crate::tree::Tree`] and builds a fresh volume from one; none of them knows
//! about policy or rules.

pub mod codec;
pub mod ext4;
pub mod xfs;
