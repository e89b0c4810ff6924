//! Block maps: how an inode finds its blocks. Extent trees (depth 0 in `i_block`,
//! deeper trees packed full, as e2fsck's "could be narrower/shorter" check wants)
//! and ext2/3 indirect maps (direct, single, double, triple indirect blocks).
//!
//! Two steps, like the directory code: count the map blocks a list of extents
//! needs, let the caller place them, then encode with their numbers. Nothing here
//! allocates blocks.

use crate::fs::ext4::ondisk::{
    extent_block_checksum, ExtentHeader, RawExtent, RawExtentIdx, EXT4_EXT_MAGIC, EXT_INIT_MAX_LEN,
};

/// A run of a file's blocks: logical `lblk..lblk + len` at physical `pblk..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ext {
    pub lblk: u64,
    pub pblk: u64,
    pub len: u64,
}

/// Entries an extent tree block holds (`ext4_ext_space_block`).
fn per_block(bs: usize) -> u64 {
    ((bs - ExtentHeader::SIZE) / RawExtent::SIZE) as u64
}

/// Entries the root in `i_block` holds.
const ROOT_ENTRIES: u64 = 4;

/// Split extents longer than an initialized extent may be.
pub fn leaf_entries(exts: &[Ext]) -> Vec<Ext> {
    let max = u64::from(EXT_INIT_MAX_LEN);
    let mut v = Vec::with_capacity(exts.len());
    for e in exts {
        let mut done = 0;
        while done < e.len {
            let n = (e.len - done).min(max);
            v.push(Ext {
                lblk: e.lblk + done,
                pblk: e.pblk + done,
                len: n,
            });
            done += n;
        }
    }
    v
}

/// Node counts per level of the extent tree for `n` leaf entries, bottom level
/// first; empty when the entries fit in the inode.
fn extent_levels(n: u64, bs: usize) -> Vec<u64> {
    let pb = per_block(bs);
    let mut levels = Vec::new();
    let mut count = n;
    while count > ROOT_ENTRIES {
        let nodes = count.div_ceil(pb);
        levels.push(nodes);
        count = nodes;
    }
    levels
}

/// Tree blocks an extent tree over `n` leaf entries needs.
pub fn extent_tree_blocks(n: u64, bs: usize) -> u64 {
    extent_levels(n, bs).iter().sum()
}

fn header(entries: u64, max: u64, depth: u16) -> [u8; 12] {
    ExtentHeader {
        eh_magic: EXT4_EXT_MAGIC,
        eh_entries: entries as u16,
        eh_max: max as u16,
        eh_depth: depth,
        eh_generation: 0,
    }
    .to_bytes()
}

fn leaf_bytes(e: &Ext) -> [u8; 12] {
    RawExtent {
        ee_block: e.lblk as u32,
        ee_len: e.len as u16,
        ee_start_hi: (e.pblk >> 32) as u16,
        ee_start_lo: e.pblk as u32,
    }
    .to_bytes()
}

fn index_bytes(lblk: u64, child: u64) -> [u8; 12] {
    RawExtentIdx {
        ei_block: lblk as u32,
        ei_leaf_lo: child as u32,
        ei_leaf_hi: (child >> 32) as u16,
        ei_unused: 0,
    }
    .to_bytes()
}

/// An encoded extent tree: the 60 bytes of `i_block` and the tree blocks, each
/// paired with the physical block it was encoded for.
pub struct Encoded {
    pub i_block: [u8; 60],
    pub blocks: Vec<(u64, Vec<u8>)>,
}

/// Encode an extent tree over `entries` (from [`leaf_entries`]) whose tree blocks
/// go to `phys` (exactly [`extent_tree_blocks`] of them: leaves first, then each
/// index level upward). `seed` is the inode's checksum seed, `csum` whether
/// blocks carry a checksum tail.
pub fn encode_extents(entries: &[Ext], phys: &[u64], bs: usize, seed: u32, csum: bool) -> Encoded {
    let levels = extent_levels(entries.len() as u64, bs);
    let pb = per_block(bs);
    let mut i_block = [0u8; 60];
    let mut blocks = Vec::with_capacity(phys.len());
    let seal = |b: &mut Vec<u8>| {
        if csum {
            let c = extent_block_checksum(seed, b, pb as u16);
            let at = ExtentHeader::SIZE + RawExtent::SIZE * pb as usize;
            b[at..at + 4].copy_from_slice(&c.to_le_bytes());
        }
    };
    if levels.is_empty() {
        i_block[..12].copy_from_slice(&header(entries.len() as u64, ROOT_ENTRIES, 0));
        for (k, e) in entries.iter().enumerate() {
            i_block[12 + 12 * k..24 + 12 * k].copy_from_slice(&leaf_bytes(e));
        }
        return Encoded { i_block, blocks };
    }
    // Leaves: (first logical block, physical block) of each, for the level above.
    let mut next_phys = phys.iter().copied();
    let mut children: Vec<(u64, u64)> = Vec::new();
    for chunk in entries.chunks(pb as usize) {
        let p = next_phys.next().unwrap_or(0);
        let mut b = vec![0u8; bs];
        b[..12].copy_from_slice(&header(chunk.len() as u64, pb, 0));
        for (k, e) in chunk.iter().enumerate() {
            b[12 + 12 * k..24 + 12 * k].copy_from_slice(&leaf_bytes(e));
        }
        seal(&mut b);
        children.push((chunk[0].lblk, p));
        blocks.push((p, b));
    }
    let mut depth = 1u16;
    while children.len() as u64 > ROOT_ENTRIES {
        let mut up = Vec::new();
        for chunk in children.chunks(pb as usize) {
            let p = next_phys.next().unwrap_or(0);
            let mut b = vec![0u8; bs];
            b[..12].copy_from_slice(&header(chunk.len() as u64, pb, depth));
            for (k, &(l, c)) in chunk.iter().enumerate() {
                b[12 + 12 * k..24 + 12 * k].copy_from_slice(&index_bytes(l, c));
            }
            seal(&mut b);
            up.push((chunk[0].0, p));
            blocks.push((p, b));
        }
        children = up;
        depth += 1;
    }
    i_block[..12].copy_from_slice(&header(children.len() as u64, ROOT_ENTRIES, depth));
    for (k, &(l, c)) in children.iter().enumerate() {
        i_block[12 + 12 * k..24 + 12 * k].copy_from_slice(&index_bytes(l, c));
    }
    Encoded { i_block, blocks }
}

// ---- indirect maps ----------------------------------------------------------------

const NDIR: u64 = 12;

/// One indirect block of the map: its level (1 = holds data block pointers) and
/// the first logical block it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IndNode {
    level: u32,
    base: u64,
}

/// The largest logical block count an indirect map addresses.
pub fn ind_max_blocks(bs: usize) -> u64 {
    let apb = (bs / 4) as u64;
    NDIR + apb + apb * apb + apb * apb * apb
}

/// Whether any extent touches logical blocks `start..end`.
fn touches(exts: &[Ext], start: u64, end: u64) -> bool {
    let i = exts.partition_point(|e| e.lblk + e.len <= start);
    exts.get(i).is_some_and(|e| e.lblk < end)
}

/// The indirect blocks the map of `exts` needs, parents before children.
fn ind_nodes(exts: &[Ext], bs: usize) -> Vec<IndNode> {
    let apb = (bs / 4) as u64;
    let mut out = Vec::new();
    let mut base = NDIR;
    for level in 1..=3u32 {
        let span = apb.pow(level);
        walk(exts, apb, level, base, span, &mut out);
        base += span;
    }
    out
}

fn walk(exts: &[Ext], apb: u64, level: u32, base: u64, span: u64, out: &mut Vec<IndNode>) {
    if !touches(exts, base, base + span) {
        return;
    }
    out.push(IndNode { level, base });
    if level > 1 {
        let child = span / apb;
        // Only the children some extent touches, found extent by extent.
        let mut i = exts.partition_point(|e| e.lblk + e.len <= base);
        let mut next_child = 0u64;
        while let Some(e) = exts.get(i) {
            if e.lblk >= base + span {
                break;
            }
            let first = (e.lblk.max(base) - base) / child;
            let last = ((e.lblk + e.len).min(base + span) - 1 - base) / child;
            for c in first.max(next_child)..=last {
                walk(exts, apb, level - 1, base + c * child, child, out);
            }
            next_child = next_child.max(last + 1);
            i += 1;
        }
    }
}

/// Indirect blocks the map of `exts` needs.
pub fn ind_blocks(exts: &[Ext], bs: usize) -> u64 {
    ind_nodes(exts, bs).len() as u64
}

/// One step of an interleaved indirect-mapped layout: data blocks, or the next
/// indirect block (in the order [`ind_blocks`] counts them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Data { lblk: u64, len: u64 },
    Map,
}

/// The order in which an indirect-mapped file's blocks are laid out: each
/// indirect block right before the first data block it maps, as ext2/3 (and
/// mke2fs) allocate them, so reading the file front to back never seeks
/// backwards. `ranges` are the mapped logical ranges `(first, count)`, sorted.
pub fn ind_sequence(ranges: &[(u64, u64)], bs: usize) -> Vec<Step> {
    let exts: Vec<Ext> = ranges
        .iter()
        .map(|&(l, n)| Ext {
            lblk: l,
            pblk: 0,
            len: n,
        })
        .collect();
    // Where each node goes: before the first mapped block it covers. Parents
    // share that block with their first child and come first (pre-order, kept by
    // the stable sort).
    let mut at: Vec<u64> = ind_nodes(&exts, bs)
        .iter()
        .map(|n| {
            let i = exts.partition_point(|e| e.lblk + e.len <= n.base);
            exts.get(i).map_or(n.base, |e| e.lblk.max(n.base))
        })
        .collect();
    at.sort();
    let mut steps = Vec::with_capacity(ranges.len() + at.len());
    let mut next = at.iter().peekable();
    for &(l, n) in ranges {
        let (mut s, end) = (l, l + n);
        while s < end {
            while next.next_if(|&&x| x <= s).is_some() {
                steps.push(Step::Map);
            }
            let stop = next.peek().map_or(end, |&&x| x.min(end));
            steps.push(Step::Data {
                lblk: s,
                len: stop - s,
            });
            s = stop;
        }
    }
    steps
}

/// The physical block of logical block `l`, if mapped.
fn lookup(exts: &[Ext], l: u64) -> Option<u64> {
    let i = exts.partition_point(|e| e.lblk + e.len <= l);
    exts.get(i)
        .filter(|e| e.lblk <= l)
        .map(|e| e.pblk + (l - e.lblk))
}

/// Encode an indirect map of `exts` with its indirect blocks at `phys` (exactly
/// [`ind_blocks`] of them, in the order that function counts).
pub fn encode_indirect(exts: &[Ext], phys: &[u64], bs: usize) -> Encoded {
    let apb = (bs / 4) as u64;
    let nodes = ind_nodes(exts, bs);
    let where_is = |level: u32, base: u64| -> u64 {
        nodes
            .iter()
            .position(|n| n.level == level && n.base == base)
            .and_then(|k| phys.get(k).copied())
            .unwrap_or(0)
    };
    let mut i_block = [0u8; 60];
    for l in 0..NDIR {
        if let Some(p) = lookup(exts, l) {
            i_block[4 * l as usize..4 * l as usize + 4].copy_from_slice(&(p as u32).to_le_bytes());
        }
    }
    let mut base = NDIR;
    for level in 1..=3u32 {
        let p = where_is(level, base);
        let slot = 11 + level as usize;
        i_block[4 * slot..4 * slot + 4].copy_from_slice(&(p as u32).to_le_bytes());
        base += apb.pow(level);
    }
    let mut blocks = Vec::with_capacity(nodes.len());
    for (k, n) in nodes.iter().enumerate() {
        let mut b = vec![0u8; bs];
        let child = apb.pow(n.level - 1);
        for s in 0..apb {
            let start = n.base + s * child;
            let target = if n.level == 1 {
                lookup(exts, start)
            } else if touches(exts, start, start + child) {
                Some(where_is(n.level - 1, start))
            } else {
                None
            };
            if let Some(t) = target {
                b[4 * s as usize..4 * s as usize + 4].copy_from_slice(&(t as u32).to_le_bytes());
            }
        }
        blocks.push((phys.get(k).copied().unwrap_or(0), b));
    }
    Encoded { i_block, blocks }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_trees_deepen_only_when_needed() {
        assert_eq!(extent_tree_blocks(4, 4096), 0);
        assert_eq!(extent_tree_blocks(5, 4096), 1);
        assert_eq!(extent_tree_blocks(340 * 4, 4096), 4);
        assert_eq!(extent_tree_blocks(340 * 4 + 1, 4096), 5 + 1);
        let exts: Vec<Ext> = (0..10)
            .map(|i| Ext {
                lblk: i * 10,
                pblk: 1000 + i * 5,
                len: 5,
            })
            .collect();
        let enc = encode_extents(&exts, &[77], 1024, 0, true);
        let h = ExtentHeader::decode(enc.i_block[..12].try_into().unwrap());
        assert_eq!((h.eh_entries, h.eh_depth), (1, 1));
        assert_eq!(enc.blocks.len(), 1);
        assert_eq!(enc.blocks[0].0, 77);
        let leaf = ExtentHeader::decode(enc.blocks[0].1[..12].try_into().unwrap());
        assert_eq!((leaf.eh_entries, leaf.eh_max), (10, 84));
    }

    #[test]
    fn long_runs_split_at_the_initialized_limit() {
        let v = leaf_entries(&[Ext {
            lblk: 0,
            pblk: 100,
            len: 70000,
        }]);
        assert_eq!(v.len(), 3);
        assert_eq!(v[2].len, 70000 - 65536);
        assert_eq!(v[1].pblk, 100 + 32768);
    }

    #[test]
    fn indirect_blocks_precede_the_data_they_map() {
        // 1 KiB blocks: 12 direct, IND for 12..268, DIND from 268.
        let seq = ind_sequence(&[(0, 300)], 1024);
        assert_eq!(
            seq,
            vec![
                Step::Data { lblk: 0, len: 12 },
                Step::Map,
                Step::Data { lblk: 12, len: 256 },
                Step::Map,
                Step::Map,
                Step::Data { lblk: 268, len: 32 },
            ]
        );
        let seq = ind_sequence(&[(0, 1), (5000, 2)], 1024);
        assert_eq!(
            seq,
            vec![
                Step::Data { lblk: 0, len: 1 },
                Step::Map,
                Step::Map,
                Step::Data { lblk: 5000, len: 2 },
            ]
        );
    }

    #[test]
    fn indirect_maps_skip_holes() {
        // 1 KiB blocks: 256 pointers per block.
        let exts = vec![
            Ext {
                lblk: 0,
                pblk: 500,
                len: 13,
            },
            Ext {
                lblk: 12 + 256 + 256 * 3,
                pblk: 900,
                len: 1,
            },
        ];
        // IND for block 12; DIND plus one IND under it.
        assert_eq!(ind_blocks(&exts, 1024), 3);
        let enc = encode_indirect(&exts, &[10, 11, 12], 1024);
        let w = |i: usize| u32::from_le_bytes(enc.i_block[4 * i..4 * i + 4].try_into().unwrap());
        assert_eq!((w(0), w(11), w(12), w(13), w(14)), (500, 511, 10, 11, 0));
        let dind = &enc.blocks[1].1;
        assert_eq!(u32::from_le_bytes(dind[12..16].try_into().unwrap()), 12);
        assert_eq!(u32::from_le_bytes(dind[0..4].try_into().unwrap()), 0);
        let ind2 = &enc.blocks[2].1;
        assert_eq!(u32::from_le_bytes(ind2[0..4].try_into().unwrap()), 900);
    }
}
