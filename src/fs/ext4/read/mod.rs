//! The ext4 reader: turns a volume into a [`Tree`] holding every inode reachable
//! from the root, with all its metadata, and file bytes as references to volume
//! ranges (or owned blobs for inline data and journal-replayed blocks).
//!
//! It owns the read path only: opening (superblock, descriptors, journal replay
//! through [`super::journal::replay`]), inode decoding, block mapping, directories,
//! xattrs and the walk from the root. It never writes to the volume and never
//! loads file data (except inline data, replayed blocks and xattr values, which are
//! metadata-sized). Every block it reads goes through the journal overlay first.
//!
//! Hostile input: every count is bounded by the volume (a global block budget: the
//! reachable inodes cannot map more blocks than the volume holds), every chain is
//! bounded and cycle-checked, and errors name the inode or block.

mod blockmap;
mod dir;
mod inode;
mod orphan;
mod walk;
mod xattr;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::group::{self, GroupDesc};
use super::journal::{self, JournalLocation, Overlay, ReplayReport};
use super::ondisk::ino;
use super::superblock::{compat, incompat, state, Superblock, SUPERBLOCK_OFFSET};
use crate::disk::Disk;
use crate::error::{Error, Location, Result};
use crate::tree::{Flavor, Tree};

pub use blockmap::BlockExtent;

/// How to read a volume.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Verify metadata checksums (metadata_csum's crc32c, gdt_csum's crc16 on the
    /// group descriptors). On by default; turning it off is for salvaging.
    pub verify_checksums: bool,
    /// Replay a journal that needs recovery into an in-memory overlay (the default).
    /// Off: read the volume as it lies on disk, possibly stale, with a warning.
    pub replay_journal: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            verify_checksums: true,
            replay_journal: true,
        }
    }
}

/// An opened ext4 volume: the (post-replay) superblock and group descriptors, the
/// tree of everything reachable from the root, and facts for reports.
pub struct Ext4Volume {
    /// The superblock after journal replay; the builder clones its geometry.
    pub sb: Superblock,
    pub groups: Vec<GroupDesc>,
    pub tree: Tree,
    /// What journal replay did.
    pub journal: ReplayReport,
    pub info: VolumeInfo,
    /// The journal's superblock (after replay), for rebuilding the journal with the
    /// same size and features. `None` without a journal or when it is unreadable.
    pub journal_sb: Option<super::journal::ondisk::JournalSuperblock>,
    /// The orphan file's size in blocks, when the filesystem has one.
    pub orphan_file_blocks: Option<u32>,
}

/// The journal, as `inspect` shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct JournalInfo {
    /// "none", "internal" (an inode) or "external" (refused when opening).
    pub kind: String,
    /// The journal inode number, for an internal journal.
    pub inode: Option<u32>,
    /// Journal size in blocks.
    pub blocks: u64,
    /// The superblock asked for recovery (needs_recovery).
    pub needs_recovery: bool,
    /// Whether replay ran (it runs when recovery is needed, unless disabled).
    pub replayed: bool,
}

/// Filesystem facts for `inspect` and reports.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VolumeInfo {
    pub label: String,
    pub uuid: String,
    /// Feature names as e2fsprogs prints them.
    pub features: Vec<String>,
    pub block_size: u32,
    pub inode_size: u16,
    pub groups: u64,
    pub blocks_count: u64,
    pub reserved_blocks: u64,
    /// Free and used blocks, summed from the group descriptors (the superblock's
    /// counters lag on a mounted or crashed filesystem).
    pub free_blocks: u64,
    pub used_blocks: u64,
    pub inodes_count: u64,
    pub free_inodes: u64,
    pub used_inodes: u64,
    /// "clean", "not clean" or "errors" (from s_state).
    pub state: String,
    pub journal: JournalInfo,
    /// Inodes on the orphan list or in the orphan file. They are unreachable and
    /// left out of the tree.
    pub orphans: u64,
    /// Inodes in the tree (reachable from the root), each counted once.
    pub reachable_inodes: u64,
    /// Things the user should know that did not stop the read.
    pub warnings: Vec<String>,
}

/// The signature of a journal replayer (see [`journal::replay`]).
pub(crate) type ReplayFn<'a> = dyn Fn(
        &Superblock,
        &JournalLocation,
        &(dyn Fn(u64, &mut [u8]) -> Result<()> + Sync),
    ) -> Result<(Overlay, ReplayReport)>
    + 'a;

/// Open an ext4 (or ext2/ext3) volume and read its whole tree.
pub fn open(volume: Arc<dyn Disk>, opts: &ReadOptions) -> Result<Ext4Volume> {
    open_with_replayer(volume, opts, &journal::replay)
}

/// Read only the superblock at its usual place (for probing and `inspect`).
pub fn read_superblock(volume: &dyn Disk) -> Result<Superblock> {
    if volume.len() < SUPERBLOCK_OFFSET + 1024 {
        return Err(Error::NotThisFormat { format: "ext2/3/4" });
    }
    let mut raw = [0u8; 1024];
    volume.read_at(SUPERBLOCK_OFFSET, &mut raw)?;
    Superblock::parse(&raw, volume.len())
}

/// The superblock, falling back to the first backup when the primary is missing
/// or damaged, as e2fsck does. With a backup, the overlay returned puts it and
/// the descriptor table that follows it where the primary ones belong, so the
/// rest of the read sees one consistent filesystem; the string says so.
fn superblock_or_backup(volume: &dyn Disk) -> Result<(Superblock, Overlay, Option<String>)> {
    let primary = match read_superblock(volume) {
        Ok(sb) => return Ok((sb, Overlay::default(), None)),
        Err(e) => e,
    };
    if !matches!(
        primary.kind(),
        crate::ErrorKind::NotThisFormat | crate::ErrorKind::Corrupt | crate::ErrorKind::Checksum
    ) {
        return Err(primary);
    }
    let Some((offset, block, raw)) = crate::disk::probe::ext::find_backup_superblock(volume)?
    else {
        return Err(primary);
    };
    let raw: [u8; 1024] = raw.try_into().map_err(|_| primary_short())?;
    let sb = Superblock::parse(&raw, volume.len()).map_err(|e| {
        Error::within(
            format!(
                "the primary ext4 superblock is unusable ({primary}); the backup at block {block}"
            ),
            e,
        )
    })?;
    if sb.has_incompat(incompat::META_BG) {
        return Err(Error::unsupported(format!(
            "ext4 with meta_bg read from a backup superblock (the primary is unusable: {primary})"
        )));
    }
    let bs = u64::from(sb.block_size());
    let mut overlay = Overlay::default();
    // The block that holds the primary superblock: block 1 with 1 KiB blocks,
    // bytes 1024..2048 of block 0 otherwise.
    let sb_block = u64::from(sb.s_first_data_block);
    let mut b = vec![0u8; bs as usize];
    volume.read_at(sb_block * bs, &mut b)?;
    let at = (SUPERBLOCK_OFFSET - sb_block * bs) as usize;
    b[at..at + 1024].copy_from_slice(&raw);
    overlay.blocks.insert(sb_block, Arc::from(b));
    let desc_blocks = sb
        .group_count()
        .div_ceil(bs / sb.desc_size() as u64)
        .min(sb.blocks_count());
    for i in 0..desc_blocks {
        let mut b = vec![0u8; bs as usize];
        let from = (block + 1 + i) * bs;
        if from + bs > volume.len() {
            return Err(Error::corrupt(
                "ext4 backup group descriptors",
                Location::Block(block + 1 + i),
                "past the end of the volume",
            ));
        }
        volume.read_at(from, &mut b)?;
        overlay.blocks.insert(sb_block + 1 + i, Arc::from(b));
    }
    let note = format!(
        "the primary superblock is unusable ({primary}); read with the backup superblock and \
         group descriptors at block {block} (byte {offset}), as e2fsck -b {block} does"
    );
    Ok((sb, overlay, Some(note)))
}

fn primary_short() -> Error {
    Error::corrupt("ext4 backup superblock", Location::Byte(0), "short read")
}

pub(crate) fn open_with_replayer(
    volume: Arc<dyn Disk>,
    opts: &ReadOptions,
    replayer: &ReplayFn<'_>,
) -> Result<Ext4Volume> {
    let mut warnings = Vec::new();
    let (sb0, base, backup_note) = superblock_or_backup(&*volume)?;
    warnings.extend(backup_note);
    let empty = base.clone();
    let groups0 = {
        let raw = Ctx::new(&*volume, &empty, &sb0, &[], opts.verify_checksums)?;
        read_groups(&raw, &sb0, opts)?
    };

    // The journal comes first: everything else is read through its overlay.
    let needs_recovery = sb0.has_incompat(incompat::RECOVER);
    let mut jinfo = JournalInfo {
        kind: "none".into(),
        needs_recovery,
        ..Default::default()
    };
    let mut report = ReplayReport {
        needed: needs_recovery,
        ..Default::default()
    };
    let mut overlay = base.clone();
    let mut journal_loc = None;
    if sb0.has_compat(compat::HAS_JOURNAL) {
        if sb0.s_journal_inum == 0 {
            if sb0.s_journal_dev != 0 || sb0.s_journal_uuid != [0; 16] {
                return Err(Error::unsupported(format!(
                    "ext4 external journal device (s_journal_dev {:#x}, journal UUID {})",
                    sb0.s_journal_dev,
                    super::superblock::format_uuid(&sb0.s_journal_uuid)
                )));
            }
            return Err(Error::corrupt(
                "ext4 superblock",
                Location::Byte(SUPERBLOCK_OFFSET + 0xE0),
                "has_journal is set but there is neither a journal inode nor a journal device",
            ));
        }
        let raw = Ctx::new(&*volume, &empty, &sb0, &groups0, opts.verify_checksums)?;
        raw.check_inode_tables()?;
        let loc = journal_location(&raw, sb0.s_journal_inum)?;
        journal_loc = Some(loc.clone());
        jinfo.kind = "internal".into();
        jinfo.inode = Some(sb0.s_journal_inum);
        jinfo.blocks = loc.len_blocks;
        if needs_recovery {
            if opts.replay_journal {
                let read_block = |n: u64, buf: &mut [u8]| raw.read_block(n, buf);
                let (o, r) = replayer(&sb0, &loc, &read_block)?;
                // The journal's blocks win over the backup-superblock patch.
                for (b, d) in o.blocks {
                    overlay.blocks.insert(b, d);
                }
                overlay.fast = o.fast;
                report = r;
                jinfo.replayed = true;
            } else {
                warnings.push(
                    "the journal needs recovery but replay was disabled: metadata may be stale"
                        .to_string(),
                );
            }
        }
    } else if needs_recovery {
        warnings.push("needs_recovery is set but the filesystem has no journal".to_string());
    }
    warnings.extend(report.notes.iter().cloned());

    // Replay may have rewritten the superblock and descriptors.
    let (sb, groups) = if overlay.is_empty() {
        (sb0, groups0)
    } else {
        let sb = {
            let c = Ctx::new(&*volume, &overlay, &sb0, &[], opts.verify_checksums)?;
            let mut raw = [0u8; 1024];
            c.read_at(SUPERBLOCK_OFFSET, &mut raw)?;
            Superblock::parse(&raw, volume.len())?
        };
        let groups = {
            let c = Ctx::new(&*volume, &overlay, &sb, &[], opts.verify_checksums)?;
            read_groups(&c, &sb, opts)?
        };
        (sb, groups)
    };

    let ctx = Ctx::new(&*volume, &overlay, &sb, &groups, opts.verify_checksums)?;
    ctx.check_inode_tables()?;
    let mut tree = Tree::new(Flavor::Ext4, Some(volume.clone()));
    let reachable = walk::build(&ctx, &mut tree)?;
    let orphans = orphan::count(&ctx, &mut warnings);
    tree.finish()?;

    // What a rebuild needs to recreate the journal and the orphan file as they
    // were: read through the overlay, so a replayed journal superblock counts.
    let journal_sb = match &journal_loc {
        Some(loc) => {
            let read_block = |n: u64, buf: &mut [u8]| ctx.read_block(n, buf);
            match journal::read_superblock(&sb, loc, &read_block) {
                Ok(j) => Some(j),
                Err(e) => {
                    warnings.push(format!("journal superblock unreadable ({e}); a rebuild uses default journal settings"));
                    None
                }
            }
        }
        None => None,
    };
    let orphan_file_blocks = if sb.has_compat(compat::ORPHAN_FILE) && sb.s_orphan_file_inum != 0 {
        let raw = ctx.read_inode_raw(sb.s_orphan_file_inum)?;
        let ino = inode::Inode::parse(&ctx, sb.s_orphan_file_inum, &raw)?;
        u32::try_from(ino.size / u64::from(ctx.bs)).ok()
    } else {
        None
    };

    let free_blocks: u64 = groups.iter().map(|g| u64::from(g.free_blocks_count)).sum();
    let free_inodes: u64 = groups.iter().map(|g| u64::from(g.free_inodes_count)).sum();
    let blocks_count = sb.blocks_count();
    let inodes_count = u64::from(sb.s_inodes_count);
    let st = if sb.s_state & state::ERROR_FS != 0 {
        "errors"
    } else if sb.s_state & state::VALID_FS != 0 {
        "clean"
    } else {
        "not clean"
    };
    let info = VolumeInfo {
        label: sb.label(),
        uuid: sb.uuid_string(),
        features: sb.feature_names(),
        block_size: sb.block_size(),
        inode_size: sb.inode_size(),
        groups: sb.group_count(),
        blocks_count,
        reserved_blocks: sb.r_blocks_count(),
        free_blocks,
        used_blocks: blocks_count.saturating_sub(free_blocks),
        inodes_count,
        free_inodes,
        used_inodes: inodes_count.saturating_sub(free_inodes),
        state: st.into(),
        journal: jinfo,
        orphans,
        reachable_inodes: reachable,
        warnings,
    };
    Ok(Ext4Volume {
        sb,
        groups,
        tree,
        journal: report,
        info,
        journal_sb,
        orphan_file_blocks,
    })
}

fn read_groups(ctx: &Ctx, sb: &Superblock, opts: &ReadOptions) -> Result<Vec<GroupDesc>> {
    let read = |b: u64, buf: &mut [u8]| ctx.read_block(b, buf);
    if opts.verify_checksums {
        group::read_all(sb, read)
    } else {
        // Same table, checksums ignored: decode with a superblock copy that has
        // the checksum features masked off.
        let mut quiet = sb.clone();
        quiet.s_feature_ro_compat &=
            !(super::superblock::ro_compat::METADATA_CSUM | super::superblock::ro_compat::GDT_CSUM);
        group::read_all(&quiet, read)
    }
}

/// The journal inode's block mapping, for the replayer.
fn journal_location(ctx: &Ctx, jino: u32) -> Result<JournalLocation> {
    let raw = ctx.read_inode_raw(jino)?;
    let ino = inode::Inode::parse(ctx, jino, &raw)?;
    if !ino.is_regular() {
        return Err(Error::corrupt(
            "ext4 journal inode",
            Location::Inode(u64::from(jino)),
            format!("mode {:#o} is not a regular file", ino.raw.i_mode),
        ));
    }
    let bs = u64::from(ctx.bs);
    let len_blocks = ino.size / bs;
    let map = blockmap::map(ctx, &ino, ino.size.div_ceil(bs))?;
    Ok(JournalLocation {
        extents: map.iter().map(|e| (e.logical, e.physical, e.len)).collect(),
        len_blocks,
    })
}

/// Shared state of one read: the volume, the overlay, geometry, the block budget
/// and the xattr block cache. Shared by reference between rayon workers.
pub(crate) struct Ctx<'a> {
    pub disk: &'a dyn Disk,
    pub overlay: &'a Overlay,
    pub sb: &'a Superblock,
    pub groups: &'a [GroupDesc],
    pub bs: u32,
    pub blocks_count: u64,
    /// Verify metadata_csum checksums (the feature is on and checking is wanted).
    pub metadata_csum: bool,
    /// Blocks the reachable inodes may still map before the total passes the
    /// volume's size (which only a loop or cross-linked blocks can cause).
    budget: AtomicU64,
    /// Decoded xattr blocks by block number (they are shared and refcounted).
    pub xattr_blocks: Mutex<HashMap<u64, Arc<xattr::BlockXattrs>>>,
    /// Values stored in EA inodes, by inode number (shared between inodes too).
    pub ea_values: Mutex<HashMap<u32, Arc<[u8]>>>,
}

impl<'a> Ctx<'a> {
    pub fn new(
        disk: &'a dyn Disk,
        overlay: &'a Overlay,
        sb: &'a Superblock,
        groups: &'a [GroupDesc],
        verify: bool,
    ) -> Result<Self> {
        let blocks_count = sb.blocks_count();
        Ok(Ctx {
            disk,
            overlay,
            sb,
            groups,
            bs: sb.block_size(),
            blocks_count,
            metadata_csum: verify && sb.has_metadata_csum(),
            budget: AtomicU64::new(blocks_count),
            xattr_blocks: Mutex::new(HashMap::new()),
            ea_values: Mutex::new(HashMap::new()),
        })
    }

    /// Read bytes of the volume with the journal overlay applied.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.disk.read_at(offset, buf)?;
        if self.overlay.is_empty() || buf.is_empty() {
            return Ok(());
        }
        let bs = u64::from(self.bs);
        let end = offset + buf.len() as u64;
        let first = offset / bs;
        let last = (end - 1) / bs;
        for (&blk, data) in self.overlay.range(first, last - first + 1) {
            let bstart = blk * bs;
            let s = bstart.max(offset);
            let e = (bstart + bs).min(end);
            if s >= e {
                continue;
            }
            let src = data
                .get((s - bstart) as usize..(e - bstart) as usize)
                .ok_or_else(|| {
                    Error::corrupt(
                        "journal overlay",
                        Location::Block(blk),
                        format!("replayed block has {} bytes", data.len()),
                    )
                })?;
            buf[(s - offset) as usize..(e - offset) as usize].copy_from_slice(src);
        }
        Ok(())
    }

    /// Check that `count` blocks from `start` lie inside the filesystem.
    pub fn check_blocks(
        &self,
        structure: &'static str,
        loc: Location,
        start: u64,
        count: u64,
    ) -> Result<()> {
        match start.checked_add(count) {
            Some(end)
                if start > u64::from(self.sb.s_first_data_block) && end <= self.blocks_count =>
            {
                Ok(())
            }
            _ => Err(Error::corrupt(
                structure,
                loc,
                format!(
                    "blocks {start}..+{count} are outside the filesystem's {} blocks",
                    self.blocks_count
                ),
            )),
        }
    }

    /// Read one filesystem block (overlay first). `buf` is one block long.
    pub fn read_block(&self, blk: u64, buf: &mut [u8]) -> Result<()> {
        if blk >= self.blocks_count {
            return Err(Error::corrupt(
                "ext4 block",
                Location::Block(blk),
                format!("outside the filesystem's {} blocks", self.blocks_count),
            ));
        }
        self.read_at(blk * u64::from(self.bs), buf)
    }

    /// Take `n` blocks from the budget of blocks the reachable inodes may map.
    pub fn charge(&self, ino: u32, n: u64) -> Result<()> {
        let r = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n)
            });
        r.map(|_| ()).map_err(|_| {
            Error::corrupt(
                "ext4 block map",
                Location::Inode(u64::from(ino)),
                "the inodes map more blocks than the volume holds (a loop, or blocks shared between inodes)",
            )
        })
    }

    /// Byte offset of inode `n` in the volume.
    pub fn inode_offset(&self, n: u32) -> Result<u64> {
        if n == 0 || n > self.sb.s_inodes_count {
            return Err(Error::corrupt(
                "ext4 inode number",
                Location::Inode(u64::from(n)),
                format!("outside 1..={}", self.sb.s_inodes_count),
            ));
        }
        let ipg = self.sb.s_inodes_per_group;
        let g = ((n - 1) / ipg) as usize;
        let i = u64::from((n - 1) % ipg);
        let gd = self.groups.get(g).ok_or_else(|| {
            Error::corrupt(
                "ext4 inode number",
                Location::Inode(u64::from(n)),
                format!("group {g} does not exist"),
            )
        })?;
        gd.inode_table
            .checked_mul(u64::from(self.bs))
            .and_then(|t| t.checked_add(i * u64::from(self.sb.inode_size())))
            .ok_or_else(|| {
                Error::corrupt(
                    "ext4 group descriptor",
                    Location::Entry(g as u64),
                    format!("inode table at block {}", gd.inode_table),
                )
            })
    }

    /// Every group's inode table must lie inside the filesystem, so that later
    /// inode reads only need the volume's own bounds check.
    fn check_inode_tables(&self) -> Result<()> {
        let table_bytes = u64::from(self.sb.s_inodes_per_group) * u64::from(self.sb.inode_size());
        let table_blocks = table_bytes.div_ceil(u64::from(self.bs));
        for (g, gd) in self.groups.iter().enumerate() {
            self.check_blocks(
                "ext4 group descriptor",
                Location::Entry(g as u64),
                gd.inode_table,
                table_blocks,
            )?;
        }
        Ok(())
    }

    /// The raw bytes of one inode (`s_inode_size` of them).
    pub fn read_inode_raw(&self, n: u32) -> Result<Vec<u8>> {
        let off = self.inode_offset(n)?;
        let mut buf = vec![0u8; usize::from(self.sb.inode_size())];
        self.read_at(off, &mut buf)?;
        Ok(buf)
    }
}

/// Inode numbers of the reserved inodes a directory entry must never name.
pub(crate) fn is_reserved_inode(sb: &Superblock, n: u32) -> bool {
    n != ino::ROOT && n < sb.first_ino()
}

#[cfg(test)]
mod tests;
