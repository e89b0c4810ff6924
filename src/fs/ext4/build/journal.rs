//! A fresh, empty jbd2 journal superblock (big-endian, `journal_superblock_t` in
//! include/linux/jbd2.h) for the journal inode the builder creates. Every other
//! journal block is left a hole: an empty journal reads as zeros past its
//! superblock, which is what mke2fs writes too.
//!
//! Replaying journals is not this module's business (see `ext4::journal`).

use crate::fs::ext4::csum::crc32c_raw;

pub const JBD2_MAGIC: u32 = 0xC03B_3998;
pub const JBD2_SUPERBLOCK_V2: u32 = 4;
pub const JBD2_CRC32C_CHKSUM: u8 = 4;
/// Journal features.
pub mod features {
    pub const COMPAT_CHECKSUM: u32 = 0x1;
    pub const INCOMPAT_REVOKE: u32 = 0x1;
    pub const INCOMPAT_64BIT: u32 = 0x2;
    pub const INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
    pub const INCOMPAT_CSUM_V2: u32 = 0x8;
    pub const INCOMPAT_CSUM_V3: u32 = 0x10;
    pub const INCOMPAT_FAST_COMMIT: u32 = 0x20;
    /// Incompatible features the builder knows how to describe.
    pub const INCOMPAT_KNOWN: u32 = INCOMPAT_REVOKE
        | INCOMPAT_64BIT
        | INCOMPAT_ASYNC_COMMIT
        | INCOMPAT_CSUM_V2
        | INCOMPAT_CSUM_V3
        | INCOMPAT_FAST_COMMIT;
}

crate::ondisk_struct! {
    /// `journal_superblock_t` through its checksum (users follow at 0x100).
    pub struct JournalSuperblock: 1024, be {
        h_magic: u32 = 0x0,
        h_blocktype: u32 = 0x4,
        h_sequence: u32 = 0x8,
        s_blocksize: u32 = 0xC,
        s_maxlen: u32 = 0x10,
        s_first: u32 = 0x14,
        s_sequence: u32 = 0x18,
        s_start: u32 = 0x1C,
        s_errno: u32 = 0x20,
        s_feature_compat: u32 = 0x24,
        s_feature_incompat: u32 = 0x28,
        s_feature_ro_compat: u32 = 0x2C,
        s_uuid: [u8; 16] = 0x30,
        s_nr_users: u32 = 0x40,
        s_dynsuper: u32 = 0x44,
        s_max_transaction: u32 = 0x48,
        s_max_trans_data: u32 = 0x4C,
        s_checksum_type: u8 = 0x50,
        s_num_fc_blks: u32 = 0x54,
        s_head: u32 = 0x58,
        s_checksum: u32 = 0xFC,
        s_users: [u8; 16] = 0x100,
    }
}

/// What the new journal looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalSpec {
    /// Total journal blocks, fast-commit area included (the journal inode's size).
    pub blocks: u32,
    /// Blocks of the fast-commit area at the journal's end.
    pub fc_blocks: u32,
    pub feature_compat: u32,
    pub feature_incompat: u32,
    pub feature_ro_compat: u32,
    /// `s_max_transaction` and `s_max_trans_data` (0 lets the kernel choose).
    pub max_transaction: u32,
    pub max_trans_data: u32,
}

/// The journal superblock block (`bs` bytes) for a filesystem with `uuid`.
pub fn superblock_block(spec: &JournalSpec, bs: u32, uuid: [u8; 16]) -> Vec<u8> {
    let csum =
        spec.feature_incompat & (features::INCOMPAT_CSUM_V2 | features::INCOMPAT_CSUM_V3) != 0;
    let mut sb = JournalSuperblock {
        h_magic: JBD2_MAGIC,
        h_blocktype: JBD2_SUPERBLOCK_V2,
        h_sequence: 0,
        s_blocksize: bs,
        s_maxlen: spec.blocks,
        s_first: 1,
        // An empty journal: the next transaction gets sequence 1, s_start 0 says
        // there is nothing to replay.
        s_sequence: 1,
        s_start: 0,
        s_errno: 0,
        s_feature_compat: spec.feature_compat,
        s_feature_incompat: spec.feature_incompat,
        s_feature_ro_compat: spec.feature_ro_compat,
        s_uuid: uuid,
        s_nr_users: 1,
        s_dynsuper: 0,
        s_max_transaction: spec.max_transaction,
        s_max_trans_data: spec.max_trans_data,
        s_checksum_type: if csum { JBD2_CRC32C_CHKSUM } else { 0 },
        s_num_fc_blks: spec.fc_blocks,
        s_head: 0,
        s_checksum: 0,
        s_users: [0; 16],
    };
    if csum {
        // jbd2_superblock_csum: crc32c of the 1024-byte superblock with the
        // checksum field zero.
        sb.s_checksum = crc32c_raw(!0, &sb.to_bytes());
    }
    let mut b = vec![0u8; bs as usize];
    b[..1024].copy_from_slice(&sb.to_bytes());
    b
}
