//! Deciding what each inode stores before anything is placed: inode order
//! (breadth-first, names sorted, lost+found first), inline or block content,
//! directory shapes, xattr placement, and the checks that refuse a tree the
//! builder cannot reproduce before anything is produced.
//!
//! Nothing here knows block numbers; `place` does.

use std::collections::HashMap;

use super::map::{self, Ext};
use super::{dir, hash, inode, xattr};
use crate::disk::check_range;
use crate::error::{Error, Location, Result};
use crate::fs::ext4::ondisk::{self, ftype};
use crate::fs::ext4::superblock::{compat, incompat, ro_compat, Superblock};
use crate::tree::{Kind, NodeId, Src, Tree};

/// Filesystem-wide switches, derived once from the source superblock.
pub(super) struct Features {
    pub(super) bs: u64,
    pub(super) extents: bool,
    pub(super) inline: bool,
    pub(super) csum: bool,
    pub(super) large_file: bool,
    pub(super) dir_nlink: bool,
    pub(super) resize: bool,
    pub(super) ext_attr: bool,
    pub(super) dirp: dir::DirParams,
    pub(super) inop: inode::InodeParams,
    /// Bytes of the in-inode xattr region.
    pub(super) ibody_room: usize,
}

impl Features {
    pub(super) fn new(sb: &Superblock) -> Self {
        let bs = u64::from(sb.block_size());
        let inode_size = usize::from(sb.inode_size());
        let extra_isize = if inode_size > ondisk::GOOD_OLD_INODE_SIZE {
            // New inodes carry at least every field the kernel knows (32 bytes,
            // through i_projid), more if the superblock wants it.
            let want = sb.s_want_extra_isize.max(sb.s_min_extra_isize).max(32);
            let max = (inode_size - ondisk::GOOD_OLD_INODE_SIZE) as u16;
            want.min(max) & !3
        } else {
            0
        };
        let ibody_room =
            inode_size.saturating_sub(ondisk::GOOD_OLD_INODE_SIZE + usize::from(extra_isize));
        let csum = sb.has_metadata_csum();
        Features {
            bs,
            extents: sb.has_incompat(incompat::EXTENTS),
            inline: sb.has_incompat(incompat::INLINE_DATA) && ibody_room > 0,
            csum,
            large_file: sb.has_ro_compat(ro_compat::LARGE_FILE),
            dir_nlink: sb.has_ro_compat(ro_compat::DIR_NLINK),
            resize: sb.has_compat(compat::RESIZE_INODE),
            ext_attr: sb.has_compat(compat::EXT_ATTR),
            dirp: dir::DirParams {
                bs: bs as usize,
                csum,
                filetype: sb.has_incompat(incompat::FILETYPE),
                dir_index: sb.has_compat(compat::DIR_INDEX),
                large_dir: sb.has_incompat(incompat::LARGEDIR),
                hash: hash::DirHash::for_superblock(sb),
                inline: sb.has_incompat(incompat::INLINE_DATA) && ibody_room > 0,
                root_hash_version: sb.s_def_hash_version,
            },
            inop: inode::InodeParams {
                inode_size,
                extra_isize,
                huge_file: sb.has_ro_compat(ro_compat::HUGE_FILE),
                csum,
                project: sb.has_ro_compat(ro_compat::PROJECT),
            },
            ibody_room,
        }
    }
}

/// What one inode stores, decided before placement.
pub(super) enum Body {
    /// fifo, socket, device (i_block holds the device number), fast symlink.
    InBlock([u8; 60]),
    /// Inline data: `i_block` and the `system.data` value.
    Inline { i_block: [u8; 60] },
    /// A slow symlink: one block holding the target.
    Link(Vec<u8>),
    /// A regular file: logical block ranges to allocate `(first, count)`.
    File(Vec<(u64, u64)>),
    /// A directory of this shape (encoded once inode numbers are known).
    Dir(dir::Shape),
}

pub(super) struct Prep {
    pub(super) body: Body,
    pub(super) attrs: xattr::Placed,
}

impl Prep {
    pub(super) fn data_blocks(&self) -> u64 {
        match &self.body {
            Body::InBlock(_) | Body::Inline { .. } => 0,
            Body::Link(_) => 1,
            Body::File(r) => r.iter().map(|x| x.1).sum(),
            Body::Dir(s) => s.blocks(),
        }
    }
}

pub(super) fn ftype_of(kind: &Kind) -> u8 {
    match kind {
        Kind::File(_) => ftype::REG,
        Kind::Dir(_) => ftype::DIR,
        Kind::Symlink(_) => ftype::SYMLINK,
        Kind::CharDev(_) => ftype::CHRDEV,
        Kind::BlockDev(_) => ftype::BLKDEV,
        Kind::Fifo => ftype::FIFO,
        Kind::Socket => ftype::SOCK,
    }
}

/// mke2fs's lost+found: expanded until it is 16 KiB and at least two blocks, but
/// never past the 12 direct blocks (misc/mke2fs.c `create_lost_and_found`). With
/// inline_data the directory starts inline and the first expansion only moves it
/// to a block, so it ends one block smaller; we match that too.
pub(super) fn lost_found_blocks(bs: u64, inline: bool) -> u64 {
    let mut size = 0;
    let mut blocks = 1;
    for _ in 1..12 {
        size += bs;
        if size >= 16 * 1024 && size >= 2 * bs {
            break;
        }
        blocks += 1;
    }
    if inline {
        blocks = (blocks - 1).max(1);
    }
    blocks
}

/// Reachable nodes in inode order, each directory's parent, and the number of
/// names of each node.
pub(super) struct Order {
    pub(super) nodes: Vec<NodeId>,
    /// For each node of `nodes`, the directory whose entry named it first.
    pub(super) via: Vec<NodeId>,
    /// Parent directory of each directory node (indexed by NodeId).
    pub(super) parent: HashMap<NodeId, NodeId>,
    pub(super) lost_found: Option<NodeId>,
}

pub(super) fn order_nodes(tree: &Tree) -> Result<Order> {
    let n = tree.nodes.len();
    let root = tree.root;
    if !tree.nodes.get(root as usize).is_some_and(|r| r.is_dir()) {
        return Err(Error::corrupt(
            "tree",
            Location::Whole,
            "the root is not a directory",
        ));
    }
    let mut seen = vec![false; n];
    let mut nodes = vec![root];
    let mut via = vec![root];
    seen[root as usize] = true;
    let lost_found = tree
        .lookup(root, b"lost+found")
        .filter(|&id| tree.node(id).is_dir());
    if let Some(l) = lost_found {
        nodes.push(l);
        via.push(root);
        seen[l as usize] = true;
    }
    let mut parent = HashMap::new();
    let mut queue = std::collections::VecDeque::from([root]);
    while let Some(d) = queue.pop_front() {
        for e in tree.entries(d) {
            let child = e.node;
            let node = tree.nodes.get(child as usize).ok_or_else(|| {
                Error::corrupt(
                    "tree",
                    Location::Whole,
                    format!("entry names missing node {child}"),
                )
            })?;
            if node.is_dir() {
                if parent.insert(child, d).is_some() || child == root {
                    return Err(Error::corrupt(
                        "tree",
                        Location::Inode(node.source_ino),
                        "directory reachable by two paths",
                    ));
                }
                queue.push_back(child);
            }
            if !std::mem::replace(&mut seen[child as usize], true) {
                nodes.push(child);
                via.push(d);
            }
        }
    }
    Ok(Order {
        nodes,
        via,
        parent,
        lost_found,
    })
}

/// A generous count of map blocks (extent tree or indirect) a prepared inode
/// needs, for sizing: placement may split data at metadata, adding extents.
pub(super) fn map_estimate(f: &Features, p: &Prep) -> u64 {
    let ranges: Vec<(u64, u64)> = match &p.body {
        Body::File(r) => r.clone(),
        Body::Dir(s) if s.blocks() > 0 => vec![(0, s.blocks())],
        Body::Link(_) => vec![(0, 1)],
        _ => return 0,
    };
    let bs = f.bs as usize;
    if f.extents {
        let blocks: u64 = ranges.iter().map(|r| r.1).sum();
        let n = ranges.len() as u64 + blocks / 16384 + 2;
        map::extent_tree_blocks(n, bs)
    } else {
        let exts: Vec<Ext> = ranges
            .iter()
            .map(|&(l, n)| Ext {
                lblk: l,
                pblk: 0,
                len: n,
            })
            .collect();
        map::ind_blocks(&exts, bs)
    }
}

/// Prepare one node: its body (inline or blocks) and its attributes' placement.
pub(super) fn prepare(
    tree: &Tree,
    f: &Features,
    id: NodeId,
    slot: usize,
    order: &Order,
    links: &[u32],
) -> Result<Prep> {
    let node = tree.node(id);
    let where_ = Location::Inode(node.source_ino);
    let attrs = if node.xattrs.is_empty() {
        Vec::new()
    } else {
        if !f.ext_attr {
            return Err(Error::unsupported(format!(
                "inode {} has extended attributes but the filesystem lacks ext_attr",
                node.source_ino
            )));
        }
        xattr::prepare(tree, &node.xattrs, node.source_ino)?
    };
    let count = links.get(id as usize).copied().unwrap_or(0);
    if count > 65000 && !(node.is_dir() && f.dir_nlink) {
        return Err(Error::unsupported(format!(
            "inode {} has {count} links, more than ext4 allows",
            node.source_ino
        )));
    }
    let bs = f.bs;
    let inline_max = if f.inline {
        60 + xattr::max_inline_value(f.ibody_room)
    } else {
        0
    };
    let mut inline_ea: Option<Vec<u8>> = None;
    let body = match &node.kind {
        Kind::File(runs) => {
            check_runs(tree, node, runs)?;
            if node.size > 0x7fff_ffff && !f.large_file {
                return Err(Error::unsupported(format!(
                    "file of {} bytes (inode {}) on a filesystem without large_file",
                    node.size, node.source_ino
                )));
            }
            if f.inline && node.size <= inline_max as u64 {
                // Small enough to read: at most i_block plus the in-inode xattr
                // space.
                let mut data = vec![0u8; node.size as usize];
                tree.read_file(id, 0, &mut data)?;
                let mut i_block = [0u8; 60];
                let head = data.len().min(60);
                i_block[..head].copy_from_slice(&data[..head]);
                inline_ea = Some(data[head..].to_vec());
                Body::Inline { i_block }
            } else {
                let mut ranges: Vec<(u64, u64)> = Vec::new();
                for r in runs {
                    if r.len == 0 {
                        continue;
                    }
                    let first = r.logical / bs;
                    let end = (r.logical + r.len).div_ceil(bs);
                    match ranges.last_mut() {
                        Some(last) if last.0 + last.1 >= first => {
                            last.1 = last.1.max(end - last.0);
                        }
                        _ => ranges.push((first, end - first)),
                    }
                }
                let last = ranges.last().map_or(0, |r| r.0 + r.1);
                let limit = if f.extents {
                    1u64 << 32
                } else {
                    map::ind_max_blocks(bs as usize).min(1 << 32)
                };
                if last > limit || node.size.div_ceil(bs) > limit {
                    return Err(Error::unsupported(format!(
                        "file of {} bytes (inode {}) is larger than this block size allows",
                        node.size, node.source_ino
                    )));
                }
                Body::File(ranges)
            }
        }
        Kind::Dir(entries) => {
            let names: Vec<&[u8]> = entries.iter().map(|e| tree.name(e.name)).collect();
            // The Tree promises sorted, unique names without "." and ".."; a
            // directory that breaks that would build into one e2fsck rejects.
            if names.iter().any(|n| *n == b"." || *n == b"..")
                || names.windows(2).any(|w| w[0] >= w[1])
            {
                return Err(Error::corrupt(
                    "tree",
                    where_,
                    "directory entries are unsorted, repeated, or named . or ..",
                ));
            }
            let min = if Some(id) == order.lost_found {
                lost_found_blocks(bs, f.inline)
            } else {
                0
            };
            // The root (inode 2) is never inline, as in mke2fs.
            let shape = dir::shape(&f.dirp, &names, min, slot != 0)?;
            if shape == dir::Shape::Inline {
                inline_ea = Some(Vec::new());
            }
            Body::Dir(shape)
        }
        Kind::Symlink(target) => {
            if target.is_empty() || target.contains(&0) || target.len() >= bs as usize {
                return Err(Error::corrupt(
                    "symlink",
                    where_,
                    format!("target of {} bytes cannot be stored", target.len()),
                ));
            }
            if target.len() < 60 {
                let mut ib = [0u8; 60];
                ib[..target.len()].copy_from_slice(target);
                Body::InBlock(ib)
            } else {
                Body::Link(target.to_vec())
            }
        }
        Kind::CharDev(d) | Kind::BlockDev(d) => {
            let mut ib = [0u8; 60];
            // The kernel's encodings (fs/ext4/inode.c ext4_write_inode): the old
            // 16-bit form in i_block[0] when both numbers fit a byte, else the
            // new 32-bit form in i_block[1].
            if d.major < 256 && d.minor < 256 {
                ib[..4].copy_from_slice(&((d.major << 8) | d.minor).to_le_bytes());
            } else {
                if d.major >= 4096 || d.minor >= 1 << 20 {
                    return Err(Error::unsupported(format!(
                        "device number {}:{} (inode {})",
                        d.major, d.minor, node.source_ino
                    )));
                }
                let v = (d.minor & 0xff) | (d.major << 8) | ((d.minor & !0xff) << 12);
                ib[4..8].copy_from_slice(&v.to_le_bytes());
            }
            Body::InBlock(ib)
        }
        Kind::Fifo | Kind::Socket => Body::InBlock([0u8; 60]),
    };
    let placed = xattr::place(
        attrs,
        inline_ea.as_deref(),
        f.ibody_room,
        bs as usize,
        node.source_ino,
    )?;
    Ok(Prep {
        body,
        attrs: placed,
    })
}

pub(super) fn check_runs(
    tree: &Tree,
    node: &crate::tree::Node,
    runs: &[crate::tree::Run],
) -> Result<()> {
    let mut end = 0u64;
    for r in runs {
        let run_end = r.logical.checked_add(r.len);
        if r.logical < end || run_end.is_none_or(|e| e > node.size) {
            return Err(Error::corrupt(
                "tree",
                Location::Inode(node.source_ino),
                "file runs overlap, are unsorted or pass the file size",
            ));
        }
        end = r.logical + r.len;
        match r.src {
            Src::Volume(at) => {
                let src = tree.source.as_ref().ok_or_else(|| {
                    Error::corrupt(
                        "tree",
                        Location::Inode(node.source_ino),
                        "volume run without a source",
                    )
                })?;
                check_range("file run", src.len(), at, r.len)?;
            }
            Src::Blob { blob, offset } => {
                let b = tree.blobs.get(blob as usize).ok_or_else(|| {
                    Error::corrupt(
                        "tree",
                        Location::Inode(node.source_ino),
                        "run names a missing blob",
                    )
                })?;
                check_range("file run", b.len() as u64, offset, r.len)?;
            }
        }
    }
    Ok(())
}
