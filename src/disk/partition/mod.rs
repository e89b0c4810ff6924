//! Partition tables (placeholder until the parsers land).
