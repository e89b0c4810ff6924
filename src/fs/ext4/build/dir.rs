//! Directory contents: linear blocks, htree (dx_root, dx_node, hashed leaves) and
//! inline directories, with their checksum tails.
//!
//! Shape first, bytes second: [`shape`] decides how many blocks a directory takes
//! from its names alone (so the builder can size the filesystem before numbering
//! inodes), and [`encode`] writes the blocks once inode numbers are known. Both
//! use the same packing code, so the count and the bytes cannot disagree.
//! Block placement (which physical blocks) is not decided here.

use super::hash::DirHash;
use crate::error::{Error, Result};
use crate::fs::ext4::ondisk::{
    dir_leaf_checksum, dirent_len, dx_node_checksum, ftype, rec_len_to_disk, DxCountLimit,
    DxRootInfo, DIR_TAIL_FT, DIR_TAIL_SIZE, DX_NODE_COUNT_OFFSET, DX_ROOT_COUNT_OFFSET,
    DX_TAIL_SIZE,
};

/// Filesystem-wide facts directory encoding depends on.
#[derive(Debug, Clone, Copy)]
pub struct DirParams {
    pub bs: usize,
    /// metadata_csum: leaf tails and dx tails.
    pub csum: bool,
    /// The filetype feature: entries carry a type byte.
    pub filetype: bool,
    /// dir_index: directories over one block become htrees.
    pub dir_index: bool,
    /// large_dir: a third htree level is allowed.
    pub large_dir: bool,
    pub hash: DirHash,
    /// inline_data: small directories live in the inode.
    pub inline: bool,
    /// `s_def_hash_version` as stored in dx_root (signedness comes from s_flags).
    pub root_hash_version: u8,
}

/// One entry to store.
#[derive(Debug, Clone, Copy)]
pub struct DirEntryIn<'a> {
    pub name: &'a [u8],
    pub ino: u32,
    pub ftype: u8,
}

/// Room for entries in an inline directory's `i_block` (after the 4-byte parent).
pub const INLINE_DIR_ROOM: usize = 56;

/// How a directory is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// In the inode (inline_data), `i_block` only.
    Inline,
    /// `blocks` linear blocks.
    Linear { blocks: u64 },
    /// An htree: root, `leaves` leaf blocks, `nodes` interior index blocks and
    /// `levels` (dx_root `indirect_levels`).
    Htree { leaves: u64, nodes: u64, levels: u8 },
}

impl Shape {
    pub fn blocks(&self) -> u64 {
        match *self {
            Shape::Inline => 0,
            Shape::Linear { blocks } => blocks,
            Shape::Htree { leaves, nodes, .. } => 1 + leaves + nodes,
        }
    }
}

/// The encoded directory.
#[derive(Debug, Clone)]
pub enum DirOut {
    /// `i_block` contents of an inline directory (`i_size` is 60).
    Inline([u8; 60]),
    /// Logical blocks 0.. of the directory, `bs` bytes each.
    Blocks { data: Vec<u8>, indexed: bool },
}

fn leaf_room(p: &DirParams) -> usize {
    p.bs - if p.csum { DIR_TAIL_SIZE } else { 0 }
}

fn root_limit(p: &DirParams) -> usize {
    (p.bs - DX_ROOT_COUNT_OFFSET - if p.csum { DX_TAIL_SIZE } else { 0 }) / 8
}

fn node_limit(p: &DirParams) -> usize {
    (p.bs - DX_NODE_COUNT_OFFSET - if p.csum { DX_TAIL_SIZE } else { 0 }) / 8
}

/// The first block's fixed entries: "." and "..".
const DOTS: usize = 24;

/// Greedy packing of entry lengths into blocks of `room` bytes, the first block
/// having `first_used` bytes taken already. Returns the index of the first entry
/// of each block after the first.
fn pack(lens: impl Iterator<Item = usize>, room: usize, first_used: usize) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut used = first_used;
    for (i, l) in lens.enumerate() {
        if used + l > room {
            starts.push(i);
            used = 0;
        }
        used += l;
    }
    starts
}

/// Sort keys for an htree: (hash, minor hash, name) like e2fsck's rehash.
fn hashed_order(p: &DirParams, names: &[&[u8]]) -> Vec<(u32, u32, usize)> {
    let mut v: Vec<(u32, u32, usize)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (h, m) = p.hash.hash(n);
            (h, m, i)
        })
        .collect();
    v.sort_by(|a, b| (a.0, a.1, names[a.2]).cmp(&(b.0, b.1, names[b.2])));
    v
}

fn index_levels(p: &DirParams, leaves: u64) -> Result<(u64, u8)> {
    let r = root_limit(p) as u64;
    let n = node_limit(p) as u64;
    if leaves <= r {
        return Ok((0, 0));
    }
    if leaves <= r * n {
        return Ok((leaves.div_ceil(n), 1));
    }
    if p.large_dir && leaves <= r * n * n {
        let bottom = leaves.div_ceil(n);
        return Ok((bottom + bottom.div_ceil(n), 2));
    }
    Err(Error::unsupported(format!(
        "a directory of {leaves} htree leaf blocks needs more index levels than the source's features allow{}",
        if p.large_dir { "" } else { " (large_dir is off)" }
    )))
}

/// How a directory with these entry names will be stored. `min_blocks` forces a
/// linear directory of at least that many blocks (lost+found); `may_inline`
/// allows an inline directory when the filesystem has inline_data.
pub fn shape(p: &DirParams, names: &[&[u8]], min_blocks: u64, may_inline: bool) -> Result<Shape> {
    let lens = || names.iter().map(|n| dirent_len(n.len()));
    let total: usize = lens().sum();
    if min_blocks == 0 && may_inline && p.inline && total <= INLINE_DIR_ROOM {
        return Ok(Shape::Inline);
    }
    let room = leaf_room(p);
    if min_blocks > 0 || !p.dir_index || DOTS + total <= room {
        let blocks = 1 + pack(lens(), room, DOTS).len() as u64;
        return Ok(Shape::Linear {
            blocks: blocks.max(min_blocks),
        });
    }
    let order = hashed_order(p, names);
    let leaves = 1 + pack(order.iter().map(|e| dirent_len(names[e.2].len())), room, 0).len() as u64;
    let (nodes, levels) = index_levels(p, leaves)?;
    Ok(Shape::Htree {
        leaves,
        nodes,
        levels,
    })
}

fn put_dirent(b: &mut [u8], p: &DirParams, ino: u32, rec_len: usize, name: &[u8], ftype: u8) {
    b[0..4].copy_from_slice(&ino.to_le_bytes());
    b[4..6].copy_from_slice(&rec_len_to_disk(rec_len as u32, p.bs as u32).to_le_bytes());
    b[6] = name.len() as u8;
    b[7] = if p.filetype { ftype } else { 0 };
    b[8..8 + name.len()].copy_from_slice(name);
}

/// Write entries into `block[..room]` starting at `at`, the last one stretched
/// to `room`. With no entries and `at == 0`, writes one empty entry spanning the
/// room.
fn fill(block: &mut [u8], p: &DirParams, room: usize, mut at: usize, entries: &[DirEntryIn]) {
    if entries.is_empty() && at == 0 {
        put_dirent(block, p, 0, room, b"", 0);
        return;
    }
    for (k, e) in entries.iter().enumerate() {
        let len = if k + 1 == entries.len() {
            room - at
        } else {
            dirent_len(e.name.len())
        };
        put_dirent(&mut block[at..], p, e.ino, len, e.name, e.ftype);
        at += len;
    }
}

/// Add the leaf tail and its checksum (metadata_csum).
fn seal_leaf(block: &mut [u8], p: &DirParams, seed: u32) {
    if !p.csum {
        return;
    }
    let t = p.bs - DIR_TAIL_SIZE;
    block[t..t + 4].fill(0);
    block[t + 4..t + 6].copy_from_slice(&(DIR_TAIL_SIZE as u16).to_le_bytes());
    block[t + 6] = 0;
    block[t + 7] = DIR_TAIL_FT;
    let c = dir_leaf_checksum(seed, block);
    block[t + 8..t + 12].copy_from_slice(&c.to_le_bytes());
}

/// Fill an index block's entries at `count_offset` and seal its dx tail.
fn write_index(
    block: &mut [u8],
    p: &DirParams,
    seed: u32,
    count_offset: usize,
    limit: usize,
    entries: &[(u32, u32)],
) {
    let cl = DxCountLimit {
        limit: limit as u16,
        count: entries.len() as u16,
        block: entries.first().map_or(0, |e| e.1),
    };
    block[count_offset..count_offset + 8].copy_from_slice(&cl.to_bytes());
    for (k, &(hash, blk)) in entries.iter().enumerate().skip(1) {
        let o = count_offset + 8 * k;
        block[o..o + 4].copy_from_slice(&hash.to_le_bytes());
        block[o + 4..o + 8].copy_from_slice(&blk.to_le_bytes());
    }
    if p.csum {
        let tail = count_offset + 8 * limit;
        block[tail..tail + 4].fill(0);
        if let Some(c) = dx_node_checksum(
            seed,
            block,
            count_offset,
            entries.len() as u16,
            limit as u16,
        ) {
            block[tail + 4..tail + 8].copy_from_slice(&c.to_le_bytes());
        }
    }
}

/// Encode a directory. `entries` are in the tree's (name) order; `shape` is what
/// [`shape`] returned for their names; `seed` is the inode's checksum seed.
pub fn encode(
    p: &DirParams,
    shape: &Shape,
    ino: u32,
    parent: u32,
    entries: &[DirEntryIn],
    seed: u32,
) -> DirOut {
    let bs = p.bs;
    let room = leaf_room(p);
    match *shape {
        Shape::Inline => {
            let mut ib = [0u8; 60];
            ib[..4].copy_from_slice(&parent.to_le_bytes());
            fill(&mut ib[4..], p, INLINE_DIR_ROOM, 0, entries);
            DirOut::Inline(ib)
        }
        Shape::Linear { blocks } => {
            let mut data = vec![0u8; bs * blocks as usize];
            let starts = pack(entries.iter().map(|e| dirent_len(e.name.len())), room, DOTS);
            let mut bounds = vec![0];
            bounds.extend_from_slice(&starts);
            bounds.push(entries.len());
            for b in 0..blocks as usize {
                let block = &mut data[b * bs..(b + 1) * bs];
                let chunk = if b + 1 < bounds.len() {
                    &entries[bounds[b]..bounds[b + 1]]
                } else {
                    &[]
                };
                if b == 0 {
                    put_dirent(block, p, ino, 12, b".", ftype::DIR);
                    let dd = if chunk.is_empty() { room - 12 } else { 12 };
                    put_dirent(&mut block[12..], p, parent, dd, b"..", ftype::DIR);
                    if !chunk.is_empty() {
                        fill(block, p, room, DOTS, chunk);
                    }
                } else {
                    fill(block, p, room, 0, chunk);
                }
                seal_leaf(block, p, seed);
            }
            DirOut::Blocks {
                data,
                indexed: false,
            }
        }
        Shape::Htree {
            leaves,
            nodes,
            levels,
        } => {
            let names: Vec<&[u8]> = entries.iter().map(|e| e.name).collect();
            let order = hashed_order(p, &names);
            let total = (1 + leaves + nodes) as usize;
            let mut data = vec![0u8; bs * total];
            let starts = pack(order.iter().map(|e| dirent_len(names[e.2].len())), room, 0);
            let mut bounds = vec![0];
            bounds.extend_from_slice(&starts);
            bounds.push(order.len());
            // Leaves are logical blocks 1..=leaves; each index entry names a leaf
            // by the hash of its first entry, with the low bit set when that hash
            // continues from the previous leaf (e2fsck rehash.c, kernel do_split).
            let mut leaf_index: Vec<(u32, u32)> = Vec::with_capacity(leaves as usize);
            let mut sorted: Vec<DirEntryIn> = Vec::with_capacity(order.len());
            for e in &order {
                sorted.push(entries[e.2]);
            }
            for l in 0..leaves as usize {
                let (s, e) = (bounds[l], bounds[l + 1]);
                let first_hash = order.get(s).map_or(0, |o| o.0);
                let cont = s > 0 && order[s - 1].0 == first_hash;
                let hash = if cont { first_hash | 1 } else { first_hash };
                leaf_index.push((hash, (l + 1) as u32));
                let block = &mut data[(l + 1) * bs..(l + 2) * bs];
                fill(block, p, room, 0, &sorted[s..e]);
                seal_leaf(block, p, seed);
            }
            // Interior nodes follow the leaves.
            let mut next_block = 1 + leaves as u32;
            let mut level_entries = leaf_index;
            for _ in 0..levels {
                let n = node_limit(p);
                let mut up = Vec::new();
                for chunk in level_entries.chunks(n) {
                    let blk = next_block;
                    next_block += 1;
                    let block = &mut data[blk as usize * bs..(blk as usize + 1) * bs];
                    // A fake empty entry spanning the block hides the index
                    // from linear readers.
                    put_dirent(block, p, 0, bs, b"", 0);
                    write_index(block, p, seed, DX_NODE_COUNT_OFFSET, n, chunk);
                    up.push((chunk[0].0, blk));
                }
                level_entries = up;
            }
            let root = &mut data[..bs];
            put_dirent(root, p, ino, 12, b".", ftype::DIR);
            put_dirent(&mut root[12..], p, parent, bs - 12, b"..", ftype::DIR);
            let info = DxRootInfo {
                reserved_zero: 0,
                hash_version: p.root_hash_version,
                info_length: 8,
                indirect_levels: levels,
                unused_flags: 0,
            };
            root[0x18..0x20].copy_from_slice(&info.to_bytes());
            write_index(
                root,
                p,
                seed,
                DX_ROOT_COUNT_OFFSET,
                root_limit(p),
                &level_entries,
            );
            DirOut::Blocks {
                data,
                indexed: true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(bs: usize, csum: bool) -> DirParams {
        DirParams {
            bs,
            csum,
            filetype: true,
            dir_index: true,
            large_dir: false,
            hash: DirHash {
                version: 1,
                seed: [1, 2, 3, 4],
            },
            inline: false,
            root_hash_version: 1,
        }
    }

    #[test]
    fn shapes_grow_with_entries() {
        let p = params(1024, true);
        let names: Vec<Vec<u8>> = (0..2000)
            .map(|i| format!("file-{i:05}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = names.iter().map(|n| &n[..]).collect();
        assert_eq!(
            shape(&p, &refs[..10], 0, true).unwrap(),
            Shape::Linear { blocks: 1 }
        );
        assert_eq!(
            shape(&p, &refs[..0], 4, true).unwrap(),
            Shape::Linear { blocks: 4 }
        );
        match shape(&p, &refs, 0, true).unwrap() {
            Shape::Htree { leaves, levels, .. } => {
                // 20-byte entries, 1012 usable bytes per leaf: 50 per leaf.
                assert_eq!(leaves, 40);
                assert_eq!(levels, 0);
            }
            s => panic!("{s:?}"),
        }
        let long: Vec<Vec<u8>> = (0..3000)
            .map(|i| format!("{i:0200}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = long.iter().map(|n| &n[..]).collect();
        match shape(&p, &refs, 0, true).unwrap() {
            Shape::Htree { levels, .. } => assert_eq!(levels, 1),
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn linear_blocks_cover_exactly() {
        let p = params(1024, true);
        let names: Vec<Vec<u8>> = (0..100).map(|i| format!("n{i}").into_bytes()).collect();
        let entries: Vec<DirEntryIn> = names
            .iter()
            .enumerate()
            .map(|(i, n)| DirEntryIn {
                name: n,
                ino: 100 + i as u32,
                ftype: 1,
            })
            .collect();
        let p2 = DirParams {
            dir_index: false,
            ..p
        };
        let refs: Vec<&[u8]> = names.iter().map(|n| &n[..]).collect();
        let sh = shape(&p2, &refs, 0, true).unwrap();
        let DirOut::Blocks { data, .. } = encode(&p2, &sh, 12, 2, &entries, 7) else {
            panic!()
        };
        let mut seen = 0;
        for block in data.chunks(1024) {
            let mut at = 0;
            while at < 1024 {
                let rl = u16::from_le_bytes([block[at + 4], block[at + 5]]) as usize;
                assert!(rl >= 12 && at + rl <= 1024, "rec_len {rl} at {at}");
                if u32::from_le_bytes(block[at..at + 4].try_into().unwrap()) >= 100 {
                    seen += 1;
                }
                at += rl;
            }
        }
        assert_eq!(seen, 100);
    }
}
