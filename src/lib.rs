//! imgsan: an offline disk-image sanitizer.
//!
//! The library holds all the logic; the `imgsan` binary is a thin front end. Data
//! flows one way (see DESIGN.md in the project's shared notes and the README):
//! image file -> [`disk`] (RAW/QCOW2, partitions) -> [`fs`] readers -> [`tree::Tree`]
//! -> rules and policy -> [`fs`] builders -> [`output`] (whole-disk RAW writer).

#![deny(unsafe_code)]

pub mod batch;
pub mod browse;
pub mod check;
pub mod disk;
pub mod error;
pub mod fs;
pub mod guest;
pub mod image;
pub mod inspect;
pub mod output;
pub mod pipeline;
pub mod policy;
pub mod progress;
pub mod repack;
pub mod rules;
pub mod sanitize;
pub mod tree;
pub mod units;
pub mod upload;

pub use error::{Error, ErrorKind, Location, Result};
