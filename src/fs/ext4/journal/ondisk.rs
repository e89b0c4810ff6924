//! jbd2 on-disk structures (all big-endian): the journal superblock, the block
//! header every log control block starts with, commit blocks, revoke blocks and
//! descriptor block tags, with the checksums each carries. Field names follow
//! include/linux/jbd2.h.
//!
//! This module decodes and checks single blocks. Walking the log, deciding what a
//! failed check means and keeping state between blocks belong to the replayer.

use crate::fs::codec::{be_u32, be_u64};
use crate::fs::ext4::csum::crc32c_raw;

/// The first four bytes of every jbd2 control block.
pub const JBD2_MAGIC_NUMBER: u32 = 0xC03B_3998;

/// `h_blocktype` values.
pub mod blocktype {
    pub const DESCRIPTOR: u32 = 1;
    pub const COMMIT: u32 = 2;
    pub const SUPERBLOCK_V1: u32 = 3;
    pub const SUPERBLOCK_V2: u32 = 4;
    pub const REVOKE: u32 = 5;
    /// Fast-commit blocks carry no jbd2 header; the value is reserved.
    pub const FC: u32 = 6;
}

/// Journal feature bits (`s_feature_*`); only version 2 superblocks have them.
pub mod feature {
    pub const COMPAT_CHECKSUM: u32 = 0x1;

    pub const INCOMPAT_REVOKE: u32 = 0x1;
    pub const INCOMPAT_64BIT: u32 = 0x2;
    pub const INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
    pub const INCOMPAT_CSUM_V2: u32 = 0x8;
    pub const INCOMPAT_CSUM_V3: u32 = 0x10;
    pub const INCOMPAT_FAST_COMMIT: u32 = 0x20;

    /// Every incompatible feature this replayer understands (the kernel's
    /// JBD2_KNOWN_INCOMPAT_FEATURES).
    pub const INCOMPAT_KNOWN: u32 = INCOMPAT_REVOKE
        | INCOMPAT_64BIT
        | INCOMPAT_ASYNC_COMMIT
        | INCOMPAT_CSUM_V2
        | INCOMPAT_CSUM_V3
        | INCOMPAT_FAST_COMMIT;
    /// The kernel knows no read-only-compatible journal feature.
    pub const RO_COMPAT_KNOWN: u32 = 0;
}

/// Descriptor tag flags (`t_flags`).
pub mod tag_flag {
    /// The logged copy had its first four bytes zeroed because they were the
    /// jbd2 magic; replay puts the magic back.
    pub const ESCAPE: u16 = 1;
    /// No UUID follows this tag.
    pub const SAME_UUID: u16 = 2;
    /// Set by old writers on blocks freed in the transaction; recovery ignores it.
    pub const DELETED: u16 = 4;
    pub const LAST_TAG: u16 = 8;
}

/// `s_checksum_type` for crc32c, the only type csum v2/v3 use.
pub const JBD2_CRC32C_CHKSUM: u8 = 4;
/// `h_chksum_type` / `h_chksum_size` of a checksum v1 commit block.
pub const JBD2_CRC32_CHKSUM: u8 = 1;
pub const JBD2_CRC32_CHKSUM_SIZE: u8 = 4;
/// The smallest journal the kernel accepts (JBD2_MIN_JOURNAL_BLOCKS).
pub const JBD2_MIN_JOURNAL_BLOCKS: u32 = 1024;
/// Fast-commit blocks when `s_num_fc_blks` is 0.
pub const JBD2_DEFAULT_FAST_COMMIT_BLOCKS: u32 = 256;
/// Bytes of `journal_header_t`.
pub const HEADER_SIZE: usize = 12;
/// Bytes of `jbd2_journal_revoke_header_t`.
pub const REVOKE_HEADER_SIZE: usize = 16;
/// Bytes of `struct jbd2_journal_block_tail`.
pub const TAIL_SIZE: usize = 4;
/// Bytes of the per-filesystem UUID that follows a tag without SAME_UUID.
pub const TAG_UUID_SIZE: usize = 16;

crate::ondisk_struct! {
    /// `journal_superblock_t`, the first block of the journal (first 1024 bytes).
    pub struct JournalSuperblock: 1024, be {
        h_magic: u32 = 0x0,
        h_blocktype: u32 = 0x4,
        h_sequence: u32 = 0x8,
        s_blocksize: u32 = 0xC,
        s_maxlen: u32 = 0x10,
        s_first: u32 = 0x14,
        s_sequence: u32 = 0x18,
        s_start: u32 = 0x1C,
        s_errno: i32 = 0x20,
        s_feature_compat: u32 = 0x24,
        s_feature_incompat: u32 = 0x28,
        s_feature_ro_compat: u32 = 0x2C,
        s_uuid: [u8; 16] = 0x30,
        s_nr_users: u32 = 0x40,
        s_dynsuper: u32 = 0x44,
        s_max_transaction: u32 = 0x48,
        s_max_trans_data: u32 = 0x4C,
        s_checksum_type: u8 = 0x50,
        s_padding2: [u8; 3] = 0x51,
        s_num_fc_blks: u32 = 0x54,
        s_head: u32 = 0x58,
        s_checksum: u32 = 0xFC,
        s_users: [u8; 768] = 0x100,
    }
}

crate::ondisk_struct! {
    /// `journal_header_t`, the start of every descriptor, commit and revoke block.
    pub struct JournalHeader: 12, be {
        h_magic: u32 = 0x0,
        h_blocktype: u32 = 0x4,
        h_sequence: u32 = 0x8,
    }
}

crate::ondisk_struct! {
    /// `struct commit_header` (its size with padding is 64 bytes).
    pub struct CommitHeader: 64, be {
        h_magic: u32 = 0x0,
        h_blocktype: u32 = 0x4,
        h_sequence: u32 = 0x8,
        h_chksum_type: u8 = 0xC,
        h_chksum_size: u8 = 0xD,
        h_padding: [u8; 2] = 0xE,
        h_chksum: [u32; 8] = 0x10,
        h_commit_sec: u64 = 0x30,
        h_commit_nsec: u32 = 0x38,
    }
}

/// Offset of `h_chksum[0]` in a commit block.
const COMMIT_CHKSUM_OFFSET: usize = 0x10;
/// Offset of `s_checksum` in the journal superblock.
const SB_CHECKSUM_OFFSET: usize = 0xFC;

impl JournalSuperblock {
    /// Version 1 superblocks have no feature fields: read them as zero.
    pub fn is_v2(&self) -> bool {
        self.h_blocktype == blocktype::SUPERBLOCK_V2
    }

    pub fn compat(&self) -> u32 {
        if self.is_v2() {
            self.s_feature_compat
        } else {
            0
        }
    }

    pub fn incompat(&self) -> u32 {
        if self.is_v2() {
            self.s_feature_incompat
        } else {
            0
        }
    }

    pub fn ro_compat(&self) -> u32 {
        if self.is_v2() {
            self.s_feature_ro_compat
        } else {
            0
        }
    }

    /// Feature names as dumpe2fs prints them ("journal_64bit", ...).
    pub fn feature_names(&self) -> Vec<String> {
        let mut v = Vec::new();
        let compat = self.compat();
        let incompat = self.incompat();
        if compat & feature::COMPAT_CHECKSUM != 0 {
            v.push("journal_checksum".to_string());
        }
        for (bit, name) in [
            (feature::INCOMPAT_REVOKE, "journal_incompat_revoke"),
            (feature::INCOMPAT_64BIT, "journal_64bit"),
            (feature::INCOMPAT_ASYNC_COMMIT, "journal_async_commit"),
            (feature::INCOMPAT_CSUM_V2, "journal_checksum_v2"),
            (feature::INCOMPAT_CSUM_V3, "journal_checksum_v3"),
            (feature::INCOMPAT_FAST_COMMIT, "journal_fast_commit"),
        ] {
            if incompat & bit != 0 {
                v.push(name.to_string());
            }
        }
        let unknown = incompat & !feature::INCOMPAT_KNOWN;
        for i in 0..32 {
            if unknown & (1 << i) != 0 {
                v.push(format!("journal_incompat_{i}"));
            }
        }
        v
    }

    /// The superblock checksum: crc32c over the 1024 bytes with `s_checksum`
    /// zeroed, seeded with ~0 (fs/jbd2/journal.c: jbd2_superblock_csum).
    pub fn compute_checksum(raw: &[u8; 1024]) -> u32 {
        let c = crc32c_raw(!0, &raw[..SB_CHECKSUM_OFFSET]);
        let c = crc32c_raw(c, &[0; 4]);
        crc32c_raw(c, &raw[SB_CHECKSUM_OFFSET + 4..])
    }
}

/// Which checksum scheme the log uses; they are mutually exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsumKind {
    None,
    /// COMPAT_CHECKSUM: a big-endian crc32 over each transaction's descriptor and
    /// data blocks, stored in its commit block.
    V1,
    /// crc32c per block; tags keep the low 16 bits of the data checksum.
    V2,
    /// crc32c per block; tags keep all 32 bits.
    V3,
}

/// What the log's layout depends on, decoded once from a validated superblock.
#[derive(Debug, Clone, Copy)]
pub struct LogFormat {
    pub block_size: usize,
    pub csum: CsumKind,
    pub bit64: bool,
    /// crc32c of the journal UUID from ~0, the seed of every v2/v3 checksum.
    pub csum_seed: u32,
}

/// One descriptor tag, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub blocknr: u64,
    pub flags: u16,
    /// The stored data checksum (16 bits with v2, 32 with v3, 0 otherwise).
    pub checksum: u32,
}

impl LogFormat {
    pub fn has_tail(&self) -> bool {
        matches!(self.csum, CsumKind::V2 | CsumKind::V3)
    }

    /// Bytes per tag, before the optional UUID (include/linux/jbd2.h:
    /// journal_tag_bytes): `journal_block_tag3_t` with v3, otherwise
    /// `journal_block_tag_t` shortened by the fields the features leave out.
    pub fn tag_bytes(&self) -> usize {
        if self.csum == CsumKind::V3 {
            return 16;
        }
        let mut n = 12;
        if self.csum == CsumKind::V2 {
            n += 2;
        }
        if !self.bit64 {
            n -= 4;
        }
        n
    }

    /// Usable bytes of a descriptor or revoke block (the tail checksum excluded).
    fn usable(&self) -> usize {
        if self.has_tail() {
            self.block_size - TAIL_SIZE
        } else {
            self.block_size
        }
    }

    /// The tags of a descriptor block, in log order. Their count is bounded by
    /// the block size, whatever the flags say.
    pub fn tags(&self, block: &[u8]) -> Vec<Tag> {
        let size = self.usable().min(block.len());
        let tb = self.tag_bytes();
        let mut out = Vec::new();
        let mut off = HEADER_SIZE;
        while off + tb <= size {
            let t = &block[off..off + tb];
            // In both tag layouts the flags' low 16 bits sit at bytes 6..8 (tag3
            // stores t_flags as a be32 at 4..8), which is how recovery reads them.
            let lo = be_u32(t, 0).unwrap_or(0);
            let flags = be_u16(t, 6).unwrap_or(0);
            let hi = if self.bit64 {
                be_u32(t, 8).unwrap_or(0)
            } else {
                0
            };
            let checksum = match self.csum {
                CsumKind::V3 => be_u32(t, 12).unwrap_or(0),
                CsumKind::V2 => u32::from(be_u16(t, 4).unwrap_or(0)),
                _ => 0,
            };
            out.push(Tag {
                blocknr: (u64::from(hi) << 32) | u64::from(lo),
                flags,
                checksum,
            });
            off += tb;
            if flags & tag_flag::SAME_UUID == 0 {
                off += TAG_UUID_SIZE;
            }
            if flags & tag_flag::LAST_TAG != 0 {
                break;
            }
        }
        out
    }

    /// The checksum a tag should carry for `data` (the block as logged, still
    /// escaped) in transaction `sequence`, truncated as the tag stores it.
    pub fn tag_checksum(&self, sequence: u32, data: &[u8]) -> u32 {
        let c = crc32c_raw(self.csum_seed, &sequence.to_be_bytes());
        let c = crc32c_raw(c, data);
        match self.csum {
            CsumKind::V2 => c & 0xFFFF,
            _ => c,
        }
    }

    /// Checks the tail checksum of a descriptor or revoke block: crc32c over the
    /// block with the tail zeroed. Returns (stored, computed).
    pub fn tail_checksum(&self, block: &[u8]) -> (u32, u32) {
        let end = self.block_size.min(block.len());
        let body = end.saturating_sub(TAIL_SIZE);
        let stored = be_u32(block, body).unwrap_or(0);
        let c = crc32c_raw(self.csum_seed, &block[..body]);
        (stored, crc32c_raw(c, &[0; TAIL_SIZE]))
    }

    /// Checks a v2/v3 commit block: crc32c over the block with `h_chksum[0]`
    /// zeroed. Some kernels checksummed a commit block whose tail was not yet
    /// cleared as if it held only the header followed by zeros; that form is
    /// accepted too (fs/jbd2/recovery.c: jbd2_commit_block_csum_verify_partial).
    /// Returns (stored, computed over the whole block, matches either form).
    pub fn commit_checksum(&self, block: &[u8]) -> (u32, u32, bool) {
        let end = self.block_size.min(block.len());
        let stored = be_u32(block, COMMIT_CHKSUM_OFFSET).unwrap_or(0);
        let head = COMMIT_CHKSUM_OFFSET.min(end);
        let c = crc32c_raw(self.csum_seed, &block[..head]);
        let c = crc32c_raw(c, &[0; 4]);
        let full = crc32c_raw(c, block.get(COMMIT_CHKSUM_OFFSET + 4..end).unwrap_or(&[]));
        if full == stored {
            return (stored, full, true);
        }
        let hdr_end = CommitHeader::SIZE.min(end);
        let p = crc32c_raw(
            c,
            block.get(COMMIT_CHKSUM_OFFSET + 4..hdr_end).unwrap_or(&[]),
        );
        let p = crc32c_zeros(p, end.saturating_sub(hdr_end));
        (stored, full, p == stored)
    }

    /// Revoked block numbers in a revoke block whose `r_count` is already known
    /// to fit the block.
    pub fn revoke_records<'b>(
        &self,
        block: &'b [u8],
        r_count: usize,
    ) -> impl Iterator<Item = u64> + 'b {
        let rec = if self.bit64 { 8 } else { 4 };
        let end = r_count.min(block.len());
        let n = end.saturating_sub(REVOKE_HEADER_SIZE) / rec;
        (0..n).map(move |i| {
            let off = REVOKE_HEADER_SIZE + i * rec;
            if rec == 8 {
                be_u64(block, off).unwrap_or(0)
            } else {
                u64::from(be_u32(block, off).unwrap_or(0))
            }
        })
    }

    /// The largest `r_count` a revoke block may claim (fs/jbd2/recovery.c:
    /// scan_revoke_records refuses more).
    pub fn max_r_count(&self) -> usize {
        self.usable()
    }
}

/// Read a big-endian u16 at `off`, or `None` past the slice's end.
fn be_u16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}

/// Continue a raw crc32c over `n` zero bytes.
fn crc32c_zeros(mut c: u32, mut n: usize) -> u32 {
    const Z: [u8; 256] = [0; 256];
    while n > 0 {
        let k = n.min(Z.len());
        c = crc32c_raw(c, &Z[..k]);
        n -= k;
    }
    c
}

/// The big-endian (MSB-first) CRC-32 with polynomial 0x04C11DB7, without pre- or
/// post-inversion: the kernel's `crc32_be`, which checksum v1 commit blocks use.
pub fn crc32_be(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        let idx = ((crc >> 24) ^ u32::from(b)) & 0xFF;
        crc = (crc << 8) ^ CRC32_BE_TABLE[idx as usize];
    }
    crc
}

const CRC32_BE_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04C1_1DB7
            } else {
                c << 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Decode the header of a log block (`block` is at least 12 bytes long).
pub fn header(block: &[u8]) -> Option<JournalHeader> {
    let raw: &[u8; 12] = block.get(..HEADER_SIZE)?.try_into().ok()?;
    Some(JournalHeader::decode(raw))
}

/// Decode the commit header of a commit block (`block` is at least 64 bytes long).
pub fn commit_header(block: &[u8]) -> Option<CommitHeader> {
    let raw: &[u8; 64] = block.get(..CommitHeader::SIZE)?.try_into().ok()?;
    Some(CommitHeader::decode(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(csum: CsumKind, bit64: bool) -> LogFormat {
        LogFormat {
            block_size: 1024,
            csum,
            bit64,
            csum_seed: 0x1234_5678,
        }
    }

    #[test]
    fn tag_sizes_follow_the_features() {
        assert_eq!(fmt(CsumKind::None, false).tag_bytes(), 8);
        assert_eq!(fmt(CsumKind::None, true).tag_bytes(), 12);
        assert_eq!(fmt(CsumKind::V1, false).tag_bytes(), 8);
        assert_eq!(fmt(CsumKind::V2, false).tag_bytes(), 10);
        assert_eq!(fmt(CsumKind::V2, true).tag_bytes(), 14);
        assert_eq!(fmt(CsumKind::V3, false).tag_bytes(), 16);
        assert_eq!(fmt(CsumKind::V3, true).tag_bytes(), 16);
    }

    #[test]
    fn crc32_be_known_value() {
        // CRC-32/MPEG-2 (init ~0, MSB-first, no final xor) of "123456789".
        assert_eq!(crc32_be(!0, b"123456789"), 0x0376_E6E7);
        let a = crc32_be(!0, b"1234");
        assert_eq!(crc32_be(a, b"56789"), 0x0376_E6E7);
    }

    #[test]
    fn tags_stop_at_last_tag_and_at_the_block_end() {
        let f = fmt(CsumKind::V3, true);
        let mut b = vec![0u8; 1024];
        // First tag carries a UUID (no SAME_UUID), second is the last.
        b[12..16].copy_from_slice(&7u32.to_be_bytes());
        b[20..24].copy_from_slice(&1u32.to_be_bytes()); // high word
        b[24..28].copy_from_slice(&0xAABB_CCDDu32.to_be_bytes());
        let t2 = 12 + 16 + 16;
        b[t2..t2 + 4].copy_from_slice(&9u32.to_be_bytes());
        b[t2 + 4..t2 + 8]
            .copy_from_slice(&u32::from(tag_flag::SAME_UUID | tag_flag::LAST_TAG).to_be_bytes());
        let tags = f.tags(&b);
        assert_eq!(
            tags,
            vec![
                Tag {
                    blocknr: (1 << 32) | 7,
                    flags: 0,
                    checksum: 0xAABB_CCDD
                },
                Tag {
                    blocknr: 9,
                    flags: tag_flag::SAME_UUID | tag_flag::LAST_TAG,
                    checksum: 0
                }
            ]
        );
        // Without a LAST_TAG the walk ends where the next tag would not fit
        // before the tail: (1024 - 4 - 12) / 16 tags with SAME_UUID everywhere.
        let mut b = vec![0u8; 1024];
        let mut off = 12;
        while off + 16 <= 1020 {
            b[off + 4..off + 8].copy_from_slice(&u32::from(tag_flag::SAME_UUID).to_be_bytes());
            off += 16;
        }
        assert_eq!(f.tags(&b).len(), (1024 - 4 - 12) / 16);
    }

    #[test]
    fn partial_commit_checksum_is_accepted() {
        let f = fmt(CsumKind::V3, false);
        let mut b = vec![0u8; 1024];
        b[..4].copy_from_slice(&JBD2_MAGIC_NUMBER.to_be_bytes());
        b[4..8].copy_from_slice(&blocktype::COMMIT.to_be_bytes());
        // Checksum computed over the header and zeros, then garbage after it.
        let c = crc32c_raw(f.csum_seed, &b);
        b[16..20].copy_from_slice(&c.to_be_bytes());
        assert!(f.commit_checksum(&b).2);
        b[500] = 1;
        let (stored, computed, ok) = f.commit_checksum(&b);
        assert!(ok, "header-only form");
        assert_ne!(stored, computed);
        b[40] = 1; // inside the header: now neither form matches
        assert!(!f.commit_checksum(&b).2);
    }
}
