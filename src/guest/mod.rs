//! The assembled guest: which volume is `/`, where the others are mounted (from the
//! guest's fstab), and path resolution that never leaves the guest.

pub mod assemble;
pub mod namespace;

pub use assemble::{assemble, Guest, MountResolution, Resolution, VolumeId};
pub use namespace::{Namespace, Pos};
