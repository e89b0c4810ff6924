//! ext2, ext3 and ext4 recognition from the superblock at byte 1024: the magic, a
//! sane block size, the superblock checksum under metadata_csum, and the feature
//! words that tell the three apart the way blkid does (has_journal makes ext3;
//! any feature ext3 lacks, such as extents, 64bit, flex_bg, huge_file or
//! metadata_csum, makes ext4). Reading the filesystem itself is `fs::ext4`'s job.

use super::{label_from, read_if_fits, FsType, Probed};
use crate::disk::partition::types::{array16, le16, le32, uuid_bytes_to_string};
use crate::disk::Disk;
use crate::error::{Error, Location, Result};

pub const SUPERBLOCK_OFFSET: u64 = 1024;
pub const SUPERBLOCK_SIZE: usize = 1024;
pub const EXT4_SUPER_MAGIC: u16 = 0xEF53;

/// Superblock field offsets (Linux `fs/ext4/ext4.h`, `struct ext4_super_block`).
mod off {
    pub const S_LOG_BLOCK_SIZE: usize = 0x18;
    pub const S_MAGIC: usize = 0x38;
    pub const S_MINOR_REV_LEVEL: usize = 0x3E;
    pub const S_REV_LEVEL: usize = 0x4C;
    pub const S_FEATURE_COMPAT: usize = 0x5C;
    pub const S_FEATURE_INCOMPAT: usize = 0x60;
    pub const S_FEATURE_RO_COMPAT: usize = 0x64;
    pub const S_UUID: usize = 0x68;
    pub const S_VOLUME_NAME: usize = 0x78;
    pub const S_FLAGS: usize = 0x160;
    pub const S_CHECKSUM: usize = 0x3FC;
}

pub const COMPAT_HAS_JOURNAL: u32 = 0x4;
pub const INCOMPAT_FILETYPE: u32 = 0x2;
pub const INCOMPAT_RECOVER: u32 = 0x4;
pub const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
pub const INCOMPAT_META_BG: u32 = 0x10;
pub const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
pub const RO_COMPAT_LARGE_FILE: u32 = 0x2;
pub const RO_COMPAT_BTREE_DIR: u32 = 0x4;
pub const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
/// s_flags: a filesystem marked for test code (ext4dev).
pub const FLAGS_TEST_FILESYS: u32 = 0x4;

/// What ext2 and ext3 understand; anything else makes a filesystem ext4.
const EXT2_INCOMPAT: u32 = INCOMPAT_FILETYPE | INCOMPAT_META_BG;
const EXT3_INCOMPAT: u32 = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG;
const EXT23_RO_COMPAT: u32 = RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR;

const COMPAT_NAMES: &[(u32, &str)] = &[
    (0x1, "dir_prealloc"),
    (0x2, "imagic_inodes"),
    (0x4, "has_journal"),
    (0x8, "ext_attr"),
    (0x10, "resize_inode"),
    (0x20, "dir_index"),
    (0x200, "sparse_super2"),
    (0x400, "fast_commit"),
    (0x800, "stable_inodes"),
    (0x1000, "orphan_file"),
];
const INCOMPAT_NAMES: &[(u32, &str)] = &[
    (0x1, "compression"),
    (0x2, "filetype"),
    (0x4, "needs_recovery"),
    (0x8, "journal_dev"),
    (0x10, "meta_bg"),
    (0x40, "extent"),
    (0x80, "64bit"),
    (0x100, "mmp"),
    (0x200, "flex_bg"),
    (0x400, "ea_inode"),
    (0x1000, "dirdata"),
    (0x2000, "metadata_csum_seed"),
    (0x4000, "large_dir"),
    (0x8000, "inline_data"),
    (0x10000, "encrypt"),
    (0x20000, "casefold"),
];
const RO_COMPAT_NAMES: &[(u32, &str)] = &[
    (0x1, "sparse_super"),
    (0x2, "large_file"),
    (0x8, "huge_file"),
    (0x10, "uninit_bg"),
    (0x20, "dir_nlink"),
    (0x40, "extra_isize"),
    (0x100, "quota"),
    (0x200, "bigalloc"),
    (0x400, "metadata_csum"),
    (0x1000, "read-only"),
    (0x2000, "project"),
    (0x4000, "shared_blocks"),
    (0x8000, "verity"),
    (0x10000, "orphan_present"),
];

fn feature_names(out: &mut Vec<String>, word: u32, names: &[(u32, &str)], kind: &str) {
    let mut known = 0;
    for (bit, name) in names {
        if word & bit != 0 {
            out.push((*name).to_string());
            known |= bit;
        }
    }
    if word & !known != 0 {
        out.push(format!("{kind}:{:#x}", word & !known));
    }
}

/// The superblock checksum as the kernel computes it (`ext4_superblock_csum`):
/// crc32c seeded with all ones, without the final inversion.
pub fn superblock_csum(sb: &[u8]) -> u32 {
    !crc32c::crc32c(&sb[..off::S_CHECKSUM])
}

/// The first backup superblock, where `e2fsck -b` looks for one when the
/// primary is unreadable (e2fsck/util.c: get_backup_sb): group 1 starts at block
/// `8 * block size` (one more with 1 KiB blocks, whose block 0 is the boot
/// block), for each block size from 1 KiB to 64 KiB. A candidate counts only
/// when its magic, its block size and its group number (1, or 0 as revision 0
/// writes it) agree, and it carries the default geometry that puts group 1
/// there.
/// Returns the byte offset, the block number and the 1024 bytes.
pub fn find_backup_superblock(disk: &dyn Disk) -> Result<Option<(u64, u64, Vec<u8>)>> {
    const S_BLOCKS_PER_GROUP: usize = 0x20;
    const S_BLOCK_GROUP_NR: usize = 0x5A;
    for log in 0..=6u32 {
        let bs = 1024u64 << log;
        let block = 8 * bs + u64::from(bs == 1024);
        let offset = block * bs;
        let Some(sb) = read_if_fits(disk, offset, SUPERBLOCK_SIZE)? else {
            continue;
        };
        if le16(&sb, off::S_MAGIC) == EXT4_SUPER_MAGIC
            && le32(&sb, off::S_LOG_BLOCK_SIZE) == log
            && u64::from(le32(&sb, S_BLOCKS_PER_GROUP)) == 8 * bs
            // Revision-0 filesystems (and old mke2fs) leave the group number 0.
            && le16(&sb, S_BLOCK_GROUP_NR) <= 1
        {
            return Ok(Some((offset, block, sb)));
        }
    }
    Ok(None)
}

pub fn probe(disk: &dyn Disk) -> Result<Option<Probed>> {
    let Some(sb) = read_if_fits(disk, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE)? else {
        return Ok(None);
    };
    from_superblock(&sb, SUPERBLOCK_OFFSET, Vec::new())
}

/// A volume whose primary superblock is missing or damaged but whose first
/// backup is intact. Probed after every other format, so that bytes inside
/// another filesystem that happen to look like a backup never win.
pub fn probe_backup(disk: &dyn Disk) -> Result<Option<Probed>> {
    if let Some(sb) = read_if_fits(disk, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE)? {
        let intact = le16(&sb, off::S_MAGIC) == EXT4_SUPER_MAGIC
            && (le32(&sb, off::S_FEATURE_RO_COMPAT) & RO_COMPAT_METADATA_CSUM == 0
                || superblock_csum(&sb) == le32(&sb, off::S_CHECKSUM));
        if intact {
            return Ok(None);
        }
    }
    let Some((offset, block, sb)) = find_backup_superblock(disk)? else {
        return Ok(None);
    };
    let warnings = vec![format!(
        "the primary ext superblock is damaged or missing; a backup superblock was found at \
         block {block} (byte {offset}), where e2fsck -b {block} finds it"
    )];
    from_superblock(&sb, offset, warnings)
}

fn from_superblock(sb: &[u8], sb_offset: u64, warnings: Vec<String>) -> Result<Option<Probed>> {
    if le16(sb, off::S_MAGIC) != EXT4_SUPER_MAGIC {
        return Ok(None);
    }
    let sb = sb.to_vec();
    let compat = le32(&sb, off::S_FEATURE_COMPAT);
    let incompat = le32(&sb, off::S_FEATURE_INCOMPAT);
    let ro_compat = le32(&sb, off::S_FEATURE_RO_COMPAT);
    let log_block = le32(&sb, off::S_LOG_BLOCK_SIZE);
    if ro_compat & RO_COMPAT_METADATA_CSUM != 0 {
        let computed = superblock_csum(&sb);
        let stored = le32(&sb, off::S_CHECKSUM);
        if computed != stored {
            return Err(Error::checksum(
                "ext4 superblock",
                Location::Byte(sb_offset),
                u64::from(stored),
                u64::from(computed),
            ));
        }
    }
    // Block sizes run from 1 KiB to 64 KiB; anything else is not an ext
    // superblock, just two bytes that happen to be 0xEF53.
    if log_block > 6 {
        return Ok(None);
    }
    let fs = if incompat & INCOMPAT_JOURNAL_DEV != 0 {
        FsType::Jbd
    } else if compat & COMPAT_HAS_JOURNAL != 0 {
        if incompat & !EXT3_INCOMPAT != 0 || ro_compat & !EXT23_RO_COMPAT != 0 {
            FsType::Ext4
        } else {
            FsType::Ext3
        }
    } else if incompat & !EXT2_INCOMPAT != 0 || ro_compat & !EXT23_RO_COMPAT != 0 {
        FsType::Ext4
    } else {
        FsType::Ext2
    };
    let uuid = array16(&sb, off::S_UUID);
    let mut features = Vec::new();
    feature_names(&mut features, compat, COMPAT_NAMES, "compat");
    feature_names(&mut features, incompat, INCOMPAT_NAMES, "incompat");
    feature_names(&mut features, ro_compat, RO_COMPAT_NAMES, "ro_compat");
    let mut details = vec![
        ("block size".to_string(), (1024u32 << log_block).to_string()),
        ("features".to_string(), features.join(" ")),
    ];
    if le32(&sb, off::S_FLAGS) & FLAGS_TEST_FILESYS != 0 {
        details.push(("flags".into(), "test_fs (ext4dev)".into()));
    }
    Ok(Some(Probed {
        fs,
        uuid: (uuid != [0; 16]).then(|| uuid_bytes_to_string(&uuid)),
        label: label_from(&sb[off::S_VOLUME_NAME..off::S_VOLUME_NAME + 16]),
        version: Some(format!(
            "{}.{}",
            le32(&sb, off::S_REV_LEVEL),
            le16(&sb, off::S_MINOR_REV_LEVEL)
        )),
        details,
        warnings,
        swap: None,
    }))
}
