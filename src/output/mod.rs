//! Output: writing images (sparse files, streams) and reports.

pub mod assemble;
pub mod convert;
pub mod digest;
pub mod guard;
pub mod hash;
pub mod plan;
pub mod report;
pub mod sink;
pub mod temp;
pub mod write;
