//! The assembled guest: which volume is `/`, where the others are mounted (from the
//! guest's fstab), and path resolution that never leaves the guest.

pub mod namespace;

pub use namespace::{Namespace, Pos};
