//! Helpers shared by the integration tests: the random tree generator, the
//! Tree-versus-model comparison, and ext4 image tooling. Each test binary uses
//! a different subset.
#![allow(dead_code)]

pub mod check;
pub mod ext4img;
pub mod gen;
pub mod xfs;
