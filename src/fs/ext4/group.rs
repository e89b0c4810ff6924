//! Block group descriptors (32-byte, and 64-byte with the 64bit feature): layout,
//! where the descriptor table lives (including meta_bg), and the descriptor
//! checksum (crc32c with metadata_csum, crc16 with gdt_csum).

use super::csum::{crc16, crc32c_raw};
use super::superblock::{incompat, Superblock};
use crate::error::{Error, Location, Result};

crate::ondisk_struct! {
    /// `struct ext4_group_desc`, always handled as the 64-byte form; the high
    /// halves are zero for 32-byte descriptors.
    pub struct RawGroupDesc: 64, le {
        bg_block_bitmap_lo: u32 = 0x0,
        bg_inode_bitmap_lo: u32 = 0x4,
        bg_inode_table_lo: u32 = 0x8,
        bg_free_blocks_count_lo: u16 = 0xC,
        bg_free_inodes_count_lo: u16 = 0xE,
        bg_used_dirs_count_lo: u16 = 0x10,
        bg_flags: u16 = 0x12,
        bg_exclude_bitmap_lo: u32 = 0x14,
        bg_block_bitmap_csum_lo: u16 = 0x18,
        bg_inode_bitmap_csum_lo: u16 = 0x1A,
        bg_itable_unused_lo: u16 = 0x1C,
        bg_checksum: u16 = 0x1E,
        bg_block_bitmap_hi: u32 = 0x20,
        bg_inode_bitmap_hi: u32 = 0x24,
        bg_inode_table_hi: u32 = 0x28,
        bg_free_blocks_count_hi: u16 = 0x2C,
        bg_free_inodes_count_hi: u16 = 0x2E,
        bg_used_dirs_count_hi: u16 = 0x30,
        bg_itable_unused_hi: u16 = 0x32,
        bg_exclude_bitmap_hi: u32 = 0x34,
        bg_block_bitmap_csum_hi: u16 = 0x38,
        bg_inode_bitmap_csum_hi: u16 = 0x3A,
        bg_reserved: u32 = 0x3C,
    }
}

/// `bg_flags` bits.
pub mod bg_flags {
    pub const INODE_UNINIT: u16 = 0x1;
    pub const BLOCK_UNINIT: u16 = 0x2;
    pub const INODE_ZEROED: u16 = 0x4;
}

/// A group descriptor with its halves joined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupDesc {
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
    pub free_blocks_count: u32,
    pub free_inodes_count: u32,
    pub used_dirs_count: u32,
    pub flags: u16,
    pub exclude_bitmap: u64,
    pub block_bitmap_csum: u32,
    pub inode_bitmap_csum: u32,
    pub itable_unused: u32,
    pub checksum: u16,
}

impl GroupDesc {
    /// Decode one descriptor of `desc_size` bytes (32, or 64.. with 64bit).
    pub fn decode(b: &[u8], is_64bit: bool) -> Self {
        let mut full = [0u8; 64];
        let n = if is_64bit {
            b.len().min(64)
        } else {
            b.len().min(32)
        };
        full[..n].copy_from_slice(&b[..n]);
        let r = RawGroupDesc::decode(&full);
        let hi = |h: u32| u64::from(h) << 32;
        let hi16 = |h: u16| u32::from(h) << 16;
        GroupDesc {
            block_bitmap: hi(r.bg_block_bitmap_hi) | u64::from(r.bg_block_bitmap_lo),
            inode_bitmap: hi(r.bg_inode_bitmap_hi) | u64::from(r.bg_inode_bitmap_lo),
            inode_table: hi(r.bg_inode_table_hi) | u64::from(r.bg_inode_table_lo),
            free_blocks_count: hi16(r.bg_free_blocks_count_hi)
                | u32::from(r.bg_free_blocks_count_lo),
            free_inodes_count: hi16(r.bg_free_inodes_count_hi)
                | u32::from(r.bg_free_inodes_count_lo),
            used_dirs_count: hi16(r.bg_used_dirs_count_hi) | u32::from(r.bg_used_dirs_count_lo),
            flags: r.bg_flags,
            exclude_bitmap: hi(r.bg_exclude_bitmap_hi) | u64::from(r.bg_exclude_bitmap_lo),
            block_bitmap_csum: hi16(r.bg_block_bitmap_csum_hi)
                | u32::from(r.bg_block_bitmap_csum_lo),
            inode_bitmap_csum: hi16(r.bg_inode_bitmap_csum_hi)
                | u32::from(r.bg_inode_bitmap_csum_lo),
            itable_unused: hi16(r.bg_itable_unused_hi) | u32::from(r.bg_itable_unused_lo),
            checksum: r.bg_checksum,
        }
    }

    /// Encode into `out` (`desc_size` bytes), without computing the checksum.
    pub fn encode(&self, out: &mut [u8], is_64bit: bool) {
        let r = RawGroupDesc {
            bg_block_bitmap_lo: self.block_bitmap as u32,
            bg_inode_bitmap_lo: self.inode_bitmap as u32,
            bg_inode_table_lo: self.inode_table as u32,
            bg_free_blocks_count_lo: self.free_blocks_count as u16,
            bg_free_inodes_count_lo: self.free_inodes_count as u16,
            bg_used_dirs_count_lo: self.used_dirs_count as u16,
            bg_flags: self.flags,
            bg_exclude_bitmap_lo: self.exclude_bitmap as u32,
            bg_block_bitmap_csum_lo: self.block_bitmap_csum as u16,
            bg_inode_bitmap_csum_lo: self.inode_bitmap_csum as u16,
            bg_itable_unused_lo: self.itable_unused as u16,
            bg_checksum: self.checksum,
            bg_block_bitmap_hi: (self.block_bitmap >> 32) as u32,
            bg_inode_bitmap_hi: (self.inode_bitmap >> 32) as u32,
            bg_inode_table_hi: (self.inode_table >> 32) as u32,
            bg_free_blocks_count_hi: (self.free_blocks_count >> 16) as u16,
            bg_free_inodes_count_hi: (self.free_inodes_count >> 16) as u16,
            bg_used_dirs_count_hi: (self.used_dirs_count >> 16) as u16,
            bg_itable_unused_hi: (self.itable_unused >> 16) as u16,
            bg_exclude_bitmap_hi: (self.exclude_bitmap >> 32) as u32,
            bg_block_bitmap_csum_hi: (self.block_bitmap_csum >> 16) as u16,
            bg_inode_bitmap_csum_hi: (self.inode_bitmap_csum >> 16) as u16,
            bg_reserved: 0,
        };
        let full = r.to_bytes();
        let n = if is_64bit {
            out.len().min(64)
        } else {
            out.len().min(32)
        };
        out[..n].copy_from_slice(&full[..n]);
    }
}

/// The checksum of descriptor `group` whose encoded bytes are `desc` (its own
/// checksum field is ignored). `None` when the filesystem has no descriptor
/// checksums.
pub fn desc_checksum(sb: &Superblock, group: u32, desc: &[u8]) -> Option<u16> {
    if sb.has_metadata_csum() {
        let mut c = crc32c_raw(sb.csum_seed(), &group.to_le_bytes());
        c = crc32c_raw(c, &desc[..0x1E]);
        c = crc32c_raw(c, &[0, 0]);
        if desc.len() > 0x20 {
            c = crc32c_raw(c, &desc[0x20..]);
        }
        Some((c & 0xFFFF) as u16)
    } else if sb.has_group_csum() {
        let mut c = crc16(!0, &sb.s_uuid);
        c = crc16(c, &group.to_le_bytes());
        c = crc16(c, &desc[..0x1E]);
        if desc.len() > 0x20 {
            c = crc16(c, &desc[0x20..]);
        }
        Some(c)
    } else {
        None
    }
}

/// Physical block number holding group descriptor block `i` (0-based index into
/// the descriptor table), honouring meta_bg.
pub fn desc_block(sb: &Superblock, i: u64) -> u64 {
    let first = u64::from(sb.s_first_data_block);
    let per_block = u64::from(sb.block_size()) / sb.desc_size() as u64;
    if !sb.has_incompat(incompat::META_BG) || i < u64::from(sb.s_first_meta_bg) {
        return first + 1 + i;
    }
    // With meta_bg, descriptor block i lives in the first group of its meta group
    // (after that group's superblock backup, if any).
    let group = i * per_block;
    let base = first + group * u64::from(sb.s_blocks_per_group);
    base + u64::from(sb.group_has_super(group))
}

/// Read and verify every group descriptor. `read_block(n, buf)` reads block `n`.
pub fn read_all(
    sb: &Superblock,
    mut read_block: impl FnMut(u64, &mut [u8]) -> Result<()>,
) -> Result<Vec<GroupDesc>> {
    let groups = sb.group_count();
    let ds = sb.desc_size();
    let bs = sb.block_size() as usize;
    let per_block = (bs / ds) as u64;
    let blocks = groups.div_ceil(per_block);
    let count = usize::try_from(groups)
        .map_err(|_| Error::unsupported("more block groups than memory can index"))?;
    let mut out = Vec::new();
    out.try_reserve_exact(count).map_err(|_| {
        Error::corrupt(
            "ext4 superblock",
            Location::Byte(0x400),
            format!("{groups} block groups"),
        )
    })?;
    let mut buf = vec![0u8; bs];
    for i in 0..blocks {
        let blk = desc_block(sb, i);
        if blk >= sb.blocks_count() {
            return Err(Error::corrupt(
                "ext4 group descriptor table",
                Location::Block(blk),
                "outside the filesystem",
            ));
        }
        read_block(blk, &mut buf)?;
        for j in 0..per_block {
            let g = i * per_block + j;
            if g >= groups {
                break;
            }
            let raw = &buf[j as usize * ds..(j as usize + 1) * ds];
            let gd = GroupDesc::decode(raw, sb.is_64bit());
            if let Some(c) = desc_checksum(sb, g as u32, raw) {
                if c != gd.checksum {
                    return Err(Error::checksum(
                        "ext4 group descriptor",
                        Location::Entry(g),
                        u64::from(gd.checksum),
                        u64::from(c),
                    ));
                }
            }
            out.push(gd);
        }
    }
    Ok(out)
}
