//! ext2/3/4 behind the filesystem interface of [`crate::fs`]: opening a volume
//! into a tree with its facts, and rebuilding from a tree with the source's
//! geometry (superblock, journal, orphan file, boot block).

use std::fmt::Write as _;
use std::sync::Arc;

use super::build::{self, BuildOptions, JournalSpec};
use super::journal::ondisk::JournalSuperblock;
use super::read::{self, ReadOptions, VolumeInfo};
use super::superblock::Superblock;
use crate::disk::Disk;
use crate::error::Result;
use crate::fs::{BuildStats, Built, Facts, OpenOptions, Replay, TargetSize};
use crate::tree::{Flavor, Tree};
use crate::units::human;

/// What an ext4 rebuild takes from its source.
#[derive(Debug, Clone)]
pub struct Ext4Geometry {
    /// The superblock after journal replay.
    pub sb: Superblock,
    /// The journal's superblock, to recreate the journal with the same size and
    /// features.
    pub journal_sb: Option<JournalSuperblock>,
    pub orphan_file_blocks: Option<u32>,
    /// The volume's first 1024 bytes, written back when not all zero.
    pub boot_block: Arc<[u8]>,
}

/// Opens an ext2/3/4 volume: the tree, the facts, the replay report and the
/// geometry.
pub fn open(
    disk: Arc<dyn Disk>,
    opts: &OpenOptions,
) -> Result<(Tree, Facts, Replay, Ext4Geometry)> {
    let ropts = ReadOptions {
        verify_checksums: opts.verify_checksums,
        replay_journal: opts.replay,
    };
    let mut boot = vec![0u8; 1024.min(disk.len() as usize)];
    disk.read_at(0, &mut boot)?;
    let mut vol = read::open(disk, &ropts)?;
    let tree = std::mem::replace(&mut vol.tree, Tree::new(Flavor::Synthetic, None));
    let j = &vol.journal;
    let replay = Replay {
        needed: vol.info.journal.needs_recovery,
        replayed: vol.info.journal.replayed,
        transactions: j.transactions,
        blocks: j.blocks,
        notes: j.notes.clone(),
    };
    let facts = facts(&vol.info, j.transactions, j.blocks, j.revoked, &j.notes);
    let geometry = Ext4Geometry {
        sb: vol.sb.clone(),
        journal_sb: vol.journal_sb.clone(),
        orphan_file_blocks: vol.orphan_file_blocks,
        boot_block: Arc::from(boot),
    };
    Ok((tree, facts, replay, geometry))
}

/// `inspect`'s details: the reader's facts, sizes in bytes, and what replay did.
fn facts(i: &VolumeInfo, transactions: u64, blocks: u64, revoked: u64, notes: &[String]) -> Facts {
    let bs = u64::from(i.block_size);
    let used_bytes = i.used_blocks.saturating_mul(bs);
    let free_bytes = i.free_blocks.saturating_mul(bs);
    let mut json = match serde_json::to_value(i) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    json.insert("used_bytes".into(), used_bytes.into());
    json.insert("free_bytes".into(), free_bytes.into());
    json.insert("transactions_replayed".into(), transactions.into());
    json.insert("blocks_replayed".into(), blocks.into());
    json.insert("blocks_revoked".into(), revoked.into());
    json.insert("journal_notes".into(), notes.to_vec().into());

    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let mut text = vec![
        format!("features:     {}", i.features.join(" ")),
        format!(
            "block size:   {}    inode size: {}    groups: {}",
            i.block_size, i.inode_size, i.groups
        ),
        format!(
            "inodes:       {} total, {} used, {} free ({} reachable from /)",
            i.inodes_count, i.used_inodes, i.free_inodes, i.reachable_inodes
        ),
        format!(
            "blocks:       {} total, {} used ({}), {} free ({}), {} reserved",
            i.blocks_count,
            i.used_blocks,
            human(used_bytes),
            i.free_blocks,
            human(free_bytes),
            i.reserved_blocks
        ),
        format!("state:        {}", i.state),
    ];
    let jn = &i.journal;
    let mut journal = jn.kind.clone();
    if jn.kind != "none" {
        if let Some(ino) = jn.inode {
            let _ = write!(journal, " (inode {ino}, {} blocks)", jn.blocks);
        }
        let _ = write!(
            journal,
            ", needs_recovery {}, replayed {}",
            yes_no(jn.needs_recovery),
            yes_no(jn.replayed)
        );
        if jn.replayed {
            let _ = write!(
                journal,
                " ({transactions} transactions, {blocks} blocks, {revoked} revoked)"
            );
        }
    }
    text.push(format!("journal:      {journal}"));
    text.extend(notes.iter().map(|n| format!("              {n}")));
    text.push(format!(
        "orphans:      {}{}",
        i.orphans,
        if i.orphans > 0 {
            " (unreachable, left out)"
        } else {
            ""
        }
    ));
    // The reader repeats replay notes among its warnings; say them once.
    text.extend(
        i.warnings
            .iter()
            .filter(|w| !notes.contains(w))
            .map(|w| format!("warning:      {w}")),
    );
    Facts {
        label: i.label.clone(),
        uuid: i.uuid.clone(),
        state: i.state.clone(),
        journal: jn.kind.clone(),
        warnings: i.warnings.clone(),
        text,
        json,
    }
}

/// Rebuilds an ext4 volume holding `tree` with the source's geometry.
pub fn build(tree: &Tree, g: &Ext4Geometry, size: TargetSize) -> Result<Built> {
    let journal = g.journal_sb.as_ref().map(|j| JournalSpec {
        blocks: j.s_maxlen,
        fc_blocks: j.s_num_fc_blks,
        feature_compat: j.s_feature_compat,
        feature_incompat: j.s_feature_incompat,
        feature_ro_compat: j.s_feature_ro_compat,
        max_transaction: j.s_max_transaction,
        max_trans_data: j.s_max_trans_data,
    });
    let opts = BuildOptions {
        size,
        journal,
        boot_block: Some(g.boot_block.clone()),
        orphan_file_blocks: g.orphan_file_blocks,
        ..Default::default()
    };
    let built = build::build(tree, &g.sb, &opts)?;
    let s = &built.stats;
    let mut detail = match serde_json::to_value(s) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    for k in ["volume_bytes", "data_bytes", "metadata_bytes", "min_bytes"] {
        detail.remove(k);
    }
    Ok(Built {
        plan: built.plan,
        stats: BuildStats {
            volume_bytes: s.volume_bytes,
            data_bytes: s.data_bytes,
            metadata_bytes: s.metadata_bytes,
            min_bytes: s.min_bytes,
            normalised: Vec::new(),
            detail,
        },
    })
}
