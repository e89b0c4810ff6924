//! Output: the sparse RAW writer and reports.
