//! Output: writing images (sparse files, streams) and reports.

pub mod convert;
pub mod sink;
