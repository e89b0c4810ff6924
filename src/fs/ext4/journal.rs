//! jbd2 journal replay into an in-memory overlay (placeholder: the replayer has
//! not landed; `replay` reports that nothing was replayed).
//!
//! Contract (stable, the ext4 reader depends on it):
//! - `replay` reads the journal through `read_block` (filesystem block numbers) and
//!   the journal inode's mapping, and returns the final content of every filesystem
//!   block the committed transactions wrote, after revokes, as an [`Overlay`].
//! - It never writes anything. The reader consults the overlay before the volume
//!   for every block it reads, including the superblock's block.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::superblock::Superblock;
use crate::error::Result;

/// Where the journal lives: the journal inode's extents as
/// (logical block, physical block, length in blocks), sorted by logical block.
#[derive(Debug, Clone, Default)]
pub struct JournalLocation {
    pub extents: Vec<(u64, u64, u64)>,
    /// Journal length in blocks (from the journal inode's size).
    pub len_blocks: u64,
}

/// Filesystem blocks replaced by the journal: block number -> block content.
#[derive(Debug, Clone, Default)]
pub struct Overlay {
    pub blocks: BTreeMap<u64, Arc<[u8]>>,
}

impl Overlay {
    pub fn get(&self, block: u64) -> Option<&Arc<[u8]>> {
        self.blocks.get(&block)
    }

    /// Overlaid blocks in `start..start + len`.
    pub fn range(&self, start: u64, len: u64) -> impl Iterator<Item = (&u64, &Arc<[u8]>)> {
        self.blocks.range(start..start.saturating_add(len))
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

/// What replay found and did, for `inspect` and reports.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplayReport {
    /// The superblock asked for recovery (needs_recovery).
    pub needed: bool,
    /// Committed transactions applied.
    pub transactions: u64,
    /// Distinct filesystem blocks written by replay.
    pub blocks: u64,
    /// Block writes skipped because a later revoke record cancelled them.
    pub revoked: u64,
    /// The sequence numbers of the first and last transactions applied.
    pub first_sequence: Option<u32>,
    pub last_sequence: Option<u32>,
    /// A fast-commit area held entries that were not replayed.
    pub fast_commit_skipped: bool,
    /// Things worth telling the user (a torn last transaction, ...).
    pub notes: Vec<String>,
}

/// Replay the journal. `read_block(n, buf)` reads filesystem block `n` of the volume
/// (without any overlay).
pub fn replay(
    sb: &Superblock,
    journal: &JournalLocation,
    read_block: &(dyn Fn(u64, &mut [u8]) -> Result<()> + Sync),
) -> Result<(Overlay, ReplayReport)> {
    let _ = (journal, read_block);
    let report = ReplayReport {
        needed: sb.has_incompat(super::superblock::incompat::RECOVER),
        notes: vec!["journal replay not implemented yet".into()],
        ..Default::default()
    };
    Ok((Overlay::default(), report))
}
