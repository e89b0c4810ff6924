//! One on-disk inode, validated: checksum, i_extra_isize, the split fields joined
//! (uid/gid high halves, size high, i_blocks with huge_file, file ACL high),
//! timestamps with their extra words, and the file type.
//!
//! It does not follow anything the inode points to (blocks, xattr blocks).

use super::Ctx;
use crate::error::{Error, Location, Result};
use crate::fs::ext4::ondisk::{
    inode_checksum, inode_csum_seed, inode_flags, stored_inode_checksum, RawInode,
    GOOD_OLD_INODE_SIZE,
};
use crate::fs::ext4::superblock::ro_compat;
use crate::tree::Time;

/// `s_creator_os` of Linux: the only OS whose inodes carry checksums.
const CREATOR_OS_LINUX: u32 = 0;

/// A decoded inode, borrowing its raw bytes (for in-inode xattrs).
pub(crate) struct Inode<'r> {
    pub ino: u32,
    pub bytes: &'r [u8],
    pub raw: RawInode,
    /// Bytes of the extra area (0 for 128-byte inodes).
    pub extra_isize: usize,
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
    pub flags: u32,
    /// i_blocks in 512-byte units, whatever the huge_file encoding.
    pub blocks_512: u64,
    pub file_acl: u64,
    /// The per-inode checksum seed (inode number and generation).
    pub csum_seed: u32,
}

/// The file type bits of `i_mode`.
pub(crate) mod ftype {
    pub const FIFO: u16 = 0o010000;
    pub const CHR: u16 = 0o020000;
    pub const DIR: u16 = 0o040000;
    pub const BLK: u16 = 0o060000;
    pub const REG: u16 = 0o100000;
    pub const LNK: u16 = 0o120000;
    pub const SOCK: u16 = 0o140000;
    pub const MASK: u16 = 0o170000;
}

impl<'r> Inode<'r> {
    /// Validate and decode `bytes` (exactly `s_inode_size` bytes) as inode `ino`.
    pub fn parse(ctx: &Ctx, ino: u32, bytes: &'r [u8]) -> Result<Self> {
        let isz = bytes.len();
        let loc = Location::Inode(u64::from(ino));
        let extra_isize = if isz > GOOD_OLD_INODE_SIZE {
            let e = usize::from(u16::from_le_bytes([bytes[0x80], bytes[0x81]]));
            // fs/ext4/inode.c: ext4_iget rejects an extra size that does not fit
            // or is not a multiple of 4.
            if GOOD_OLD_INODE_SIZE + e > isz || e % 4 != 0 {
                return Err(Error::corrupt(
                    "ext4 inode",
                    loc,
                    format!("i_extra_isize {e} does not fit a {isz}-byte inode"),
                ));
            }
            e
        } else {
            0
        };
        // The generation feeds the checksum seed; it sits in the classic part.
        let generation = u32::from_le_bytes([bytes[0x64], bytes[0x65], bytes[0x66], bytes[0x67]]);
        let csum_seed = if ctx.sb.has_metadata_csum() {
            inode_csum_seed(ctx.sb, ino, generation)
        } else {
            0
        };
        if ctx.metadata_csum && ctx.sb.s_creator_os == CREATOR_OS_LINUX {
            let (stored, mask) = stored_inode_checksum(bytes);
            let computed = inode_checksum(csum_seed, bytes) & mask;
            if stored != computed {
                return Err(Error::checksum(
                    "ext4 inode",
                    loc,
                    u64::from(stored),
                    u64::from(computed),
                ));
            }
        }
        // Fields past 128 + i_extra_isize are not part of this inode: decode from a
        // copy where they are zero.
        let mut fixed = [0u8; RawInode::SIZE];
        let n = (GOOD_OLD_INODE_SIZE + extra_isize).min(RawInode::SIZE);
        fixed[..n].copy_from_slice(&bytes[..n]);
        let raw = RawInode::decode(&fixed);

        let size = u64::from(raw.i_size_lo) | (u64::from(raw.i_size_high) << 32);
        let uid = u32::from(raw.i_uid) | (u32::from(raw.l_i_uid_high) << 16);
        let gid = u32::from(raw.i_gid) | (u32::from(raw.l_i_gid_high) << 16);
        let flags = raw.i_flags;
        let blocks_512 = if ctx.sb.has_ro_compat(ro_compat::HUGE_FILE) {
            let b = u64::from(raw.i_blocks_lo) | (u64::from(raw.l_i_blocks_high) << 32);
            if flags & inode_flags::HUGE_FILE != 0 {
                // i_blocks counts filesystem blocks.
                b.saturating_mul(u64::from(ctx.bs / 512))
            } else {
                b
            }
        } else {
            u64::from(raw.i_blocks_lo)
        };
        let file_acl = u64::from(raw.i_file_acl_lo) | (u64::from(raw.l_i_file_acl_high) << 32);
        Ok(Inode {
            ino,
            bytes,
            raw,
            extra_isize,
            size,
            uid,
            gid,
            flags,
            blocks_512,
            file_acl,
            csum_seed,
        })
    }

    pub fn loc(&self) -> Location {
        Location::Inode(u64::from(self.ino))
    }

    pub fn mode_type(&self) -> u16 {
        self.raw.i_mode & ftype::MASK
    }

    pub fn is_regular(&self) -> bool {
        self.mode_type() == ftype::REG
    }

    pub fn has_flag(&self, f: u32) -> bool {
        self.flags & f != 0
    }

    /// Whether the extra area is large enough to hold a field that ends
    /// `end` bytes past byte 128.
    fn fits(&self, end: usize) -> bool {
        self.extra_isize >= end
    }

    pub fn atime(&self) -> Time {
        time(
            self.raw.i_atime,
            self.fits(0x90 - 0x80).then_some(self.raw.i_atime_extra),
        )
    }

    pub fn mtime(&self) -> Time {
        time(
            self.raw.i_mtime,
            self.fits(0x8C - 0x80).then_some(self.raw.i_mtime_extra),
        )
    }

    pub fn ctime(&self) -> Time {
        time(
            self.raw.i_ctime,
            self.fits(0x88 - 0x80).then_some(self.raw.i_ctime_extra),
        )
    }

    /// Creation time, when the inode has room for it.
    pub fn crtime(&self) -> Option<Time> {
        if !self.fits(0x94 - 0x80) {
            return None;
        }
        Some(time(
            self.raw.i_crtime,
            self.fits(0x98 - 0x80).then_some(self.raw.i_crtime_extra),
        ))
    }

    pub fn projid(&self) -> u32 {
        if self.fits(0xA0 - 0x80) {
            self.raw.i_projid
        } else {
            0
        }
    }

    /// The twelve direct/indirect block words of i_block.
    pub fn block_words(&self) -> [u32; 15] {
        let mut w = [0u32; 15];
        for (i, v) in w.iter_mut().enumerate() {
            let b = &self.raw.i_block[4 * i..4 * i + 4];
            *v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        w
    }

    /// Blocks (in 512-byte units) held by the inode's data and tree, without its
    /// xattr block: what decides whether a symlink is "fast"
    /// (fs/ext4/inode.c: ext4_inode_is_fast_symlink).
    pub fn data_blocks_512(&self, block_size: u32) -> u64 {
        let ea = if self.file_acl != 0 {
            u64::from(block_size / 512)
        } else {
            0
        };
        self.blocks_512.saturating_sub(ea)
    }
}

/// Decode an ext4 timestamp: the low 32 bits are signed seconds; the extra word
/// holds two epoch bits (added above bit 32) and the nanoseconds
/// (fs/ext4/ext4.h: ext4_decode_extra_time).
pub(crate) fn time(lo: u32, extra: Option<u32>) -> Time {
    let base = i64::from(lo as i32);
    match extra {
        None => Time { sec: base, nsec: 0 },
        Some(x) => Time {
            sec: base + (i64::from(x & 3) << 32),
            nsec: x >> 2,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::time;

    #[test]
    fn timestamps_decode_epoch_bits_and_nanoseconds() {
        assert_eq!(time(0, None).sec, 0);
        // Before 1970: signed low word, epoch 0.
        assert_eq!(time((-100i32) as u32, Some(0)).sec, -100);
        // 2040: low word wrapped negative, epoch 1 brings it back.
        let t = time(0x83aa7e80, Some(5));
        assert_eq!(t.sec, 0x83aa7e80);
        assert_eq!(t.nsec, 1);
        assert_eq!(time(1, Some(999_999_999 << 2)).nsec, 999_999_999);
    }
}
