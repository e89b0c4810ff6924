//! ext4 on-disk structures below the superblock: the inode, extent tree nodes,
//! directory entries and htree nodes, extended attribute headers, and every
//! metadata checksum computed over them. Field names follow fs/ext4/ext4.h,
//! ext4_extents.h and xattr.h.
//!
//! The reader verifies and the builder computes checksums with these same
//! functions. Parsing logic (walking trees, validating lengths) lives with the
//! reader; layout logic lives with the builder.

use super::csum::crc32c_raw;
use super::superblock::Superblock;

/// Size of the classic inode, before the extra fields.
pub const GOOD_OLD_INODE_SIZE: usize = 128;

crate::ondisk_struct! {
    /// `struct ext4_inode`, through `i_projid`. Bytes past `128 + i_extra_isize`
    /// are not part of the inode's fixed fields (they hold in-inode xattrs); decode
    /// from a buffer where they are zeroed when they do not belong.
    pub struct RawInode: 160, le {
        i_mode: u16 = 0x0,
        i_uid: u16 = 0x2,
        i_size_lo: u32 = 0x4,
        i_atime: u32 = 0x8,
        i_ctime: u32 = 0xC,
        i_mtime: u32 = 0x10,
        i_dtime: u32 = 0x14,
        i_gid: u16 = 0x18,
        i_links_count: u16 = 0x1A,
        i_blocks_lo: u32 = 0x1C,
        i_flags: u32 = 0x20,
        /// `osd1.linux1.l_i_version`.
        l_i_version: u32 = 0x24,
        /// Block map, extent tree root, inline data or fast symlink target.
        i_block: [u8; 60] = 0x28,
        i_generation: u32 = 0x64,
        i_file_acl_lo: u32 = 0x68,
        i_size_high: u32 = 0x6C,
        i_obso_faddr: u32 = 0x70,
        l_i_blocks_high: u16 = 0x74,
        l_i_file_acl_high: u16 = 0x76,
        l_i_uid_high: u16 = 0x78,
        l_i_gid_high: u16 = 0x7A,
        l_i_checksum_lo: u16 = 0x7C,
        l_i_reserved: u16 = 0x7E,
        i_extra_isize: u16 = 0x80,
        i_checksum_hi: u16 = 0x82,
        i_ctime_extra: u32 = 0x84,
        i_mtime_extra: u32 = 0x88,
        i_atime_extra: u32 = 0x8C,
        i_crtime: u32 = 0x90,
        i_crtime_extra: u32 = 0x94,
        i_version_hi: u32 = 0x98,
        i_projid: u32 = 0x9C,
    }
}

/// Inode flags (`i_flags`).
pub mod inode_flags {
    pub const SECRM: u32 = 0x1;
    pub const UNRM: u32 = 0x2;
    pub const COMPR: u32 = 0x4;
    pub const SYNC: u32 = 0x8;
    pub const IMMUTABLE: u32 = 0x10;
    pub const APPEND: u32 = 0x20;
    pub const NODUMP: u32 = 0x40;
    pub const NOATIME: u32 = 0x80;
    pub const INDEX: u32 = 0x1000;
    pub const IMAGIC: u32 = 0x2000;
    pub const JOURNAL_DATA: u32 = 0x4000;
    pub const NOTAIL: u32 = 0x8000;
    pub const DIRSYNC: u32 = 0x10000;
    pub const TOPDIR: u32 = 0x20000;
    pub const HUGE_FILE: u32 = 0x40000;
    pub const EXTENTS: u32 = 0x80000;
    pub const VERITY: u32 = 0x100000;
    pub const EA_INODE: u32 = 0x200000;
    pub const DAX: u32 = 0x2000000;
    pub const INLINE_DATA: u32 = 0x10000000;
    pub const PROJINHERIT: u32 = 0x20000000;
    pub const CASEFOLD: u32 = 0x40000000;
    pub const ENCRYPT: u32 = 0x800;

    /// Flags that describe how the inode is laid out on disk rather than how the
    /// file behaves. A builder decides these itself; they are not cloned.
    pub const STRUCTURAL: u32 = INDEX | HUGE_FILE | EXTENTS | EA_INODE | INLINE_DATA;
}

/// Reserved inode numbers.
pub mod ino {
    pub const BAD_BLOCKS: u32 = 1;
    pub const ROOT: u32 = 2;
    pub const USR_QUOTA: u32 = 3;
    pub const GRP_QUOTA: u32 = 4;
    pub const BOOT_LOADER: u32 = 5;
    pub const UNDEL_DIR: u32 = 6;
    pub const RESIZE: u32 = 7;
    pub const JOURNAL: u32 = 8;
    pub const EXCLUDE: u32 = 9;
    pub const REPLICA: u32 = 10;
}

/// The per-inode checksum seed: crc32c over the inode number and generation,
/// starting from the filesystem's seed. Extent blocks and directory blocks of the
/// inode are checksummed from this seed too.
pub fn inode_csum_seed(sb: &Superblock, inum: u32, generation: u32) -> u32 {
    let c = crc32c_raw(sb.csum_seed(), &inum.to_le_bytes());
    crc32c_raw(c, &generation.to_le_bytes())
}

/// Whether an inode buffer's extra area holds `i_checksum_hi`.
fn has_checksum_hi(raw: &[u8]) -> bool {
    raw.len() > GOOD_OLD_INODE_SIZE && extra_isize(raw) >= 4
}

fn extra_isize(raw: &[u8]) -> usize {
    if raw.len() <= GOOD_OLD_INODE_SIZE {
        return 0;
    }
    usize::from(u16::from_le_bytes([raw[0x80], raw[0x81]]))
}

/// The metadata_csum checksum of an inode (`raw` is the whole on-disk inode,
/// `s_inode_size` bytes). Returns the full 32-bit value; only the low 16 bits are
/// stored when the inode has no room for `i_checksum_hi`.
pub fn inode_checksum(seed: u32, raw: &[u8]) -> u32 {
    let mut c = crc32c_raw(seed, &raw[..0x7C]);
    c = crc32c_raw(c, &[0, 0]);
    c = crc32c_raw(c, &raw[0x7E..GOOD_OLD_INODE_SIZE.min(raw.len())]);
    if raw.len() > GOOD_OLD_INODE_SIZE {
        c = crc32c_raw(c, &raw[0x80..0x82]);
        let rest = if has_checksum_hi(raw) {
            c = crc32c_raw(c, &[0, 0]);
            0x84
        } else {
            0x82
        };
        c = crc32c_raw(c, &raw[rest..]);
    }
    c
}

/// The checksum stored in an inode, and how many bits of it are meaningful.
pub fn stored_inode_checksum(raw: &[u8]) -> (u32, u32) {
    let lo = u32::from(u16::from_le_bytes([raw[0x7C], raw[0x7D]]));
    if has_checksum_hi(raw) {
        (
            lo | (u32::from(u16::from_le_bytes([raw[0x82], raw[0x83]])) << 16),
            0xFFFF_FFFF,
        )
    } else {
        (lo, 0xFFFF)
    }
}

/// Store `csum` into an inode buffer (low half always, high half when it fits).
pub fn set_inode_checksum(raw: &mut [u8], csum: u32) {
    raw[0x7C..0x7E].copy_from_slice(&(csum as u16).to_le_bytes());
    if has_checksum_hi(raw) {
        raw[0x82..0x84].copy_from_slice(&((csum >> 16) as u16).to_le_bytes());
    }
}

// ---- extent trees -----------------------------------------------------------

pub const EXT4_EXT_MAGIC: u16 = 0xF30A;
/// An extent longer than this is uninitialized (preallocated, reads as zeros);
/// its real length is `ee_len - 32768`.
pub const EXT_INIT_MAX_LEN: u16 = 32768;

crate::ondisk_struct! {
    /// `struct ext4_extent_header`, at the start of i_block and of every tree block.
    pub struct ExtentHeader: 12, le {
        eh_magic: u16 = 0x0,
        eh_entries: u16 = 0x2,
        eh_max: u16 = 0x4,
        eh_depth: u16 = 0x6,
        eh_generation: u32 = 0x8,
    }
}

crate::ondisk_struct! {
    /// `struct ext4_extent`: a leaf entry.
    pub struct RawExtent: 12, le {
        ee_block: u32 = 0x0,
        ee_len: u16 = 0x4,
        ee_start_hi: u16 = 0x6,
        ee_start_lo: u32 = 0x8,
    }
}

crate::ondisk_struct! {
    /// `struct ext4_extent_idx`: an interior entry.
    pub struct RawExtentIdx: 12, le {
        ei_block: u32 = 0x0,
        ei_leaf_lo: u32 = 0x4,
        ei_leaf_hi: u16 = 0x8,
        ei_unused: u16 = 0xA,
    }
}

/// The checksum of an extent tree block: over the header and `eh_max` entries,
/// stored in the 4 bytes right after them (`struct ext4_extent_tail`).
pub fn extent_block_checksum(inode_seed: u32, block: &[u8], eh_max: u16) -> u32 {
    let end = (12 + 12 * usize::from(eh_max)).min(block.len());
    crc32c_raw(inode_seed, &block[..end])
}

// ---- directories ------------------------------------------------------------

/// `struct ext4_dir_entry_2` header; the name follows.
pub const DIRENT_HEADER: usize = 8;
/// The `file_type` values of ext4_dir_entry_2.
pub mod ftype {
    pub const UNKNOWN: u8 = 0;
    pub const REG: u8 = 1;
    pub const DIR: u8 = 2;
    pub const CHRDEV: u8 = 3;
    pub const BLKDEV: u8 = 4;
    pub const FIFO: u8 = 5;
    pub const SOCK: u8 = 6;
    pub const SYMLINK: u8 = 7;
}
/// The leaf block tail (`struct ext4_dir_entry_tail`): 12 bytes, `file_type` 0xDE.
pub const DIR_TAIL_SIZE: usize = 12;
pub const DIR_TAIL_FT: u8 = 0xDE;

/// Decode a directory entry's rec_len (64 KiB blocks store 65536 as 0 or 65535).
pub fn rec_len_from_disk(v: u16, block_size: u32) -> u32 {
    if block_size < 65536 {
        return u32::from(v);
    }
    if v == 65535 || v == 0 {
        65536
    } else {
        u32::from(v & 65532) | (u32::from(v & 3) << 16)
    }
}

/// Encode a rec_len for the given block size.
pub fn rec_len_to_disk(len: u32, block_size: u32) -> u16 {
    if block_size < 65536 {
        return len as u16;
    }
    if len == 65536 {
        return 65535;
    }
    ((len & 65532) | ((len >> 16) & 3)) as u16
}

/// The space a directory entry with a name of `name_len` bytes needs.
pub fn dirent_len(name_len: usize) -> usize {
    (DIRENT_HEADER + name_len + 3) & !3
}

/// The checksum of a linear directory leaf block, stored in its tail.
pub fn dir_leaf_checksum(inode_seed: u32, block: &[u8]) -> u32 {
    crc32c_raw(inode_seed, &block[..block.len() - DIR_TAIL_SIZE])
}

crate::ondisk_struct! {
    /// `struct dx_root_info`, at byte 0x18 of an htree root block (after the
    /// "." and ".." entries).
    pub struct DxRootInfo: 8, le {
        reserved_zero: u32 = 0x0,
        hash_version: u8 = 0x4,
        info_length: u8 = 0x5,
        indirect_levels: u8 = 0x6,
        unused_flags: u8 = 0x7,
    }
}

crate::ondisk_struct! {
    /// `struct dx_countlimit` followed by the first entry's block (`struct
    /// dx_entry` without its hash, which is implied 0).
    pub struct DxCountLimit: 8, le {
        limit: u16 = 0x0,
        count: u16 = 0x2,
        block: u32 = 0x4,
    }
}

/// Offset of the dx_countlimit in an htree root block.
pub const DX_ROOT_COUNT_OFFSET: usize = 0x20;
/// Offset of the dx_countlimit in an htree interior node (after a fake empty entry).
pub const DX_NODE_COUNT_OFFSET: usize = 0x8;
/// `struct dx_tail`: 8 bytes after the entries' limit when metadata_csum is on.
pub const DX_TAIL_SIZE: usize = 8;

/// The checksum of an htree root or interior node. `count_offset` is where its
/// dx_countlimit sits; `count` and `limit` are the values there. The `dx_tail`
/// sits right after `limit` entries: the checksum covers the used entries, then the
/// tail's reserved word, then a zeroed checksum field.
pub fn dx_node_checksum(
    inode_seed: u32,
    block: &[u8],
    count_offset: usize,
    count: u16,
    limit: u16,
) -> Option<u32> {
    let used = count_offset + 8 * usize::from(count);
    let tail = count_offset + 8 * usize::from(limit);
    if used > block.len() || tail + DX_TAIL_SIZE > block.len() {
        return None;
    }
    let mut c = crc32c_raw(inode_seed, &block[..used]);
    c = crc32c_raw(c, &block[tail..tail + 4]);
    c = crc32c_raw(c, &[0, 0, 0, 0]);
    Some(c)
}

// ---- extended attributes -----------------------------------------------------

pub const XATTR_MAGIC: u32 = 0xEA02_0000;

crate::ondisk_struct! {
    /// `struct ext4_xattr_header`, at the start of an xattr block.
    pub struct XattrHeader: 32, le {
        h_magic: u32 = 0x0,
        h_refcount: u32 = 0x4,
        h_blocks: u32 = 0x8,
        h_hash: u32 = 0xC,
        h_checksum: u32 = 0x10,
    }
}

crate::ondisk_struct! {
    /// `struct ext4_xattr_entry` header; the name (e_name_len bytes) follows,
    /// padded to 4 bytes.
    pub struct XattrEntry: 16, le {
        e_name_len: u8 = 0x0,
        e_name_index: u8 = 0x1,
        e_value_offs: u16 = 0x2,
        e_value_inum: u32 = 0x4,
        e_value_size: u32 = 0x8,
        e_hash: u32 = 0xC,
    }
}

/// Attribute name prefixes by `e_name_index` (fs/ext4/xattr.c).
pub const XATTR_PREFIXES: &[(u8, &str)] = &[
    (1, "user."),
    (2, "system.posix_acl_access"),
    (3, "system.posix_acl_default"),
    (4, "trusted."),
    (6, "security."),
    (7, "system."),
    (8, "system.richacl"),
];

/// Split a full xattr name into (name index, suffix) the way ext4 stores it,
/// choosing the longest matching prefix. Unknown namespaces get `None`.
pub fn xattr_name_index(full: &[u8]) -> Option<(u8, &[u8])> {
    let mut best: Option<(u8, &[u8], usize)> = None;
    for &(idx, prefix) in XATTR_PREFIXES {
        if let Some(rest) = full.strip_prefix(prefix.as_bytes()) {
            if best.is_none_or(|(_, _, l)| prefix.len() > l) {
                best = Some((idx, rest, prefix.len()));
            }
        }
    }
    best.map(|(i, r, _)| (i, r))
}

/// The full name of a stored attribute, or `None` for an unknown index.
pub fn xattr_full_name(index: u8, suffix: &[u8]) -> Option<Vec<u8>> {
    let (_, prefix) = XATTR_PREFIXES.iter().find(|(i, _)| *i == index)?;
    let mut v = prefix.as_bytes().to_vec();
    v.extend_from_slice(suffix);
    Some(v)
}

/// `ext4_xattr_hash_entry`: the hash of one attribute's name and value. Name bytes
/// are treated as unsigned (the kernel's behaviour since 6.2 and e2fsprogs');
/// `signed_names` gives the older x86 behaviour that e2fsck also accepts.
pub fn xattr_entry_hash(name: &[u8], value: &[u8], signed_names: bool) -> u32 {
    const NAME_HASH_SHIFT: u32 = 5;
    const VALUE_HASH_SHIFT: u32 = 16;
    let mut hash: u32 = 0;
    for &b in name {
        let v = if signed_names {
            (b as i8) as i32 as u32
        } else {
            u32::from(b)
        };
        hash = (hash << NAME_HASH_SHIFT) ^ (hash >> (32 - NAME_HASH_SHIFT)) ^ v;
    }
    for chunk in value.chunks(4) {
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        hash =
            (hash << VALUE_HASH_SHIFT) ^ (hash >> (32 - VALUE_HASH_SHIFT)) ^ u32::from_le_bytes(w);
    }
    hash
}

/// `ext4_xattr_rehash`: the block hash from its entries' hashes (0 if any entry's
/// hash is 0).
pub fn xattr_block_hash(entry_hashes: &[u32]) -> u32 {
    const BLOCK_HASH_SHIFT: u32 = 16;
    let mut hash: u32 = 0;
    for &h in entry_hashes {
        if h == 0 {
            return 0;
        }
        hash = (hash << BLOCK_HASH_SHIFT) ^ (hash >> (32 - BLOCK_HASH_SHIFT)) ^ h;
    }
    hash
}

/// The checksum of an xattr block at physical block `blocknr` (its `h_checksum`
/// field is treated as zero).
pub fn xattr_block_checksum(sb: &Superblock, blocknr: u64, block: &[u8]) -> u32 {
    let mut c = crc32c_raw(sb.csum_seed(), &blocknr.to_le_bytes());
    c = crc32c_raw(c, &block[..0x10]);
    c = crc32c_raw(c, &[0, 0, 0, 0]);
    crc32c_raw(c, &block[0x14..])
}

// ---- bitmaps ------------------------------------------------------------------

/// The checksum of a block or inode bitmap (`bytes` is the bitmap's meaningful
/// part: blocks_per_group/8 or inodes_per_group/8 bytes).
pub fn bitmap_checksum(sb: &Superblock, bytes: &[u8]) -> u32 {
    crc32c_raw(sb.csum_seed(), bytes)
}

// ---- POSIX ACLs -----------------------------------------------------------------

/// Convert an ACL from ext4's compact on-disk form (version 1, short entries for
/// USER_OBJ/GROUP_OBJ/MASK/OTHER) to the VFS xattr form (version 2, 8-byte entries)
/// that `getfattr` shows and the Tree stores. `None` if malformed.
pub fn acl_disk_to_xattr(disk: &[u8]) -> Option<Vec<u8>> {
    if disk.len() < 4 || u32::from_le_bytes(disk[..4].try_into().ok()?) != 1 {
        return None;
    }
    let mut out = 2u32.to_le_bytes().to_vec();
    let mut p = 4;
    while p < disk.len() {
        let tag = u16::from_le_bytes(disk.get(p..p + 2)?.try_into().ok()?);
        let perm = u16::from_le_bytes(disk.get(p + 2..p + 4)?.try_into().ok()?);
        let (id, step) = match tag {
            // ACL_USER, ACL_GROUP carry an id.
            0x02 | 0x08 => (
                u32::from_le_bytes(disk.get(p + 4..p + 8)?.try_into().ok()?),
                8,
            ),
            0x01 | 0x04 | 0x10 | 0x20 => (u32::MAX, 4),
            _ => return None,
        };
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
        p += step;
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
    let mut out = 1u32.to_le_bytes().to_vec();
    for e in x[4..].chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        out.extend_from_slice(&e[..4]);
        match tag {
            0x02 | 0x08 => out.extend_from_slice(&e[4..8]),
            0x01 | 0x04 | 0x10 | 0x20 => {}
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rec_len_round_trips_for_64k_blocks() {
        for len in [12u32, 4096, 65532, 65536] {
            assert_eq!(rec_len_from_disk(rec_len_to_disk(len, 65536), 65536), len);
        }
        assert_eq!(rec_len_from_disk(4096, 4096), 4096);
    }

    #[test]
    fn xattr_prefixes_pick_the_longest() {
        assert_eq!(
            xattr_name_index(b"system.posix_acl_access"),
            Some((2, &b""[..]))
        );
        assert_eq!(xattr_name_index(b"system.data"), Some((7, &b"data"[..])));
        assert_eq!(
            xattr_name_index(b"security.selinux"),
            Some((6, &b"selinux"[..]))
        );
        assert_eq!(xattr_name_index(b"os2.x"), None);
        assert_eq!(xattr_full_name(1, b"a"), Some(b"user.a".to_vec()));
    }

    #[test]
    fn acl_round_trip() {
        // user::rw- user:1000:r-- group::r-- mask::r-- other::---
        let mut x = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 4, 1000),
            (4, 4, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            x.extend_from_slice(&tag.to_le_bytes());
            x.extend_from_slice(&perm.to_le_bytes());
            x.extend_from_slice(&id.to_le_bytes());
        }
        let d = acl_xattr_to_disk(&x).unwrap();
        assert_eq!(d.len(), 4 + 4 + 8 + 4 + 4 + 4);
        assert_eq!(acl_disk_to_xattr(&d).unwrap(), x);
        assert!(acl_disk_to_xattr(&d[..d.len() - 1]).is_none());
    }
}
