//! Filesystem signatures (placeholder until the prober lands).
