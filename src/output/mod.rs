//! Output: the sparse RAW writer and reports.
pub mod report;
