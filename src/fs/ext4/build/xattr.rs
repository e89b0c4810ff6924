//! Extended attributes: turning the Tree's (full name, value) pairs into ext4's
//! stored form (name index + suffix, POSIX ACLs in the compact disk form), placing
//! them in the inode body first and in one external block for the rest, and
//! encoding both regions with their hashes and checksum.
//!
//! Sharing identical external blocks between inodes (h_refcount) is the caller's
//! business: equal [`Placed::block`] lists mean equal blocks.

use crate::error::{Error, Location, Result};
use crate::fs::ext4::ondisk::{
    acl_xattr_to_disk, xattr_block_checksum, xattr_block_hash, xattr_entry_hash, xattr_name_index,
    XattrEntry, XattrHeader, XATTR_MAGIC,
};
use crate::fs::ext4::superblock::Superblock;
use crate::tree::{Tree, Xattr};

/// One attribute in stored form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attr {
    pub index: u8,
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

impl Attr {
    /// Bytes its entry header and name take (`EXT4_XATTR_LEN`).
    fn entry_len(&self) -> usize {
        (XattrEntry::SIZE + self.name.len() + 3) & !3
    }

    /// Bytes its value takes (`EXT4_XATTR_SIZE`).
    fn value_len(&self) -> usize {
        (self.value.len() + 3) & !3
    }

    fn hash(&self) -> u32 {
        xattr_entry_hash(&self.name, &self.value, false)
    }
}

/// The name ext4 keeps for inline data; it is structure, not an attribute of the
/// file, and the builder writes it itself.
const INLINE_DATA_NAME: &[u8] = b"system.data";
/// `system.data` is index 7 ("system.") with suffix "data".
pub const INLINE_DATA_INDEX: u8 = 7;

/// Convert a node's attributes to stored form, in the order the kernel keeps
/// them in blocks (index, name length, name). `ino` names the inode in errors.
pub fn prepare(tree: &Tree, xattrs: &[Xattr], ino: u64) -> Result<Vec<Attr>> {
    let mut out = Vec::with_capacity(xattrs.len());
    for x in xattrs {
        let full = tree.xattr_name(x);
        if full == INLINE_DATA_NAME {
            continue;
        }
        let value = tree.xattr_value(x);
        let (index, suffix) = xattr_name_index(full).ok_or_else(|| {
            Error::unsupported(format!(
                "extended attribute {:?} of inode {ino}: ext4 has no namespace for it",
                String::from_utf8_lossy(full)
            ))
        })?;
        if suffix.len() > 255 {
            return Err(Error::unsupported(format!(
                "extended attribute name of {} bytes on inode {ino}",
                full.len()
            )));
        }
        let value = if index == 2 || index == 3 {
            acl_xattr_to_disk(value).ok_or_else(|| {
                Error::corrupt(
                    "POSIX ACL",
                    Location::Inode(ino),
                    format!("{} is not a valid ACL", String::from_utf8_lossy(full)),
                )
            })?
        } else {
            value.to_vec()
        };
        out.push(Attr {
            index,
            name: suffix.to_vec(),
            value,
        });
    }
    out.sort_by(|a, b| (a.index, a.name.len(), &a.name).cmp(&(b.index, b.name.len(), &b.name)));
    if out
        .windows(2)
        .any(|w| (w[0].index, &w[0].name) == (w[1].index, &w[1].name))
    {
        return Err(Error::corrupt(
            "extended attributes",
            Location::Inode(ino),
            "the same attribute name appears twice",
        ));
    }
    Ok(out)
}

/// Lay attributes out in a region: entries from `entries_at` upward, values from
/// the region's end downward, 4 zero bytes after the last entry. `value_base` is
/// what value offsets are relative to. Returns false (leaving `region`
/// untouched) if they do not fit.
fn write_region(region: &mut [u8], entries_at: usize, value_base: usize, attrs: &[&Attr]) -> bool {
    let entries: usize = attrs.iter().map(|a| a.entry_len()).sum();
    let values: usize = attrs.iter().map(|a| a.value_len()).sum();
    if entries_at + entries + 4 + values > region.len() {
        return false;
    }
    let mut at = entries_at;
    let mut vend = region.len();
    for a in attrs {
        let offs = if a.value.is_empty() {
            0
        } else {
            vend -= a.value_len();
            region[vend..vend + a.value.len()].copy_from_slice(&a.value);
            vend - value_base
        };
        let e = XattrEntry {
            e_name_len: a.name.len() as u8,
            e_name_index: a.index,
            e_value_offs: offs as u16,
            e_value_inum: 0,
            e_value_size: a.value.len() as u32,
            e_hash: a.hash(),
        };
        region[at..at + XattrEntry::SIZE].copy_from_slice(&e.to_bytes());
        region[at + XattrEntry::SIZE..at + XattrEntry::SIZE + a.name.len()]
            .copy_from_slice(&a.name);
        at += a.entry_len();
    }
    true
}

/// Where a node's attributes go.
#[derive(Debug, Clone, Default)]
pub struct Placed {
    /// The in-inode region (`inode_size - 128 - i_extra_isize` bytes), empty when
    /// nothing is stored there.
    pub ibody: Vec<u8>,
    /// Attributes for the external block, sorted.
    pub block: Vec<Attr>,
}

/// The largest inline-data value (`system.data`) an in-inode region of `room`
/// bytes can hold, other attributes moving to the block.
pub fn max_inline_value(room: usize) -> usize {
    let data = Attr {
        index: INLINE_DATA_INDEX,
        name: b"data".to_vec(),
        value: Vec::new(),
    };
    room.saturating_sub(ibody_need(&[&data])) & !3
}

/// Bytes an in-inode region needs for `attrs` (header, entries, terminator,
/// values).
fn ibody_need(attrs: &[&Attr]) -> usize {
    4 + attrs
        .iter()
        .map(|a| a.entry_len() + a.value_len())
        .sum::<usize>()
        + 4
}

/// Place attributes: `inline` (the system.data value of an inline-data inode)
/// first in the inode, then each attribute in order in the inode while it fits,
/// the rest in a block. `room` is the in-inode region's size. Fails if the block
/// part does not fit one block of `bs` bytes.
pub fn place(
    attrs: Vec<Attr>,
    inline: Option<&[u8]>,
    room: usize,
    bs: usize,
    ino: u64,
) -> Result<Placed> {
    let data_attr = inline.map(|v| Attr {
        index: INLINE_DATA_INDEX,
        name: b"data".to_vec(),
        value: v.to_vec(),
    });
    let mut inside: Vec<&Attr> = Vec::new();
    if let Some(d) = &data_attr {
        inside.push(d);
    }
    let mut outside = Vec::new();
    let mut rest = Vec::new();
    if room >= 4 + 4 {
        for (i, a) in attrs.iter().enumerate() {
            inside.push(a);
            if ibody_need(&inside) > room {
                inside.pop();
                rest.push(i);
            }
        }
    } else {
        rest = (0..attrs.len()).collect();
    }
    if data_attr.is_some() && ibody_need(&inside[..1]) > room {
        return Err(Error::unsupported(format!(
            "inline data of inode {ino} does not fit the inode"
        )));
    }
    let mut ibody = Vec::new();
    if !inside.is_empty() {
        ibody = vec![0u8; room];
        ibody[..4].copy_from_slice(&XATTR_MAGIC.to_le_bytes());
        // Entries start right after the magic; value offsets count from there.
        let ok = write_region(&mut ibody, 4, 4, &inside);
        debug_assert!(ok);
    }
    outside.extend(rest.iter().map(|&i| attrs[i].clone()));
    outside.sort_by(|a, b| (a.index, a.name.len(), &a.name).cmp(&(b.index, b.name.len(), &b.name)));
    if !outside.is_empty() {
        let refs: Vec<&Attr> = outside.iter().collect();
        let mut probe = vec![0u8; bs];
        if !write_region(&mut probe, XattrHeader::SIZE, 0, &refs) {
            return Err(Error::unsupported(format!(
                "extended attributes of inode {ino} need more than one block (values in separate inodes, ea_inode, are not built)"
            )));
        }
    }
    Ok(Placed {
        ibody,
        block: outside,
    })
}

/// Encode an external attribute block at physical block `blocknr`, shared by
/// `refcount` inodes.
pub fn encode_block(
    sb: &Superblock,
    attrs: &[Attr],
    bs: usize,
    blocknr: u64,
    refcount: u32,
) -> Vec<u8> {
    let mut b = vec![0u8; bs];
    let refs: Vec<&Attr> = attrs.iter().collect();
    let ok = write_region(&mut b, XattrHeader::SIZE, 0, &refs);
    debug_assert!(ok);
    let hashes: Vec<u32> = attrs.iter().map(|a| a.hash()).collect();
    let h = XattrHeader {
        h_magic: XATTR_MAGIC,
        h_refcount: refcount,
        h_blocks: 1,
        h_hash: xattr_block_hash(&hashes),
        h_checksum: 0,
    };
    b[..XattrHeader::SIZE].copy_from_slice(&h.to_bytes());
    if sb.has_metadata_csum() {
        let c = xattr_block_checksum(sb, blocknr, &b);
        b[0x10..0x14].copy_from_slice(&c.to_le_bytes());
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(name: &str, len: usize) -> Attr {
        Attr {
            index: 1,
            name: name.as_bytes().to_vec(),
            value: vec![7; len],
        }
    }

    #[test]
    fn inode_first_then_block() {
        let attrs = vec![attr("a", 10), attr("b", 60), attr("c", 5)];
        // 96 bytes: magic 4 + terminator 4 + a (20 + 12) + c (20 + 8) = 68; b would
        // add 20 + 60 = 80.
        let p = place(attrs, None, 96, 1024, 12).unwrap();
        assert_eq!(p.block.len(), 1);
        assert_eq!(p.block[0].name, b"b");
        assert_eq!(&p.ibody[..4], &XATTR_MAGIC.to_le_bytes());
        let p = place(vec![attr("x", 2000)], None, 96, 1024, 12);
        assert!(p.is_err());
    }
}
