//! Progress reporting as an interface, so that the library can say how far a long
//! job has got without knowing whether anyone is watching. The binary decides what
//! to show (indicatif bars on a terminal, nothing in CI).

/// Receives progress from long-running work. Implementations must be cheap to call
/// from many threads.
pub trait Progress: Send + Sync {
    /// A new phase begins; `total` is its size in `unit`s (0 when unknown).
    fn start(&self, phase: &str, total: u64, unit: Unit);
    /// `n` more units of the current phase are done.
    fn advance(&self, n: u64);
    /// The current phase is done.
    fn finish(&self);
    /// A one-line note for the user (a fallback taken, a warning).
    fn note(&self, _line: &str) {}
}

/// What a phase counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Items,
}

/// Shows nothing.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: u64, _: Unit) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}
