//! Placement and encoding: inode numbers, blocks for every inode's content and
//! map, the journal and resize inodes, and at the end bitmaps, group
//! descriptors and superblocks, all gathered into the plan.
//!
//! Layout decisions (why packed, why these goals) are explained in the module
//! documentation of `build`.

use std::collections::HashMap;
use std::sync::Arc;

use super::layout::{Geometry, GroupTables};
use super::map::{self, Ext};
use super::prepare::{ftype_of, Body, Features, Order, Prep};
use super::size::too_small;
use super::{alloc, dir, inode, journal, resize, xattr};
use super::{BuildOptions, BuildStats, Built, JournalSpec, Placement, TargetSize};
use crate::disk::{check_range, Alloc as DiskAlloc, Disk, DiskInfo, Extent};
use crate::error::{Error, Location, Result};
use crate::fs::ext4::group::{bg_flags, desc_checksum, GroupDesc};
use crate::fs::ext4::ondisk::{self, ftype, ino as special_ino, inode_flags};
use crate::fs::ext4::superblock::{incompat, ro_compat, state, Superblock, SUPERBLOCK_OFFSET};
use crate::output::plan::{FileTag, Plan};
use crate::tree::{Flavor, Kind, NodeId, Src, Time, Tree};

/// A volume made of an owned byte blob (tree blobs referenced by the plan).
pub(super) struct BlobDisk(Arc<[u8]>);

impl Disk for BlobDisk {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range("tree blob", self.len(), offset, buf.len() as u64)?;
        let o = offset as usize;
        buf.copy_from_slice(&self.0[o..o + buf.len()]);
        Ok(())
    }
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let end = offset.saturating_add(len).min(self.len());
        Ok(if offset < end {
            vec![Extent {
                offset,
                len: end - offset,
                alloc: DiskAlloc::Data,
            }]
        } else {
            Vec::new()
        })
    }
    fn direct(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let end = usize::try_from(offset.checked_add(len)?).ok()?;
        self.0.get(offset as usize..end)
    }
    fn info(&self) -> DiskInfo {
        DiskInfo {
            format: "memory".into(),
            virtual_size: self.len(),
            allocated_size: self.len(),
            ..Default::default()
        }
    }
}

/// Allocate `len` blocks from `goal` on, as contiguously as free space allows.
pub(super) fn alloc_run(alloc: &mut alloc::Alloc, goal: u64, len: u64) -> Option<Vec<Ext>> {
    let mut v: Vec<Ext> = Vec::new();
    let mut done = 0;
    let mut at = goal;
    while done < len {
        let (s, n) = alloc.alloc(at, len - done)?;
        match v.last_mut() {
            Some(last) if last.pblk + last.len == s => last.len += n,
            _ => v.push(Ext {
                lblk: done,
                pblk: s,
                len: n,
            }),
        }
        done += n;
        at = s + n;
    }
    Some(v)
}

/// libext2fs `get_midpoint_journal_block`: the first block of the group around
/// the middle with the most free blocks (the start of a flex group with flex_bg).
pub(super) fn journal_goal(sb: &Superblock, geo: &Geometry, a: &alloc::Alloc) -> u64 {
    let free = |g: u64| {
        geo.group_end(g) - geo.group_first(g) - a.used_in(geo.group_first(g), geo.group_end(g))
    };
    let mut group = geo.group_of(geo.first + (geo.blocks - geo.first) / 2);
    let log_flex = 1u64 << sb.s_log_groups_per_flex.min(31);
    let start;
    if sb.s_log_groups_per_flex > 0 && group > log_flex {
        group &= !(log_flex - 1);
        while group < geo.groups && free(group) == 0 {
            group += 1;
        }
        if group == geo.groups {
            group = 0;
        }
        start = group;
    } else {
        start = group.saturating_sub(1);
    }
    let end = if group + 1 < geo.groups {
        group + 1
    } else {
        group
    };
    let mut best = start;
    for g in start + 1..=end {
        if free(g) > free(best) {
            best = g;
        }
    }
    geo.group_first(best)
}

/// Assign inode numbers: `inos[slot]` for each node in [`Order::nodes`].
pub(super) fn number_inodes(
    sb: &Superblock,
    geo: &Geometry,
    order: &Order,
    tree: &Tree,
    placement: Placement,
    orphan_file: bool,
) -> Result<(Vec<u32>, Option<u32>)> {
    let first_ino = u64::from(sb.first_ino());
    let total = u64::from(sb.s_inodes_count);
    let mut inos = Vec::with_capacity(order.nodes.len());
    // The orphan file takes the number after lost+found (or after the root),
    // where mke2fs creates it.
    let orphan_after = usize::from(order.lost_found.is_some());
    let mut orphan = None;
    match placement {
        Placement::Packed => {
            let mut next = first_ino;
            let mut take = || -> Result<u32> {
                if next > total {
                    return Err(Error::unsupported("more inodes than the filesystem holds"));
                }
                next += 1;
                Ok((next - 1) as u32)
            };
            inos.push(special_ino::ROOT);
            if orphan_file && orphan_after == 0 {
                orphan = Some(take()?);
            }
            for k in 1..order.nodes.len() {
                inos.push(take()?);
                if orphan_file && k == orphan_after {
                    orphan = Some(take()?);
                }
            }
        }
        Placement::Spread => {
            // Per-group next free inode index.
            let ipg = geo.ipg;
            let mut next: Vec<u64> = vec![0; geo.groups as usize];
            next[0] = first_ino - 1; // inodes 1..first_ino-1 are reserved
            let mut group_of: HashMap<NodeId, u64> = HashMap::new();
            group_of.insert(tree.root, 0);
            let flexes = geo.groups.div_ceil(geo.flex);
            let mut spread_next = 1u64;
            let take = |goal: u64, next: &mut Vec<u64>| -> Result<u64> {
                for k in 0..geo.groups {
                    let g = (goal + k) % geo.groups;
                    if next[g as usize] < ipg {
                        next[g as usize] += 1;
                        return Ok(g * ipg + next[g as usize]);
                    }
                }
                Err(Error::unsupported("more inodes than the filesystem holds"))
            };
            for (slot, &id) in order.nodes.iter().enumerate() {
                if slot == 0 {
                    inos.push(special_ino::ROOT);
                    if orphan_file && orphan_after == 0 {
                        orphan = Some(take(0, &mut next)? as u32);
                    }
                    continue;
                }
                let parent = order.via[slot];
                let parent_group = group_of.get(&parent).copied().unwrap_or(0);
                let goal = if tree.node(id).is_dir()
                    && parent == tree.root
                    && Some(id) != order.lost_found
                {
                    // Orlov for top-level directories: each starts a new flex
                    // group, round-robin.
                    let g = (spread_next % flexes) * geo.flex;
                    spread_next += 1;
                    g
                } else {
                    parent_group
                };
                let ino = take(goal, &mut next)?;
                if tree.node(id).is_dir() {
                    group_of.insert(id, (ino - 1) / ipg);
                }
                inos.push(ino as u32);
                if orphan_file && slot == orphan_after {
                    orphan = Some(take(0, &mut next)? as u32);
                }
            }
        }
    }
    Ok((inos, orphan))
}

/// An inode's placed blocks: its data extents (logical to physical), its map
/// (`i_block` and the number of map blocks) and the block after the last one
/// used.
pub(super) struct Mapped {
    pub(super) data: Vec<Ext>,
    pub(super) i_block: [u8; 60],
    pub(super) map_blocks: u64,
    pub(super) end: u64,
}

/// Everything produced while placing inodes, turned into a plan at the end.
pub(super) struct Output<'a> {
    pub(super) sb: Superblock,
    pub(super) geo: Geometry,
    pub(super) tables: Vec<GroupTables>,
    pub(super) f: &'a Features,
    pub(super) tree: &'a Tree,
    pub(super) plan: Plan,
    /// Inode table contents per group (up to the last used inode).
    pub(super) itables: Vec<Vec<u8>>,
    /// Per group: used inodes, directories, highest used index (1-based).
    pub(super) inode_used: Vec<u32>,
    pub(super) dirs: Vec<u32>,
    pub(super) inode_bitmaps: Vec<Vec<u8>>,
    /// Shared xattr blocks: content -> (block, refcount).
    pub(super) xattr_blocks: HashMap<Vec<xattr::Attr>, Vec<(u64, u32)>>,
    pub(super) blob_disks: Vec<Option<Arc<dyn Disk>>>,
    pub(super) stats: BuildStats,
    /// The time special inodes and the superblock's write/check times get.
    pub(super) now: u32,
    pub(super) lost_found_ino: u32,
    pub(super) journal_i_block: Option<[u8; 60]>,
    pub(super) journal_size: u64,
    /// The orphan file to create: its inode number and block count.
    pub(super) orphan: Option<(u32, u64)>,
    /// Source values changed because e2fsck rejects them: what, and the source
    /// inodes it was done to.
    pub(super) normalised: std::collections::BTreeMap<&'static str, Vec<u64>>,
}

/// The latest time the source superblock records.
pub(super) fn source_time(sb: &Superblock) -> i64 {
    let t = |lo: u32, hi: u8| i64::from(lo) | (i64::from(hi) << 32);
    [
        t(sb.s_wtime, sb.s_wtime_hi),
        t(sb.s_mtime, sb.s_mtime_hi),
        t(sb.s_lastcheck, sb.s_lastcheck_hi),
        t(sb.s_mkfs_time, sb.s_mkfs_time_hi),
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
}

impl<'a> Output<'a> {
    pub(super) fn new(
        sb: &Superblock,
        geo: &Geometry,
        tables: Vec<GroupTables>,
        f: &'a Features,
        tree: &'a Tree,
    ) -> Self {
        let groups = geo.groups as usize;
        let now = source_time(sb);
        Output {
            sb: sb.clone(),
            geo: geo.clone(),
            tables,
            f,
            tree,
            plan: Plan::new(geo.blocks * geo.bs),
            itables: vec![Vec::new(); groups],
            inode_used: vec![0; groups],
            dirs: vec![0; groups],
            inode_bitmaps: vec![Vec::new(); groups],
            xattr_blocks: HashMap::new(),
            blob_disks: vec![None; tree.blobs.len()],
            stats: BuildStats::default(),
            now: now as u32,
            lost_found_ino: 0,
            journal_i_block: None,
            journal_size: 0,
            orphan: None,
            normalised: Default::default(),
        }
    }

    pub(super) fn now(&self) -> Time {
        Time {
            sec: i64::from(self.now),
            nsec: 0,
        }
    }

    /// Owned metadata bytes at block `blk`.
    /// All-zero metadata (a reserved GDT block with no backups to list, say) is
    /// left a hole: it reads back the same.
    pub(super) fn put(&mut self, blk: u64, bytes: Vec<u8>) {
        if bytes.iter().all(|&b| b == 0) {
            return;
        }
        self.stats.metadata_bytes += bytes.len() as u64;
        self.plan.bytes(blk * self.geo.bs, bytes);
    }

    /// Mark inode `ino` used and store its encoded record.
    pub(super) fn store_inode(
        &mut self,
        ino: u32,
        rec: &inode::InodeRec,
        is_dir: bool,
    ) -> Result<()> {
        let ipg = self.geo.ipg;
        let g = (u64::from(ino) - 1) / ipg;
        let idx = ((u64::from(ino) - 1) % ipg) as usize;
        let isz = self.f.inop.inode_size;
        let gi = g as usize;
        let t = &mut self.itables[gi];
        if t.len() < (idx + 1) * isz {
            t.resize((idx + 1) * isz, 0);
        }
        let seed = if self.f.csum {
            ondisk::inode_csum_seed(&self.sb, ino, rec.generation)
        } else {
            0
        };
        inode::encode(
            &self.f.inop,
            rec,
            ino,
            seed,
            &mut t[idx * isz..(idx + 1) * isz],
        )?;
        self.mark_inode(ino);
        if is_dir {
            self.dirs[gi] += 1;
        }
        Ok(())
    }

    pub(super) fn mark_inode(&mut self, ino: u32) {
        let ipg = self.geo.ipg;
        let g = ((u64::from(ino) - 1) / ipg) as usize;
        let idx = ((u64::from(ino) - 1) % ipg) as usize;
        let bm = &mut self.inode_bitmaps[g];
        if bm.is_empty() {
            bm.resize(self.geo.bs as usize, 0);
        }
        if bm[idx / 8] & (1 << (idx % 8)) == 0 {
            bm[idx / 8] |= 1 << (idx % 8);
            self.inode_used[g] += 1;
        }
    }

    pub(super) fn inode_seed(&self, ino: u32, generation: u32) -> u32 {
        if self.f.csum {
            ondisk::inode_csum_seed(&self.sb, ino, generation)
        } else {
            0
        }
    }

    /// Data goal for inode `ino`: the first block of its flex group (or group).
    pub(super) fn goal_for(&self, ino: u32) -> u64 {
        let g = (u64::from(ino) - 1) / self.geo.ipg;
        let g = g - g % self.geo.flex;
        self.geo.group_first(g)
    }

    /// Allocate an inode's blocks for the logical `ranges` (sorted `(first,
    /// count)`) from `goal` on, with its map, and encode the map. Extent-mapped
    /// files get their data contiguously and the tree blocks after it;
    /// indirect-mapped ones get each indirect block right before the data it
    /// maps, as ext2/3 lay them out.
    pub(super) fn alloc_mapped(
        &mut self,
        alloc: &mut alloc::Alloc,
        goal: u64,
        ranges: &[(u64, u64)],
        seed: u32,
        min_blocks: u64,
    ) -> Result<Mapped> {
        let bs = self.geo.bs as usize;
        let full = |s: &Self| too_small(&s.sb, min_blocks);
        if self.f.extents {
            let mut data: Vec<Ext> = Vec::new();
            let mut at = goal;
            for &(l, n) in ranges {
                let mut e = alloc_run(alloc, at, n).ok_or_else(|| full(self))?;
                for x in &mut e {
                    x.lblk += l;
                }
                if let Some(last) = e.last() {
                    at = last.pblk + last.len;
                }
                data.extend(e);
            }
            let entries = map::leaf_entries(&data);
            let n = map::extent_tree_blocks(entries.len() as u64, bs);
            let phys = self.alloc_blocks(alloc, at, n, min_blocks)?;
            let end = phys.last().map_or(at, |&p| p + 1).max(at);
            let enc = map::encode_extents(&entries, &phys, bs, seed, self.f.csum);
            for (b, bytes) in enc.blocks {
                self.put(b, bytes);
            }
            return Ok(Mapped {
                data,
                i_block: enc.i_block,
                map_blocks: n,
                end,
            });
        }
        let steps = map::ind_sequence(ranges, bs);
        let total: u64 = steps
            .iter()
            .map(|s| match s {
                map::Step::Data { len, .. } => *len,
                map::Step::Map => 1,
            })
            .sum();
        let runs = alloc_run(alloc, goal, total).ok_or_else(|| full(self))?;
        let end = runs.last().map_or(goal, |e| e.pblk + e.len);
        // Walk the physical runs and hand out blocks in step order.
        let mut phys_iter = runs.iter().flat_map(|e| e.pblk..e.pblk + e.len);
        let mut data: Vec<Ext> = Vec::new();
        let mut nodes = Vec::new();
        for st in steps {
            match st {
                map::Step::Map => nodes.push(phys_iter.next().unwrap_or(0)),
                map::Step::Data { lblk, len } => {
                    for k in 0..len {
                        let p = phys_iter.next().unwrap_or(0);
                        match data.last_mut() {
                            Some(d) if d.pblk + d.len == p && d.lblk + d.len == lblk + k => {
                                d.len += 1
                            }
                            _ => data.push(Ext {
                                lblk: lblk + k,
                                pblk: p,
                                len: 1,
                            }),
                        }
                    }
                }
            }
        }
        if end > u64::from(u32::MAX) {
            return Err(Error::unsupported("indirect-mapped blocks past 2^32"));
        }
        let enc = map::encode_indirect(&data, &nodes, bs);
        for (b, bytes) in enc.blocks {
            self.put(b, bytes);
        }
        Ok(Mapped {
            data,
            i_block: enc.i_block,
            map_blocks: nodes.len() as u64,
            end,
        })
    }

    pub(super) fn alloc_blocks(
        &mut self,
        alloc: &mut alloc::Alloc,
        goal: u64,
        n: u64,
        min_blocks: u64,
    ) -> Result<Vec<u64>> {
        let mut v = Vec::with_capacity(n as usize);
        let mut at = goal;
        while (v.len() as u64) < n {
            let (s, len) = alloc
                .alloc(at, n - v.len() as u64)
                .ok_or_else(|| too_small(&self.sb, min_blocks))?;
            v.extend(s..s + len);
            at = s + len;
        }
        Ok(v)
    }

    pub(super) fn source_for(&mut self, src: Src) -> Result<(Arc<dyn Disk>, u64)> {
        match src {
            Src::Volume(at) => Ok((
                self.tree.source.clone().ok_or_else(|| {
                    Error::corrupt("tree", Location::Whole, "volume run without a source")
                })?,
                at,
            )),
            Src::Blob { blob, offset } => {
                let slot = self.blob_disks.get_mut(blob as usize).ok_or_else(|| {
                    Error::corrupt("tree", Location::Whole, "run names a missing blob")
                })?;
                let d = slot
                    .get_or_insert_with(|| {
                        Arc::new(BlobDisk(self.tree.blobs[blob as usize].clone())) as Arc<dyn Disk>
                    })
                    .clone();
                Ok((d, offset))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn place_inodes(
        &mut self,
        tree: &Tree,
        order: &Order,
        preps: &[Prep],
        inos: &[u32],
        links: &[u32],
        alloc: &mut alloc::Alloc,
        min_blocks: u64,
    ) -> Result<()> {
        let bs = self.geo.bs;
        // Reserved inodes 1..first_ino-1 are in use (their records stay zero,
        // which e2fsck accepts; 7 and 8 are written below when used).
        for ino in 1..self.sb.first_ino() {
            self.mark_inode(ino);
        }
        let mut ino_of: HashMap<NodeId, u32> = HashMap::with_capacity(order.nodes.len());
        for (k, &id) in order.nodes.iter().enumerate() {
            ino_of.insert(id, inos[k]);
        }
        if let Some(l) = order.lost_found {
            self.lost_found_ino = ino_of[&l];
        }
        // Place in inode-number order so data follows inode order on disk.
        let mut by_ino: Vec<usize> = (0..order.nodes.len()).collect();
        by_ino.sort_by_key(|&k| inos[k]);
        let mut cursor = 0u64;
        let mut orphan_pending = self.orphan;
        for k in by_ino {
            let id = order.nodes[k];
            let ino = inos[k];
            if let Some((o, n)) = orphan_pending.filter(|&(o, _)| o < ino) {
                cursor = self.orphan_inode(o, n, alloc, cursor, min_blocks)?;
                orphan_pending = None;
            }
            let node = tree.node(id);
            let prep = &preps[k];
            let seed = self.inode_seed(ino, node.generation);
            let goal = cursor.max(self.goal_for(ino));
            let mut rec = inode::InodeRec {
                mode: node.mode() as u16,
                uid: node.uid,
                gid: node.gid,
                // Sizes the builder controls: a symlink's is its target's length,
                // special files have none; directories are set below.
                size: match &node.kind {
                    Kind::File(_) => node.size,
                    Kind::Symlink(t) => t.len() as u64,
                    _ => 0,
                },
                links: 0,
                flags: 0,
                generation: node.generation,
                projid: node.projid,
                atime: node.atime,
                mtime: node.mtime,
                ctime: node.ctime,
                crtime: node.crtime,
                i_block: [0; 60],
                blocks_512: 0,
                file_acl: 0,
                ibody: prep.attrs.ibody.clone(),
            };
            rec.flags = self.flags_for(node)?;
            let count = links.get(id as usize).copied().unwrap_or(1);
            rec.links = if count > 65000 { 1 } else { count as u16 };
            let mut blocks = 0u64;
            // External xattr block, shared when identical (up to the kernel's
            // refcount limit).
            if !prep.attrs.block.is_empty() {
                let list = self
                    .xattr_blocks
                    .entry(prep.attrs.block.clone())
                    .or_default();
                let blk = match list.last_mut() {
                    Some((b, refs)) if *refs < 1024 => {
                        *refs += 1;
                        *b
                    }
                    _ => {
                        let (b, _) = alloc
                            .alloc(goal, 1)
                            .ok_or_else(|| too_small(&self.sb, min_blocks))?;
                        list.push((b, 1));
                        b
                    }
                };
                rec.file_acl = blk;
                blocks += 1;
                self.stats.xattr_block_refs += 1;
            }
            let mut mapped: Option<Mapped> = None;
            match &prep.body {
                Body::InBlock(ib) => rec.i_block = *ib,
                Body::Inline { i_block, .. } => {
                    rec.i_block = *i_block;
                    rec.flags |= inode_flags::INLINE_DATA;
                    self.stats.inline_inodes += 1;
                }
                Body::Link(target) => {
                    let m = self.alloc_mapped(alloc, goal, &[(0, 1)], seed, min_blocks)?;
                    if let Some(e) = m.data.first() {
                        self.put(e.pblk, target.clone());
                    }
                    mapped = Some(m);
                }
                Body::File(ranges) => {
                    let runs: &[crate::tree::Run] = match &node.kind {
                        Kind::File(r) => r,
                        _ => &[],
                    };
                    let m = self.alloc_mapped(alloc, goal, ranges, seed, min_blocks)?;
                    if m.data.len() > ranges.len() {
                        self.stats.fragmented_files += 1;
                    }
                    self.copy_runs(runs, &m.data, Some((id, node.size)))?;
                    mapped = Some(m);
                }
                Body::Dir(shape) => {
                    let parent = order.parent.get(&id).copied().unwrap_or(tree.root);
                    let parent_ino = ino_of[&parent];
                    let entries: Vec<dir::DirEntryIn> = tree
                        .entries(id)
                        .iter()
                        .map(|e| dir::DirEntryIn {
                            name: tree.name(e.name),
                            ino: ino_of[&e.node],
                            ftype: ftype_of(&tree.node(e.node).kind),
                        })
                        .collect();
                    self.stats.hard_links +=
                        entries.iter().filter(|e| e.ftype != ftype::DIR).count() as u64;
                    match dir::encode(&self.f.dirp, shape, ino, parent_ino, &entries, seed) {
                        dir::DirOut::Inline(ib) => {
                            rec.i_block = ib;
                            rec.size = 60;
                            rec.flags |= inode_flags::INLINE_DATA;
                            self.stats.inline_inodes += 1;
                        }
                        dir::DirOut::Blocks { data, indexed } => {
                            let n = data.len() as u64 / bs;
                            let m = self.alloc_mapped(alloc, goal, &[(0, n)], seed, min_blocks)?;
                            for x in &m.data {
                                let s = (x.lblk * bs) as usize;
                                let t = ((x.lblk + x.len) * bs) as usize;
                                self.put(x.pblk, data[s..t].to_vec());
                            }
                            mapped = Some(m);
                            rec.size = n * bs;
                            if indexed {
                                rec.flags |= inode_flags::INDEX;
                                self.stats.htree_directories += 1;
                            }
                        }
                    }
                    self.stats.directories += 1;
                }
            }
            if let Some(m) = mapped {
                rec.i_block = m.i_block;
                if self.f.extents {
                    rec.flags |= inode_flags::EXTENTS;
                }
                blocks += m.map_blocks + m.data.iter().map(|e| e.len).sum::<u64>();
                cursor = cursor.max(m.end);
            }
            rec.blocks_512 = blocks * (bs / 512);
            self.store_inode(ino, &rec, node.is_dir())?;
        }
        if let Some((o, n)) = orphan_pending {
            self.orphan_inode(o, n, alloc, cursor, min_blocks)?;
        }
        // Extra names of hard-linked non-directories counted above are all the
        // names; subtract one per inode.
        let files = order
            .nodes
            .iter()
            .filter(|&&id| !tree.node(id).is_dir())
            .count() as u64;
        self.stats.hard_links = self.stats.hard_links.saturating_sub(files);
        Ok(())
    }

    /// The inode flags to store: the source's behavioural flags for ext4 trees,
    /// none for others; layout flags are the builder's. Flags e2fsck rejects on
    /// this kind of inode are cleared and the clearing recorded
    /// ([`BuildStats::normalised`]).
    pub(super) fn flags_for(&mut self, node: &crate::tree::Node) -> Result<u32> {
        if self.tree.flavor != Flavor::Ext4 {
            return Ok(0);
        }
        let refused = inode_flags::ENCRYPT | inode_flags::VERITY | inode_flags::CASEFOLD;
        if node.flags & refused != 0 {
            let what = match node.flags & refused {
                f if f & inode_flags::ENCRYPT != 0 => "encrypted (fscrypt)",
                f if f & inode_flags::VERITY != 0 => "verity-protected",
                _ => "casefolded",
            };
            let path = self
                .tree
                .paths()
                .into_iter()
                .find(|(_, id)| self.tree.node(*id).source_ino == node.source_ino)
                .map(|(p, _)| String::from_utf8_lossy(&p).into_owned());
            return Err(Error::unsupported(format!(
                "inode {}{} is {what} (flags {:#x}); imgsan cannot rebuild its content",
                node.source_ino,
                path.map(|p| format!(" ({p})")).unwrap_or_default(),
                node.flags
            )));
        }
        let mut flags = node.flags & !(inode_flags::STRUCTURAL | refused);
        // e2fsck pass 1: imagic is only valid with the imagic_inodes feature,
        // which the builder never sets.
        if flags & inode_flags::IMAGIC != 0 {
            flags &= !inode_flags::IMAGIC;
            self.normalise("cleared the imagic flag (no imagic_inodes feature)", node);
        }
        // e2fsck pass 1 (check_immutable): devices, fifos, sockets and symlinks
        // may not be immutable or append-only.
        let special = matches!(
            node.kind,
            Kind::Symlink(_) | Kind::CharDev(_) | Kind::BlockDev(_) | Kind::Fifo | Kind::Socket
        );
        let bad = inode_flags::IMMUTABLE | inode_flags::APPEND;
        if special && flags & bad != 0 {
            flags &= !bad;
            self.normalise(
                "cleared immutable/append-only on a device, fifo, socket or symlink",
                node,
            );
        }
        Ok(flags)
    }

    /// Record that `node`'s value was changed to something e2fsck accepts.
    fn normalise(&mut self, what: &'static str, node: &crate::tree::Node) {
        self.normalised
            .entry(what)
            .or_default()
            .push(node.source_ino);
    }

    /// Plan the copies of a file's runs into its blocks, tagged with the node id
    /// and size of the file they belong to, when given.
    pub(super) fn copy_runs(
        &mut self,
        runs: &[crate::tree::Run],
        exts: &[Ext],
        file: Option<(NodeId, u64)>,
    ) -> Result<()> {
        let bs = self.geo.bs;
        for r in runs {
            if r.len == 0 {
                continue;
            }
            let (disk, base) = self.source_for(r.src)?;
            let (start, end) = (r.logical, r.logical + r.len);
            let i = exts.partition_point(|e| (e.lblk + e.len) * bs <= start);
            for e in &exts[i..] {
                let (es, ee) = (e.lblk * bs, (e.lblk + e.len) * bs);
                if es >= end {
                    break;
                }
                let s = start.max(es);
                let t = end.min(ee);
                if s < t {
                    let at = e.pblk * bs + (s - es);
                    let tag = file.map(|(node, size)| FileTag {
                        volume: 0,
                        node,
                        logical: s,
                        size,
                    });
                    self.plan
                        .copy_tagged(at, disk.clone(), base + (s - start), t - s, tag);
                    self.stats.data_bytes += t - s;
                }
            }
        }
        Ok(())
    }

    /// The journal inode (8): `spec.blocks` blocks from `goal` on, its
    /// superblock in the first one, the rest holes (an empty journal).
    pub(super) fn journal_inode(
        &mut self,
        spec: &JournalSpec,
        goal: u64,
        alloc: &mut alloc::Alloc,
        min_blocks: u64,
    ) -> Result<()> {
        let ino = special_ino::JOURNAL;
        let bs = self.geo.bs;
        let seed = self.inode_seed(ino, 0);
        let total = u64::from(spec.blocks);
        let m = self.alloc_mapped(alloc, goal, &[(0, total)], seed, min_blocks)?;
        let first = m.data.first().map_or(0, |e| e.pblk);
        self.put(
            first,
            journal::superblock_block(spec, bs as u32, self.sb.s_uuid),
        );
        let (ib, n) = (m.i_block, m.map_blocks);
        let rec = inode::InodeRec {
            mode: 0o100600,
            links: 1,
            size: total * bs,
            flags: if self.f.extents {
                inode_flags::EXTENTS
            } else {
                0
            },
            atime: self.now(),
            mtime: self.now(),
            ctime: self.now(),
            i_block: ib,
            blocks_512: (total + n) * (bs / 512),
            ..Default::default()
        };
        self.journal_i_block = Some(ib);
        self.journal_size = total * bs;
        self.store_inode(ino, &rec, false)
    }

    /// The orphan file (orphan_file feature): `n` blocks, each empty but for
    /// its tail (magic and, with metadata_csum, a checksum over the inode, its
    /// generation and the block number), as `ext2fs_create_orphan_file` makes
    /// it. Returns the data cursor after it.
    pub(super) fn orphan_inode(
        &mut self,
        ino: u32,
        n: u64,
        alloc: &mut alloc::Alloc,
        cursor: u64,
        min_blocks: u64,
    ) -> Result<u64> {
        const ORPHAN_BLOCK_MAGIC: u32 = 0x0b10_ca04;
        let bs = self.geo.bs;
        let goal = cursor.max(self.goal_for(ino));
        let seed = self.inode_seed(ino, 0);
        let mapped = self.alloc_mapped(alloc, goal, &[(0, n)], seed, min_blocks)?;
        for e in &mapped.data {
            for b in e.pblk..e.pblk + e.len {
                let mut block = vec![0u8; bs as usize];
                let t = bs as usize - 8;
                block[t..t + 4].copy_from_slice(&ORPHAN_BLOCK_MAGIC.to_le_bytes());
                if self.f.csum {
                    let mut c =
                        crate::fs::ext4::csum::crc32c_raw(self.sb.csum_seed(), &ino.to_le_bytes());
                    c = crate::fs::ext4::csum::crc32c_raw(c, &0u32.to_le_bytes());
                    c = crate::fs::ext4::csum::crc32c_raw(c, &b.to_le_bytes());
                    c = crate::fs::ext4::csum::crc32c_raw(c, &block[..t]);
                    block[t + 4..].copy_from_slice(&c.to_le_bytes());
                }
                self.put(b, block);
            }
        }
        let (ib, m) = (mapped.i_block, mapped.map_blocks);
        let rec = inode::InodeRec {
            mode: 0o100600,
            links: 1,
            size: n * bs,
            flags: if self.f.extents {
                inode_flags::EXTENTS
            } else {
                0
            },
            atime: self.now(),
            mtime: self.now(),
            ctime: self.now(),
            i_block: ib,
            blocks_512: (n + m) * (bs / 512),
            ..Default::default()
        };
        self.store_inode(ino, &rec, false)?;
        Ok(mapped.end)
    }

    pub(super) fn resize_inode(&mut self, dind: u64) -> Result<()> {
        let r = resize::build(&self.sb, &self.geo, dind);
        let ino = special_ino::RESIZE;
        let mut ib = [0u8; 60];
        ib[4 * 13..4 * 14].copy_from_slice(&(dind as u32).to_le_bytes());
        self.put(r.dind.0, r.dind.1);
        for (b, bytes) in r.primaries {
            self.put(b, bytes);
        }
        let rec = inode::InodeRec {
            mode: 0o100600,
            links: 1,
            size: r.size,
            atime: self.now(),
            mtime: self.now(),
            ctime: self.now(),
            i_block: ib,
            blocks_512: r.blocks_512,
            ..Default::default()
        };
        self.store_inode(ino, &rec, false)
    }

    /// Bitmaps, descriptors, superblocks, xattr blocks, inode tables: the plan.
    pub(super) fn finish(
        mut self,
        alloc: &alloc::Alloc,
        opts: &BuildOptions,
        journal: Option<&JournalSpec>,
    ) -> Result<Built> {
        let geo = self.geo.clone();
        let bs = geo.bs as usize;
        for (what, inos) in std::mem::take(&mut self.normalised) {
            const SHOWN: usize = 8;
            let mut list: Vec<String> = inos.iter().take(SHOWN).map(|i| i.to_string()).collect();
            if inos.len() > SHOWN {
                list.push(format!("and {} more", inos.len() - SHOWN));
            }
            self.stats.normalised.push(format!(
                "{what}: {} source inode(s) ({})",
                inos.len(),
                list.join(", ")
            ));
        }
        // Shared xattr blocks, now that their reference counts are known.
        let mut blocks: Vec<(u64, Vec<xattr::Attr>, u32)> = Vec::new();
        for (attrs, list) in &self.xattr_blocks {
            for &(b, refs) in list {
                blocks.push((b, attrs.clone(), refs));
            }
        }
        blocks.sort_by_key(|b| b.0);
        self.stats.xattr_blocks = blocks.len() as u64;
        for (b, attrs, refs) in blocks {
            let bytes = xattr::encode_block(&self.sb, &attrs, bs, b, refs);
            self.put(b, bytes);
        }

        let group_csum = self.sb.has_group_csum();
        // Groups holding another group's bitmaps or inode table (flex_bg): the
        // kernel cannot rebuild their bitmaps, so they are never BLOCK_UNINIT.
        let mut hosts_others = vec![false; geo.groups as usize];
        for (k, t) in self.tables.iter().enumerate() {
            let last = t.inode_table + geo.itb - 1;
            for b in [t.block_bitmap, t.inode_bitmap, t.inode_table, last] {
                let h = geo.group_of(b) as usize;
                if h != k {
                    hosts_others[h] = true;
                }
            }
            // A table spanning whole groups (1 KiB blocks, big inodes) covers
            // the ones in between too.
            for h in geo.group_of(t.inode_table)..=geo.group_of(last) {
                if h as usize != k {
                    hosts_others[h as usize] = true;
                }
            }
        }
        let mut descs = Vec::with_capacity(geo.groups as usize);
        let mut free_blocks_total = 0u64;
        let mut free_inodes_total = 0u64;
        for g in 0..geo.groups {
            let gi = g as usize;
            let (start, end) = (geo.group_first(g), geo.group_end(g));
            let used = alloc.used_in(start, end);
            let free = (end - start) - used;
            free_blocks_total += free;
            let t = self.tables[gi];
            // What the kernel's ext4_init_block_bitmap would reconstruct for an
            // uninitialized group: its base metadata and its own tables if they
            // sit inside it.
            let overlap =
                |a: u64, n: u64| a.max(start).min(end).abs_diff((a + n).max(start).min(end));
            let base: u64 = geo.base_meta(&self.sb, g).iter().map(|r| r.1).sum::<u64>()
                + overlap(t.block_bitmap, 1)
                + overlap(t.inode_bitmap, 1)
                + overlap(t.inode_table, geo.itb);
            let mut flags = 0u16;
            let block_uninit =
                group_csum && g + 1 != geo.groups && used == base && !hosts_others[gi];
            let inodes_used = self.inode_used[gi];
            if group_csum {
                if block_uninit {
                    flags |= bg_flags::BLOCK_UNINIT;
                }
                if inodes_used == 0 {
                    flags |= bg_flags::INODE_UNINIT;
                }
                // Inode tables are holes past the used inodes: they read as zeros.
                flags |= bg_flags::INODE_ZEROED;
            }
            let highest = highest_bit(&self.inode_bitmaps[gi]);
            let mut gd = GroupDesc {
                block_bitmap: t.block_bitmap,
                inode_bitmap: t.inode_bitmap,
                inode_table: t.inode_table,
                free_blocks_count: free as u32,
                free_inodes_count: (geo.ipg - u64::from(inodes_used)) as u32,
                used_dirs_count: self.dirs[gi],
                flags,
                exclude_bitmap: 0,
                block_bitmap_csum: 0,
                inode_bitmap_csum: 0,
                itable_unused: if group_csum {
                    (geo.ipg - highest) as u32
                } else {
                    0
                },
                checksum: 0,
            };
            free_inodes_total += geo.ipg - u64::from(inodes_used);
            // Block bitmap.
            if !block_uninit {
                let mut bm = vec![0xffu8; bs];
                let nbytes = (geo.bpg / 8) as usize;
                bm[..nbytes].fill(0);
                for (s, e) in alloc.ranges_in(start, end) {
                    set_bits(&mut bm, s - start, e - start);
                }
                // Bits past the end of a short last group are set.
                set_bits(&mut bm, end - start, geo.bpg);
                if self.f.csum {
                    gd.block_bitmap_csum = ondisk::bitmap_checksum(&self.sb, &bm[..nbytes]);
                }
                self.put_sparse(t.block_bitmap, bm);
            }
            if inodes_used > 0 || !group_csum {
                let mut bm = std::mem::take(&mut self.inode_bitmaps[gi]);
                if bm.is_empty() {
                    bm = vec![0u8; bs];
                }
                let nbytes = (geo.ipg / 8) as usize;
                bm[nbytes..].fill(0xff);
                if self.f.csum {
                    gd.inode_bitmap_csum = ondisk::bitmap_checksum(&self.sb, &bm[..nbytes]);
                }
                self.put_sparse(t.inode_bitmap, bm);
            }
            descs.push(gd);
            // Inode table: only the blocks that hold a non-empty inode.
            let table = std::mem::take(&mut self.itables[gi]);
            if !table.is_empty() {
                let mut padded = table;
                let len = padded.len().div_ceil(bs) * bs;
                padded.resize(len, 0);
                self.put_sparse(t.inode_table, padded);
            }
        }
        self.stats.blocks_used = alloc.used_total();

        // The superblock.
        let sb = self.final_superblock(free_blocks_total, free_inodes_total, journal)?;
        self.sb = sb.clone();
        // Descriptor blocks, to every place a copy belongs.
        let ds = geo.desc_size as usize;
        let is64 = sb.is_64bit();
        for i in 0..geo.desc_blocks {
            let mut block = vec![0u8; bs];
            for j in 0..geo.desc_per_block {
                let g = i * geo.desc_per_block + j;
                if g >= geo.groups {
                    break;
                }
                let slot = &mut block[j as usize * ds..(j as usize + 1) * ds];
                let gd = &mut descs[g as usize];
                gd.encode(slot, is64);
                if let Some(c) = desc_checksum(&sb, g as u32, slot) {
                    gd.checksum = c;
                    gd.encode(slot, is64);
                }
            }
            let copies = geo.desc_block_copies(&sb, i);
            for b in copies {
                self.put(b, block.clone());
            }
        }
        // Superblocks: the primary at byte 1024, backups at the start of their
        // groups, each naming its group.
        for g in 0..geo.groups {
            if !sb.group_has_super(g) {
                continue;
            }
            let mut copy = sb.clone();
            copy.s_block_group_nr = u16::try_from(g).unwrap_or(0);
            let bytes = copy.to_bytes_with_checksum().to_vec();
            let at = if g == 0 {
                SUPERBLOCK_OFFSET
            } else {
                geo.group_first(g) * geo.bs
            };
            self.stats.metadata_bytes += bytes.len() as u64;
            self.plan.bytes(at, bytes);
        }
        if let Some(boot) = &opts.boot_block {
            let n = boot.len().min(1024);
            if boot[..n].iter().any(|&b| b != 0) {
                self.plan.bytes(0, boot[..n].to_vec());
            }
        }
        if let TargetSize::Bytes(b) = opts.size {
            self.plan.len = self.plan.len.max(b);
        }
        self.plan.seal()?;
        let stats = BuildStats {
            volume_bytes: self.plan.len,
            block_size: geo.bs as u32,
            blocks: geo.blocks,
            groups: geo.groups,
            inodes: u64::from(sb.s_inodes_count),
            inodes_used: u64::from(sb.s_inodes_count) - free_inodes_total,
            ..self.stats
        };
        Ok(Built {
            plan: self.plan,
            sb,
            stats,
        })
    }

    /// Owned bytes at block `blk`, leaving all-zero blocks out (holes).
    pub(super) fn put_sparse(&mut self, blk: u64, bytes: Vec<u8>) {
        let bs = self.geo.bs as usize;
        let mut run_start: Option<usize> = None;
        let nblocks = bytes.len() / bs;
        for i in 0..=nblocks {
            let zero = i == nblocks || bytes[i * bs..(i + 1) * bs].iter().all(|&b| b == 0);
            match (zero, run_start) {
                (false, None) => run_start = Some(i),
                (true, Some(s)) => {
                    self.put(blk + s as u64, bytes[s * bs..i * bs].to_vec());
                    run_start = None;
                }
                _ => {}
            }
        }
    }

    pub(super) fn final_superblock(
        &self,
        free_blocks: u64,
        free_inodes: u64,
        journal: Option<&JournalSpec>,
    ) -> Result<Superblock> {
        let mut sb = self.sb.clone();
        let geo = &self.geo;
        sb.set_free_blocks_count(free_blocks);
        sb.s_free_inodes_count = free_inodes as u32;
        sb.s_state = state::VALID_FS;
        sb.s_mnt_count = 0;
        sb.s_mtime = 0;
        sb.s_mtime_hi = 0;
        let now = source_time(&self.sb);
        sb.s_wtime = now as u32;
        sb.s_wtime_hi = (now >> 32) as u8;
        sb.s_lastcheck = now as u32;
        sb.s_lastcheck_hi = (now >> 32) as u8;
        sb.s_feature_incompat &= !incompat::RECOVER;
        sb.s_feature_ro_compat &= !ro_compat::ORPHAN_PRESENT;
        sb.s_last_orphan = 0;
        sb.s_block_group_nr = 0;
        // Errors recorded by the source's kernel do not describe this filesystem.
        sb.s_error_count = 0;
        sb.s_first_error_time = 0;
        sb.s_first_error_ino = 0;
        sb.s_first_error_block = 0;
        sb.s_first_error_func = [0; 32];
        sb.s_first_error_line = 0;
        sb.s_last_error_time = 0;
        sb.s_last_error_ino = 0;
        sb.s_last_error_line = 0;
        sb.s_last_error_block = 0;
        sb.s_last_error_func = [0; 32];
        sb.s_first_error_time_hi = 0;
        sb.s_last_error_time_hi = 0;
        sb.s_first_error_errcode = 0;
        sb.s_last_error_errcode = 0;
        sb.s_snapshot_inum = 0;
        sb.s_snapshot_id = 0;
        sb.s_snapshot_r_blocks_count = 0;
        sb.s_snapshot_list = 0;
        sb.s_usr_quota_inum = 0;
        sb.s_grp_quota_inum = 0;
        sb.s_prj_quota_inum = 0;
        sb.s_orphan_file_inum = self.orphan.map_or(0, |o| o.0);
        sb.s_mmp_block = 0;
        sb.s_mmp_update_interval = 0;
        sb.s_lpf_ino = if self.sb.s_lpf_ino != 0 {
            self.lost_found_ino
        } else {
            0
        };
        if journal.is_some() {
            let ib = self.journal_i_block.unwrap_or([0; 60]);
            for (k, w) in ib.chunks_exact(4).enumerate() {
                sb.s_jnl_blocks[k] = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            }
            sb.s_jnl_blocks[15] = (self.journal_size >> 32) as u32;
            sb.s_jnl_blocks[16] = self.journal_size as u32;
            sb.s_jnl_backup_type = 1;
            sb.s_journal_inum = special_ino::JOURNAL;
        } else {
            sb.s_jnl_blocks = [0; 17];
            sb.s_jnl_backup_type = 0;
            sb.s_journal_inum = 0;
        }
        if self.sb.s_overhead_clusters != 0 {
            // mke2fs counts fixed metadata, the journal and the first data block.
            let journal_blocks = self.journal_size / geo.bs;
            let o = geo.fixed_overhead(&sb) + journal_blocks + geo.first;
            sb.s_overhead_clusters = u32::try_from(o).unwrap_or(0);
        }
        Ok(sb)
    }
}

/// Set bits `from..to` of a bitmap.
pub(super) fn set_bits(bm: &mut [u8], from: u64, to: u64) {
    let mut b = from;
    while b < to && !b.is_multiple_of(8) {
        bm[(b / 8) as usize] |= 1 << (b % 8);
        b += 1;
    }
    while b + 8 <= to {
        bm[(b / 8) as usize] = 0xff;
        b += 8;
    }
    while b < to {
        bm[(b / 8) as usize] |= 1 << (b % 8);
        b += 1;
    }
}

/// 1-based index of the highest set bit of a bitmap (0 when none).
pub(super) fn highest_bit(bm: &[u8]) -> u64 {
    for (i, &b) in bm.iter().enumerate().rev() {
        if b != 0 {
            return (i as u64) * 8 + 8 - u64::from(b.leading_zeros());
        }
    }
    0
}
