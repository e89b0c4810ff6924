//! Logical-to-physical block mapping of one inode: extent trees of any depth and
//! legacy direct/indirect block maps, merged into sorted runs; and the conversion
//! of those runs into the Tree's byte runs (clipped to i_size, with blocks the
//! journal replayed turned into owned pieces).
//!
//! Inline data is not a block mapping and lives with the inode decoder. Every
//! block walked is charged to the read's budget, so no amount of sharing or
//! looping can make the work exceed the volume's size.

use std::collections::HashSet;
use std::sync::Arc;

use super::inode::Inode;
use super::Ctx;
use crate::error::{Error, Location, Result};
use crate::fs::codec::le_u32;
use crate::fs::ext4::ondisk::{
    extent_block_checksum, inode_flags, ExtentHeader, RawExtent, RawExtentIdx, EXT4_EXT_MAGIC,
    EXT_INIT_MAX_LEN,
};
use crate::tree::{Run, Src};

/// The kernel's bound on extent tree depth (fs/ext4/ext4_extents.h:
/// EXT4_MAX_EXTENT_DEPTH).
const MAX_EXTENT_DEPTH: u16 = 5;

/// `len` filesystem blocks of an inode at logical block `logical`, stored at
/// physical block `physical`. Only initialized blocks are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockExtent {
    pub logical: u64,
    pub physical: u64,
    pub len: u64,
}

/// Append an extent, merging it into the previous one when both are contiguous.
fn push(out: &mut Vec<BlockExtent>, e: BlockExtent) {
    if let Some(last) = out.last_mut() {
        if last.logical + last.len == e.logical && last.physical + last.len == e.physical {
            last.len += e.len;
            return;
        }
    }
    out.push(e);
}

/// Map the inode's blocks below logical block `limit` (blocks past it are
/// walked and checked, but not listed). Holes and uninitialized extents are
/// absent from the result. Not for inline-data inodes.
pub(crate) fn map(ctx: &Ctx, ino: &Inode, limit: u64) -> Result<Vec<BlockExtent>> {
    let mut out = Vec::new();
    if ino.has_flag(inode_flags::EXTENTS) {
        let mut walk = ExtentWalk {
            ctx,
            ino,
            limit,
            seen: HashSet::new(),
            out: &mut out,
            next_logical: 0,
        };
        walk.node(
            &ino.raw.i_block,
            None,
            true,
            Location::Inode(u64::from(ino.ino)),
        )?;
    } else {
        map_indirect(ctx, ino, limit, &mut out)?;
    }
    if let Some(fast) = ctx
        .overlay
        .fast
        .as_ref()
        .filter(|f| f.ranges.contains_key(&ino.ino))
    {
        // Fast commits map and unmap ranges on top of the on-disk map.
        let mut runs: Vec<(u64, u64, u64)> =
            out.iter().map(|e| (e.logical, e.physical, e.len)).collect();
        fast.apply_ranges(ino.ino, &mut runs);
        out = runs
            .into_iter()
            .filter(|&(l, _, _)| l < limit)
            .map(|(logical, physical, len)| BlockExtent {
                logical,
                physical,
                len: len.min(limit - logical),
            })
            .collect();
    }
    Ok(out)
}

struct ExtentWalk<'c, 'a, 'i, 'r, 'o> {
    ctx: &'c Ctx<'a>,
    ino: &'i Inode<'r>,
    limit: u64,
    /// Tree blocks visited, to catch loops and blocks listed twice.
    seen: HashSet<u64>,
    out: &'o mut Vec<BlockExtent>,
    /// Leaves must come in increasing logical order without overlap.
    next_logical: u64,
}

impl ExtentWalk<'_, '_, '_, '_, '_> {
    fn corrupt(&self, loc: Location, detail: String) -> Error {
        Error::corrupt(
            "ext4 extent tree",
            loc,
            format!("inode {}: {detail}", self.ino.ino),
        )
    }

    /// Walk one node (`bytes` is i_block for the root, else a whole block).
    fn node(
        &mut self,
        bytes: &[u8],
        expect_depth: Option<u16>,
        is_root: bool,
        loc: Location,
    ) -> Result<()> {
        let hdr_bytes: &[u8; 12] = bytes
            .get(..12)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| self.corrupt(loc, "node shorter than its header".into()))?;
        let h = ExtentHeader::decode(hdr_bytes);
        if h.eh_magic != EXT4_EXT_MAGIC {
            return Err(self.corrupt(loc, format!("bad magic {:#x}", h.eh_magic)));
        }
        let room = (bytes.len() - 12) / 12;
        if usize::from(h.eh_max) > room || h.eh_entries > h.eh_max {
            return Err(self.corrupt(
                loc,
                format!(
                    "eh_entries {} / eh_max {} do not fit a {}-byte node",
                    h.eh_entries,
                    h.eh_max,
                    bytes.len()
                ),
            ));
        }
        if h.eh_depth > MAX_EXTENT_DEPTH {
            return Err(self.corrupt(loc, format!("eh_depth {} is above 5", h.eh_depth)));
        }
        if let Some(d) = expect_depth {
            if h.eh_depth != d {
                return Err(self.corrupt(
                    loc,
                    format!("eh_depth {} where the parent implies {d}", h.eh_depth),
                ));
            }
        }
        if !is_root && self.ctx.metadata_csum {
            let tail = 12 + 12 * usize::from(h.eh_max);
            let stored = le_u32(bytes, tail)
                .ok_or_else(|| self.corrupt(loc, "no room for the extent block checksum".into()))?;
            let computed = extent_block_checksum(self.ino.csum_seed, bytes, h.eh_max);
            if stored != computed {
                return Err(Error::checksum(
                    "ext4 extent block",
                    loc,
                    u64::from(stored),
                    u64::from(computed),
                ));
            }
        }
        let entries = usize::from(h.eh_entries);
        if h.eh_depth == 0 {
            for i in 0..entries {
                let e = RawExtent::decode(entry(bytes, i));
                self.leaf(&e, loc)?;
            }
            return Ok(());
        }
        let bs = self.ctx.bs as usize;
        let mut buf = vec![0u8; bs];
        let mut prev_first: Option<u32> = None;
        for i in 0..entries {
            let ix = RawExtentIdx::decode(entry(bytes, i));
            if prev_first.is_some_and(|p| ix.ei_block <= p) {
                return Err(self.corrupt(
                    loc,
                    format!("index entries out of order at ei_block {}", ix.ei_block),
                ));
            }
            prev_first = Some(ix.ei_block);
            let child = u64::from(ix.ei_leaf_lo) | (u64::from(ix.ei_leaf_hi) << 32);
            let cloc = Location::Block(child);
            self.ctx.check_blocks("ext4 extent tree", cloc, child, 1)?;
            if !self.seen.insert(child) {
                return Err(self.corrupt(
                    cloc,
                    "extent tree block reached twice (a loop in the tree)".into(),
                ));
            }
            self.ctx.charge(self.ino.ino, 1)?;
            self.ctx.read_block(child, &mut buf)?;
            self.node(&buf, Some(h.eh_depth - 1), false, cloc)?;
        }
        Ok(())
    }

    fn leaf(&mut self, e: &RawExtent, loc: Location) -> Result<()> {
        let (len, init) = if e.ee_len > EXT_INIT_MAX_LEN {
            (e.ee_len - EXT_INIT_MAX_LEN, false)
        } else {
            (e.ee_len, true)
        };
        if len == 0 {
            return Err(self.corrupt(loc, format!("zero-length extent at block {}", e.ee_block)));
        }
        let logical = u64::from(e.ee_block);
        let len = u64::from(len);
        if logical < self.next_logical {
            return Err(self.corrupt(
                loc,
                format!("extent at logical block {logical} overlaps or precedes the previous one"),
            ));
        }
        if logical + len > 1 << 32 {
            return Err(self.corrupt(loc, format!("extent at {logical} passes 2^32 blocks")));
        }
        self.next_logical = logical + len;
        let physical = u64::from(e.ee_start_lo) | (u64::from(e.ee_start_hi) << 32);
        self.ctx
            .check_blocks("ext4 extent", Location::Block(physical), physical, len)
            .map_err(|_| {
                self.corrupt(
                    loc,
                    format!(
                        "extent {logical}+{len} -> {physical} lies outside the filesystem's {} blocks",
                        self.ctx.blocks_count
                    ),
                )
            })?;
        self.ctx.charge(self.ino.ino, len)?;
        // Uninitialized (preallocated) extents read as zeros: holes.
        if init && logical < self.limit {
            let len = len.min(self.limit - logical);
            push(
                self.out,
                BlockExtent {
                    logical,
                    physical,
                    len,
                },
            );
        }
        Ok(())
    }
}

/// The `i`-th 12-byte entry after a node's header. The caller checked that
/// `eh_max` entries fit.
fn entry(bytes: &[u8], i: usize) -> &[u8; 12] {
    let s = 12 + 12 * i;
    bytes[s..s + 12].try_into().expect("entry inside the node")
}

/// Legacy block maps: 12 direct pointers, then single, double and triple
/// indirect blocks. Zero pointers are holes.
fn map_indirect(ctx: &Ctx, ino: &Inode, limit: u64, out: &mut Vec<BlockExtent>) -> Result<()> {
    let w = ino.block_words();
    let per = u64::from(ctx.bs / 4);
    for (i, &p) in w.iter().take(12).enumerate() {
        let l = i as u64;
        if l >= limit {
            return Ok(());
        }
        data_ptr(ctx, ino, l, p, out)?;
    }
    let mut base = 12u64;
    let mut span = per;
    for (level, &p) in w[12..].iter().enumerate() {
        if base >= limit {
            break;
        }
        indirect(ctx, ino, p, level as u32 + 1, base, limit, out)?;
        base += span;
        span = span.saturating_mul(per);
    }
    Ok(())
}

fn data_ptr(
    ctx: &Ctx,
    ino: &Inode,
    logical: u64,
    p: u32,
    out: &mut Vec<BlockExtent>,
) -> Result<()> {
    if p == 0 {
        return Ok(());
    }
    let physical = u64::from(p);
    ctx.check_blocks(
        "ext4 block map",
        Location::Inode(u64::from(ino.ino)),
        physical,
        1,
    )?;
    ctx.charge(ino.ino, 1)?;
    push(
        out,
        BlockExtent {
            logical,
            physical,
            len: 1,
        },
    );
    Ok(())
}

/// One indirect block at `level` (1 = its pointers are data blocks) whose first
/// pointer maps logical block `base`. The depth is fixed by the format, so this
/// recursion is at most three deep.
fn indirect(
    ctx: &Ctx,
    ino: &Inode,
    blk: u32,
    level: u32,
    base: u64,
    limit: u64,
    out: &mut Vec<BlockExtent>,
) -> Result<()> {
    if blk == 0 {
        return Ok(());
    }
    let b = u64::from(blk);
    ctx.check_blocks("ext4 indirect block", Location::Block(b), b, 1)?;
    ctx.charge(ino.ino, 1)?;
    let mut buf = vec![0u8; ctx.bs as usize];
    ctx.read_block(b, &mut buf)?;
    let per = u64::from(ctx.bs / 4);
    let span = per.pow(level - 1);
    for (i, c) in buf.chunks_exact(4).enumerate() {
        let l = base + i as u64 * span;
        if l >= limit {
            break;
        }
        let p = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        if level == 1 {
            data_ptr(ctx, ino, l, p, out)?;
        } else {
            indirect(ctx, ino, p, level - 1, l, limit, out)?;
        }
    }
    Ok(())
}

/// Turn block extents into the Tree's byte runs, clipped to `size`. Blocks the
/// journal replayed become owned pieces appended to `blobs` (indexes into it are
/// local; the caller renumbers them).
pub(crate) fn byte_runs(
    ctx: &Ctx,
    extents: &[BlockExtent],
    size: u64,
    blobs: &mut Vec<Arc<[u8]>>,
) -> Vec<Run> {
    let bs = u64::from(ctx.bs);
    let mut runs: Vec<Run> = Vec::with_capacity(extents.len());
    let mut add = |r: Run| {
        if let Some(last) = runs.last_mut() {
            if let (Src::Volume(a), Src::Volume(b)) = (last.src, r.src) {
                if last.logical + last.len == r.logical && a + last.len == b {
                    last.len += r.len;
                    return;
                }
            }
        }
        runs.push(r);
    };
    for e in extents {
        let start = e.logical * bs;
        if start >= size {
            break;
        }
        let end = ((e.logical + e.len) * bs).min(size);
        if ctx.overlay.is_empty() {
            add(Run {
                logical: start,
                len: end - start,
                src: Src::Volume(e.physical * bs),
            });
            continue;
        }
        // Split around the blocks the journal replaced.
        let mut at = start;
        for (&pb, data) in ctx.overlay.range(e.physical, e.len) {
            let lstart = (e.logical + (pb - e.physical)) * bs;
            if lstart >= end {
                break;
            }
            if lstart > at {
                add(Run {
                    logical: at,
                    len: lstart - at,
                    src: Src::Volume(e.physical * bs + (at - start)),
                });
            }
            let len = bs.min(end - lstart).min(data.len() as u64);
            let blob = blobs.len() as u32;
            blobs.push(data.clone());
            add(Run {
                logical: lstart,
                len,
                src: Src::Blob { blob, offset: 0 },
            });
            at = lstart + bs;
        }
        if at < end {
            add(Run {
                logical: at,
                len: end - at,
                src: Src::Volume(e.physical * bs + (at - start)),
            });
        }
    }
    runs
}
