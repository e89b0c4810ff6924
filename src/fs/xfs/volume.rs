//! XFS behind the filesystem interface of [`crate::fs`]: opening a volume into a
//! tree with its facts, its log report and the geometry a same-type rebuild
//! takes (the primary superblock).

use std::sync::Arc;

use super::ondisk::RawSuperblock;
use super::read::{self, ReadOptions, VolumeInfo};
use crate::disk::Disk;
use crate::error::Result;
use crate::fs::{Facts, OpenOptions, Replay};
use crate::tree::{Flavor, Tree};
use crate::units::human;

/// What an XFS rebuild takes from its source.
#[derive(Debug, Clone)]
pub struct XfsGeometry {
    /// The primary superblock (geometry, features, UUIDs, log size).
    pub sb: RawSuperblock,
    /// Why a rebuild must be refused (V4, unknown ro_compat features).
    pub refusal: Option<String>,
}

/// Opens an XFS volume: the tree, the facts, the log report and the geometry.
pub fn open(disk: Arc<dyn Disk>, opts: &OpenOptions) -> Result<(Tree, Facts, Replay, XfsGeometry)> {
    let ropts = ReadOptions {
        verify_checksums: opts.verify_checksums,
        allow_dirty_log: !opts.replay,
    };
    let mut vol = read::open(disk, &ropts)?;
    let tree = std::mem::replace(&mut vol.tree, Tree::new(Flavor::Synthetic, None));
    let st = &vol.info.log.state;
    let replay = Replay {
        needed: !st.clean,
        replayed: false,
        transactions: 0,
        blocks: 0,
        notes: vol.info.warnings.clone(),
    };
    let facts = facts(&vol.info);
    let geometry = XfsGeometry {
        sb: vol.sb.clone(),
        refusal: vol.info.rebuild_refusal.clone(),
    };
    Ok((tree, facts, replay, geometry))
}

fn facts(i: &VolumeInfo) -> Facts {
    let bs = u64::from(i.block_size);
    let mut json = match serde_json::to_value(i) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    json.insert("free_bytes".into(), i.free_blocks.saturating_mul(bs).into());
    let st = &i.log.state;
    let state = if st.clean {
        "clean"
    } else {
        "log needs recovery"
    };
    let mut text = vec![
        format!("version:      V{}", i.version),
        format!("features:     {}", i.features.join(" ")),
        format!(
            "block size:   {}    sector size: {}    inode size: {}    dir block: {}",
            i.block_size, i.sector_size, i.inode_size, i.dir_block_size
        ),
        format!(
            "AGs:          {} of {} blocks ({} data blocks, {}; {} free)",
            i.ag_count,
            i.ag_blocks,
            i.data_blocks,
            human(i.data_blocks.saturating_mul(bs)),
            human(i.free_blocks.saturating_mul(bs))
        ),
        format!(
            "inodes:       {} allocated, {} free ({} reachable from /)",
            i.inodes, i.free_inodes, i.reachable_inodes
        ),
        format!("state:        {state}"),
        format!(
            "log:          internal, {} blocks at block {}; head at block {} cycle {}, \
             tail at block {} cycle {}{}",
            i.log.blocks,
            i.log.start,
            st.head_block,
            st.head_cycle,
            st.tail_block,
            st.tail_cycle,
            if st.clean { "" } else { " (not replayed)" }
        ),
        format!(
            "unlinked:     {}{}",
            i.unlinked,
            if i.unlinked > 0 {
                " (unreachable, left out)"
            } else {
                ""
            }
        ),
    ];
    if let Some(r) = &i.rebuild_refusal {
        text.push(format!("rebuild:      refused: {r}"));
    }
    text.extend(i.warnings.iter().map(|w| format!("warning:      {w}")));
    Facts {
        label: i.label.clone(),
        uuid: i.uuid.clone(),
        state: state.to_string(),
        journal: "internal".to_string(),
        warnings: i.warnings.clone(),
        text,
        json,
    }
}
