//! Directory contents: linear leaf blocks, htree (dir_index) directories, and
//! inline-data directories, as (name bytes, inode number) lists.
//!
//! For an htree the interior nodes are only an index: the reader walks them to
//! know which blocks they are (and to check their depth, limits and checksums),
//! then reads every other block of the directory as a leaf, so each entry comes
//! out exactly once whatever the index says. "." and ".." and deleted entries
//! (inode 0) are dropped here; duplicate names are left to `Tree::finish`.

use std::collections::{HashMap, HashSet};

use super::blockmap::BlockExtent;
use super::inode::Inode;
use super::{is_reserved_inode, Ctx};
use crate::error::{Error, Location, Result};
use crate::fs::codec::{le_u16, le_u32};
use crate::fs::ext4::journal::fast_commit::NameOp;
use crate::fs::ext4::ondisk::{
    dir_leaf_checksum, dirent_len, dx_node_checksum, inode_flags, rec_len_from_disk, DxRootInfo,
    DIRENT_HEADER, DIR_TAIL_FT, DIR_TAIL_SIZE, DX_NODE_COUNT_OFFSET, DX_ROOT_COUNT_OFFSET,
    DX_TAIL_SIZE,
};
use crate::fs::ext4::superblock::incompat;

/// The entries of one directory: names in one buffer, then (name offset, name
/// length, inode number) triples.
#[derive(Debug, Default)]
pub(crate) struct DirList {
    pub names: Vec<u8>,
    pub entries: Vec<(u32, u8, u32)>,
}

impl DirList {
    pub fn name(&self, e: &(u32, u8, u32)) -> &[u8] {
        &self.names[e.0 as usize..e.0 as usize + usize::from(e.1)]
    }
}

impl DirList {
    /// Apply a fast commit's name changes to this directory, in order: a link
    /// replaces any entry of the same name (e2fsck/journal.c:
    /// ext4_fc_handle_link_and_create unlinks it first), an unlink removes the
    /// entry with that name and inode number.
    pub fn apply_fast_commit(&mut self, dir: u32, ops: &[NameOp]) -> Result<()> {
        let mut entries: Vec<(Vec<u8>, u32)> = self
            .entries
            .iter()
            .map(|e| (self.name(e).to_vec(), e.2))
            .collect();
        let mut at: HashMap<Vec<u8>, usize> = HashMap::new();
        for (i, (n, _)) in entries.iter().enumerate() {
            at.entry(n.clone()).or_insert(i);
        }
        for op in ops {
            match (at.get(&op.name).copied(), op.link) {
                (Some(i), true) => entries[i].1 = op.ino,
                (None, true) => {
                    at.insert(op.name.clone(), entries.len());
                    entries.push((op.name.clone(), op.ino));
                }
                (Some(i), false) if entries[i].1 == op.ino => {
                    entries[i].1 = 0;
                    at.remove(&op.name);
                }
                _ => {}
            }
        }
        let mut out = DirList::default();
        for (name, ino) in entries {
            if ino == 0 {
                continue;
            }
            let len = u8::try_from(name.len()).map_err(|_| {
                Error::corrupt(
                    "ext4 fast commit record",
                    Location::Inode(u64::from(dir)),
                    format!("a name of {} bytes", name.len()),
                )
            })?;
            let off = u32::try_from(out.names.len()).map_err(|_| {
                Error::corrupt(
                    "ext4 directory",
                    Location::Inode(u64::from(dir)),
                    "names past 4 GiB",
                )
            })?;
            out.names.extend_from_slice(&name);
            out.entries.push((off, len, ino));
        }
        *self = out;
        Ok(())
    }
}

/// Where an entry problem is reported: the block (or inode, for inline data).
#[derive(Clone, Copy)]
struct Where {
    dir: u32,
    loc: Location,
}

fn corrupt(w: Where, structure: &'static str, detail: String) -> Error {
    Error::corrupt(
        structure,
        w.loc,
        format!("directory inode {}: {detail}", w.dir),
    )
}

/// Parse the entries of one region (a leaf block without its checksum tail, or
/// an inline-data area). Every entry must lie inside it.
fn parse_entries(ctx: &Ctx, region: &[u8], w: Where, out: &mut DirList) -> Result<()> {
    let filetype = ctx.sb.has_incompat(incompat::FILETYPE);
    let end = region.len();
    let mut pos = 0usize;
    while pos < end {
        let at = |d: String| corrupt(w, "ext4 directory entry", format!("offset {pos}: {d}"));
        let (Some(inode), Some(rl)) = (le_u32(region, pos), le_u16(region, pos + 4)) else {
            return Err(at(format!(
                "entry header crosses the end of the {end}-byte area"
            )));
        };
        let Some(&nl_lo) = region.get(pos + 6) else {
            return Err(at(format!(
                "entry header crosses the end of the {end}-byte area"
            )));
        };
        let name_len = if filetype {
            usize::from(nl_lo)
        } else {
            // Without the filetype feature the name length is 16 bits.
            usize::from(le_u16(region, pos + 6).unwrap_or(0))
        };
        let rec_len = rec_len_from_disk(rl, ctx.bs) as usize;
        // fs/ext4/dir.c: __ext4_check_dir_entry.
        if rec_len < dirent_len(1) {
            return Err(at(format!("rec_len {rec_len} is below the minimum of 12")));
        }
        if !rec_len.is_multiple_of(4) {
            return Err(at(format!("rec_len {rec_len} is not a multiple of 4")));
        }
        if rec_len < dirent_len(name_len) {
            return Err(at(format!(
                "rec_len {rec_len} is too small for a {name_len}-byte name"
            )));
        }
        if rec_len > end - pos {
            return Err(at(format!(
                "rec_len {rec_len} crosses the end of the {end}-byte area"
            )));
        }
        if inode != 0 {
            if name_len == 0 || name_len > 255 {
                return Err(at(format!("name_len {name_len}")));
            }
            let name = &region[pos + DIRENT_HEADER..pos + DIRENT_HEADER + name_len];
            if name != b"." && name != b".." {
                if inode > ctx.sb.s_inodes_count {
                    return Err(at(format!(
                        "inode {inode} is past s_inodes_count {}",
                        ctx.sb.s_inodes_count
                    )));
                }
                if is_reserved_inode(ctx.sb, inode) {
                    return Err(at(format!("names reserved inode {inode}")));
                }
                if name.contains(&b'/') || name.contains(&0) {
                    return Err(at(format!(
                        "name {:?} contains '/' or NUL",
                        String::from_utf8_lossy(name)
                    )));
                }
                let off = u32::try_from(out.names.len())
                    .map_err(|_| at("more than 4 GiB of names in one directory".into()))?;
                out.names.extend_from_slice(name);
                out.entries.push((off, name_len as u8, inode));
            }
        }
        pos += rec_len;
    }
    Ok(())
}

/// Verify and strip the checksum tail of a leaf block (metadata_csum).
fn leaf_area<'b>(ctx: &Ctx, ino: &Inode, block: &'b [u8], w: Where) -> Result<&'b [u8]> {
    if !ctx.sb.has_metadata_csum() {
        return Ok(block);
    }
    let t = block.len() - DIR_TAIL_SIZE;
    let tail = &block[t..];
    // fs/ext4/namei.c: get_dirent_tail.
    let ok = le_u32(tail, 0) == Some(0)
        && le_u16(tail, 4) == Some(DIR_TAIL_SIZE as u16)
        && tail[6] == 0
        && tail[7] == DIR_TAIL_FT;
    if !ok {
        return Err(corrupt(
            w,
            "ext4 directory block",
            "leaf block has no checksum tail".into(),
        ));
    }
    if ctx.metadata_csum {
        let stored = le_u32(tail, 8).unwrap_or(0);
        let computed = dir_leaf_checksum(ino.csum_seed, block);
        if stored != computed {
            return Err(Error::checksum(
                "ext4 directory block",
                w.loc,
                u64::from(stored),
                u64::from(computed),
            ));
        }
    }
    Ok(&block[..t])
}

/// Physical block of logical block `l`, from sorted extents.
fn phys(extents: &[BlockExtent], l: u64) -> Option<u64> {
    let i = extents.partition_point(|e| e.logical + e.len <= l);
    let e = extents.get(i)?;
    (e.logical <= l).then(|| e.physical + (l - e.logical))
}

/// Read a block-mapped directory. `extents` are its blocks below i_size.
pub(crate) fn read_blocks(
    ctx: &Ctx,
    ino: &Inode,
    extents: &[BlockExtent],
    out: &mut DirList,
) -> Result<()> {
    let bs = ctx.bs as usize;
    let mut buf = vec![0u8; bs];
    let index = if ino.has_flag(inode_flags::INDEX) {
        dx_index_blocks(ctx, ino, extents, &mut buf)?
    } else {
        HashSet::new()
    };
    for e in extents {
        for k in 0..e.len {
            let l = e.logical + k;
            if index.contains(&l) {
                continue;
            }
            let p = e.physical + k;
            ctx.read_block(p, &mut buf)?;
            let w = Where {
                dir: ino.ino,
                loc: Location::Block(p),
            };
            let area = leaf_area(ctx, ino, &buf, w)?;
            parse_entries(ctx, area, w, out)?;
        }
    }
    Ok(())
}

/// Walk an htree's index: check the root and every interior node, and return
/// the logical blocks that hold index nodes (the root, block 0, included).
fn dx_index_blocks(
    ctx: &Ctx,
    ino: &Inode,
    extents: &[BlockExtent],
    buf: &mut [u8],
) -> Result<HashSet<u64>> {
    let dir_blocks = extents.last().map_or(0, |e| e.logical + e.len);
    let mut index = HashSet::new();
    let root_p = phys(extents, 0).ok_or_else(|| {
        Error::corrupt(
            "ext4 htree root",
            Location::Inode(u64::from(ino.ino)),
            "indexed directory has no block 0",
        )
    })?;
    let w = Where {
        dir: ino.ino,
        loc: Location::Block(root_p),
    };
    ctx.read_block(root_p, buf)?;
    index.insert(0);
    // Limits and checksum first: a damaged root then reports as such.
    let mut level_nodes = dx_node_children(ctx, ino, buf, DX_ROOT_COUNT_OFFSET, w)?;
    let info_bytes: &[u8; 8] = buf[0x18..0x20].try_into().expect("8 bytes");
    let info = DxRootInfo::decode(info_bytes);
    if info.reserved_zero != 0 || info.info_length != 8 {
        return Err(corrupt(
            w,
            "ext4 htree root",
            format!(
                "dx_root_info reserved_zero {:#x}, info_length {}",
                info.reserved_zero, info.info_length
            ),
        ));
    }
    if info.hash_version > 6 {
        return Err(corrupt(
            w,
            "ext4 htree root",
            format!("unknown hash_version {}", info.hash_version),
        ));
    }
    // fs/ext4/namei.c: dx_probe; ext4_dir_htree_level.
    let max_levels: u8 = if ctx.sb.has_incompat(incompat::LARGEDIR) {
        3
    } else {
        2
    };
    if info.indirect_levels >= max_levels {
        return Err(corrupt(
            w,
            "ext4 htree root",
            format!(
                "indirect_levels {} (at most {} here)",
                info.indirect_levels,
                max_levels - 1
            ),
        ));
    }
    for level in 1..=info.indirect_levels {
        let mut next = Vec::new();
        for l in level_nodes {
            if l == 0 || l >= dir_blocks {
                return Err(corrupt(
                    w,
                    "ext4 htree node",
                    format!("points to block {l} of a {dir_blocks}-block directory"),
                ));
            }
            if !index.insert(l) {
                return Err(corrupt(
                    w,
                    "ext4 htree node",
                    format!("block {l} is referenced twice in the index"),
                ));
            }
            let p = phys(extents, l)
                .ok_or_else(|| corrupt(w, "ext4 htree node", format!("block {l} is a hole")))?;
            ctx.read_block(p, buf)?;
            let nw = Where {
                dir: ino.ino,
                loc: Location::Block(p),
            };
            let children = dx_node_children(ctx, ino, buf, DX_NODE_COUNT_OFFSET, nw)?;
            if level < info.indirect_levels {
                next.extend(children);
            }
        }
        level_nodes = next;
    }
    Ok(index)
}

/// Check one index node's count/limit and checksum, and list the logical blocks
/// its entries point to.
fn dx_node_children(
    ctx: &Ctx,
    ino: &Inode,
    block: &[u8],
    count_offset: usize,
    w: Where,
) -> Result<Vec<u64>> {
    let csum = ctx.sb.has_metadata_csum();
    let tail = if csum { DX_TAIL_SIZE } else { 0 };
    let want_limit = (block.len() - count_offset - tail) / 8;
    let limit = le_u16(block, count_offset).unwrap_or(0);
    let count = le_u16(block, count_offset + 2).unwrap_or(0);
    if usize::from(limit) != want_limit || count == 0 || count > limit {
        return Err(corrupt(
            w,
            "ext4 htree node",
            format!("count {count} / limit {limit} (limit should be {want_limit})"),
        ));
    }
    if ctx.metadata_csum {
        let t = count_offset + 8 * usize::from(limit);
        let stored = le_u32(block, t + 4).unwrap_or(0);
        let computed =
            dx_node_checksum(ino.csum_seed, block, count_offset, count, limit).unwrap_or(!stored);
        if stored != computed {
            return Err(Error::checksum(
                "ext4 htree node",
                w.loc,
                u64::from(stored),
                u64::from(computed),
            ));
        }
    }
    let mut v = Vec::with_capacity(usize::from(count));
    for i in 0..usize::from(count) {
        // Entry 0's hash is implied; every entry's block word is its second half.
        let b = le_u32(block, count_offset + 8 * i + 4).unwrap_or(0);
        v.push(u64::from(b & 0x0fff_ffff));
    }
    Ok(v)
}

/// Read an inline-data directory: i_block holds the parent's inode number and
/// then entries; the system.data xattr value, if any, holds more entries. Each
/// area's entries must end exactly at its end.
pub(crate) fn read_inline(
    ctx: &Ctx,
    ino: &Inode,
    in_inode: &[u8],
    in_xattr: &[u8],
    out: &mut DirList,
) -> Result<()> {
    let w = Where {
        dir: ino.ino,
        loc: Location::Inode(u64::from(ino.ino)),
    };
    // The first four bytes are the ".." inode number.
    parse_entries(ctx, in_inode.get(4..).unwrap_or(&[]), w, out)?;
    parse_entries(ctx, in_xattr, w, out)
}
