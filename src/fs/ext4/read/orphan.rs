//! Counting orphan inodes (the s_last_orphan chain through i_dtime, and the
//! orphan file's slots) for reports. Orphans are unreachable from the root, so
//! the walk leaves them out by construction; nothing here changes the tree, and
//! a damaged orphan list is a warning, not a failure.

use std::collections::HashSet;

use super::inode::Inode;
use super::{blockmap, Ctx};
use crate::fs::codec::le_u32;
use crate::fs::ext4::superblock::compat;

/// The orphan file block tail's magic (fs/ext4/ext4.h: EXT4_ORPHAN_BLOCK_MAGIC).
const ORPHAN_BLOCK_MAGIC: u32 = 0x0b10_ca04;
/// Bytes of the tail at the end of each orphan file block (magic, checksum).
const ORPHAN_TAIL: usize = 8;

/// How many inodes are orphans. Problems become `warnings`.
pub(crate) fn count(ctx: &Ctx, warnings: &mut Vec<String>) -> u64 {
    let mut n = 0u64;
    let mut seen = HashSet::new();
    let mut cur = ctx.sb.s_last_orphan;
    while cur != 0 {
        // Each inode at most once: the chain is bounded by s_inodes_count.
        if !seen.insert(cur) {
            warnings.push(format!("the orphan list loops back to inode {cur}"));
            break;
        }
        match ctx.read_inode_raw(cur) {
            Ok(raw) => {
                n += 1;
                // i_dtime holds the next orphan's number.
                cur = le_u32(&raw, 0x14).unwrap_or(0);
            }
            Err(e) => {
                warnings.push(format!("orphan list: {e}"));
                break;
            }
        }
    }
    if ctx.sb.has_compat(compat::ORPHAN_FILE) && ctx.sb.s_orphan_file_inum != 0 {
        match orphan_file(ctx, ctx.sb.s_orphan_file_inum, warnings) {
            Ok(k) => n += k,
            Err(e) => warnings.push(format!("orphan file: {e}")),
        }
    }
    n
}

fn orphan_file(ctx: &Ctx, inum: u32, warnings: &mut Vec<String>) -> crate::Result<u64> {
    let raw = ctx.read_inode_raw(inum)?;
    let ino = Inode::parse(ctx, inum, &raw)?;
    let bs = u64::from(ctx.bs);
    let extents = blockmap::map(ctx, &ino, ino.size.div_ceil(bs))?;
    let mut buf = vec![0u8; ctx.bs as usize];
    let slots = (buf.len() - ORPHAN_TAIL) / 4;
    let mut n = 0;
    for e in &extents {
        for k in 0..e.len {
            let b = e.physical + k;
            ctx.read_block(b, &mut buf)?;
            if le_u32(&buf, buf.len() - ORPHAN_TAIL) != Some(ORPHAN_BLOCK_MAGIC) {
                warnings.push(format!("orphan file block {b} has no orphan block magic"));
                continue;
            }
            n += buf[..slots * 4]
                .chunks_exact(4)
                .filter(|c| c != &[0, 0, 0, 0])
                .count() as u64;
        }
    }
    Ok(n)
}
