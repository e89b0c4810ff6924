//! The ext2/3/4 superblock: its 1024-byte layout (field names as in the kernel's
//! `struct ext4_super_block`), validation, feature tiers, and the checksum.
//!
//! The reader decodes and validates it once; the builder clones a source superblock
//! and encodes it with the same table, so nothing the source had is lost.

use super::csum::crc32c_raw;
use crate::error::{Error, Location, Result};

/// Where the primary superblock sits, in bytes from the volume's start.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
pub const EXT4_MAGIC: u16 = 0xEF53;

crate::ondisk_struct! {
    /// `struct ext4_super_block` (fs/ext4/ext4.h).
    pub struct Superblock: 1024, le {
        s_inodes_count: u32 = 0x0,
        s_blocks_count_lo: u32 = 0x4,
        s_r_blocks_count_lo: u32 = 0x8,
        s_free_blocks_count_lo: u32 = 0xC,
        s_free_inodes_count: u32 = 0x10,
        s_first_data_block: u32 = 0x14,
        s_log_block_size: u32 = 0x18,
        s_log_cluster_size: u32 = 0x1C,
        s_blocks_per_group: u32 = 0x20,
        s_clusters_per_group: u32 = 0x24,
        s_inodes_per_group: u32 = 0x28,
        s_mtime: u32 = 0x2C,
        s_wtime: u32 = 0x30,
        s_mnt_count: u16 = 0x34,
        s_max_mnt_count: u16 = 0x36,
        s_magic: u16 = 0x38,
        s_state: u16 = 0x3A,
        s_errors: u16 = 0x3C,
        s_minor_rev_level: u16 = 0x3E,
        s_lastcheck: u32 = 0x40,
        s_checkinterval: u32 = 0x44,
        s_creator_os: u32 = 0x48,
        s_rev_level: u32 = 0x4C,
        s_def_resuid: u16 = 0x50,
        s_def_resgid: u16 = 0x52,
        s_first_ino: u32 = 0x54,
        s_inode_size: u16 = 0x58,
        s_block_group_nr: u16 = 0x5A,
        s_feature_compat: u32 = 0x5C,
        s_feature_incompat: u32 = 0x60,
        s_feature_ro_compat: u32 = 0x64,
        s_uuid: [u8; 16] = 0x68,
        s_volume_name: [u8; 16] = 0x78,
        s_last_mounted: [u8; 64] = 0x88,
        s_algorithm_usage_bitmap: u32 = 0xC8,
        s_prealloc_blocks: u8 = 0xCC,
        s_prealloc_dir_blocks: u8 = 0xCD,
        s_reserved_gdt_blocks: u16 = 0xCE,
        s_journal_uuid: [u8; 16] = 0xD0,
        s_journal_inum: u32 = 0xE0,
        s_journal_dev: u32 = 0xE4,
        s_last_orphan: u32 = 0xE8,
        s_hash_seed: [u8; 16] = 0xEC,
        s_def_hash_version: u8 = 0xFC,
        s_jnl_backup_type: u8 = 0xFD,
        s_desc_size: u16 = 0xFE,
        s_default_mount_opts: u32 = 0x100,
        s_first_meta_bg: u32 = 0x104,
        s_mkfs_time: u32 = 0x108,
        s_jnl_blocks: [u32; 17] = 0x10C,
        s_blocks_count_hi: u32 = 0x150,
        s_r_blocks_count_hi: u32 = 0x154,
        s_free_blocks_count_hi: u32 = 0x158,
        s_min_extra_isize: u16 = 0x15C,
        s_want_extra_isize: u16 = 0x15E,
        s_flags: u32 = 0x160,
        s_raid_stride: u16 = 0x164,
        s_mmp_update_interval: u16 = 0x166,
        s_mmp_block: u64 = 0x168,
        s_raid_stripe_width: u32 = 0x170,
        s_log_groups_per_flex: u8 = 0x174,
        s_checksum_type: u8 = 0x175,
        s_encryption_level: u8 = 0x176,
        s_reserved_pad: u8 = 0x177,
        s_kbytes_written: u64 = 0x178,
        s_snapshot_inum: u32 = 0x180,
        s_snapshot_id: u32 = 0x184,
        s_snapshot_r_blocks_count: u64 = 0x188,
        s_snapshot_list: u32 = 0x190,
        s_error_count: u32 = 0x194,
        s_first_error_time: u32 = 0x198,
        s_first_error_ino: u32 = 0x19C,
        s_first_error_block: u64 = 0x1A0,
        s_first_error_func: [u8; 32] = 0x1A8,
        s_first_error_line: u32 = 0x1C8,
        s_last_error_time: u32 = 0x1CC,
        s_last_error_ino: u32 = 0x1D0,
        s_last_error_line: u32 = 0x1D4,
        s_last_error_block: u64 = 0x1D8,
        s_last_error_func: [u8; 32] = 0x1E0,
        s_mount_opts: [u8; 64] = 0x200,
        s_usr_quota_inum: u32 = 0x240,
        s_grp_quota_inum: u32 = 0x244,
        s_overhead_clusters: u32 = 0x248,
        s_backup_bgs: [u32; 2] = 0x24C,
        s_encrypt_algos: [u8; 4] = 0x254,
        s_encrypt_pw_salt: [u8; 16] = 0x258,
        s_lpf_ino: u32 = 0x268,
        s_prj_quota_inum: u32 = 0x26C,
        s_checksum_seed: u32 = 0x270,
        s_wtime_hi: u8 = 0x274,
        s_mtime_hi: u8 = 0x275,
        s_mkfs_time_hi: u8 = 0x276,
        s_lastcheck_hi: u8 = 0x277,
        s_first_error_time_hi: u8 = 0x278,
        s_last_error_time_hi: u8 = 0x279,
        s_first_error_errcode: u8 = 0x27A,
        s_last_error_errcode: u8 = 0x27B,
        s_encoding: u16 = 0x27C,
        s_encoding_flags: u16 = 0x27E,
        s_orphan_file_inum: u32 = 0x280,
        s_checksum: u32 = 0x3FC,
    }
}

/// Compatible features: a reader that does not know one may still read and write.
pub mod compat {
    pub const DIR_PREALLOC: u32 = 0x1;
    pub const IMAGIC_INODES: u32 = 0x2;
    pub const HAS_JOURNAL: u32 = 0x4;
    pub const EXT_ATTR: u32 = 0x8;
    pub const RESIZE_INODE: u32 = 0x10;
    pub const DIR_INDEX: u32 = 0x20;
    pub const LAZY_BG: u32 = 0x40;
    pub const EXCLUDE_BITMAP: u32 = 0x100;
    pub const SPARSE_SUPER2: u32 = 0x200;
    pub const FAST_COMMIT: u32 = 0x400;
    pub const STABLE_INODES: u32 = 0x800;
    pub const ORPHAN_FILE: u32 = 0x1000;
}

/// Incompatible features: a reader that does not know one must not read.
pub mod incompat {
    pub const COMPRESSION: u32 = 0x1;
    pub const FILETYPE: u32 = 0x2;
    pub const RECOVER: u32 = 0x4;
    pub const JOURNAL_DEV: u32 = 0x8;
    pub const META_BG: u32 = 0x10;
    pub const EXTENTS: u32 = 0x40;
    pub const BIT64: u32 = 0x80;
    pub const MMP: u32 = 0x100;
    pub const FLEX_BG: u32 = 0x200;
    pub const EA_INODE: u32 = 0x400;
    pub const DIRDATA: u32 = 0x1000;
    pub const CSUM_SEED: u32 = 0x2000;
    pub const LARGEDIR: u32 = 0x4000;
    pub const INLINE_DATA: u32 = 0x8000;
    pub const ENCRYPT: u32 = 0x10000;
    pub const CASEFOLD: u32 = 0x20000;
}

/// Read-only compatible features: a reader may read, but must not write.
pub mod ro_compat {
    pub const SPARSE_SUPER: u32 = 0x1;
    pub const LARGE_FILE: u32 = 0x2;
    pub const BTREE_DIR: u32 = 0x4;
    pub const HUGE_FILE: u32 = 0x8;
    pub const GDT_CSUM: u32 = 0x10;
    pub const DIR_NLINK: u32 = 0x20;
    pub const EXTRA_ISIZE: u32 = 0x40;
    pub const HAS_SNAPSHOT: u32 = 0x80;
    pub const QUOTA: u32 = 0x100;
    pub const BIGALLOC: u32 = 0x200;
    pub const METADATA_CSUM: u32 = 0x400;
    pub const REPLICA: u32 = 0x800;
    pub const READONLY: u32 = 0x1000;
    pub const PROJECT: u32 = 0x2000;
    pub const SHARED_BLOCKS: u32 = 0x4000;
    pub const VERITY: u32 = 0x8000;
    pub const ORPHAN_PRESENT: u32 = 0x10000;
}

/// Names of feature bits as e2fsprogs prints them (`dumpe2fs -h`, `tune2fs -O`).
const COMPAT_NAMES: &[(u32, &str)] = &[
    (compat::DIR_PREALLOC, "dir_prealloc"),
    (compat::IMAGIC_INODES, "imagic_inodes"),
    (compat::HAS_JOURNAL, "has_journal"),
    (compat::EXT_ATTR, "ext_attr"),
    (compat::RESIZE_INODE, "resize_inode"),
    (compat::DIR_INDEX, "dir_index"),
    (compat::LAZY_BG, "lazy_bg"),
    (compat::EXCLUDE_BITMAP, "snapshot_bitmap"),
    (compat::SPARSE_SUPER2, "sparse_super2"),
    (compat::FAST_COMMIT, "fast_commit"),
    (compat::STABLE_INODES, "stable_inodes"),
    (compat::ORPHAN_FILE, "orphan_file"),
];

const INCOMPAT_NAMES: &[(u32, &str)] = &[
    (incompat::COMPRESSION, "compression"),
    (incompat::FILETYPE, "filetype"),
    (incompat::RECOVER, "needs_recovery"),
    (incompat::JOURNAL_DEV, "journal_dev"),
    (incompat::META_BG, "meta_bg"),
    (incompat::EXTENTS, "extent"),
    (incompat::BIT64, "64bit"),
    (incompat::MMP, "mmp"),
    (incompat::FLEX_BG, "flex_bg"),
    (incompat::EA_INODE, "ea_inode"),
    (incompat::DIRDATA, "dirdata"),
    (incompat::CSUM_SEED, "metadata_csum_seed"),
    (incompat::LARGEDIR, "large_dir"),
    (incompat::INLINE_DATA, "inline_data"),
    (incompat::ENCRYPT, "encrypt"),
    (incompat::CASEFOLD, "casefold"),
];

const RO_COMPAT_NAMES: &[(u32, &str)] = &[
    (ro_compat::SPARSE_SUPER, "sparse_super"),
    (ro_compat::LARGE_FILE, "large_file"),
    (ro_compat::BTREE_DIR, "btree_dir"),
    (ro_compat::HUGE_FILE, "huge_file"),
    (ro_compat::GDT_CSUM, "uninit_bg"),
    (ro_compat::DIR_NLINK, "dir_nlink"),
    (ro_compat::EXTRA_ISIZE, "extra_isize"),
    (ro_compat::HAS_SNAPSHOT, "snapshot"),
    (ro_compat::QUOTA, "quota"),
    (ro_compat::BIGALLOC, "bigalloc"),
    (ro_compat::METADATA_CSUM, "metadata_csum"),
    (ro_compat::REPLICA, "replica"),
    (ro_compat::READONLY, "read-only"),
    (ro_compat::PROJECT, "project"),
    (ro_compat::SHARED_BLOCKS, "shared_blocks"),
    (ro_compat::VERITY, "verity"),
    (ro_compat::ORPHAN_PRESENT, "orphan_present"),
];

/// Incompatible features the reader understands. Anything else is refused.
const INCOMPAT_READABLE: u32 = incompat::FILETYPE
    | incompat::RECOVER
    | incompat::META_BG
    | incompat::EXTENTS
    | incompat::BIT64
    | incompat::MMP
    | incompat::FLEX_BG
    | incompat::CSUM_SEED
    | incompat::LARGEDIR
    | incompat::INLINE_DATA
    | incompat::EA_INODE
    // Only a filesystem that may hold encrypted files: the inodes that really are
    // encrypted carry EXT4_ENCRYPT_FL, and the builder refuses those by name.
    | incompat::ENCRYPT;

/// Known features imgsan recognises but will not handle, with the reason given to
/// the user. Checked before the "unknown" tier so the message names them.
const INCOMPAT_REFUSED: &[(u32, &str)] = &[
    (
        incompat::COMPRESSION,
        "compression (never finished in ext4)",
    ),
    (
        incompat::JOURNAL_DEV,
        "journal_dev (this volume is an external journal, not a filesystem)",
    ),
    (incompat::DIRDATA, "dirdata (Lustre directory data)"),
    (
        incompat::CASEFOLD,
        "casefold (case-insensitive directories)",
    ),
];

const RO_COMPAT_REFUSED: &[(u32, &str)] = &[
    (ro_compat::BIGALLOC, "bigalloc (cluster allocation)"),
    (ro_compat::HAS_SNAPSHOT, "snapshot (ext4 snapshots)"),
    (ro_compat::REPLICA, "replica"),
    (
        ro_compat::SHARED_BLOCKS,
        "shared_blocks (deduplicated read-only image)",
    ),
    (ro_compat::VERITY, "verity (fs-verity Merkle trees)"),
];

/// Read-only-compatible features the reader understands.
const RO_COMPAT_READABLE: u32 = ro_compat::SPARSE_SUPER
    | ro_compat::LARGE_FILE
    | ro_compat::BTREE_DIR
    | ro_compat::HUGE_FILE
    | ro_compat::GDT_CSUM
    | ro_compat::DIR_NLINK
    | ro_compat::EXTRA_ISIZE
    | ro_compat::QUOTA
    | ro_compat::METADATA_CSUM
    | ro_compat::READONLY
    | ro_compat::PROJECT
    | ro_compat::ORPHAN_PRESENT;

fn names(bits: u32, table: &[(u32, &'static str)], out: &mut Vec<String>) {
    let mut known = 0;
    for &(bit, name) in table {
        known |= bit;
        if bits & bit != 0 {
            out.push(name.to_string());
        }
    }
    for i in 0..32 {
        let bit = 1u32 << i;
        if bits & bit != 0 && known & bit == 0 {
            out.push(format!("FEATURE_{i}"));
        }
    }
}

/// The directory hash versions (`s_def_hash_version`, dx_root `hash_version`).
pub mod hash_version {
    pub const LEGACY: u8 = 0;
    pub const HALF_MD4: u8 = 1;
    pub const TEA: u8 = 2;
    pub const LEGACY_UNSIGNED: u8 = 3;
    pub const HALF_MD4_UNSIGNED: u8 = 4;
    pub const TEA_UNSIGNED: u8 = 5;
    pub const SIPHASH: u8 = 6;
}

/// `s_flags` bits.
pub mod flags {
    pub const SIGNED_HASH: u32 = 0x1;
    pub const UNSIGNED_HASH: u32 = 0x2;
    pub const TEST_FILESYS: u32 = 0x4;
}

/// `s_state` bits.
pub mod state {
    pub const VALID_FS: u16 = 0x1;
    pub const ERROR_FS: u16 = 0x2;
    pub const ORPHAN_FS: u16 = 0x4;
}

impl Superblock {
    /// Decode and validate the superblock at its usual place in `raw` (which holds
    /// the 1024 bytes read at [`SUPERBLOCK_OFFSET`]). `volume_len` bounds the
    /// geometry. Feature tiers are applied here: unknown or refused incompatible
    /// features are `Unsupported`.
    pub fn parse(raw: &[u8; 1024], volume_len: u64) -> Result<Self> {
        let sb = Superblock::decode(raw);
        if sb.s_magic != EXT4_MAGIC {
            return Err(Error::NotThisFormat { format: "ext2/3/4" });
        }
        // bigalloc changes what s_blocks_per_group counts (blocks per group are
        // clusters per group times the cluster ratio), so the geometry checks
        // below would call a valid bigalloc superblock corrupt.
        if sb.has_ro_compat(ro_compat::BIGALLOC) {
            return Err(Error::unsupported("bigalloc (ext4 cluster allocation)"));
        }
        sb.validate(volume_len)?;
        sb.check_features()?;
        if sb.has_ro_compat(ro_compat::METADATA_CSUM) {
            let computed = sb.compute_checksum(raw);
            if computed != sb.s_checksum {
                return Err(Error::checksum(
                    "ext4 superblock",
                    Location::Byte(SUPERBLOCK_OFFSET + 0x3FC),
                    u64::from(sb.s_checksum),
                    u64::from(computed),
                ));
            }
        }
        Ok(sb)
    }

    fn corrupt(&self, field_off: u64, detail: String) -> Error {
        Error::corrupt(
            "ext4 superblock",
            Location::Byte(SUPERBLOCK_OFFSET + field_off),
            detail,
        )
    }

    /// Geometry checks: everything later code divides by or loops over.
    fn validate(&self, volume_len: u64) -> Result<()> {
        if self.s_log_block_size > 6 {
            return Err(self.corrupt(
                0x18,
                format!(
                    "s_log_block_size {} (block size above 64 KiB)",
                    self.s_log_block_size
                ),
            ));
        }
        let bs = self.block_size();
        if self.s_rev_level > 1 {
            return Err(self.corrupt(0x4C, format!("unknown s_rev_level {}", self.s_rev_level)));
        }
        let isz = u32::from(self.inode_size());
        if isz < 128 || !isz.is_power_of_two() || isz > bs {
            return Err(self.corrupt(0x58, format!("s_inode_size {isz}")));
        }
        if self.s_blocks_per_group == 0 || self.s_blocks_per_group > 8 * bs {
            return Err(self.corrupt(
                0x20,
                format!("s_blocks_per_group {}", self.s_blocks_per_group),
            ));
        }
        if self.s_inodes_per_group == 0 || self.s_inodes_per_group > 8 * bs {
            return Err(self.corrupt(
                0x28,
                format!("s_inodes_per_group {}", self.s_inodes_per_group),
            ));
        }
        let expected_first = u32::from(bs == 1024);
        if self.s_first_data_block != expected_first {
            return Err(self.corrupt(
                0x14,
                format!(
                    "s_first_data_block {} with {bs}-byte blocks",
                    self.s_first_data_block
                ),
            ));
        }
        let blocks = self.blocks_count();
        if blocks <= u64::from(self.s_first_data_block) {
            return Err(self.corrupt(0x4, format!("s_blocks_count {blocks}")));
        }
        let needed = blocks
            .checked_mul(u64::from(bs))
            .ok_or_else(|| self.corrupt(0x4, format!("s_blocks_count {blocks} overflows")))?;
        if needed > volume_len {
            return Err(self.corrupt(
                0x4,
                format!("filesystem of {needed} bytes ({blocks} blocks) does not fit the {volume_len}-byte volume"),
            ));
        }
        let groups = self.group_count();
        let inodes = u64::from(self.s_inodes_per_group) * groups;
        if u64::from(self.s_inodes_count) != inodes && inodes <= u64::from(u32::MAX) {
            return Err(self.corrupt(
                0x0,
                format!(
                    "s_inodes_count {} is not {groups} groups x {} inodes",
                    self.s_inodes_count, self.s_inodes_per_group
                ),
            ));
        }
        if self.has_incompat(incompat::BIT64) {
            let ds = self.s_desc_size;
            if !(64..=1024).contains(&ds) || !ds.is_power_of_two() {
                return Err(self.corrupt(0xFE, format!("s_desc_size {ds} with 64bit")));
            }
        }
        if self.s_rev_level >= 1 && self.s_first_ino < 11 {
            return Err(self.corrupt(0x54, format!("s_first_ino {}", self.s_first_ino)));
        }
        if self.has_incompat(incompat::FLEX_BG) && self.s_log_groups_per_flex > 31 {
            return Err(self.corrupt(
                0x174,
                format!("s_log_groups_per_flex {}", self.s_log_groups_per_flex),
            ));
        }
        if isz > 128
            && self.has_ro_compat(ro_compat::EXTRA_ISIZE)
            && u32::from(self.s_min_extra_isize) > isz - 128
        {
            return Err(self.corrupt(
                0x15C,
                format!("s_min_extra_isize {}", self.s_min_extra_isize),
            ));
        }
        if self.has_ro_compat(ro_compat::METADATA_CSUM) && self.s_checksum_type != 1 {
            return Err(self.corrupt(
                0x175,
                format!("unknown s_checksum_type {}", self.s_checksum_type),
            ));
        }
        Ok(())
    }

    /// Feature tiers: refuse unknown and unhandled incompatible features, and
    /// unhandled read-only features (imgsan rebuilds what it reads).
    fn check_features(&self) -> Result<()> {
        for &(bit, why) in INCOMPAT_REFUSED {
            if self.s_feature_incompat & bit != 0 {
                return Err(Error::unsupported(format!("ext4 feature {why}")));
            }
        }
        let unknown = self.s_feature_incompat & !INCOMPAT_READABLE;
        if unknown != 0 {
            return Err(Error::unsupported(format!(
                "unknown ext4 incompatible feature bits {unknown:#x}"
            )));
        }
        for &(bit, why) in RO_COMPAT_REFUSED {
            if self.s_feature_ro_compat & bit != 0 {
                return Err(Error::unsupported(format!("ext4 feature {why}")));
            }
        }
        let unknown = self.s_feature_ro_compat & !RO_COMPAT_READABLE;
        if unknown != 0 {
            return Err(Error::unsupported(format!(
                "unknown ext4 read-only-compatible feature bits {unknown:#x}"
            )));
        }
        Ok(())
    }

    pub fn has_compat(&self, bit: u32) -> bool {
        self.s_feature_compat & bit != 0
    }
    pub fn has_incompat(&self, bit: u32) -> bool {
        self.s_feature_incompat & bit != 0
    }
    pub fn has_ro_compat(&self, bit: u32) -> bool {
        self.s_feature_ro_compat & bit != 0
    }

    /// Feature names in dumpe2fs order (compat, incompat, ro_compat).
    pub fn feature_names(&self) -> Vec<String> {
        let mut v = Vec::new();
        names(self.s_feature_compat, COMPAT_NAMES, &mut v);
        names(self.s_feature_incompat, INCOMPAT_NAMES, &mut v);
        names(self.s_feature_ro_compat, RO_COMPAT_NAMES, &mut v);
        v
    }

    pub fn block_size(&self) -> u32 {
        1024u32 << self.s_log_block_size.min(6)
    }

    pub fn inode_size(&self) -> u16 {
        if self.s_rev_level == 0 {
            128
        } else {
            self.s_inode_size
        }
    }

    pub fn first_ino(&self) -> u32 {
        if self.s_rev_level == 0 {
            11
        } else {
            self.s_first_ino
        }
    }

    pub fn is_64bit(&self) -> bool {
        self.has_incompat(incompat::BIT64)
    }

    pub fn blocks_count(&self) -> u64 {
        let hi = if self.is_64bit() {
            u64::from(self.s_blocks_count_hi)
        } else {
            0
        };
        (hi << 32) | u64::from(self.s_blocks_count_lo)
    }

    pub fn set_blocks_count(&mut self, n: u64) {
        self.s_blocks_count_lo = n as u32;
        self.s_blocks_count_hi = if self.is_64bit() { (n >> 32) as u32 } else { 0 };
    }

    pub fn r_blocks_count(&self) -> u64 {
        let hi = if self.is_64bit() {
            u64::from(self.s_r_blocks_count_hi)
        } else {
            0
        };
        (hi << 32) | u64::from(self.s_r_blocks_count_lo)
    }

    pub fn set_r_blocks_count(&mut self, n: u64) {
        self.s_r_blocks_count_lo = n as u32;
        self.s_r_blocks_count_hi = if self.is_64bit() { (n >> 32) as u32 } else { 0 };
    }

    pub fn free_blocks_count(&self) -> u64 {
        let hi = if self.is_64bit() {
            u64::from(self.s_free_blocks_count_hi)
        } else {
            0
        };
        (hi << 32) | u64::from(self.s_free_blocks_count_lo)
    }

    pub fn set_free_blocks_count(&mut self, n: u64) {
        self.s_free_blocks_count_lo = n as u32;
        self.s_free_blocks_count_hi = if self.is_64bit() { (n >> 32) as u32 } else { 0 };
    }

    /// Number of block groups.
    pub fn group_count(&self) -> u64 {
        let data = self.blocks_count() - u64::from(self.s_first_data_block);
        data.div_ceil(u64::from(self.s_blocks_per_group))
    }

    /// Bytes per group descriptor.
    pub fn desc_size(&self) -> usize {
        if self.is_64bit() {
            usize::from(self.s_desc_size)
        } else {
            32
        }
    }

    /// The seed for metadata checksums (crc32c of the UUID, or the stored seed).
    pub fn csum_seed(&self) -> u32 {
        if self.has_incompat(incompat::CSUM_SEED) {
            self.s_checksum_seed
        } else {
            crc32c_raw(!0, &self.s_uuid)
        }
    }

    pub fn has_metadata_csum(&self) -> bool {
        self.has_ro_compat(ro_compat::METADATA_CSUM)
    }

    /// Group descriptors carry a checksum (crc32c with metadata_csum, crc16 with
    /// gdt_csum/uninit_bg).
    pub fn has_group_csum(&self) -> bool {
        self.has_metadata_csum() || self.has_ro_compat(ro_compat::GDT_CSUM)
    }

    /// The checksum over the encoded bytes (everything before `s_checksum`).
    pub fn compute_checksum(&self, raw: &[u8; 1024]) -> u32 {
        crc32c_raw(!0, &raw[..0x3FC])
    }

    /// Encode with a fresh checksum when metadata_csum is on.
    pub fn to_bytes_with_checksum(&self) -> [u8; 1024] {
        let mut b = self.to_bytes();
        if self.has_metadata_csum() {
            let c = self.compute_checksum(&b);
            b[0x3FC..].copy_from_slice(&c.to_le_bytes());
        }
        b
    }

    /// The volume label, up to its first NUL.
    pub fn label(&self) -> String {
        let end = self
            .s_volume_name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(16);
        String::from_utf8_lossy(&self.s_volume_name[..end]).into_owned()
    }

    /// The UUID in the usual 8-4-4-4-12 form.
    pub fn uuid_string(&self) -> String {
        format_uuid(&self.s_uuid)
    }

    /// Whether group `g` holds a superblock backup (and group descriptor copy),
    /// per sparse_super / sparse_super2.
    pub fn group_has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.has_compat(compat::SPARSE_SUPER2) {
            return g == u64::from(self.s_backup_bgs[0]) || g == u64::from(self.s_backup_bgs[1]);
        }
        if g <= 1 || !self.has_ro_compat(ro_compat::SPARSE_SUPER) {
            return true;
        }
        if g.is_multiple_of(2) {
            return false;
        }
        is_power_of(g, 3) || is_power_of(g, 5) || is_power_of(g, 7)
    }

    /// Bytes of the whole filesystem.
    pub fn fs_bytes(&self) -> u64 {
        self.blocks_count() * u64::from(self.block_size())
    }
}

fn is_power_of(mut n: u64, base: u64) -> bool {
    while n > 1 && n.is_multiple_of(base) {
        n /= base;
    }
    n == 1
}

/// Format 16 bytes as a UUID string.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_super_backup_groups() {
        let mut raw = [0u8; 1024];
        raw[0x64..0x68].copy_from_slice(&ro_compat::SPARSE_SUPER.to_le_bytes());
        let sb = Superblock::decode(&raw);
        let with: Vec<u64> = (0..100).filter(|&g| sb.group_has_super(g)).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
    }

    #[test]
    fn uuid_format() {
        let u = [
            0x12, 0xc2, 0x3e, 0xc1, 0xa3, 0xd4, 0x40, 0x24, 0x88, 0x29, 0x99, 0x01, 0x9a, 0xeb,
            0x61, 0x12,
        ];
        assert_eq!(format_uuid(&u), "12c23ec1-a3d4-4024-8829-99019aeb6112");
    }
}
