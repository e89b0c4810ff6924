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
//!   directories over flex groups the way the kernel's Orlov allocator does, and
//!   keeps everything below a directory near it. Measured on the benchmark tree
//!   (`benches/ext4_build.sh`: 50k files, 1.7 GB, 10 top-level directories, 5 GiB
//!   geometry): build time, e2fsck time, space written (1.8 GB), fragmentation
//!   (0.0 % non-contiguous either way) and the `--shrink` size (2.2 GB) were the
//!   same; the difference is where free space ends up. Packed leaves it as one
//!   run at the end (groups untouched, BLOCK_UNINIT, and room for the kernel's
//!   own Orlov placement once the image boots); spread cuts it into one gap per
//!   flex group. So packed is the default, and spread an option.
//! - htree leaves are filled completely (e2fsck -D without slack): the built
//!   directory is as small as possible; the kernel splits leaves as files are
//!   added.
//! - Inline data (inline_data sources): files up to what `i_block` plus the
//!   in-inode xattr space hold, and directories whose entries fit `i_block`, are
//!   stored inline, as mke2fs -d does; anything larger uses blocks.
//! - quota is refused: its limits are not part of the Tree, so rebuilding the
//!   quota files would silently drop them. mmp, stable_inodes (inode numbers
//!   change) and external journals are refused too. orphan_file is rebuilt
//!   empty, numbered and placed where mke2fs puts it.
//! - Times: `s_mkfs_time` is kept; `s_wtime` and `s_lastcheck` are the latest
//!   time the source superblock records (never the clock), so output is
//!   reproducible; the mount count is 0 and `s_mtime` is 0 (never mounted). The
//!   journal, resize and orphan inodes get that same time.
//! - Counters: `s_r_blocks_count` keeps the source's ratio at the new size,
//!   `s_overhead_clusters` (when the source sets it) is recomputed as mke2fs does,
//!   `s_kbytes_written` is kept (it describes the filesystem's life, not this
//!   copy), error records and the orphan list are cleared.
//! - Inode flags: for ext4 trees the behavioural flags (immutable, append-only,
//!   noatime, ...) are kept; layout flags (extents, index, inline data, huge
//!   file) are the builder's; encrypted, verity and casefolded inodes are
//!   refused. Trees from other filesystems get no flags.
//! - Extent and indirect map blocks follow their file's data; the xattr block
//!   precedes it. Attributes go in the inode while they fit (in the kernel's
//!   order), the rest in one block, shared between inodes whose block would be
//!   identical (up to the kernel's 1024 references).

pub mod alloc;
mod dir;
pub mod hash;
mod inode;
pub mod journal;
mod layout;
mod map;
mod place;
mod prepare;
mod resize;
mod size;
mod xattr;

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fs::ext4::ondisk::ino as special_ino;
use crate::fs::ext4::superblock::{compat, incompat, ro_compat, Superblock};
use crate::output::plan::Plan;
use crate::tree::Tree;

pub use journal::JournalSpec;
use layout::Geometry;
use map::Ext;
use place::{journal_goal, number_inodes, Output};
use prepare::{map_estimate, order_nodes, prepare, Features};
use size::{journal_spec, target_superblock, too_small};

pub use crate::fs::TargetSize;

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
    /// Blocks of the orphan file (orphan_file sources). `None`: mke2fs's default
    /// for the new size. The reader passes the source orphan file's size.
    pub orphan_file_blocks: Option<u32>,
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
    | compat::FAST_COMMIT
    | compat::ORPHAN_FILE;

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

/// `ext2fs_default_orphan_file_blocks`, kept under the kernel's 8 MiB limit on
/// the orphan file (fs/ext4/orphan.c).
fn orphan_file_blocks(sb: &Superblock, opts: &BuildOptions) -> u64 {
    let bs = u64::from(sb.block_size());
    let blocks = sb.blocks_count();
    let default = if blocks < 128 * 1024 {
        32
    } else if blocks < 2 * 1024 * 1024 {
        blocks / 4096
    } else {
        512
    };
    opts.orphan_file_blocks
        .map_or(default, u64::from)
        .clamp(1, (8 << 20) / bs)
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
    let orphan_file = source_sb.has_compat(compat::ORPHAN_FILE);
    if orphan_file {
        content += u64::from(opts.orphan_file_blocks.unwrap_or(512)) + 2;
    }
    let inodes_needed = u64::from(source_sb.first_ino()) - 1 + order.nodes.len() as u64 - 1
        + u64::from(orphan_file);
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
    if let Some(j) = &journal {
        let goal = if f.extents {
            journal_goal(&sb, &geo, &alloc)
        } else {
            geo.first
        };
        out.journal_inode(j, goal, &mut alloc, min_blocks)?;
    }

    // Inode numbers.
    let orphan_file = sb.has_compat(compat::ORPHAN_FILE);
    let (inos, orphan_ino) = number_inodes(&sb, &geo, &order, tree, opts.placement, orphan_file)?;
    if let Some(ino) = orphan_ino {
        out.orphan = Some((ino, orphan_file_blocks(&sb, opts)));
    }
    out.place_inodes(tree, &order, &preps, &inos, &links, &mut alloc, min_blocks)?;

    if let Some(d) = resize_dind {
        out.resize_inode(d)?;
    }
    out.finish(&alloc, opts, journal.as_ref())
}
