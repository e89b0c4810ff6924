//! The resize inode (inode 7, resize_inode feature): a double-indirect map whose
//! "indirect blocks" are the primary reserved GDT blocks, each listing its backup
//! copies in the groups that hold superblock backups. Online growth (resize2fs on
//! a mounted filesystem, as cloud guests do at first boot) turns reserved GDT
//! blocks into descriptor blocks through this map, and e2fsck
//! (`check_resize_inode`) insists on its exact shape, which is libext2fs's
//! `ext2fs_create_resize_inode`.

use super::layout::Geometry;
use crate::fs::ext4::superblock::Superblock;

/// The resize inode's blocks, ready to write.
pub struct ResizeInode {
    /// The double-indirect block and its content.
    pub dind: (u64, Vec<u8>),
    /// Primary reserved GDT blocks and their contents (lists of backups).
    pub primaries: Vec<(u64, Vec<u8>)>,
    /// `i_blocks` in 512-byte units.
    pub blocks_512: u64,
    /// `i_size`.
    pub size: u64,
}

/// Build the resize inode's map for geometry `geo` with its double-indirect
/// block at `dind`.
pub fn build(sb: &Superblock, geo: &Geometry, dind: u64) -> ResizeInode {
    let bs = geo.bs as usize;
    let apb = geo.bs / 4;
    let sb_blk = geo.first;
    let mut dind_buf = vec![0u8; bs];
    let mut primaries = Vec::new();
    let backups: Vec<u64> = (1..geo.groups).filter(|&g| sb.group_has_super(g)).collect();
    let mut blocks = 1u64;
    for rsv in 0..geo.reserved_gdt {
        let gdt_off = ((geo.desc_blocks + rsv) % apb) as usize;
        let pblk = sb_blk + 1 + geo.desc_blocks + rsv;
        dind_buf[4 * gdt_off..4 * gdt_off + 4].copy_from_slice(&(pblk as u32).to_le_bytes());
        let mut list = vec![0u8; bs];
        for (k, &g) in backups.iter().enumerate().take(apb as usize) {
            let expect = pblk + g * geo.bpg;
            list[4 * k..4 * k + 4].copy_from_slice(&(expect as u32).to_le_bytes());
            blocks += 1;
        }
        blocks += 1;
        primaries.push((pblk, list));
    }
    ResizeInode {
        dind: (dind, dind_buf),
        primaries,
        blocks_512: blocks * (geo.bs / 512),
        size: (apb * apb + apb + 12) * geo.bs,
    }
}
