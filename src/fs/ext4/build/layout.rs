//! Geometry of the filesystem being built: how many groups, where each group's
//! superblock backup, descriptor blocks (classic or meta_bg), reserved GDT blocks,
//! bitmaps and inode table go. Placement follows libext2fs's
//! `ext2fs_allocate_group_table` (flex_bg packing at the start of each flex group),
//! so a built filesystem looks like one mke2fs made and resize2fs finds what it
//! expects.
//!
//! It decides nothing about inodes or data; it hands the builder an [`Alloc`]
//! with the fixed metadata already reserved.

use super::alloc::Alloc;
use crate::error::{Error, Result};
use crate::fs::ext4::superblock::{compat, incompat, Superblock};

/// Where one group's bitmaps and inode table are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupTables {
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
}

/// The shape of the filesystem, derived from a target superblock.
#[derive(Debug, Clone)]
pub struct Geometry {
    pub bs: u64,
    pub blocks: u64,
    /// `s_first_data_block`.
    pub first: u64,
    pub bpg: u64,
    pub ipg: u64,
    pub groups: u64,
    /// Inode table blocks per group.
    pub itb: u64,
    pub desc_size: u64,
    pub desc_per_block: u64,
    /// Blocks the whole descriptor table takes.
    pub desc_blocks: u64,
    pub reserved_gdt: u64,
    pub meta_bg: bool,
    pub first_meta_bg: u64,
    /// Groups per flex group (1 without flex_bg).
    pub flex: u64,
}

impl Geometry {
    /// The geometry of `sb` (whose block and inode counts are already the
    /// target's).
    pub fn new(sb: &Superblock) -> Result<Self> {
        let bs = u64::from(sb.block_size());
        let blocks = sb.blocks_count();
        let first = u64::from(sb.s_first_data_block);
        let bpg = u64::from(sb.s_blocks_per_group);
        let ipg = u64::from(sb.s_inodes_per_group);
        let inode_size = u64::from(sb.inode_size());
        let groups = sb.group_count();
        let desc_size = sb.desc_size() as u64;
        let desc_per_block = bs / desc_size;
        let desc_blocks = groups.div_ceil(desc_per_block);
        let meta_bg = sb.has_incompat(incompat::META_BG);
        let reserved_gdt = if sb.has_compat(compat::RESIZE_INODE) {
            u64::from(sb.s_reserved_gdt_blocks)
        } else {
            0
        };
        let flex = if sb.has_incompat(incompat::FLEX_BG) && sb.s_log_groups_per_flex > 0 {
            1u64 << sb.s_log_groups_per_flex.min(31)
        } else {
            1
        };
        let g = Geometry {
            bs,
            blocks,
            first,
            bpg,
            ipg,
            groups,
            itb: (ipg * inode_size).div_ceil(bs),
            desc_size,
            desc_per_block,
            desc_blocks,
            reserved_gdt,
            meta_bg,
            first_meta_bg: if meta_bg {
                u64::from(sb.s_first_meta_bg).min(desc_blocks)
            } else {
                0
            },
            flex,
        };
        if !meta_bg && 1 + desc_blocks + reserved_gdt + 2 + g.itb > bpg {
            return Err(Error::unsupported(format!(
                "ext4 geometry: {desc_blocks} descriptor blocks and {reserved_gdt} reserved GDT blocks do not fit a {bpg}-block group (the source would need meta_bg at this size)"
            )));
        }
        Ok(g)
    }

    pub fn group_first(&self, g: u64) -> u64 {
        self.first + g * self.bpg
    }

    /// One past the last block of group `g`.
    pub fn group_end(&self, g: u64) -> u64 {
        (self.group_first(g) + self.bpg).min(self.blocks)
    }

    pub fn group_of(&self, block: u64) -> u64 {
        (block - self.first) / self.bpg
    }

    /// Descriptor blocks in the classic table (those copied after every
    /// superblock): all of them without meta_bg, `s_first_meta_bg` with it.
    pub fn old_desc_blocks(&self) -> u64 {
        if self.meta_bg {
            self.first_meta_bg
        } else {
            self.desc_blocks
        }
    }

    /// The superblock, descriptor and reserved GDT blocks of group `g`, as
    /// `(start, len)` ranges (libext2fs `ext2fs_super_and_bgd_loc2`).
    pub fn base_meta(&self, sb: &Superblock, g: u64) -> Vec<(u64, u64)> {
        let mut v = Vec::new();
        let start = self.group_first(g);
        let has_super = sb.group_has_super(g);
        if has_super {
            v.push((start, 1));
        }
        let meta_group = g / self.desc_per_block;
        if !self.meta_bg || meta_group < self.first_meta_bg {
            if has_super {
                let n = self.old_desc_blocks() + self.reserved_gdt;
                let n = n.min(self.blocks.saturating_sub(start + 1));
                if n > 0 {
                    v.push((start + 1, n));
                }
            }
        } else {
            let r = g % self.desc_per_block;
            if r == 0 || r == 1 || r == self.desc_per_block - 1 {
                v.push((start + u64::from(has_super), 1));
            }
        }
        v
    }

    /// Where copies of descriptor block `i` live (the first one is the primary).
    pub fn desc_block_copies(&self, sb: &Superblock, i: u64) -> Vec<u64> {
        let mut v = Vec::new();
        if !self.meta_bg || i < self.first_meta_bg {
            let last_group = if self.meta_bg {
                (self.first_meta_bg * self.desc_per_block).min(self.groups)
            } else {
                self.groups
            };
            for g in 0..last_group {
                if sb.group_has_super(g) {
                    v.push(self.group_first(g) + 1 + i);
                }
            }
        } else {
            let base = i * self.desc_per_block;
            for g in [base, base + 1, base + self.desc_per_block - 1] {
                if g < self.groups {
                    v.push(self.group_first(g) + u64::from(sb.group_has_super(g)));
                }
            }
        }
        v
    }

    /// Blocks the fixed metadata of the whole filesystem takes (superblocks,
    /// descriptors, reserved GDT, bitmaps, inode tables), without placing it.
    pub fn fixed_overhead(&self, sb: &Superblock) -> u64 {
        let mut n = 0;
        for g in 0..self.groups {
            n += self.base_meta(sb, g).iter().map(|r| r.1).sum::<u64>();
            n += 2 + self.itb;
        }
        n
    }

    /// Reserve every group's base metadata and place the bitmaps and inode
    /// tables. Returns the allocator and each group's tables.
    pub fn place(&self, sb: &Superblock) -> Result<(Alloc, Vec<GroupTables>)> {
        // Block 0 of a 1 KiB-block filesystem is the boot block: it belongs to no
        // group and the allocator never hands it out.
        let mut a = Alloc::new(self.first, self.blocks);
        for g in 0..self.groups {
            for (s, n) in self.base_meta(sb, g) {
                a.reserve(s, n)?;
            }
        }
        let mut t = vec![GroupTables::default(); self.groups as usize];
        for g in 0..self.groups {
            let tables = self.place_group(&mut a, &t, g)?;
            t[g as usize] = tables;
        }
        Ok((a, t))
    }

    fn flexbg_offset(&self, a: &Alloc, g: u64, start: u64, rem: u64, elem: u64) -> u64 {
        let flexbg = g / self.flex;
        let size = (rem * elem).min(self.bpg / 4);
        if start != 0 && start < self.blocks {
            if let Some(b) = a.find(start, start + size, elem) {
                return b;
            }
        }
        let start = self.group_first(self.flex * flexbg);
        let last_grp = (g | (self.flex - 1)).min(self.groups - 1);
        let last_blk = self.group_end(last_grp) - 1;
        a.find(start, last_blk, size)
            .or_else(|| a.find(start, last_blk, elem))
            .or_else(|| a.find(0, last_blk, elem))
            .unwrap_or(0)
    }

    fn place_group(&self, a: &mut Alloc, done: &[GroupTables], g: u64) -> Result<GroupTables> {
        let group_blk = self.group_first(g);
        let mut last_blk = self.group_end(g) - 1;
        let mut start_blk = group_blk;
        let flex = self.flex > 1;
        let (mut rem, mut table_offset, mut last_grp) = (0, 0, 0);
        let prev = |f: fn(&GroupTables) -> u64| f(&done[(g - 1) as usize]);
        if flex {
            last_grp = (g | (self.flex - 1)).min(self.groups - 1);
            rem = last_grp - g + 1;
            table_offset = self.flex;
            let mut prev_block = 0;
            if !g.is_multiple_of(self.flex) {
                prev_block = prev(|t| t.block_bitmap) + 1;
            } else if last_grp == self.groups - 1 {
                // The last flex group keeps its tables contiguous.
                table_offset = last_grp & (self.flex - 1);
                table_offset = if table_offset == 0 {
                    self.flex
                } else {
                    table_offset + 1
                };
            }
            start_blk = self.flexbg_offset(a, g, prev_block, rem, 1);
            last_blk = self.group_end(last_grp) - 1;
        }
        let no_room = |what: &str| {
            Error::unsupported(format!(
                "ext4 geometry: no room for group {g}'s {what} (too many inodes per group for this size)"
            ))
        };
        let bb = a
            .find(start_blk, last_blk, 1)
            .or_else(|| a.find(group_blk, last_blk, 1))
            .ok_or_else(|| no_room("block bitmap"))?;
        a.reserve(bb, 1)?;

        if flex {
            let prev_block = if !g.is_multiple_of(self.flex) {
                prev(|t| t.inode_bitmap) + 1
            } else {
                bb + table_offset
            };
            start_blk = self.flexbg_offset(a, g, prev_block, rem, 1);
            last_blk = self.group_end(last_grp) - 1;
        }
        let ib = a
            .find(start_blk, last_blk, 1)
            .or_else(|| a.find(group_blk, last_blk, 1))
            .ok_or_else(|| no_room("inode bitmap"))?;
        a.reserve(ib, 1)?;

        let mut table_start = group_blk;
        if flex {
            let prev_block = if !g.is_multiple_of(self.flex) {
                prev(|t| t.inode_table) + self.itb
            } else {
                ib + table_offset
            };
            table_start = self.flexbg_offset(a, g, prev_block, rem, self.itb);
            last_blk = self.group_end(last_grp) - 1;
        }
        let it = a
            .find(table_start, last_blk, self.itb)
            .ok_or_else(|| no_room("inode table"))?;
        a.reserve(it, self.itb)?;
        if !flex
            && (bb >= self.group_end(g)
                || ib >= self.group_end(g)
                || it + self.itb > self.group_end(g))
        {
            return Err(no_room("tables inside the group"));
        }
        Ok(GroupTables {
            block_bitmap: bb,
            inode_bitmap: ib,
            inode_table: it,
        })
    }
}
