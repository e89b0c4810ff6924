//! XFS on-disk structures shared by the reader and the builder: the superblock and
//! its feature bits, the AG headers (AGF, AGI), B+tree block headers, the inode
//! core, extent records, directory and attribute block headers, symlink and
//! remote-value headers, timestamps, POSIX ACLs, and the CRC rule every V5 block
//! follows. Field names follow the kernel's `libxfs/xfs_format.h` and
//! `xfs_da_format.h`; everything is big-endian except the CRC fields.
//!
//! Only layout lives here: walking trees and validating counts is the reader's
//! job, placing things is the builder's.

/// Superblock magic "XFSB".
pub const SB_MAGIC: u32 = 0x5846_5342;
/// AGF magic "XAGF".
pub const AGF_MAGIC: u32 = 0x5841_4746;
/// AGI magic "XAGI".
pub const AGI_MAGIC: u32 = 0x5841_4749;
/// AGFL magic "XAFL" (V5 only).
pub const AGFL_MAGIC: u32 = 0x5841_464c;
/// Inode magic "IN".
pub const DINODE_MAGIC: u16 = 0x494e;

/// Short-form B+tree magics (per-AG trees).
pub mod btree_magic {
    pub const IBT: u32 = 0x4941_4254; // "IABT"
    pub const IBT_CRC: u32 = 0x4941_4233; // "IAB3"
    pub const FIBT: u32 = 0x4649_4254; // "FIBT"
    pub const FIBT_CRC: u32 = 0x4649_4233; // "FIB3"
    pub const ABTB: u32 = 0x4142_5442; // "ABTB"
    pub const ABTB_CRC: u32 = 0x4142_3342; // "AB3B"
    pub const ABTC: u32 = 0x4142_5443; // "ABTC"
    pub const ABTC_CRC: u32 = 0x4142_3343; // "AB3C"
    pub const RMAP_CRC: u32 = 0x524d_4233; // "RMB3"
    pub const REFC_CRC: u32 = 0x5233_4643; // "R3FC"
    /// Long-form (inode-rooted) block map B+tree.
    pub const BMAP: u32 = 0x424d_4150; // "BMAP"
    pub const BMAP_CRC: u32 = 0x424d_4133; // "BMA3"
}

/// `sb_versionnum` bits.
pub mod version {
    pub const NUMBITS: u16 = 0x000f;
    pub const V4: u16 = 4;
    pub const V5: u16 = 5;
    pub const ATTRBIT: u16 = 0x0010;
    pub const NLINKBIT: u16 = 0x0020;
    pub const QUOTABIT: u16 = 0x0040;
    pub const ALIGNBIT: u16 = 0x0080;
    pub const DALIGNBIT: u16 = 0x0100;
    pub const SHAREDBIT: u16 = 0x0200;
    pub const LOGV2BIT: u16 = 0x0400;
    pub const SECTORBIT: u16 = 0x0800;
    pub const EXTFLGBIT: u16 = 0x1000;
    pub const DIRV2BIT: u16 = 0x2000;
    pub const BORGBIT: u16 = 0x4000;
    pub const MOREBITSBIT: u16 = 0x8000;
}

/// `sb_features2` bits (V4 feature flags, mirrored on V5).
pub mod features2 {
    pub const LAZYSBCOUNT: u32 = 0x0002;
    pub const ATTR2: u32 = 0x0008;
    pub const PARENT: u32 = 0x0010;
    pub const PROJID32: u32 = 0x0080;
    pub const CRC: u32 = 0x0100;
    pub const FTYPE: u32 = 0x0200;
}

/// `sb_features_ro_compat` bits: an unknown one forbids writing (rebuilding).
pub mod ro_compat {
    pub const FINOBT: u32 = 1 << 0;
    pub const RMAPBT: u32 = 1 << 1;
    pub const REFLINK: u32 = 1 << 2;
    pub const INOBTCNT: u32 = 1 << 3;
    pub const KNOWN: u32 = FINOBT | RMAPBT | REFLINK | INOBTCNT;
    pub const NAMES: &[(u32, &str)] = &[
        (FINOBT, "finobt"),
        (RMAPBT, "rmapbt"),
        (REFLINK, "reflink"),
        (INOBTCNT, "inobtcount"),
    ];
}

/// `sb_features_incompat` bits: an unknown one forbids reading.
pub mod incompat {
    pub const FTYPE: u32 = 1 << 0;
    pub const SPINODES: u32 = 1 << 1;
    pub const META_UUID: u32 = 1 << 2;
    pub const BIGTIME: u32 = 1 << 3;
    pub const NEEDSREPAIR: u32 = 1 << 4;
    pub const NREXT64: u32 = 1 << 5;
    pub const EXCHRANGE: u32 = 1 << 6;
    pub const PARENT: u32 = 1 << 7;
    pub const METADIR: u32 = 1 << 8;
    pub const ZONED: u32 = 1 << 9;
    pub const ZONE_GAPS: u32 = 1 << 10;
    /// Bits this reader handles.
    pub const READ: u32 = FTYPE | SPINODES | META_UUID | BIGTIME | NREXT64 | EXCHRANGE;
    pub const NAMES: &[(u32, &str)] = &[
        (FTYPE, "ftype"),
        (SPINODES, "sparse inodes (spinodes)"),
        (META_UUID, "meta_uuid"),
        (BIGTIME, "bigtime"),
        (NEEDSREPAIR, "needsrepair"),
        (NREXT64, "nrext64"),
        (EXCHRANGE, "exchange-range"),
        (PARENT, "parent pointers (parent)"),
        (METADIR, "metadata directory tree (metadir)"),
        (ZONED, "zoned"),
        (ZONE_GAPS, "zone gaps"),
    ];
}

/// `sb_features_log_incompat` bits: items the log may hold.
pub mod log_incompat {
    /// Logged extended attribute intents (ATTRI/ATTRD).
    pub const XATTRS: u32 = 1 << 0;
    pub const KNOWN: u32 = XATTRS;
}

crate::ondisk_struct! {
    /// `struct xfs_dsb`, up to and including `sb_meta_uuid` (the metadir fields
    /// that follow are refused, so they are not decoded).
    pub struct RawSuperblock: 264, be {
        sb_magicnum: u32 = 0,
        sb_blocksize: u32 = 4,
        sb_dblocks: u64 = 8,
        sb_rblocks: u64 = 16,
        sb_rextents: u64 = 24,
        sb_uuid: [u8; 16] = 32,
        sb_logstart: u64 = 48,
        sb_rootino: u64 = 56,
        sb_rbmino: u64 = 64,
        sb_rsumino: u64 = 72,
        sb_rextsize: u32 = 80,
        sb_agblocks: u32 = 84,
        sb_agcount: u32 = 88,
        sb_rbmblocks: u32 = 92,
        sb_logblocks: u32 = 96,
        sb_versionnum: u16 = 100,
        sb_sectsize: u16 = 102,
        sb_inodesize: u16 = 104,
        sb_inopblock: u16 = 106,
        sb_fname: [u8; 12] = 108,
        sb_blocklog: u8 = 120,
        sb_sectlog: u8 = 121,
        sb_inodelog: u8 = 122,
        sb_inopblog: u8 = 123,
        sb_agblklog: u8 = 124,
        sb_rextslog: u8 = 125,
        sb_inprogress: u8 = 126,
        sb_imax_pct: u8 = 127,
        sb_icount: u64 = 128,
        sb_ifree: u64 = 136,
        sb_fdblocks: u64 = 144,
        sb_frextents: u64 = 152,
        sb_uquotino: u64 = 160,
        sb_gquotino: u64 = 168,
        sb_qflags: u16 = 176,
        sb_flags: u8 = 178,
        sb_shared_vn: u8 = 179,
        sb_inoalignmt: u32 = 180,
        sb_unit: u32 = 184,
        sb_width: u32 = 188,
        sb_dirblklog: u8 = 192,
        sb_logsectlog: u8 = 193,
        sb_logsectsize: u16 = 194,
        sb_logsunit: u32 = 196,
        sb_features2: u32 = 200,
        sb_bad_features2: u32 = 204,
        sb_features_compat: u32 = 208,
        sb_features_ro_compat: u32 = 212,
        sb_features_incompat: u32 = 216,
        sb_features_log_incompat: u32 = 220,
        /// Little-endian, like every XFS CRC (see [`crc_compute`]).
        sb_crc: u32 = 224,
        sb_spino_align: u32 = 228,
        sb_pquotino: u64 = 232,
        sb_lsn: u64 = 240,
        sb_meta_uuid: [u8; 16] = 248,
    }
}

/// Byte offset of `sb_crc` in the superblock sector.
pub const SB_CRC_OFF: usize = 224;

impl RawSuperblock {
    pub fn version(&self) -> u16 {
        self.sb_versionnum & version::NUMBITS
    }
    pub fn is_v5(&self) -> bool {
        self.version() == version::V5
    }
    /// Directory entries carry a file type byte.
    pub fn has_ftype(&self) -> bool {
        if self.is_v5() {
            self.sb_features_incompat & incompat::FTYPE != 0
        } else {
            self.sb_versionnum & version::MOREBITSBIT != 0
                && self.sb_features2 & features2::FTYPE != 0
        }
    }
    pub fn has_incompat(&self, bit: u32) -> bool {
        self.is_v5() && self.sb_features_incompat & bit != 0
    }
    pub fn has_ro_compat(&self, bit: u32) -> bool {
        self.is_v5() && self.sb_features_ro_compat & bit != 0
    }
    /// Whether the filesystem UUID stamped in metadata is `sb_meta_uuid`.
    pub fn metadata_uuid(&self) -> [u8; 16] {
        if self.has_incompat(incompat::META_UUID) {
            self.sb_meta_uuid
        } else {
            self.sb_uuid
        }
    }
}

crate::ondisk_struct! {
    /// `struct xfs_agf`: free space headers of one allocation group.
    pub struct RawAgf: 224, be {
        agf_magicnum: u32 = 0,
        agf_versionnum: u32 = 4,
        agf_seqno: u32 = 8,
        agf_length: u32 = 12,
        agf_bno_root: u32 = 16,
        agf_cnt_root: u32 = 20,
        agf_rmap_root: u32 = 24,
        agf_bno_level: u32 = 28,
        agf_cnt_level: u32 = 32,
        agf_rmap_level: u32 = 36,
        agf_flfirst: u32 = 40,
        agf_fllast: u32 = 44,
        agf_flcount: u32 = 48,
        agf_freeblks: u32 = 52,
        agf_longest: u32 = 56,
        agf_btreeblks: u32 = 60,
        agf_uuid: [u8; 16] = 64,
        agf_rmap_blocks: u32 = 80,
        agf_refcount_blocks: u32 = 84,
        agf_refcount_root: u32 = 88,
        agf_refcount_level: u32 = 92,
        agf_lsn: u64 = 208,
        agf_crc: u32 = 216,
    }
}

/// Byte offset of `agf_crc`.
pub const AGF_CRC_OFF: usize = 216;

/// Unlinked-inode hash buckets in the AGI.
pub const AGI_UNLINKED_BUCKETS: usize = 64;
/// An empty bucket or the end of an unlinked chain.
pub const NULLAGINO: u32 = u32::MAX;

crate::ondisk_struct! {
    /// `struct xfs_agi`: inode headers of one allocation group.
    pub struct RawAgi: 344, be {
        agi_magicnum: u32 = 0,
        agi_versionnum: u32 = 4,
        agi_seqno: u32 = 8,
        agi_length: u32 = 12,
        agi_count: u32 = 16,
        agi_root: u32 = 20,
        agi_level: u32 = 24,
        agi_freecount: u32 = 28,
        agi_newino: u32 = 32,
        agi_dirino: u32 = 36,
        agi_unlinked: [u32; 64] = 40,
        agi_uuid: [u8; 16] = 296,
        agi_crc: u32 = 312,
        agi_pad32: u32 = 316,
        agi_lsn: u64 = 320,
        agi_free_root: u32 = 328,
        agi_free_level: u32 = 332,
        agi_iblocks: u32 = 336,
        agi_fblocks: u32 = 340,
    }
}

/// Byte offset of `agi_crc`.
pub const AGI_CRC_OFF: usize = 312;

/// Sector index (in `sb_sectsize` units from the AG's start) of each AG header.
pub const SB_SECTOR: u64 = 0;
pub const AGF_SECTOR: u64 = 1;
pub const AGI_SECTOR: u64 = 2;
pub const AGFL_SECTOR: u64 = 3;

crate::ondisk_struct! {
    /// `struct xfs_btree_block` short form (per-AG trees), V5 layout. V4 blocks
    /// end after `bb_rightsib` (16 bytes).
    pub struct ShortBtreeHeader: 56, be {
        bb_magic: u32 = 0,
        bb_level: u16 = 4,
        bb_numrecs: u16 = 6,
        bb_leftsib: u32 = 8,
        bb_rightsib: u32 = 12,
        bb_blkno: u64 = 16,
        bb_lsn: u64 = 24,
        bb_uuid: [u8; 16] = 32,
        bb_owner: u32 = 48,
        bb_crc: u32 = 52,
    }
}

/// Header lengths of short-form B+tree blocks.
pub const SHORT_BTREE_V4_LEN: usize = 16;
pub const SHORT_BTREE_CRC_OFF: usize = 52;

crate::ondisk_struct! {
    /// `struct xfs_btree_block` long form (the block map B+tree), V5 layout. V4
    /// blocks end after `bb_rightsib` (24 bytes).
    pub struct LongBtreeHeader: 72, be {
        bb_magic: u32 = 0,
        bb_level: u16 = 4,
        bb_numrecs: u16 = 6,
        bb_leftsib: u64 = 8,
        bb_rightsib: u64 = 16,
        bb_blkno: u64 = 24,
        bb_lsn: u64 = 32,
        bb_uuid: [u8; 16] = 40,
        bb_owner: u64 = 56,
        bb_crc: u32 = 64,
    }
}

pub const LONG_BTREE_V4_LEN: usize = 24;
pub const LONG_BTREE_CRC_OFF: usize = 64;
/// "No sibling" in a long-form block.
pub const NULLFSBLOCK: u64 = u64::MAX;
/// "No sibling" in a short-form block.
pub const NULLAGBLOCK: u32 = u32::MAX;

/// Inodes per inode chunk (and per inobt record).
pub const INODES_PER_CHUNK: u32 = 64;

/// One inode B+tree record (`struct xfs_inobt_rec`, 16 bytes). With sparse
/// inodes the second word is `ir_holemask` (a set bit: 4 inodes not allocated
/// on disk), `ir_count` and `ir_freecount`; without, it is a 32-bit freecount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InobtRec {
    pub ir_startino: u32,
    pub ir_holemask: u16,
    pub ir_count: u8,
    pub ir_freecount: u32,
    /// Bit i set: inode `ir_startino + i` is free.
    pub ir_free: u64,
}

impl InobtRec {
    pub const SIZE: usize = 16;

    pub fn decode(b: &[u8; 16], sparse: bool) -> Self {
        let start = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let free = u64::from_be_bytes(b[8..16].try_into().expect("8 bytes"));
        if sparse {
            InobtRec {
                ir_startino: start,
                ir_holemask: u16::from_be_bytes([b[4], b[5]]),
                ir_count: b[6],
                ir_freecount: u32::from(b[7]),
                ir_free: free,
            }
        } else {
            InobtRec {
                ir_startino: start,
                ir_holemask: 0,
                ir_count: 64,
                ir_freecount: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                ir_free: free,
            }
        }
    }

    pub fn encode(&self, b: &mut [u8; 16], sparse: bool) {
        b[0..4].copy_from_slice(&self.ir_startino.to_be_bytes());
        if sparse {
            b[4..6].copy_from_slice(&self.ir_holemask.to_be_bytes());
            b[6] = self.ir_count;
            b[7] = self.ir_freecount as u8;
        } else {
            b[4..8].copy_from_slice(&self.ir_freecount.to_be_bytes());
        }
        b[8..16].copy_from_slice(&self.ir_free.to_be_bytes());
    }

    /// Whether inode `i` (0..64) of the chunk exists on disk (not in a hole).
    pub fn is_present(&self, i: u32) -> bool {
        self.ir_holemask & (1 << (i / 4)) == 0
    }

    /// Whether inode `i` of the chunk is in use.
    pub fn is_allocated(&self, i: u32) -> bool {
        self.is_present(i) && self.ir_free & (1 << i) == 0
    }
}

/// `di_format` / `di_aformat` values.
pub mod fork_format {
    pub const DEV: u8 = 0;
    pub const LOCAL: u8 = 1;
    pub const EXTENTS: u8 = 2;
    pub const BTREE: u8 = 3;
    pub const UUID: u8 = 4;
    pub const RMAP: u8 = 5;
    pub const META_BTREE: u8 = 6;
}

/// `di_flags` bits.
pub mod diflag {
    pub const REALTIME: u16 = 0x0001;
    pub const PREALLOC: u16 = 0x0002;
    pub const NEWRTBM: u16 = 0x0004;
    pub const IMMUTABLE: u16 = 0x0008;
    pub const APPEND: u16 = 0x0010;
    pub const SYNC: u16 = 0x0020;
    pub const NOATIME: u16 = 0x0040;
    pub const NODUMP: u16 = 0x0080;
    pub const RTINHERIT: u16 = 0x0100;
    pub const PROJINHERIT: u16 = 0x0200;
    pub const NOSYMLINKS: u16 = 0x0400;
    pub const EXTSIZE: u16 = 0x0800;
    pub const EXTSZINHERIT: u16 = 0x1000;
    pub const NODEFRAG: u16 = 0x2000;
    pub const FILESTREAM: u16 = 0x4000;
}

/// `di_flags2` bits.
pub mod diflag2 {
    pub const DAX: u64 = 1 << 0;
    pub const REFLINK: u64 = 1 << 1;
    pub const COWEXTSIZE: u64 = 1 << 2;
    pub const BIGTIME: u64 = 1 << 3;
    pub const NREXT64: u64 = 1 << 4;
    pub const METADATA: u64 = 1 << 5;
}

crate::ondisk_struct! {
    /// `struct xfs_dinode`, the v3 core (176 bytes). Version 1 and 2 inodes end
    /// at `di_next_unlinked` (100 bytes); their literal area starts there.
    /// `di_v2_pad` holds `di_big_nextents` (nrext64) or `di_flushiter`;
    /// `di_nextents` is `di_big_anextents` with nrext64.
    pub struct RawDinode: 176, be {
        di_magic: u16 = 0,
        di_mode: u16 = 2,
        di_version: u8 = 4,
        di_format: u8 = 5,
        di_onlink: u16 = 6,
        di_uid: u32 = 8,
        di_gid: u32 = 12,
        di_nlink: u32 = 16,
        di_projid_lo: u16 = 20,
        di_projid_hi: u16 = 22,
        di_v2_pad: u64 = 24,
        di_atime: u64 = 32,
        di_mtime: u64 = 40,
        di_ctime: u64 = 48,
        di_size: u64 = 56,
        di_nblocks: u64 = 64,
        di_extsize: u32 = 72,
        di_nextents: u32 = 76,
        di_anextents: u16 = 80,
        di_forkoff: u8 = 82,
        di_aformat: u8 = 83,
        di_dmevmask: u32 = 84,
        di_dmstate: u16 = 88,
        di_flags: u16 = 90,
        di_gen: u32 = 92,
        di_next_unlinked: u32 = 96,
        di_crc: u32 = 100,
        di_changecount: u64 = 104,
        di_lsn: u64 = 112,
        di_flags2: u64 = 120,
        di_cowextsize: u32 = 128,
        di_crtime: u64 = 144,
        di_ino: u64 = 152,
        di_uuid: [u8; 16] = 160,
    }
}

/// Inode core lengths and the CRC offset.
pub const DINODE_V2_CORE: usize = 100;
pub const DINODE_V3_CORE: usize = 176;
pub const DINODE_CRC_OFF: usize = 100;

impl RawDinode {
    /// Data and attribute fork extent counts (nrext64 moves them).
    pub fn extent_counts(&self) -> (u64, u32) {
        if self.di_version >= 3 && self.di_flags2 & diflag2::NREXT64 != 0 {
            (self.di_v2_pad, self.di_nextents)
        } else {
            (u64::from(self.di_nextents), u32::from(self.di_anextents))
        }
    }

    pub fn projid(&self) -> u32 {
        u32::from(self.di_projid_hi) << 16 | u32::from(self.di_projid_lo)
    }

    pub fn is_bigtime(&self) -> bool {
        self.di_version >= 3 && self.di_flags2 & diflag2::BIGTIME != 0
    }

    /// Size of the core, where the literal area begins.
    pub fn core_size(&self) -> usize {
        if self.di_version >= 3 {
            DINODE_V3_CORE
        } else {
            DINODE_V2_CORE
        }
    }
}

/// Seconds added to a bigtime timestamp's epoch (it counts from 1901-12-13).
pub const BIGTIME_EPOCH_OFFSET: i64 = 1 << 31;

/// A timestamp as stored: legacy (signed 32-bit seconds, then nanoseconds) or
/// bigtime (unsigned nanoseconds since `-2^31` seconds).
pub fn time_decode(raw: u64, bigtime: bool) -> (i64, u32) {
    if bigtime {
        let sec = (raw / 1_000_000_000) as i64 - BIGTIME_EPOCH_OFFSET;
        (sec, (raw % 1_000_000_000) as u32)
    } else {
        (i64::from((raw >> 32) as u32 as i32), raw as u32)
    }
}

/// The inverse of [`time_decode`]; `None` when the time does not fit.
pub fn time_encode(sec: i64, nsec: u32, bigtime: bool) -> Option<u64> {
    if nsec >= 1_000_000_000 {
        return None;
    }
    if bigtime {
        let s = u64::try_from(sec.checked_add(BIGTIME_EPOCH_OFFSET)?).ok()?;
        s.checked_mul(1_000_000_000)?.checked_add(u64::from(nsec))
    } else {
        let s = i32::try_from(sec).ok()?;
        Some(u64::from(s as u32) << 32 | u64::from(nsec))
    }
}

/// Device numbers as XFS stores them in the data fork (`sysv` encoding: 14 bits
/// of major, 18 of minor).
pub fn dev_decode(raw: u32) -> (u32, u32) {
    (raw >> 18, raw & 0x3ffff)
}

pub fn dev_encode(major: u32, minor: u32) -> Option<u32> {
    (major < (1 << 14) && minor < (1 << 18)).then_some(major << 18 | minor)
}

/// One block map record (`struct xfs_bmbt_rec`, 128 bits): flag (unwritten),
/// 54-bit file offset, 52-bit filesystem block, 21-bit length (all in blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BmbtRec {
    pub startoff: u64,
    pub startblock: u64,
    pub blockcount: u32,
    pub unwritten: bool,
}

impl BmbtRec {
    pub const SIZE: usize = 16;
    pub const MAX_BLOCKCOUNT: u32 = (1 << 21) - 1;

    pub fn decode(b: &[u8; 16]) -> Self {
        let l0 = u64::from_be_bytes(b[0..8].try_into().expect("8 bytes"));
        let l1 = u64::from_be_bytes(b[8..16].try_into().expect("8 bytes"));
        BmbtRec {
            unwritten: l0 >> 63 != 0,
            startoff: (l0 & ((1 << 63) - 1)) >> 9,
            startblock: ((l0 & 0x1ff) << 43) | (l1 >> 21),
            blockcount: (l1 & 0x1f_ffff) as u32,
        }
    }

    pub fn encode(&self, b: &mut [u8; 16]) {
        let l0 = (u64::from(self.unwritten) << 63)
            | ((self.startoff & ((1 << 54) - 1)) << 9)
            | (self.startblock >> 43);
        let l1 = (self.startblock << 21) | u64::from(self.blockcount & Self::MAX_BLOCKCOUNT);
        b[0..8].copy_from_slice(&l0.to_be_bytes());
        b[8..16].copy_from_slice(&l1.to_be_bytes());
    }
}

/// The root of a block map B+tree inside an inode fork (`struct xfs_bmdr_block`):
/// level and record count, then keys and pointers laid out for the fork's size.
pub const BMDR_HEADER_LEN: usize = 4;

/// How many key/pointer pairs a B+tree node of `space` bytes (after its header)
/// holds, with 8-byte keys and 8-byte pointers (block map trees).
pub fn bmbt_maxrecs(space: usize, leaf: bool) -> usize {
    if leaf {
        space / BmbtRec::SIZE
    } else {
        space / 16
    }
}

// ---- Directories (xfs_da_format.h) ----

/// Directory and attribute block magics.
pub mod da_magic {
    /// Single-block directory.
    pub const DIR2_BLOCK: u32 = 0x5844_3242; // "XD2B"
    pub const DIR3_BLOCK: u32 = 0x5844_4233; // "XDB3"
    /// Data block of a leaf or node directory.
    pub const DIR2_DATA: u32 = 0x5844_3244; // "XD2D"
    pub const DIR3_DATA: u32 = 0x5844_4433; // "XDD3"
    /// Free-space index blocks.
    pub const DIR2_FREE: u32 = 0x5844_3246; // "XD2F"
    pub const DIR3_FREE: u32 = 0x5844_4633; // "XDF3"
    /// Leaf blocks (16-bit magic in the da_blkinfo).
    pub const DIR2_LEAF1: u16 = 0xd2f1;
    pub const DIR3_LEAF1: u16 = 0x3df1;
    pub const DIR2_LEAFN: u16 = 0xd2ff;
    pub const DIR3_LEAFN: u16 = 0x3dff;
    /// Dabtree interior nodes (directories and attributes).
    pub const DA_NODE: u16 = 0xfebe;
    pub const DA3_NODE: u16 = 0x3ebe;
    /// Attribute leaves.
    pub const ATTR_LEAF: u16 = 0xfbee;
    pub const ATTR3_LEAF: u16 = 0x3bee;
    /// Remote attribute value blocks (V5 only; V4 ones have no header).
    pub const ATTR3_RMT: u32 = 0x5841_524d; // "XARM"
    /// Remote symlink blocks (V5 only).
    pub const SYMLINK: u32 = 0x5853_4c4d; // "XSLM"
}

/// Byte offset where the leaf/node section of a directory begins (32 GiB): data
/// blocks live below it.
pub const DIR2_LEAF_OFFSET: u64 = 1 << 35;
/// Where the free-space index section begins (64 GiB).
pub const DIR2_FREE_OFFSET: u64 = 1 << 36;

/// Header of a V5 directory data or block (`struct xfs_dir3_data_hdr`: the
/// 48-byte `xfs_dir3_blk_hdr`, three bestfree entries, padding).
pub const DIR3_DATA_HDR_LEN: usize = 64;
/// V4 (`struct xfs_dir2_data_hdr`: magic and bestfree).
pub const DIR2_DATA_HDR_LEN: usize = 16;
/// CRC offset in V5 directory data/block/free headers and in remote blocks.
pub const DIR3_CRC_OFF: usize = 4;
/// A directory block's tail (`struct xfs_dir2_block_tail`: count, stale).
pub const DIR2_BLOCK_TAIL_LEN: usize = 8;
/// One leaf entry (hash, address).
pub const DIR2_LEAF_ENTRY_LEN: usize = 8;
/// `freetag` of an unused data region.
pub const DIR2_DATA_FREE_TAG: u16 = 0xffff;

/// The on-disk length of a data entry (`xfs_dir2_data_entsize`): inode number,
/// name length, name, optional file type, tag, rounded up to 8 bytes.
pub fn dir2_data_entsize(namelen: usize, ftype: bool) -> usize {
    (8 + 1 + namelen + usize::from(ftype) + 2).div_ceil(8) * 8
}

/// Shortform directory header length: count, i8count, parent (4 or 8 bytes).
pub fn dir2_sf_hdr_size(i8count: u8) -> usize {
    2 + if i8count > 0 { 8 } else { 4 }
}

/// `ftype` byte values (the dirent types).
pub mod ftype {
    pub const UNKNOWN: u8 = 0;
    pub const REG_FILE: u8 = 1;
    pub const DIR: u8 = 2;
    pub const CHRDEV: u8 = 3;
    pub const BLKDEV: u8 = 4;
    pub const FIFO: u8 = 5;
    pub const SOCK: u8 = 6;
    pub const SYMLINK: u8 = 7;

    /// The ftype a mode's S_IFMT bits call for.
    pub fn of_mode(mode: u32) -> u8 {
        match mode & 0o170000 {
            0o100000 => REG_FILE,
            0o040000 => DIR,
            0o020000 => CHRDEV,
            0o060000 => BLKDEV,
            0o010000 => FIFO,
            0o140000 => SOCK,
            0o120000 => SYMLINK,
            _ => UNKNOWN,
        }
    }
}

/// `struct xfs_da_blkinfo` (V4, 12 bytes) / `xfs_da3_blkinfo` (V5, 56 bytes):
/// forw, back, 16-bit magic at offset 8; V5 adds crc (offset 12), blkno, lsn,
/// uuid, owner.
pub const DA_BLKINFO_LEN: usize = 12;
pub const DA3_BLKINFO_LEN: usize = 56;
pub const DA3_CRC_OFF: usize = 12;
/// Dabtree node headers: blkinfo, count, level (V5: and 4 bytes of padding).
pub const DA_NODE_HDR_LEN: usize = 16;
pub const DA3_NODE_HDR_LEN: usize = 64;
/// One dabtree node entry: hashval, before (a block in the fork).
pub const DA_NODE_ENTRY_LEN: usize = 8;

// ---- Extended attributes ----

/// Attribute leaf headers (`xfs_attr_leaf_hdr` V4 32 bytes, `xfs_attr3_leaf_hdr`
/// V5 80 bytes): blkinfo, count, usedbytes, firstused, holes, pad, freemap[3],
/// (V5: pad).
pub const ATTR_LEAF_HDR_LEN: usize = 32;
pub const ATTR3_LEAF_HDR_LEN: usize = 80;
/// One attribute leaf entry: hashval, nameidx, flags, pad.
pub const ATTR_LEAF_ENTRY_LEN: usize = 8;
/// Header of a V5 remote value block (`struct xfs_attr3_rmt_hdr`).
pub const ATTR3_RMT_HDR_LEN: usize = 56;

/// Attribute entry flags (`XFS_ATTR_*`), shortform and leaf alike.
pub mod attr_flag {
    /// The value is stored in the leaf (leaf entries only).
    pub const LOCAL: u8 = 1 << 0;
    /// The `trusted.` namespace (and the ACLs, by name).
    pub const ROOT: u8 = 1 << 1;
    /// The `security.` namespace.
    pub const SECURE: u8 = 1 << 2;
    /// Parent pointers (refused with the feature).
    pub const PARENT: u8 = 1 << 3;
    /// A half-done set or remove: not an attribute.
    pub const INCOMPLETE: u8 = 1 << 7;
    pub const NSP_MASK: u8 = ROOT | SECURE | PARENT;
}

/// The names under which XFS keeps POSIX ACLs in the root namespace.
pub const ACL_FILE_NAME: &[u8] = b"SGI_ACL_FILE";
pub const ACL_DEFAULT_NAME: &[u8] = b"SGI_ACL_DEFAULT";
pub const VFS_ACL_ACCESS: &[u8] = b"system.posix_acl_access";
pub const VFS_ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

/// The VFS name of an attribute from its namespace flags and on-disk name.
/// `None` for namespaces that are not attributes (parent pointers).
pub fn attr_vfs_name(flags: u8, name: &[u8]) -> Option<Vec<u8>> {
    let ns = flags & attr_flag::NSP_MASK;
    let prefix: &[u8] = match ns {
        0 => b"user.",
        attr_flag::ROOT => {
            if name == ACL_FILE_NAME {
                return Some(VFS_ACL_ACCESS.to_vec());
            }
            if name == ACL_DEFAULT_NAME {
                return Some(VFS_ACL_DEFAULT.to_vec());
            }
            b"trusted."
        }
        attr_flag::SECURE => b"security.",
        _ => return None,
    };
    let mut v = prefix.to_vec();
    v.extend_from_slice(name);
    Some(v)
}

/// The inverse of [`attr_vfs_name`]: namespace flags and on-disk name.
pub fn attr_disk_name(vfs: &[u8]) -> Option<(u8, &[u8])> {
    if vfs == VFS_ACL_ACCESS {
        return Some((attr_flag::ROOT, ACL_FILE_NAME));
    }
    if vfs == VFS_ACL_DEFAULT {
        return Some((attr_flag::ROOT, ACL_DEFAULT_NAME));
    }
    for (p, f) in [
        (&b"user."[..], 0),
        (b"trusted.", attr_flag::ROOT),
        (b"security.", attr_flag::SECURE),
    ] {
        if let Some(rest) = vfs.strip_prefix(p) {
            return (!rest.is_empty()).then_some((f, rest));
        }
    }
    None
}

/// ACL tags that carry an id (ACL_USER, ACL_GROUP); the others use
/// `ACL_UNDEFINED_ID` in the VFS form.
const ACL_TAGS_WITH_ID: [u32; 2] = [0x02, 0x08];
const ACL_TAGS_WITHOUT_ID: [u32; 4] = [0x01, 0x04, 0x10, 0x20];
/// The most ACL entries XFS accepts on V5 with 64k blocks is far below this; it
/// only bounds the conversion.
const ACL_MAX_ENTRIES: usize = 1 << 16;

/// An XFS ACL (`struct xfs_acl`: be32 count, then {be32 tag, be32 id, be16
/// perm, be16 pad} entries) to the VFS xattr form (le32 version 2, then {le16
/// tag, le16 perm, le32 id}). `None` if malformed.
pub fn acl_disk_to_xattr(disk: &[u8]) -> Option<Vec<u8>> {
    let count = u32::from_be_bytes(disk.get(..4)?.try_into().ok()?) as usize;
    if count > ACL_MAX_ENTRIES || disk.len() != 4 + count * 12 {
        return None;
    }
    let mut out = Vec::with_capacity(4 + count * 8);
    out.extend_from_slice(&2u32.to_le_bytes());
    for e in disk[4..].chunks_exact(12) {
        let tag = u32::from_be_bytes(e[0..4].try_into().ok()?);
        let id = u32::from_be_bytes(e[4..8].try_into().ok()?);
        let perm = u16::from_be_bytes(e[8..10].try_into().ok()?);
        let id = if ACL_TAGS_WITH_ID.contains(&tag) {
            id
        } else if ACL_TAGS_WITHOUT_ID.contains(&tag) {
            u32::MAX
        } else {
            return None;
        };
        out.extend_from_slice(&(tag as u16).to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Some(out)
}

/// The inverse of [`acl_disk_to_xattr`]. `None` if malformed.
pub fn acl_xattr_to_disk(x: &[u8]) -> Option<Vec<u8>> {
    if x.len() < 4
        || !(x.len() - 4).is_multiple_of(8)
        || u32::from_le_bytes(x[..4].try_into().ok()?) != 2
    {
        return None;
    }
    let count = (x.len() - 4) / 8;
    let mut out = Vec::with_capacity(4 + count * 12);
    out.extend_from_slice(&u32::try_from(count).ok()?.to_be_bytes());
    for e in x[4..].chunks_exact(8) {
        let tag = u32::from(u16::from_le_bytes([e[0], e[1]]));
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let id = if ACL_TAGS_WITH_ID.contains(&tag) {
            id
        } else if ACL_TAGS_WITHOUT_ID.contains(&tag) {
            u32::MAX
        } else {
            return None;
        };
        out.extend_from_slice(&tag.to_be_bytes());
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&perm.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
    }
    Some(out)
}

// ---- Symlinks ----

/// Header of a V5 remote symlink block (`struct xfs_dsymlink_hdr`): magic,
/// offset, bytes, crc (offset 12), uuid, owner, blkno, lsn.
pub const SYMLINK_HDR_LEN: usize = 56;
pub const SYMLINK_CRC_OFF: usize = 12;
/// The longest symlink target (`XFS_SYMLINK_MAXLEN`).
pub const SYMLINK_MAXLEN: usize = 1024;
/// Offset of the CRC in a remote attribute value header.
pub const ATTR3_RMT_CRC_OFF: usize = 12;

// ---- Checksums ----

/// The CRC of a V5 metadata buffer: standard CRC-32C over the buffer with the
/// 4-byte CRC field taken as zero (the kernel's `xfs_start_cksum_safe` then
/// `xfs_end_cksum`). Stored little-endian at `crc_off`.
pub fn crc_compute(buf: &[u8], crc_off: usize) -> u32 {
    let c = crc32c::crc32c(&buf[..crc_off]);
    let c = crc32c::crc32c_append(c, &[0u8; 4]);
    crc32c::crc32c_append(c, &buf[crc_off + 4..])
}

/// The stored CRC at `crc_off`.
pub fn crc_stored(buf: &[u8], crc_off: usize) -> u32 {
    u32::from_le_bytes(buf[crc_off..crc_off + 4].try_into().expect("4 bytes"))
}

/// Compute and store the CRC (for writers: call just before the block is written).
pub fn crc_set(buf: &mut [u8], crc_off: usize) {
    let c = crc_compute(buf, crc_off);
    buf[crc_off..crc_off + 4].copy_from_slice(&c.to_le_bytes());
}

// ---- Inode numbers ----

/// The parts of an inode number: AG, block in the AG, inode in the block.
pub fn ino_split(ino: u64, agblklog: u8, inopblog: u8) -> (u32, u32, u32) {
    let agino_bits = u32::from(agblklog) + u32::from(inopblog);
    let agno = (ino >> agino_bits) as u32;
    let agino = (ino & ((1u64 << agino_bits) - 1)) as u32;
    (agno, agino >> inopblog, agino & ((1u32 << inopblog) - 1))
}

/// An inode number from its AG and AG-relative inode number.
pub fn ino_make(agno: u32, agino: u32, agblklog: u8, inopblog: u8) -> u64 {
    (u64::from(agno) << (u32::from(agblklog) + u32::from(inopblog))) | u64::from(agino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bmbt_records_round_trip() {
        let r = BmbtRec {
            startoff: (1 << 54) - 3,
            startblock: (1 << 52) - 5,
            blockcount: BmbtRec::MAX_BLOCKCOUNT,
            unwritten: true,
        };
        let mut b = [0u8; 16];
        r.encode(&mut b);
        assert_eq!(BmbtRec::decode(&b), r);
        let r = BmbtRec {
            startoff: 7,
            startblock: 0x1234_5678,
            blockcount: 9,
            unwritten: false,
        };
        r.encode(&mut b);
        assert_eq!(BmbtRec::decode(&b), r);
    }

    #[test]
    fn timestamps_round_trip() {
        for (s, ns) in [
            (0i64, 0u32),
            (-1, 5),
            (i64::from(i32::MIN), 1),
            (1 << 33, 999_999_999),
        ] {
            let big = time_encode(s, ns, true).unwrap();
            assert_eq!(time_decode(big, true), (s, ns));
            if let Some(old) = time_encode(s, ns, false) {
                assert_eq!(time_decode(old, false), (s, ns));
            }
        }
        assert!(time_encode(1 << 33, 0, false).is_none());
        assert!(time_encode(i64::from(i32::MIN) - 1, 0, true).is_none());
    }

    #[test]
    fn acls_round_trip_and_reject_garbage() {
        let mut x = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 4, 1000),
            (4, 4, u32::MAX),
            (0x10, 7, u32::MAX),
            (0x20, 5, u32::MAX),
        ] {
            x.extend_from_slice(&tag.to_le_bytes());
            x.extend_from_slice(&perm.to_le_bytes());
            x.extend_from_slice(&id.to_le_bytes());
        }
        let d = acl_xattr_to_disk(&x).unwrap();
        assert_eq!(d.len(), 4 + 5 * 12);
        assert_eq!(acl_disk_to_xattr(&d).unwrap(), x);
        assert!(acl_disk_to_xattr(&d[..d.len() - 1]).is_none());
        let mut bad = d.clone();
        bad[4..8].copy_from_slice(&0x40u32.to_be_bytes());
        assert!(acl_disk_to_xattr(&bad).is_none());
    }

    #[test]
    fn attribute_names_map_both_ways() {
        for (flags, name, vfs) in [
            (0u8, &b"x"[..], &b"user.x"[..]),
            (attr_flag::ROOT, b"t", b"trusted.t"),
            (attr_flag::SECURE, b"selinux", b"security.selinux"),
            (attr_flag::ROOT, ACL_FILE_NAME, VFS_ACL_ACCESS),
            (attr_flag::ROOT, ACL_DEFAULT_NAME, VFS_ACL_DEFAULT),
        ] {
            assert_eq!(attr_vfs_name(flags, name).unwrap(), vfs);
            assert_eq!(attr_disk_name(vfs).unwrap(), (flags, name));
        }
        assert!(attr_vfs_name(attr_flag::PARENT, b"p").is_none());
        assert!(attr_disk_name(b"system.other").is_none());
    }

    #[test]
    fn inode_numbers_split_and_join() {
        let ino = ino_make(3, (77 << 4) | 9, 16, 4);
        assert_eq!(ino_split(ino, 16, 4), (3, 77, 9));
    }

    #[test]
    fn entry_sizes_match_the_kernel() {
        // "." with ftype: 8 + 1 + 1 + 1 + 2 = 13 -> 16.
        assert_eq!(dir2_data_entsize(1, true), 16);
        assert_eq!(dir2_data_entsize(6, false), 24);
        assert_eq!(dir2_data_entsize(5, true), 24);
    }
}
