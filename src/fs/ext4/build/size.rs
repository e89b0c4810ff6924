//! Sizing: the journal to create and the block count of the new filesystem
//! (the source's, an explicit size, or the smallest that holds the tree plus a
//! margin), with the geometry fields of the target superblock that follow from
//! it.

use super::layout::Geometry;
use super::{journal, BuildOptions, JournalSpec, TargetSize};
use crate::error::{Error, Result};
use crate::fs::ext4::superblock::{compat, incompat, Superblock};

pub(super) fn too_small(sb: &Superblock, min_blocks: u64) -> Error {
    let bs = u64::from(sb.block_size());
    // The input decides this (its files, or a --size the operator gave), not the
    // output device: exit 3, with the sizes, rather than "could not write".
    Error::unsupported(format!(
        "rebuild of this tree: it does not fit the ext4 volume of {} bytes ({} blocks); \
         its files, directories, journal and metadata need at least {} bytes ({} MiB). \
         A source whose files claim more blocks than it has (cross-linked blocks) \
         gives this too",
        sb.blocks_count() * bs,
        sb.blocks_count(),
        min_blocks * bs,
        (min_blocks * bs).div_ceil(1 << 20)
    ))
}

/// The tree has more inodes than a volume of this size gets.
fn too_few_inodes(sb: &Superblock, inodes: u64) -> Error {
    Error::unsupported(format!(
        "rebuild of this tree: it does not fit the ext4 volume of {} bytes; it needs {inodes} \
         inodes and that size gives {}",
        sb.blocks_count() * u64::from(sb.block_size()),
        sb.s_inodes_count
    ))
}

/// The journal to create, if the source has one.
pub(super) fn journal_spec(sb: &Superblock, opts: &BuildOptions) -> Result<Option<JournalSpec>> {
    if !sb.has_compat(compat::HAS_JOURNAL) {
        return Ok(None);
    }
    let bs = u64::from(sb.block_size());
    let spec = match opts.journal {
        Some(j) => j,
        None => {
            let total = if sb.s_jnl_backup_type == 1 {
                ((u64::from(sb.s_jnl_blocks[15]) << 32) | u64::from(sb.s_jnl_blocks[16])) / bs
            } else {
                0
            };
            let total = if total == 0 {
                default_journal_blocks(sb.blocks_count())
            } else {
                total
            };
            let total = u32::try_from(total)
                .map_err(|_| Error::unsupported(format!("a journal of {total} blocks")))?;
            // mke2fs sizes a fast-commit area at 1/64 of the journal proper.
            let fc = if sb.has_compat(compat::FAST_COMMIT) {
                total - (u64::from(total) * 64 / 65) as u32
            } else {
                0
            };
            JournalSpec {
                blocks: total,
                fc_blocks: fc,
                feature_compat: 0,
                feature_incompat: 0,
                feature_ro_compat: 0,
                max_transaction: 0,
                max_trans_data: 0,
            }
        }
    };
    if spec.blocks < 1024 || spec.fc_blocks >= spec.blocks {
        return Err(Error::unsupported(format!(
            "a journal of {} blocks ({} fast-commit): jbd2 needs at least 1024",
            spec.blocks, spec.fc_blocks
        )));
    }
    if spec.feature_incompat & !journal::features::INCOMPAT_KNOWN != 0 {
        return Err(Error::unsupported(format!(
            "jbd2 incompatible features {:#x}",
            spec.feature_incompat
        )));
    }
    Ok(Some(spec))
}

/// `ext2fs_default_journal_size`.
pub(super) fn default_journal_blocks(blocks: u64) -> u64 {
    match blocks {
        b if b < 32768 => 1024,
        b if b < 256 * 1024 => 4096,
        b if b < 512 * 1024 => 8192,
        b if b < 4096 * 1024 => 16384,
        b if b < 8192 * 1024 => 32768,
        b if b < 16384 * 1024 => 65536,
        b if b < 32768 * 1024 => 131072,
        _ => 262144,
    }
}

/// Choose the block count and fill the target superblock's geometry fields.
/// `content` is the blocks the tree, journal and resize inode need besides fixed
/// metadata; `inodes` the highest inode number needed.
pub(super) fn target_superblock(
    src: &Superblock,
    size: &TargetSize,
    content: u64,
    inodes: u64,
) -> Result<(Superblock, u64)> {
    let bs = u64::from(src.block_size());
    let bpg = u64::from(src.s_blocks_per_group);
    let ipg = u64::from(src.s_inodes_per_group);
    let first = u64::from(src.s_first_data_block);
    let max_blocks = if src.is_64bit() && !src.has_compat(compat::RESIZE_INODE) {
        1u64 << 48
    } else {
        u64::from(u32::MAX)
    };
    let min_groups_for_inodes = inodes.div_ceil(ipg).max(1);
    let with_blocks = |blocks: u64| -> Result<(Superblock, Geometry)> {
        let mut sb = src.clone();
        sb.set_blocks_count(blocks);
        let groups = sb.group_count();
        let inodes_count = groups * ipg;
        sb.s_inodes_count = u32::try_from(inodes_count).map_err(|_| {
            Error::unsupported(format!(
                "{inodes_count} inodes at this size (more than 2^32)"
            ))
        })?;
        let r = (u128::from(src.r_blocks_count()) * u128::from(blocks)
            / u128::from(src.blocks_count().max(1))) as u64;
        sb.set_r_blocks_count(r.min(blocks / 2));
        if sb.has_compat(compat::SPARSE_SUPER2) {
            let had = src.s_backup_bgs;
            sb.s_backup_bgs = [
                if had[0] != 0 && groups > 1 { 1 } else { 0 },
                if had[1] != 0 && groups > 2 {
                    (groups - 1) as u32
                } else {
                    0
                },
            ];
        }
        if !sb.has_compat(compat::RESIZE_INODE) {
            sb.s_reserved_gdt_blocks = 0;
        }
        if sb.has_incompat(incompat::META_BG) {
            let desc_blocks = groups.div_ceil(bs / sb.desc_size() as u64);
            sb.s_first_meta_bg =
                u32::try_from(u64::from(sb.s_first_meta_bg).min(desc_blocks)).unwrap_or(0);
        }
        let geo = Geometry::new(&sb)?;
        Ok((sb, geo))
    };
    // Smallest whole-group count that holds everything.
    let mut groups = min_groups_for_inodes;
    let mut rounds = 0;
    let min_blocks = loop {
        rounds += 1;
        if rounds > 100 {
            return Err(Error::unsupported(
                "ext4 geometry: per-group metadata leaves no room for data",
            ));
        }
        let blocks = first + groups * bpg;
        let (sb, geo) = with_blocks(blocks.min(max_blocks))?;
        let need = first + geo.fixed_overhead(&sb) + content;
        let need_groups = (need - first).div_ceil(bpg).max(min_groups_for_inodes);
        if need_groups <= groups {
            break need;
        }
        groups = need_groups;
        if first + groups * bpg > max_blocks + bpg {
            return Err(Error::unsupported(format!(
                "the tree needs more than {max_blocks} blocks"
            )));
        }
    };
    let blocks = match *size {
        TargetSize::Source => src.blocks_count(),
        TargetSize::Bytes(b) => {
            let mut blocks = (b / bs).min(max_blocks);
            // mke2fs drops a last group too small to hold its own metadata.
            let (sb, geo) = with_blocks(blocks.max(first + 1))?;
            let rem = (blocks.saturating_sub(first)) % bpg;
            let last = geo.groups - 1;
            let mut overhead = 2 + geo.itb;
            if sb.group_has_super(last) {
                overhead += 1 + geo.old_desc_blocks() + geo.reserved_gdt;
            }
            if rem != 0 && rem < overhead + 50 {
                blocks -= rem;
            }
            blocks
        }
        TargetSize::Shrink { margin } => {
            let margin_blocks = match margin {
                Some(m) => m.div_ceil(bs),
                None => (min_blocks / 10).max((256u64 << 20) / bs),
            };
            let mut groups = (min_blocks + margin_blocks - first).div_ceil(bpg);
            loop {
                let blocks = (first + groups * bpg).min(max_blocks);
                let (sb, geo) = with_blocks(blocks)?;
                if first + geo.fixed_overhead(&sb) + content + margin_blocks <= blocks
                    || blocks == max_blocks
                {
                    break blocks;
                }
                groups += 1;
            }
        }
    };
    let blocks = blocks.min(max_blocks);
    if blocks < min_blocks {
        let (sb, _) = with_blocks(blocks.max(first + 1))?;
        return Err(too_small(&sb, min_blocks));
    }
    let (sb, _) = with_blocks(blocks)?;
    if u64::from(sb.s_inodes_count) < inodes {
        return Err(too_few_inodes(&sb, inodes));
    }
    Ok((sb, min_blocks))
}
