//! The walk from the root: breadth-first over directories, decoding each newly
//! seen inode once (hard links map to one node), in parallel batches that read
//! a span of an inode table at a time.
//!
//! Decoding (inode, block map, directory entries, xattrs) runs on rayon workers
//! and produces self-contained results; merging them into the Tree (interning
//! xattrs, naming entries, assigning node ids) is sequential, so the Tree needs
//! no locking and node ids are deterministic.

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;

use super::dir::{self, DirList};
use super::inode::{ftype, Inode};
use super::xattr::{self, InodeXattrs};
use super::{blockmap, Ctx};
use crate::error::{Error, Location, Result};
use crate::fs::ext4::ondisk::{ino as reserved, inode_flags};
use crate::tree::{Dev, Entry, Kind, Node, NodeId, Run, Src, Tree, Xattr};

/// Inodes decoded per merge round: bounds the decoded-but-not-merged state.
const ROUND: usize = 16 * 1024;
/// The largest inode-table span read at once.
const SPAN: u64 = 64 * 1024;
/// The largest symlink target accepted (the kernel caps a target at one block).
const SYMLINK_MAX: u64 = 65536;

/// One inode, decoded and ready to merge into the tree.
struct Decoded {
    node: Node,
    xattrs: InodeXattrs,
    dir: Option<DirList>,
    /// Owned pieces that `node`'s runs name by local index.
    blobs: Vec<Arc<[u8]>>,
}

/// Inodes whose table slots lie within one span of the volume.
struct Batch {
    start: u64,
    len: u64,
    /// (inode number, node id, offset of the inode in the span)
    items: Vec<(u32, NodeId, usize)>,
}

/// Fill `tree` with everything reachable from the root inode. Returns how many
/// inodes it holds.
pub(crate) fn build(ctx: &Ctx, tree: &mut Tree) -> Result<u64> {
    let mut ids: HashMap<u32, NodeId> = HashMap::new();
    ids.insert(reserved::ROOT, tree.root);
    let mut block_xattrs: HashMap<u64, Vec<Xattr>> = HashMap::new();
    let mut frontier = vec![(reserved::ROOT, tree.root)];
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for round in frontier.chunks(ROUND) {
            let mut sorted = round.to_vec();
            sorted.sort_unstable_by_key(|&(n, _)| n);
            let batches = batches(ctx, &sorted)?;
            let results: Vec<Result<Vec<(u32, NodeId, Decoded)>>> =
                batches.par_iter().map(|b| decode_batch(ctx, b)).collect();
            for r in results {
                for (n, id, d) in r? {
                    if id == tree.root && !matches!(d.node.kind, Kind::Dir(_)) {
                        return Err(Error::corrupt(
                            "ext4 root inode",
                            Location::Inode(u64::from(n)),
                            format!("the root is a {}, not a directory", d.node.kind.name()),
                        ));
                    }
                    merge(tree, &mut ids, &mut block_xattrs, &mut next, id, d)?;
                }
            }
        }
        frontier = next;
    }
    Ok(ids.len() as u64)
}

fn batches(ctx: &Ctx, sorted: &[(u32, NodeId)]) -> Result<Vec<Batch>> {
    let isz = u64::from(ctx.sb.inode_size());
    let mut out: Vec<Batch> = Vec::new();
    for &(n, id) in sorted {
        let off = ctx.inode_offset(n)?;
        if let Some(b) = out.last_mut() {
            if off >= b.start && off + isz - b.start <= SPAN {
                b.items.push((n, id, (off - b.start) as usize));
                b.len = b.len.max(off + isz - b.start);
                continue;
            }
        }
        out.push(Batch {
            start: off,
            len: isz,
            items: vec![(n, id, 0)],
        });
    }
    Ok(out)
}

fn decode_batch(ctx: &Ctx, b: &Batch) -> Result<Vec<(u32, NodeId, Decoded)>> {
    let isz = usize::from(ctx.sb.inode_size());
    let mut buf = vec![0u8; b.len as usize];
    ctx.read_at(b.start, &mut buf)?;
    b.items
        .iter()
        .map(|&(n, id, o)| Ok((n, id, decode(ctx, n, &buf[o..o + isz])?)))
        .collect()
}

/// Decode one linked inode completely (everything but its children).
fn decode(ctx: &Ctx, n: u32, bytes: &[u8]) -> Result<Decoded> {
    let ino = Inode::parse(ctx, n, bytes)?;
    // fs/ext4/inode.c: ext4_iget treats a zero link count as a deleted inode.
    if ino.raw.i_links_count == 0 {
        return Err(Error::corrupt(
            "ext4 inode",
            ino.loc(),
            "a directory entry names a deleted inode (i_links_count 0)",
        ));
    }
    let xattrs = xattr::read(ctx, &ino)?;
    let bs = u64::from(ctx.bs);
    let inline = ino.has_flag(inode_flags::INLINE_DATA);
    let mut blobs = Vec::new();
    let mut dir = None;
    let words = ino.block_words();
    let kind = match ino.mode_type() {
        ftype::REG => {
            if inline {
                let data = inline_bytes(&ino, &xattrs)?;
                if data.is_empty() {
                    Kind::File(Vec::new())
                } else {
                    let len = data.len() as u64;
                    blobs.push(Arc::from(data));
                    Kind::File(vec![Run {
                        logical: 0,
                        len,
                        src: Src::Blob { blob: 0, offset: 0 },
                    }])
                }
            } else {
                let extents = blockmap::map(ctx, &ino, ino.size.div_ceil(bs))?;
                Kind::File(blockmap::byte_runs(ctx, &extents, ino.size, &mut blobs))
            }
        }
        ftype::DIR => {
            let mut list = DirList::default();
            if inline {
                let tail = xattrs.inline_data.as_deref().unwrap_or(&[]);
                dir::read_inline(ctx, &ino, &ino.raw.i_block, tail, &mut list)?;
            } else {
                let extents = blockmap::map(ctx, &ino, ino.size.div_ceil(bs))?;
                dir::read_blocks(ctx, &ino, &extents, &mut list)?;
            }
            dir = Some(list);
            Kind::Dir(Vec::new())
        }
        ftype::LNK => Kind::Symlink(symlink_target(ctx, &ino, &xattrs)?.into_boxed_slice()),
        ftype::CHR => Kind::CharDev(rdev(words)),
        ftype::BLK => Kind::BlockDev(rdev(words)),
        ftype::FIFO => Kind::Fifo,
        ftype::SOCK => Kind::Socket,
        other => {
            return Err(Error::corrupt(
                "ext4 inode",
                ino.loc(),
                format!(
                    "unknown file type {other:#o} in i_mode {:#o}",
                    ino.raw.i_mode
                ),
            ))
        }
    };
    let node = Node {
        kind,
        perm: ino.raw.i_mode & 0o7777,
        uid: ino.uid,
        gid: ino.gid,
        atime: ino.atime(),
        mtime: ino.mtime(),
        ctime: ino.ctime(),
        crtime: ino.crtime(),
        size: ino.size,
        flags: ino.flags,
        generation: ino.raw.i_generation,
        projid: ino.projid(),
        fs_raw: Default::default(),
        xattrs: Vec::new(),
        source_ino: u64::from(n),
    };
    Ok(Decoded {
        node,
        xattrs,
        dir,
        blobs,
    })
}

/// The content of an inline-data inode: i_block, then the system.data value,
/// cut to i_size.
fn inline_bytes(ino: &Inode, xattrs: &InodeXattrs) -> Result<Vec<u8>> {
    let tail = xattrs.inline_data.as_deref().unwrap_or(&[]);
    let have = (ino.raw.i_block.len() + tail.len()) as u64;
    if ino.size > have {
        return Err(Error::corrupt(
            "ext4 inline data",
            ino.loc(),
            format!("i_size {} but only {have} bytes of inline data", ino.size),
        ));
    }
    let mut v = Vec::with_capacity(ino.size as usize);
    v.extend_from_slice(&ino.raw.i_block);
    v.extend_from_slice(tail);
    v.truncate(ino.size as usize);
    Ok(v)
}

/// A symlink's target: inline, fast (in i_block) or slow (in data blocks).
fn symlink_target(ctx: &Ctx, ino: &Inode, xattrs: &InodeXattrs) -> Result<Vec<u8>> {
    if ino.has_flag(inode_flags::INLINE_DATA) {
        return inline_bytes(ino, xattrs);
    }
    if ino.size > SYMLINK_MAX {
        return Err(Error::corrupt(
            "ext4 symlink",
            ino.loc(),
            format!("target of {} bytes", ino.size),
        ));
    }
    let size = ino.size as usize;
    // fs/ext4/inode.c: ext4_inode_is_fast_symlink: no data blocks.
    if !ino.has_flag(inode_flags::EA_INODE) && ino.data_blocks_512(ctx.bs) == 0 {
        let t = ino
            .raw
            .i_block
            .get(..size)
            .filter(|_| size < 60)
            .ok_or_else(|| {
                Error::corrupt(
                    "ext4 symlink",
                    ino.loc(),
                    format!("fast symlink of {size} bytes (at most 59 fit)"),
                )
            })?;
        return Ok(t.to_vec());
    }
    let bs = u64::from(ctx.bs);
    let extents = blockmap::map(ctx, ino, ino.size.div_ceil(bs))?;
    let mut v = vec![0u8; size];
    for e in &extents {
        let s = e.logical * bs;
        let end = ((e.logical + e.len) * bs).min(ino.size);
        if s < end {
            ctx.read_at(e.physical * bs, &mut v[s as usize..end as usize])?;
        }
    }
    Ok(v)
}

/// Device numbers: the old 8:8 encoding in i_block[0], or the new one in
/// i_block[1] (fs/ext4/inode.c: ext4_iget, include/linux/kdev_t.h).
fn rdev(words: [u32; 15]) -> Dev {
    if words[0] != 0 {
        let d = words[0];
        Dev {
            major: (d >> 8) & 0xff,
            minor: d & 0xff,
        }
    } else {
        let d = words[1];
        Dev {
            major: (d & 0xfff00) >> 8,
            minor: (d & 0xff) | ((d >> 12) & 0xfff00),
        }
    }
}

/// Put one decoded inode into the tree: its blobs, its interned xattrs, and its
/// directory entries (assigning ids to children seen for the first time).
fn merge(
    tree: &mut Tree,
    ids: &mut HashMap<u32, NodeId>,
    block_xattrs: &mut HashMap<u64, Vec<Xattr>>,
    next: &mut Vec<(u32, NodeId)>,
    id: NodeId,
    d: Decoded,
) -> Result<()> {
    let Decoded {
        mut node,
        xattrs,
        dir,
        blobs,
    } = d;
    if !blobs.is_empty() {
        let base = tree.blobs.len() as u32;
        for b in blobs {
            tree.add_blob(b);
        }
        if let Kind::File(runs) = &mut node.kind {
            for r in runs {
                if let Src::Blob { blob, .. } = &mut r.src {
                    *blob += base;
                }
            }
        }
    }
    for (n, v) in &xattrs.ibody {
        node.xattrs.push(tree.xattr(n, v));
    }
    if let Some((blk, b)) = &xattrs.block {
        let interned = block_xattrs
            .entry(*blk)
            .or_insert_with(|| b.list.iter().map(|(n, v)| tree.xattr(n, v)).collect());
        node.xattrs.extend_from_slice(interned);
    }
    if let Some(list) = dir {
        let mut entries = Vec::with_capacity(list.entries.len());
        for e in &list.entries {
            let child = *ids.entry(e.2).or_insert_with(|| {
                let c = tree.add_node(Node::new(Kind::Fifo));
                next.push((e.2, c));
                c
            });
            entries.push(Entry {
                name: tree.add_name(list.name(e))?,
                node: child,
            });
        }
        node.kind = Kind::Dir(entries);
    }
    *tree.node_mut(id) = node;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::rdev;

    #[test]
    fn both_device_encodings() {
        let mut w = [0u32; 15];
        w[0] = 8 * 256 + 1;
        assert_eq!((rdev(w).major, rdev(w).minor), (8, 1));
        // major 300, minor 70000 in the new encoding.
        let (ma, mi) = (300u32, 70000u32);
        w[0] = 0;
        w[1] = (mi & 0xff) | (ma << 8) | ((mi & !0xff) << 12);
        assert_eq!((rdev(w).major, rdev(w).minor), (ma, mi));
    }
}
