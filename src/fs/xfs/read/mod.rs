//! The XFS reader: turns a volume into a [`Tree`] of every inode reachable from
//! the root, with its metadata, and file bytes as references to volume ranges.
//!
//! It owns the read path only: the superblock and its feature tiers (unknown
//! incompat features refuse the read, unknown ro_compat features refuse a
//! rebuild, compat features are ignored), the allocation groups (read in
//! parallel: each AG's inode B+tree gives its allocated inodes, whose chunks are
//! read and decoded there), inode forks, directories, attributes and the walk
//! from the root. It never writes to the volume and never loads file data.
//!
//! Hostile input: every count and offset is checked against the volume before it
//! is used to allocate or loop; B+tree walks check levels, owners and key order;
//! V5 metadata blocks have their CRCs verified, and errors name the AG, the block
//! and the structure.

mod ag;
mod attr;
mod dir;
mod inode;

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;

use super::ondisk::{
    self, crc_compute, crc_stored, features2, incompat, log_incompat, ro_compat, version,
    RawSuperblock, SB_CRC_OFF, SB_MAGIC,
};
use crate::disk::Disk;
use crate::error::{Error, Location, Result};
use crate::tree::{Entry, Flavor, Kind, NodeId, Tree};

pub use inode::Decoded;

/// How to read a volume.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Verify V5 metadata CRCs (on by default; off is for salvaging).
    pub verify_checksums: bool,
    /// Read a filesystem whose log needs recovery as it lies on disk (stale),
    /// with a warning, instead of refusing it. Off by default: log replay is
    /// not implemented yet.
    pub allow_dirty_log: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            verify_checksums: true,
            allow_dirty_log: false,
        }
    }
}

/// The log, as `inspect` shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LogInfo {
    /// "internal" (external logs are refused when opening).
    pub kind: String,
    /// First block of the log (a filesystem block number).
    pub start: u64,
    pub blocks: u32,
    /// Log sector size in bytes.
    pub sector_size: u32,
    pub stripe_unit: u32,
    /// Head, tail and whether recovery is needed.
    pub state: crate::fs::xfs::log::LogState,
}

/// Filesystem facts for `inspect` and reports.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VolumeInfo {
    pub label: String,
    pub uuid: String,
    /// The superblock version (4 or 5).
    pub version: u16,
    /// Feature names, as `xfs_db -c version` prints them where it has a name.
    pub features: Vec<String>,
    pub block_size: u32,
    pub sector_size: u32,
    pub inode_size: u32,
    pub dir_block_size: u32,
    pub ag_count: u32,
    pub ag_blocks: u32,
    pub data_blocks: u64,
    /// Counters summed from the AG headers (the superblock's lag with lazy counts).
    pub free_blocks: u64,
    pub inodes: u64,
    pub free_inodes: u64,
    pub log: LogInfo,
    /// Allocated inodes with no links (on the AGI unlinked lists): left out.
    pub unlinked: u64,
    /// Inodes in the tree (reachable from the root), each counted once.
    pub reachable_inodes: u64,
    /// Why a same-type rebuild must be refused, if it must (V4, unknown
    /// ro_compat features).
    pub rebuild_refusal: Option<String>,
    /// Things the user should know that did not stop the read.
    pub warnings: Vec<String>,
}

/// An opened XFS volume.
pub struct XfsVolume {
    /// The primary superblock; the builder clones its geometry.
    pub sb: RawSuperblock,
    pub tree: Tree,
    pub info: VolumeInfo,
}

/// Everything the per-AG readers share: the volume and its validated geometry.
pub(crate) struct Ctx {
    pub disk: Arc<dyn Disk>,
    pub sb: RawSuperblock,
    pub bs: u64,
    pub blocklog: u32,
    pub sectsize: u64,
    pub agblocks: u32,
    pub agcount: u32,
    pub agblklog: u8,
    pub inopblog: u8,
    pub isize: usize,
    pub v5: bool,
    pub ftype: bool,
    pub sparse: bool,
    pub dirblksize: usize,
    pub dirblkfsbs: u64,
    pub verify: bool,
    /// The UUID stamped into V5 metadata (sb_meta_uuid with meta_uuid).
    pub meta_uuid: [u8; 16],
}

impl Ctx {
    /// The byte offset of block `agbno` of AG `agno`, checked against the AG.
    pub fn ag_byte(&self, agno: u32, agbno: u32, what: &'static str) -> Result<u64> {
        if agno >= self.agcount || agbno >= self.agblocks {
            return Err(Error::corrupt(
                what,
                Location::Block(u64::from(agbno)),
                format!(
                    "AG {agno} block {agbno} is outside the filesystem ({} AGs of {} blocks)",
                    self.agcount, self.agblocks
                ),
            ));
        }
        Ok((u64::from(agno) * u64::from(self.agblocks) + u64::from(agbno)) * self.bs)
    }

    /// Split a filesystem block number (AG in the high bits).
    pub fn fsb_split(&self, fsb: u64) -> (u64, u64) {
        (fsb >> self.agblklog, fsb & ((1u64 << self.agblklog) - 1))
    }

    /// Byte offset of `count` blocks from filesystem block `fsb`, checked: the
    /// run must stay inside one AG and inside the volume.
    pub fn fsb_byte(&self, fsb: u64, count: u64, what: &'static str) -> Result<u64> {
        let (agno, agbno) = self.fsb_split(fsb);
        let bad = || {
            Error::corrupt(
                what,
                Location::Block(fsb),
                format!(
                    "{count} blocks at AG {agno} block {agbno} pass the end of the AG or \
                     the filesystem ({} AGs of {} blocks)",
                    self.agcount, self.agblocks
                ),
            )
        };
        if agno >= u64::from(self.agcount)
            || agbno
                .checked_add(count)
                .is_none_or(|e| e > u64::from(self.agblocks))
        {
            return Err(bad());
        }
        let byte = (agno * u64::from(self.agblocks) + agbno) * self.bs;
        if byte + count * self.bs > self.disk.len() {
            return Err(bad());
        }
        Ok(byte)
    }

    /// Read `buf.len()` bytes at a byte offset of the volume.
    pub fn read(&self, at: u64, buf: &mut [u8]) -> Result<()> {
        self.disk.read_at(at, buf)
    }

    /// Check a V5 block's CRC.
    pub fn check_crc(
        &self,
        buf: &[u8],
        crc_off: usize,
        structure: &'static str,
        loc: Location,
    ) -> Result<()> {
        if !self.v5 || !self.verify {
            return Ok(());
        }
        let stored = crc_stored(buf, crc_off);
        let computed = crc_compute(buf, crc_off);
        if stored != computed {
            return Err(Error::checksum(
                structure,
                loc,
                u64::from(stored),
                u64::from(computed),
            ));
        }
        Ok(())
    }

    /// Check the UUID stamped in a V5 block.
    pub fn check_uuid(&self, uuid: &[u8], structure: &'static str, loc: Location) -> Result<()> {
        if self.v5 && uuid != self.meta_uuid {
            return Err(Error::corrupt(
                structure,
                loc,
                "block belongs to another filesystem (UUID differs)",
            ));
        }
        Ok(())
    }

    /// The AG count and AG-relative inode number of an inode, checked.
    pub fn ino_parts(&self, ino: u64) -> Option<(u32, u32)> {
        let (agno, agbno, _) = ondisk::ino_split(ino, self.agblklog, self.inopblog);
        if agno >= self.agcount || agbno >= self.agblocks || ino >> 56 != 0 {
            return None;
        }
        let bits = u32::from(self.agblklog) + u32::from(self.inopblog);
        Some((agno, (ino & ((1u64 << bits) - 1)) as u32))
    }
}

fn hex_uuid(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Read and validate the primary superblock.
pub fn read_superblock(disk: &dyn Disk) -> Result<RawSuperblock> {
    if disk.len() < 512 {
        return Err(Error::NotThisFormat { format: "XFS" });
    }
    let mut sec = [0u8; 512];
    disk.read_at(0, &mut sec)?;
    if u32::from_be_bytes(sec[0..4].try_into().expect("4 bytes")) != SB_MAGIC {
        return Err(Error::NotThisFormat { format: "XFS" });
    }
    let raw: &[u8; RawSuperblock::SIZE] = sec[..RawSuperblock::SIZE]
        .try_into()
        .expect("a sector holds the superblock");
    let sb = RawSuperblock::decode(raw);
    validate_superblock(&sb, disk)?;
    if sb.is_v5() {
        let mut full = vec![0u8; usize::from(sb.sb_sectsize)];
        disk.read_at(0, &mut full)?;
        let stored = crc_stored(&full, SB_CRC_OFF);
        let computed = crc_compute(&full, SB_CRC_OFF);
        if stored != computed {
            return Err(Error::checksum(
                "XFS superblock",
                Location::Byte(0),
                u64::from(stored),
                u64::from(computed),
            ));
        }
    }
    Ok(sb)
}

fn sb_corrupt(detail: String) -> Error {
    Error::corrupt("XFS superblock", Location::Byte(0), detail)
}

fn names_of(bits: u32, table: &[(u32, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = bits;
    for &(b, n) in table {
        if bits & b != 0 {
            out.push(n.to_string());
            rest &= !b;
        }
    }
    if rest != 0 {
        out.push(format!("unknown bits {rest:#x}"));
    }
    out
}

fn validate_superblock(sb: &RawSuperblock, disk: &dyn Disk) -> Result<()> {
    let ver = sb.version();
    if ver != version::V4 && ver != version::V5 {
        return Err(Error::unsupported(format!(
            "XFS superblock version {ver} (only 4 and 5 exist in current kernels)"
        )));
    }
    let pow2 = |v: u64, lo: u64, hi: u64| v.is_power_of_two() && (lo..=hi).contains(&v);
    let bs = u64::from(sb.sb_blocksize);
    if !pow2(bs, 512, 65536) || 1u64 << sb.sb_blocklog != bs {
        return Err(sb_corrupt(format!(
            "block size {bs} (log {}) is not a power of two in 512..65536",
            sb.sb_blocklog
        )));
    }
    let ss = u64::from(sb.sb_sectsize);
    if !pow2(ss, 512, 32768) || 1u64 << sb.sb_sectlog != ss || ss > bs {
        return Err(sb_corrupt(format!(
            "sector size {ss} (log {}) is invalid",
            sb.sb_sectlog
        )));
    }
    let is = u64::from(sb.sb_inodesize);
    let min_is = if sb.is_v5() { 512 } else { 256 };
    if !pow2(is, min_is, 2048)
        || 1u64 << sb.sb_inodelog != is
        || is > bs
        || u64::from(sb.sb_inopblock) != bs / is
        || 1u64 << sb.sb_inopblog != u64::from(sb.sb_inopblock)
    {
        return Err(sb_corrupt(format!(
            "inode size {is} (log {}, {} per block, log {}) is invalid",
            sb.sb_inodelog, sb.sb_inopblock, sb.sb_inopblog
        )));
    }
    if sb.sb_agcount == 0 || sb.sb_agblocks < 8 {
        return Err(sb_corrupt(format!(
            "{} AGs of {} blocks",
            sb.sb_agcount, sb.sb_agblocks
        )));
    }
    let agblklog = 64 - u64::from(sb.sb_agblocks - 1).leading_zeros();
    if u32::from(sb.sb_agblklog) != agblklog || agblklog + u32::from(sb.sb_inopblog) > 32 {
        return Err(sb_corrupt(format!(
            "sb_agblklog {} does not match {} blocks per AG",
            sb.sb_agblklog, sb.sb_agblocks
        )));
    }
    let max = u64::from(sb.sb_agcount) * u64::from(sb.sb_agblocks);
    let min = (u64::from(sb.sb_agcount) - 1) * u64::from(sb.sb_agblocks);
    if sb.sb_dblocks > max || sb.sb_dblocks <= min {
        return Err(sb_corrupt(format!(
            "{} data blocks do not fit {} AGs of {} blocks",
            sb.sb_dblocks, sb.sb_agcount, sb.sb_agblocks
        )));
    }
    let need = sb.sb_dblocks.saturating_mul(bs);
    if need > disk.len() {
        return Err(Error::corrupt(
            "XFS superblock",
            Location::Byte(0),
            format!(
                "the filesystem's {need} bytes pass the end of the {}-byte volume (truncated image?)",
                disk.len()
            ),
        ));
    }
    if u32::from(sb.sb_dirblklog) + u32::from(sb.sb_blocklog) > 16 {
        return Err(sb_corrupt(format!(
            "directory block log {} is too large",
            sb.sb_dirblklog
        )));
    }
    // Refusals, naming the feature.
    if sb.sb_inprogress != 0 {
        return Err(Error::unsupported(
            "XFS filesystem whose mkfs did not finish (sb_inprogress)",
        ));
    }
    if sb.sb_rblocks != 0 || sb.sb_rextents != 0 || sb.sb_rbmblocks != 0 {
        return Err(Error::unsupported("XFS realtime volume (sb_rblocks)"));
    }
    if sb.sb_logstart == 0 {
        return Err(Error::unsupported("XFS external log device"));
    }
    if sb.is_v5() {
        let unknown = sb.sb_features_incompat & !incompat::READ;
        if unknown != 0 {
            return Err(Error::unsupported(format!(
                "XFS incompat feature {}",
                names_of(unknown, incompat::NAMES).join(", ")
            )));
        }
        let log_unknown = sb.sb_features_log_incompat & !log_incompat::KNOWN;
        if log_unknown != 0 {
            return Err(Error::unsupported(format!(
                "XFS log incompat feature bits {log_unknown:#x}"
            )));
        }
    } else {
        if sb.sb_versionnum & version::DIRV2BIT == 0 {
            return Err(Error::unsupported(
                "XFS version 1 directories (no DIRV2BIT)",
            ));
        }
        if sb.sb_versionnum & version::MOREBITSBIT != 0 && sb.sb_features2 & features2::PARENT != 0
        {
            return Err(Error::unsupported(
                "XFS parent pointers (V4 features2 PARENT)",
            ));
        }
    }
    Ok(())
}

fn feature_names(sb: &RawSuperblock) -> Vec<String> {
    let mut f = Vec::new();
    let v = sb.sb_versionnum;
    f.push(if sb.is_v5() { "V5" } else { "V4" }.to_string());
    for (bit, name) in [
        (version::ATTRBIT, "ATTR"),
        (version::NLINKBIT, "NLINK"),
        (version::QUOTABIT, "QUOTA"),
        (version::ALIGNBIT, "ALIGN"),
        (version::DALIGNBIT, "DALIGN"),
        (version::LOGV2BIT, "LOGV2"),
        (version::SECTORBIT, "SECTOR"),
        (version::EXTFLGBIT, "EXTFLG"),
        (version::DIRV2BIT, "DIRV2"),
        (version::BORGBIT, "ASCII_CI"),
    ] {
        if v & bit != 0 {
            f.push(name.to_string());
        }
    }
    if v & version::MOREBITSBIT != 0 {
        for (bit, name) in [
            (features2::LAZYSBCOUNT, "LAZYSBCOUNT"),
            (features2::ATTR2, "ATTR2"),
            (features2::PROJID32, "PROJID32BIT"),
            (features2::CRC, "CRC"),
            (features2::FTYPE, "FTYPE"),
        ] {
            if sb.sb_features2 & bit != 0 {
                f.push(name.to_string());
            }
        }
    }
    if sb.is_v5() {
        for (bit, name) in [
            (ro_compat::FINOBT, "FINOBT"),
            (ro_compat::RMAPBT, "RMAPBT"),
            (ro_compat::REFLINK, "REFLINK"),
            (ro_compat::INOBTCNT, "INOBTCNT"),
        ] {
            if sb.sb_features_ro_compat & bit != 0 {
                f.push(name.to_string());
            }
        }
        for (bit, name) in [
            (incompat::FTYPE, "FTYPE"),
            (incompat::SPINODES, "SPARSE_INODES"),
            (incompat::META_UUID, "META_UUID"),
            (incompat::BIGTIME, "BIGTIME"),
            (incompat::NREXT64, "NREXT64"),
            (incompat::EXCHRANGE, "EXCHANGE"),
        ] {
            if sb.sb_features_incompat & bit != 0 && !f.iter().any(|x| x == name) {
                f.push(name.to_string());
            }
        }
        if sb.sb_features_log_incompat & log_incompat::XATTRS != 0 {
            f.push("LOG_XATTRS".to_string());
        }
    }
    f
}

fn rebuild_refusal(sb: &RawSuperblock) -> Option<String> {
    if !sb.is_v5() {
        return Some(
            "XFS V4 (no CRCs) cannot be rebuilt: current kernels no longer mount it; \
             convert the guest to a V5 filesystem first"
                .to_string(),
        );
    }
    let unknown = sb.sb_features_ro_compat & !ro_compat::KNOWN;
    if unknown != 0 {
        return Some(format!(
            "XFS ro_compat feature bits {unknown:#x} are unknown: the filesystem can be \
             read but not rebuilt"
        ));
    }
    None
}

/// Open an XFS volume and read its whole tree.
pub fn open(disk: Arc<dyn Disk>, opts: &ReadOptions) -> Result<XfsVolume> {
    let sb = read_superblock(&*disk)?;
    let ctx = Ctx {
        disk: disk.clone(),
        bs: u64::from(sb.sb_blocksize),
        blocklog: u32::from(sb.sb_blocklog),
        sectsize: u64::from(sb.sb_sectsize),
        agblocks: sb.sb_agblocks,
        agcount: sb.sb_agcount,
        agblklog: sb.sb_agblklog,
        inopblog: sb.sb_inopblog,
        isize: usize::from(sb.sb_inodesize),
        v5: sb.is_v5(),
        ftype: sb.has_ftype(),
        sparse: sb.has_incompat(incompat::SPINODES),
        dirblksize: (sb.sb_blocksize as usize) << sb.sb_dirblklog,
        dirblkfsbs: 1u64 << sb.sb_dirblklog,
        verify: opts.verify_checksums,
        meta_uuid: sb.metadata_uuid(),
        sb: sb.clone(),
    };
    let root_ino = sb.sb_rootino;
    if ctx.ino_parts(root_ino).is_none() {
        return Err(sb_corrupt(format!(
            "root inode {root_ino} is outside the filesystem"
        )));
    }
    // Each AG: its headers, its inode B+tree and every allocated inode in it.
    let ags: Vec<ag::AgInodes> = (0..sb.sb_agcount)
        .into_par_iter()
        .map(|agno| ag::read_ag(&ctx, agno))
        .collect::<Result<Vec<_>>>()?;

    let mut info = VolumeInfo {
        label: String::from_utf8_lossy(sb.sb_fname.split(|&b| b == 0).next().unwrap_or_default())
            .into_owned(),
        uuid: hex_uuid(&sb.sb_uuid),
        version: sb.version(),
        features: feature_names(&sb),
        block_size: sb.sb_blocksize,
        sector_size: u32::from(sb.sb_sectsize),
        inode_size: u32::from(sb.sb_inodesize),
        dir_block_size: ctx.dirblksize as u32,
        ag_count: sb.sb_agcount,
        ag_blocks: sb.sb_agblocks,
        data_blocks: sb.sb_dblocks,
        log: LogInfo {
            kind: "internal".into(),
            start: sb.sb_logstart,
            blocks: sb.sb_logblocks,
            sector_size: if sb.sb_logsectsize == 0 {
                512
            } else {
                u32::from(sb.sb_logsectsize)
            },
            stripe_unit: sb.sb_logsunit,
            state: Default::default(),
        },
        rebuild_refusal: rebuild_refusal(&sb),
        ..Default::default()
    };
    let log_at = ctx.fsb_byte(sb.sb_logstart, u64::from(sb.sb_logblocks), "XFS log")?;
    info.log.state =
        crate::fs::xfs::log::examine(&*disk, log_at, u64::from(sb.sb_logblocks) * ctx.bs)?;
    if !info.log.state.clean {
        let st = &info.log.state;
        let what = format!(
            "XFS log needs recovery (newest record at block {}, head at block {} cycle {}, \
             tail at block {} cycle {})",
            st.last_record, st.head_block, st.head_cycle, st.tail_block, st.tail_cycle
        );
        if !opts.allow_dirty_log {
            return Err(Error::unsupported(format!(
                "{what}: log replay is not implemented; mount and cleanly unmount a copy first"
            )));
        }
        info.warnings.push(format!(
            "{what}: read as it lies on disk, without replay (possibly stale)"
        ));
    }
    for a in &ags {
        info.free_blocks += u64::from(a.free_blocks);
        info.inodes += u64::from(a.count);
        info.free_inodes += u64::from(a.freecount);
    }

    let mut inodes: Vec<Decoded> = Vec::new();
    for a in ags {
        inodes.extend(a.inodes);
    }
    // AGs come in order and each lists its inodes in B+tree order, so the whole
    // list is sorted by inode number; check rather than trust it.
    if inodes.windows(2).any(|w| w[0].ino >= w[1].ino) {
        return Err(Error::corrupt(
            "XFS inode B+tree",
            Location::Whole,
            "inode records are not in increasing order",
        ));
    }
    info.unlinked = inodes.iter().filter(|d| d.nlink == 0).count() as u64;
    let tree = assemble(disk, inodes, root_ino, &mut info)?;
    Ok(XfsVolume { sb, tree, info })
}

/// Build the tree from the decoded inodes by walking from the root.
fn assemble(
    disk: Arc<dyn Disk>,
    mut inodes: Vec<Decoded>,
    root_ino: u64,
    info: &mut VolumeInfo,
) -> Result<Tree> {
    let find = |inodes: &[Decoded], ino: u64| inodes.binary_search_by_key(&ino, |d| d.ino).ok();
    let mut tree = Tree::new(Flavor::Xfs, Some(disk));
    let mut node_of: HashMap<usize, NodeId> = HashMap::new();
    let root_idx = find(&inodes, root_ino).ok_or_else(|| {
        Error::corrupt(
            "XFS root directory",
            Location::Inode(root_ino),
            "the root inode is not allocated",
        )
    })?;
    if !matches!(inodes[root_idx].node.kind, Kind::Dir(_)) {
        return Err(Error::corrupt(
            "XFS root directory",
            Location::Inode(root_ino),
            "the root inode is not a directory",
        ));
    }
    let mut queue = vec![root_idx];
    // Move a decoded inode into a tree node (once), interning its attributes.
    fn detach(tree: &mut Tree, d: &mut Decoded) -> crate::tree::Node {
        let mut node = std::mem::replace(&mut d.node, crate::tree::Node::new(Kind::Fifo));
        for (n, v) in d.xattrs.drain(..) {
            let x = tree.xattr(&n, &v);
            node.xattrs.push(x);
        }
        node
    }
    fn take(tree: &mut Tree, d: &mut Decoded) -> Result<NodeId> {
        let node = detach(tree, d);
        Ok(tree.add_node(node))
    }
    let root_node = detach(&mut tree, &mut inodes[root_idx]);
    tree.nodes[0] = root_node;
    tree.root = 0;
    node_of.insert(root_idx, 0);
    while let Some(di) = queue.pop() {
        let dir_id = node_of[&di];
        let entries = std::mem::take(&mut inodes[di].entries);
        let dir_ino = inodes[di].ino;
        let mut out: Vec<Entry> = Vec::with_capacity(entries.len());
        for e in entries {
            let ci = find(&inodes, e.ino).ok_or_else(|| {
                Error::corrupt(
                    "XFS directory entry",
                    Location::Inode(dir_ino),
                    format!(
                        "{:?} names inode {}, which is not allocated",
                        String::from_utf8_lossy(&e.name),
                        e.ino
                    ),
                )
            })?;
            if inodes[ci].nlink == 0 {
                return Err(Error::corrupt(
                    "XFS directory entry",
                    Location::Inode(dir_ino),
                    format!(
                        "{:?} names inode {}, which has no links",
                        String::from_utf8_lossy(&e.name),
                        e.ino
                    ),
                ));
            }
            let child = match node_of.get(&ci) {
                Some(&id) => id,
                None => {
                    let id = take(&mut tree, &mut inodes[ci])?;
                    node_of.insert(ci, id);
                    if tree.node(id).is_dir() {
                        queue.push(ci);
                    }
                    id
                }
            };
            if e.ftype != 0 {
                let want = ondisk::ftype::of_mode(tree.node(child).mode());
                if want != e.ftype {
                    return Err(Error::corrupt(
                        "XFS directory entry",
                        Location::Inode(dir_ino),
                        format!(
                            "{:?} has file type {} but inode {} is a {}",
                            String::from_utf8_lossy(&e.name),
                            e.ftype,
                            e.ino,
                            tree.node(child).kind.name()
                        ),
                    ));
                }
            }
            let name = tree.add_name(&e.name)?;
            out.push(Entry { name, node: child });
        }
        if let Kind::Dir(v) = &mut tree.node_mut(dir_id).kind {
            *v = out;
        }
    }
    info.reachable_inodes = tree.nodes.len() as u64;
    tree.finish()?;
    Ok(tree)
}
