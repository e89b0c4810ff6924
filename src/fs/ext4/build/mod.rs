//! The ext4 builder: lays a [`Tree`] out as a fresh ext2/3/4 filesystem with a
//! source superblock's geometry and features, and returns a [`Plan`] (the writes
//! that make up the volume; everything else is a hole) and the new superblock.
//!
//! What it owns: geometry (cloned, optionally at another size), block and inode
//! placement, every metadata structure and checksum. What it must not do: read or
//! copy file data itself (the plan references source ranges), consult the clock
//! (output is a function of the inputs: build twice, get the same bytes), or drop
//! anything it cannot reproduce (it refuses with `Unsupported`, before producing
//! anything).
//!
//! Entry points for the `repack` front end:
//! - [`check_features`]: refuse early, before reading a tree, when the source uses
//!   a feature the builder does not reproduce.
//! - [`build`]: tree + source superblock + [`BuildOptions`] -> [`Built`] (a
//!   volume-relative plan; the whole-disk writer shifts it into place).
//!
//! Decisions, with their reasons:
//! - Inodes are numbered breadth-first in name order (the Tree's walk order):
//!   root is 2, a root-level `lost+found` directory gets `s_first_ino` as mke2fs
//!   gives it, everything else follows.
//! - Placement is packed by default: inode numbers are consecutive and data is
//!   laid out contiguously in inode order, each file at the first free block at or
//!   after its inode's (flex) group. [`Placement::Spread`] spreads top-level
//!   directories over flex groups the way the kernel's Orlov allocator does; it
//!   was measured against packing (see `benches/ext4_build.sh` and the report in
//!   the branch's history) and packing won: the same build and e2fsck times, no
//!   free-space fragmentation, a smaller `--shrink` result and fewer groups
//!   touched. Spread is kept as an option for users who will grow many
//!   directories in place.
//! - htree leaves are filled completely (e2fsck -D without slack): the built
//!   directory is as small as possible; the kernel splits leaves as files are
//!   added.
//! - Inline data (inline_data sources): files up to what `i_block` plus the
//!   in-inode xattr space hold, and directories whose entries fit `i_block`, are
//!   stored inline, as mke2fs -d does; anything larger uses blocks.
//! - quota is refused: its limits are not part of the Tree, so rebuilding the
//!   quota files would silently drop them. orphan_file, mmp, stable_inodes (inode
//!   numbers change) and external journals are refused too.
//! - Times: `s_mkfs_time` is kept; `s_wtime` and `s_lastcheck` are the latest
//!   time the source superblock records (never the clock), so output is
//!   reproducible; the mount count is 0 and `s_mtime` is 0 (never mounted).

pub mod alloc;
mod dir;
pub mod hash;
mod inode;
pub mod journal;
mod layout;
mod map;
mod resize;
mod xattr;

use std::collections::HashMap;
use std::sync::Arc;

use crate::disk::{check_range, Alloc as DiskAlloc, Disk, DiskInfo, Extent};
use crate::error::{Error, Location, Result};
use crate::fs::ext4::group::{bg_flags, desc_checksum, GroupDesc};
use crate::fs::ext4::ondisk::{self, ftype, ino as special_ino, inode_flags};
use crate::fs::ext4::superblock::{
    compat, incompat, ro_compat, state, Superblock, SUPERBLOCK_OFFSET,
};
use crate::output::plan::Plan;
use crate::tree::{Flavor, Kind, NodeId, Src, Time, Tree};

pub use journal::JournalSpec;
use layout::{Geometry, GroupTables};
use map::Ext;

/// How big the new filesystem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetSize {
    /// The source's size (its block count).
    #[default]
    Source,
    /// This many bytes (rounded down to whole blocks; a last group too small for
    /// its metadata is dropped, as mke2fs does). The plan covers exactly this
    /// length.
    Bytes(u64),
    /// The smallest size that holds the tree, plus `margin` bytes (default: the
    /// larger of 10 % and 256 MiB), rounded up to whole block groups.
    Shrink { margin: Option<u64> },
}

/// Where directories' inodes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// Consecutive inode numbers, data contiguous (the default; see the module
    /// documentation for why).
    #[default]
    Packed,
    /// Top-level directories spread over flex groups (Orlov-like); their contents
    /// stay near them.
    Spread,
}

/// Options for [`build`].
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub size: TargetSize,
    /// The new journal's size and features. `None`: the source's size (from the
    /// superblock's `s_jnl_blocks` backup, else mke2fs's default for the size) and
    /// no journal features, which is what mke2fs writes (the kernel turns on
    /// checksums and 64-bit tags at mount). The reader passes the source journal
    /// superblock's values here.
    pub journal: Option<JournalSpec>,
    pub placement: Placement,
    /// The first 1024 bytes of the source volume (boot code some setups keep in
    /// the filesystem's boot block), written back verbatim when not all zero.
    pub boot_block: Option<Arc<[u8]>>,
}

/// Figures about a build, for reports and benchmarks.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BuildStats {
    /// The plan's length in bytes.
    pub volume_bytes: u64,
    pub block_size: u32,
    pub blocks: u64,
    pub groups: u64,
    pub blocks_used: u64,
    pub inodes: u64,
    pub inodes_used: u64,
    pub directories: u64,
    pub htree_directories: u64,
    pub inline_inodes: u64,
    /// Extra names of hard-linked inodes.
    pub hard_links: u64,
    /// External xattr blocks, and the inodes that refer to them.
    pub xattr_blocks: u64,
    pub xattr_block_refs: u64,
    /// Files whose data is not one physical run.
    pub fragmented_files: u64,
    /// Bytes copied from the source (file data).
    pub data_bytes: u64,
    /// Bytes of metadata the builder produced.
    pub metadata_bytes: u64,
    /// The smallest volume that holds this tree with this geometry (no margin).
    pub min_bytes: u64,
}

/// A built filesystem.
#[derive(Debug, Clone)]
pub struct Built {
    /// The writes that make up the volume (offsets relative to its start).
    pub plan: Plan,
    /// The new superblock (as written, before its checksum).
    pub sb: Superblock,
    pub stats: BuildStats,
}

// ---- features ------------------------------------------------------------------

const COMPAT_BUILT: u32 = compat::DIR_PREALLOC
    | compat::HAS_JOURNAL
    | compat::EXT_ATTR
    | compat::RESIZE_INODE
    | compat::DIR_INDEX
    | compat::SPARSE_SUPER2
    | compat::FAST_COMMIT;

const INCOMPAT_BUILT: u32 = incompat::FILETYPE
    | incompat::RECOVER
    | incompat::META_BG
    | incompat::EXTENTS
    | incompat::BIT64
    | incompat::FLEX_BG
    | incompat::EA_INODE
    | incompat::CSUM_SEED
    | incompat::LARGEDIR
    | incompat::INLINE_DATA;

const RO_COMPAT_BUILT: u32 = ro_compat::SPARSE_SUPER
    | ro_compat::LARGE_FILE
    | ro_compat::BTREE_DIR
    | ro_compat::HUGE_FILE
    | ro_compat::GDT_CSUM
    | ro_compat::DIR_NLINK
    | ro_compat::EXTRA_ISIZE
    | ro_compat::METADATA_CSUM
    | ro_compat::READONLY
    | ro_compat::PROJECT
    | ro_compat::ORPHAN_PRESENT;

/// Features with a reason to give, checked before the generic "not built" tier.
const REFUSED: &[(u32, u32, &str)] = &[
    (0, ro_compat::QUOTA, "quota (quota limits are not part of the tree; turn quota off on a copy with tune2fs -O ^quota first)"),
    (compat::ORPHAN_FILE, 0, "orphan_file"),
    (compat::STABLE_INODES, 0, "stable_inodes (a rebuilt filesystem renumbers inodes)"),
    (compat::IMAGIC_INODES, 0, "imagic_inodes"),
    (compat::LAZY_BG, 0, "lazy_bg"),
    (compat::EXCLUDE_BITMAP, 0, "snapshot_bitmap"),
];

/// Refuse sources the builder cannot reproduce exactly. Cheap: call it before
/// reading a tree.
pub fn check_features(sb: &Superblock) -> Result<()> {
    for &(c, r, why) in REFUSED {
        if sb.s_feature_compat & c != 0 || sb.s_feature_ro_compat & r != 0 {
            return Err(Error::unsupported(format!("ext4 builder: feature {why}")));
        }
    }
    if sb.has_incompat(incompat::MMP) {
        return Err(Error::unsupported(
            "ext4 builder: feature mmp (multi-mount protection)",
        ));
    }
    let tiers = [
        (sb.s_feature_compat & !COMPAT_BUILT, "compatible"),
        (sb.s_feature_incompat & !INCOMPAT_BUILT, "incompatible"),
        (
            sb.s_feature_ro_compat & !RO_COMPAT_BUILT,
            "read-only compatible",
        ),
    ];
    for (bits, tier) in tiers {
        if bits != 0 {
            let mut probe = Superblock::decode(&[0u8; 1024]);
            match tier {
                "compatible" => probe.s_feature_compat = bits,
                "incompatible" => probe.s_feature_incompat = bits,
                _ => probe.s_feature_ro_compat = bits,
            }
            return Err(Error::unsupported(format!(
                "ext4 builder: {tier} feature(s) {} not reproduced",
                probe.feature_names().join(", ")
            )));
        }
    }
    if sb.s_log_cluster_size != sb.s_log_block_size {
        return Err(Error::unsupported(
            "ext4 builder: cluster size differs from block size (bigalloc)",
        ));
    }
    if sb.has_compat(compat::HAS_JOURNAL)
        && (sb.s_journal_inum != special_ino::JOURNAL
            || sb.s_journal_dev != 0
            || sb.s_journal_uuid != [0; 16])
    {
        return Err(Error::unsupported(
            "ext4 builder: external or non-standard journal (only an internal journal in inode 8 is rebuilt)",
        ));
    }
    if sb.has_compat(compat::RESIZE_INODE) && sb.has_incompat(incompat::META_BG) {
        return Err(Error::unsupported(
            "ext4 builder: resize_inode together with meta_bg",
        ));
    }
    if sb.has_compat(compat::DIR_INDEX) && !hash::DirHash::supported(sb.s_def_hash_version) {
        return Err(Error::unsupported(format!(
            "ext4 builder: directory hash version {}",
            sb.s_def_hash_version
        )));
    }
    if sb.has_compat(compat::FAST_COMMIT) && !sb.has_compat(compat::HAS_JOURNAL) {
        return Err(Error::unsupported(
            "ext4 builder: fast_commit without a journal",
        ));
    }
    Ok(())
}

// ---- the build ---------------------------------------------------------------

/// A volume made of an owned byte blob (tree blobs referenced by the plan).
struct BlobDisk(Arc<[u8]>);

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

/// Filesystem-wide switches, derived once from the source superblock.
struct Features {
    bs: u64,
    extents: bool,
    inline: bool,
    csum: bool,
    large_file: bool,
    dir_nlink: bool,
    resize: bool,
    ext_attr: bool,
    dirp: dir::DirParams,
    inop: inode::InodeParams,
    /// Bytes of the in-inode xattr region.
    ibody_room: usize,
}

impl Features {
    fn new(sb: &Superblock) -> Self {
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
enum Body {
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

struct Prep {
    body: Body,
    attrs: xattr::Placed,
}

impl Prep {
    fn data_blocks(&self) -> u64 {
        match &self.body {
            Body::InBlock(_) | Body::Inline { .. } => 0,
            Body::Link(_) => 1,
            Body::File(r) => r.iter().map(|x| x.1).sum(),
            Body::Dir(s) => s.blocks(),
        }
    }
}

fn ftype_of(kind: &Kind) -> u8 {
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
fn lost_found_blocks(bs: u64, inline: bool) -> u64 {
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
struct Order {
    nodes: Vec<NodeId>,
    /// Parent directory of each directory node (indexed by NodeId).
    parent: HashMap<NodeId, NodeId>,
    lost_found: Option<NodeId>,
}

fn order_nodes(tree: &Tree) -> Result<Order> {
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
    seen[root as usize] = true;
    let lost_found = tree
        .lookup(root, b"lost+found")
        .filter(|&id| tree.node(id).is_dir());
    if let Some(l) = lost_found {
        nodes.push(l);
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
            }
        }
    }
    Ok(Order {
        nodes,
        parent,
        lost_found,
    })
}

/// Build the filesystem. See the module documentation.
pub fn build(tree: &Tree, source_sb: &Superblock, opts: &BuildOptions) -> Result<Built> {
    check_features(source_sb)?;
    let f = Features::new(source_sb);
    let order = order_nodes(tree)?;
    let links = tree.link_counts();
    let mut preps = Vec::with_capacity(order.nodes.len());
    for (slot, &id) in order.nodes.iter().enumerate() {
        preps.push(prepare(tree, &f, id, slot, &order, &links)?);
    }
    let journal = journal_spec(source_sb, opts)?;

    // Size: what the content needs, independent of where it goes.
    let mut xattr_keys: HashMap<&[xattr::Attr], ()> = HashMap::new();
    let mut content = 0u64;
    for p in &preps {
        content += p.data_blocks() + map_estimate(&f, p);
        if !p.attrs.block.is_empty() {
            xattr_keys.insert(&p.attrs.block, ());
        }
    }
    content += xattr_keys.len() as u64;
    if let Some(j) = &journal {
        let jb = u64::from(j.blocks);
        content += jb
            + if f.extents {
                map::extent_tree_blocks(
                    jb / 32768 + jb / u64::from(source_sb.s_blocks_per_group) + 2,
                    f.bs as usize,
                )
            } else {
                map::ind_blocks(
                    &[Ext {
                        lblk: 0,
                        pblk: 0,
                        len: jb,
                    }],
                    f.bs as usize,
                )
            };
    }
    if f.resize {
        content += 1;
    }
    let inodes_needed = u64::from(source_sb.first_ino()) - 1 + order.nodes.len() as u64 - 1;
    let (sb, min_blocks) = target_superblock(source_sb, &opts.size, content, inodes_needed)?;
    let geo = Geometry::new(&sb)?;
    let (mut alloc, tables) = geo.place(&sb)?;

    let mut out = Output::new(&sb, &geo, tables, &f, tree);
    out.stats.min_bytes = min_blocks * f.bs;

    // The resize inode's double-indirect block goes where libext2fs puts it.
    let resize_dind = if f.resize {
        let goal = geo.first + geo.desc_blocks + geo.reserved_gdt + 2 + geo.itb;
        Some(
            alloc
                .alloc(goal, 1)
                .ok_or_else(|| too_small(&sb, min_blocks))?
                .0,
        )
    } else {
        None
    };
    // The journal: contiguous from the middle of the filesystem, as mke2fs does
    // for extent-mapped journals (block-mapped ones it starts in group 0).
    let journal_exts = match &journal {
        Some(j) => {
            let goal = if f.extents {
                journal_goal(&sb, &geo, &alloc)
            } else {
                geo.first
            };
            Some(
                alloc_run(&mut alloc, goal, u64::from(j.blocks))
                    .ok_or_else(|| too_small(&sb, min_blocks))?,
            )
        }
        None => None,
    };

    // Inode numbers.
    let inos = number_inodes(&sb, &geo, &order, tree, opts.placement)?;
    out.place_inodes(tree, &order, &preps, &inos, &links, &mut alloc, min_blocks)?;

    if let (Some(j), Some(exts)) = (&journal, &journal_exts) {
        out.journal_inode(j, exts, &mut alloc, min_blocks)?;
    }
    if let Some(d) = resize_dind {
        out.resize_inode(d)?;
    }
    out.finish(&alloc, &inos, opts, journal.as_ref())
}

fn too_small(sb: &Superblock, min_blocks: u64) -> Error {
    let bs = u64::from(sb.block_size());
    Error::output(
        format!("ext4 volume of {} bytes", sb.blocks_count() * bs),
        std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!(
                "the tree needs at least {} bytes ({} MiB)",
                min_blocks * bs,
                (min_blocks * bs).div_ceil(1 << 20)
            ),
        ),
    )
}

/// Allocate `len` blocks from `goal` on, as contiguously as free space allows.
fn alloc_run(alloc: &mut alloc::Alloc, goal: u64, len: u64) -> Option<Vec<Ext>> {
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
fn journal_goal(sb: &Superblock, geo: &Geometry, a: &alloc::Alloc) -> u64 {
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

/// The journal to create, if the source has one.
fn journal_spec(sb: &Superblock, opts: &BuildOptions) -> Result<Option<JournalSpec>> {
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
fn default_journal_blocks(blocks: u64) -> u64 {
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

/// A generous count of map blocks (extent tree or indirect) a prepared inode
/// needs, for sizing: placement may split data at metadata, adding extents.
fn map_estimate(f: &Features, p: &Prep) -> u64 {
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
fn prepare(
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

fn check_runs(tree: &Tree, node: &crate::tree::Node, runs: &[crate::tree::Run]) -> Result<()> {
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

/// Choose the block count and fill the target superblock's geometry fields.
/// `content` is the blocks the tree, journal and resize inode need besides fixed
/// metadata; `inodes` the highest inode number needed.
fn target_superblock(
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
        return Err(too_small(&sb, min_blocks));
    }
    Ok((sb, min_blocks))
}

/// Assign inode numbers: `inos[slot]` for each node in [`Order::nodes`].
fn number_inodes(
    sb: &Superblock,
    geo: &Geometry,
    order: &Order,
    tree: &Tree,
    placement: Placement,
) -> Result<Vec<u32>> {
    let first_ino = u64::from(sb.first_ino());
    let total = u64::from(sb.s_inodes_count);
    let mut inos = Vec::with_capacity(order.nodes.len());
    match placement {
        Placement::Packed => {
            inos.push(special_ino::ROOT);
            for k in 1..order.nodes.len() as u64 {
                let ino = first_ino + k - 1;
                if ino > total {
                    return Err(Error::unsupported("more inodes than the filesystem holds"));
                }
                inos.push(ino as u32);
            }
        }
        Placement::Spread => {
            // Per-group next free inode index.
            let ipg = geo.ipg;
            let mut next: Vec<u64> = vec![0; geo.groups as usize];
            next[0] = first_ino - 1; // inodes 1..first_ino-1 are reserved
            let mut group_of: HashMap<NodeId, u64> = HashMap::new();
            group_of.insert(tree.root, 0);
            let mut slot_of: HashMap<NodeId, usize> = HashMap::new();
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
                slot_of.insert(id, slot);
                if slot == 0 {
                    inos.push(special_ino::ROOT);
                    continue;
                }
                let parent = order.parent.get(&id).copied().unwrap_or(tree.root);
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
            }
            let _ = slot_of;
        }
    }
    Ok(inos)
}

/// Everything produced while placing inodes, turned into a plan at the end.
struct Output<'a> {
    sb: Superblock,
    geo: Geometry,
    tables: Vec<GroupTables>,
    f: &'a Features,
    tree: &'a Tree,
    plan: Plan,
    /// Inode table contents per group (up to the last used inode).
    itables: Vec<Vec<u8>>,
    /// Per group: used inodes, directories, highest used index (1-based).
    inode_used: Vec<u32>,
    dirs: Vec<u32>,
    inode_bitmaps: Vec<Vec<u8>>,
    /// Shared xattr blocks: content -> (block, refcount).
    xattr_blocks: HashMap<Vec<xattr::Attr>, Vec<(u64, u32)>>,
    blob_disks: Vec<Option<Arc<dyn Disk>>>,
    stats: BuildStats,
    /// The time special inodes and the superblock's write/check times get.
    now: u32,
    lost_found_ino: u32,
    journal_i_block: Option<[u8; 60]>,
    journal_size: u64,
}

/// The latest time the source superblock records.
fn source_time(sb: &Superblock) -> i64 {
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
    fn new(
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
        }
    }

    fn now(&self) -> Time {
        Time {
            sec: i64::from(self.now),
            nsec: 0,
        }
    }

    /// Owned metadata bytes at block `blk`.
    fn put(&mut self, blk: u64, bytes: Vec<u8>) {
        self.stats.metadata_bytes += bytes.len() as u64;
        self.plan.bytes(blk * self.geo.bs, bytes);
    }

    /// Mark inode `ino` used and store its encoded record.
    fn store_inode(&mut self, ino: u32, rec: &inode::InodeRec, is_dir: bool) -> Result<()> {
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

    fn mark_inode(&mut self, ino: u32) {
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

    fn inode_seed(&self, ino: u32, generation: u32) -> u32 {
        if self.f.csum {
            ondisk::inode_csum_seed(&self.sb, ino, generation)
        } else {
            0
        }
    }

    /// Data goal for inode `ino`: the first block of its flex group (or group).
    fn goal_for(&self, ino: u32) -> u64 {
        let g = (u64::from(ino) - 1) / self.geo.ipg;
        let g = g - g % self.geo.flex;
        self.geo.group_first(g)
    }

    /// Allocate the map blocks for `exts`, encode the map, and return `i_block`
    /// and the number of map blocks.
    fn map_blocks(
        &mut self,
        exts: &[Ext],
        seed: u32,
        alloc: &mut alloc::Alloc,
        goal: u64,
        min_blocks: u64,
    ) -> Result<([u8; 60], u64)> {
        let bs = self.geo.bs as usize;
        if self.f.extents {
            let entries = map::leaf_entries(exts);
            let n = map::extent_tree_blocks(entries.len() as u64, bs);
            let phys = self.alloc_blocks(alloc, goal, n, min_blocks)?;
            let enc = map::encode_extents(&entries, &phys, bs, seed, self.f.csum);
            for (b, bytes) in enc.blocks {
                self.put(b, bytes);
            }
            Ok((enc.i_block, n))
        } else {
            let n = map::ind_blocks(exts, bs);
            let phys = self.alloc_blocks(alloc, goal, n, min_blocks)?;
            if phys
                .iter()
                .chain(exts.iter().map(|e| &e.pblk))
                .any(|&p| p > u64::from(u32::MAX))
            {
                return Err(Error::unsupported("indirect-mapped blocks past 2^32"));
            }
            let enc = map::encode_indirect(exts, &phys, bs);
            for (b, bytes) in enc.blocks {
                self.put(b, bytes);
            }
            Ok((enc.i_block, n))
        }
    }

    fn alloc_blocks(
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

    fn source_for(&mut self, src: Src) -> Result<(Arc<dyn Disk>, u64)> {
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
    fn place_inodes(
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
        for k in by_ino {
            let id = order.nodes[k];
            let ino = inos[k];
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
            let mut data_exts: Vec<Ext> = Vec::new();
            match &prep.body {
                Body::InBlock(ib) => rec.i_block = *ib,
                Body::Inline { i_block, .. } => {
                    rec.i_block = *i_block;
                    rec.flags |= inode_flags::INLINE_DATA;
                    self.stats.inline_inodes += 1;
                }
                Body::Link(target) => {
                    let e =
                        alloc_run(alloc, goal, 1).ok_or_else(|| too_small(&self.sb, min_blocks))?;
                    self.put(e[0].pblk, target.clone());
                    data_exts = e;
                }
                Body::File(ranges) => {
                    let Kind::File(runs) = &node.kind else {
                        unreachable!("file body for a non-file")
                    };
                    let mut at = goal;
                    for &(l, n) in ranges {
                        let mut e = alloc_run(alloc, at, n)
                            .ok_or_else(|| too_small(&self.sb, min_blocks))?;
                        for x in &mut e {
                            x.lblk += l;
                        }
                        if let Some(last) = e.last() {
                            at = last.pblk + last.len;
                        }
                        data_exts.extend(e);
                    }
                    let physical_runs = data_exts
                        .windows(2)
                        .filter(|w| w[0].pblk + w[0].len != w[1].pblk)
                        .count();
                    if physical_runs > 0 {
                        self.stats.fragmented_files += 1;
                    }
                    self.copy_runs(runs, &data_exts)?;
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
                            let e = alloc_run(alloc, goal, n)
                                .ok_or_else(|| too_small(&self.sb, min_blocks))?;
                            for x in &e {
                                let s = (x.lblk * bs) as usize;
                                let t = ((x.lblk + x.len) * bs) as usize;
                                self.put(x.pblk, data[s..t].to_vec());
                            }
                            data_exts = e;
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
            if !data_exts.is_empty()
                || (self.f.extents
                    && matches!(prep.body, Body::File(_) | Body::Dir(_))
                    && rec.flags & inode_flags::INLINE_DATA == 0)
            {
                let map_goal = data_exts.last().map_or(goal, |e| e.pblk + e.len);
                let (ib, n) = self.map_blocks(&data_exts, seed, alloc, map_goal, min_blocks)?;
                rec.i_block = ib;
                if self.f.extents {
                    rec.flags |= inode_flags::EXTENTS;
                }
                blocks += n + data_exts.iter().map(|e| e.len).sum::<u64>();
                if let Some(last) = data_exts.last() {
                    cursor = cursor.max(last.pblk + last.len);
                }
            }
            rec.blocks_512 = blocks * (bs / 512);
            self.store_inode(ino, &rec, node.is_dir())?;
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
    /// none for others; layout flags are the builder's.
    fn flags_for(&self, node: &crate::tree::Node) -> Result<u32> {
        if self.tree.flavor != Flavor::Ext4 {
            return Ok(0);
        }
        let refused = inode_flags::ENCRYPT | inode_flags::VERITY | inode_flags::CASEFOLD;
        if node.flags & refused != 0 {
            return Err(Error::unsupported(format!(
                "inode {} is encrypted, verity-protected or casefolded (flags {:#x})",
                node.source_ino, node.flags
            )));
        }
        Ok(node.flags & !(inode_flags::STRUCTURAL | refused))
    }

    /// Plan the copies of a file's runs into its blocks.
    fn copy_runs(&mut self, runs: &[crate::tree::Run], exts: &[Ext]) -> Result<()> {
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
                    self.plan.copy(at, disk.clone(), base + (s - start), t - s);
                    self.stats.data_bytes += t - s;
                }
            }
        }
        Ok(())
    }

    fn journal_inode(
        &mut self,
        spec: &JournalSpec,
        exts: &[Ext],
        alloc: &mut alloc::Alloc,
        min_blocks: u64,
    ) -> Result<()> {
        let ino = special_ino::JOURNAL;
        let bs = self.geo.bs;
        self.put(
            exts[0].pblk,
            journal::superblock_block(spec, bs as u32, self.sb.s_uuid),
        );
        let seed = self.inode_seed(ino, 0);
        let goal = exts.last().map_or(0, |e| e.pblk + e.len);
        let (ib, n) = self.map_blocks(exts, seed, alloc, goal, min_blocks)?;
        let total: u64 = exts.iter().map(|e| e.len).sum();
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

    fn resize_inode(&mut self, dind: u64) -> Result<()> {
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
    fn finish(
        mut self,
        alloc: &alloc::Alloc,
        _inos: &[u32],
        opts: &BuildOptions,
        journal: Option<&JournalSpec>,
    ) -> Result<Built> {
        let geo = self.geo.clone();
        let bs = geo.bs as usize;
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
        let sb = self.final_superblock(free_blocks_total, free_inodes_total, journal, alloc)?;
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
    fn put_sparse(&mut self, blk: u64, bytes: Vec<u8>) {
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

    fn final_superblock(
        &self,
        free_blocks: u64,
        free_inodes: u64,
        journal: Option<&JournalSpec>,
        alloc: &alloc::Alloc,
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
        sb.s_orphan_file_inum = 0;
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
        let _ = alloc;
        Ok(sb)
    }
}

/// Set bits `from..to` of a bitmap.
fn set_bits(bm: &mut [u8], from: u64, to: u64) {
    let mut b = from;
    while b < to && b % 8 != 0 {
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
fn highest_bit(bm: &[u8]) -> u64 {
    for (i, &b) in bm.iter().enumerate().rev() {
        if b != 0 {
            return (i as u64) * 8 + 8 - u64::from(b.leading_zeros());
        }
    }
    0
}
