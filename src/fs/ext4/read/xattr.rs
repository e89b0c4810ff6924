//! Extended attributes of one inode: the in-inode area (after i_extra_isize) and
//! the external block (i_file_acl), plus values stored in EA inodes.
//!
//! Names come out in full VFS form ("user.x", "system.posix_acl_access"), and
//! POSIX ACLs are converted from ext4's compact disk form to the VFS xattr form.
//! `system.data` (inline data) is content, not an attribute: it is handed back
//! separately and never listed. External blocks are shared between inodes, so
//! each is decoded once and cached by block number.
//!
//! ea_inode is supported: a value stored in an EA inode is read from that
//! inode's data (at most 16 MiB, the kernel's limit) and cached by inode
//! number, since equal values share one EA inode. EA inodes are not part of the
//! tree; a builder re-creates them if it needs to.

use std::sync::Arc;

use super::inode::Inode;
use super::{blockmap, Ctx};
use crate::error::{Error, Location, Result};
use crate::fs::codec::le_u32;
use crate::fs::ext4::ondisk::{
    acl_disk_to_xattr, inode_flags, xattr_block_checksum, xattr_full_name, XattrEntry, XattrHeader,
    GOOD_OLD_INODE_SIZE, XATTR_MAGIC,
};
use crate::fs::ext4::superblock::incompat;

/// The largest value an EA inode may hold (fs/ext4/xattr.h: EXT4_XATTR_SIZE_MAX).
const EA_INODE_VALUE_MAX: u32 = 1 << 24;

/// Name indexes of the ACL attributes and of the `system.` namespace.
const INDEX_ACL_ACCESS: u8 = 2;
const INDEX_ACL_DEFAULT: u8 = 3;
const INDEX_SYSTEM: u8 = 7;
const INDEX_RICHACL: u8 = 8;

pub(crate) type NameValue = (Box<[u8]>, Box<[u8]>);

/// The decoded attributes of one xattr block.
#[derive(Debug)]
pub(crate) struct BlockXattrs {
    pub list: Vec<NameValue>,
}

/// Everything attribute-shaped an inode has.
#[derive(Debug, Default)]
pub(crate) struct InodeXattrs {
    /// In-inode attributes (full names, VFS values).
    pub ibody: Vec<NameValue>,
    /// The external block's attributes, shared.
    pub block: Option<(u64, Arc<BlockXattrs>)>,
    /// The in-inode `system.data` value (the tail of inline data).
    pub inline_data: Option<Box<[u8]>>,
}

/// Read an inode's attributes.
pub(crate) fn read(ctx: &Ctx, ino: &Inode) -> Result<InodeXattrs> {
    let mut out = InodeXattrs::default();
    let start = GOOD_OLD_INODE_SIZE + ino.extra_isize;
    if let Some(area) = ino.bytes.get(start..) {
        if le_u32(area, 0) == Some(XATTR_MAGIC) {
            let mut data = None;
            parse(
                ctx,
                ino,
                area,
                4,
                4,
                "ext4 in-inode xattrs",
                ino.loc(),
                &mut out.ibody,
                Some(&mut data),
            )?;
            if ino.has_flag(inode_flags::INLINE_DATA) {
                out.inline_data = data;
            }
        }
    }
    if ino.file_acl != 0 {
        let b = block(ctx, ino, ino.file_acl)?;
        // The same name in both places: which one the kernel would return
        // depends on the lookup path; refuse rather than guess.
        for (n, _) in &b.list {
            if out.ibody.iter().any(|(m, _)| m == n) {
                return Err(Error::corrupt(
                    "ext4 xattrs",
                    ino.loc(),
                    format!(
                        "{} is stored both in the inode and in block {}",
                        String::from_utf8_lossy(n),
                        ino.file_acl
                    ),
                ));
            }
        }
        out.block = Some((ino.file_acl, b));
    }
    Ok(out)
}

/// The decoded xattr block `blk`, from the cache or read now.
fn block(ctx: &Ctx, owner: &Inode, blk: u64) -> Result<Arc<BlockXattrs>> {
    // Holding the lock while decoding keeps "each block decoded once" exact; a
    // block is small and decoding it is quick.
    let mut cache = ctx
        .xattr_blocks
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(b) = cache.get(&blk) {
        return Ok(b.clone());
    }
    let loc = Location::Block(blk);
    ctx.check_blocks("ext4 xattr block", loc, blk, 1)?;
    ctx.charge(owner.ino, 1)?;
    let mut buf = vec![0u8; ctx.bs as usize];
    ctx.read_block(blk, &mut buf)?;
    let hdr: &[u8; 32] = buf[..32].try_into().expect("a block holds 32 bytes");
    let h = XattrHeader::decode(hdr);
    if h.h_magic != XATTR_MAGIC || h.h_blocks != 1 {
        return Err(Error::corrupt(
            "ext4 xattr block",
            loc,
            format!(
                "inode {}: h_magic {:#x}, h_blocks {}",
                owner.ino, h.h_magic, h.h_blocks
            ),
        ));
    }
    if ctx.metadata_csum {
        let computed = xattr_block_checksum(ctx.sb, blk, &buf);
        if computed != h.h_checksum {
            return Err(Error::checksum(
                "ext4 xattr block",
                loc,
                u64::from(h.h_checksum),
                u64::from(computed),
            ));
        }
    }
    let mut list = Vec::new();
    parse(
        ctx,
        owner,
        &buf,
        32,
        0,
        "ext4 xattr block",
        loc,
        &mut list,
        None,
    )?;
    let b = Arc::new(BlockXattrs { list });
    cache.insert(blk, b.clone());
    Ok(b)
}

/// Parse the entry table of an xattr area. Entries start at `first`; value
/// offsets count from `value_base`. `inline_data`, when given, receives the
/// `system.data` value instead of the list.
#[allow(clippy::too_many_arguments)]
fn parse(
    ctx: &Ctx,
    owner: &Inode,
    area: &[u8],
    first: usize,
    value_base: usize,
    structure: &'static str,
    loc: Location,
    out: &mut Vec<NameValue>,
    mut inline_data: Option<&mut Option<Box<[u8]>>>,
) -> Result<()> {
    let bad = |d: String| Error::corrupt(structure, loc, format!("inode {}: {d}", owner.ino));
    let mut entries = Vec::new();
    let mut pos = first;
    // Each entry takes at least 16 bytes, so this loop ends within the area.
    let table_end = loop {
        match le_u32(area, pos) {
            None => {
                return Err(bad(format!(
                    "entry table runs off the area at offset {pos}"
                )))
            }
            Some(0) => break pos + 4,
            Some(_) => {}
        }
        let hdr: &[u8; 16] = area
            .get(pos..pos + 16)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad(format!("entry at offset {pos} crosses the end")))?;
        let e = XattrEntry::decode(hdr);
        let name_start = pos + 16;
        let name_end = name_start + usize::from(e.e_name_len);
        if name_end > area.len() {
            return Err(bad(format!(
                "name of the entry at offset {pos} crosses the end"
            )));
        }
        entries.push((e, name_start..name_end, pos));
        pos = (name_end + 3) & !3;
    };
    for (e, name, at) in entries {
        let suffix = &area[name];
        let value: Box<[u8]> = if e.e_value_inum != 0 {
            if !ctx.sb.has_incompat(incompat::EA_INODE) {
                return Err(bad(format!(
                    "entry at offset {at} has e_value_inum {} without the ea_inode feature",
                    e.e_value_inum
                )));
            }
            Box::from(&*ea_value(ctx, owner, e.e_value_inum, e.e_value_size)?)
        } else {
            let size = e.e_value_size as usize;
            let start = value_base + usize::from(e.e_value_offs);
            let end = start.saturating_add(size);
            // fs/ext4/xattr.c: check_xattrs: values lie after the entry table
            // and inside the area.
            if end > area.len() || (size > 0 && start < table_end) {
                return Err(bad(format!(
                    "value of the entry at offset {at} ({size} bytes at {start}) lies outside the {}-byte area's value space",
                    area.len()
                )));
            }
            Box::from(&area[start..end])
        };
        let Some(full) = xattr_full_name(e.e_name_index, suffix) else {
            // Index 9 holds the fscrypt context: the inode really is encrypted,
            // and its names and data cannot be rebuilt without the key.
            if e.e_name_index == 9 {
                return Err(Error::unsupported(format!(
                    "inode {} is encrypted (it carries an fscrypt encryption context)",
                    owner.ino
                )));
            }
            return Err(Error::unsupported(format!(
                "ext4 xattr name index {} (inode {})",
                e.e_name_index, owner.ino
            )));
        };
        match e.e_name_index {
            INDEX_ACL_ACCESS | INDEX_ACL_DEFAULT | INDEX_RICHACL if !suffix.is_empty() => {
                return Err(bad(format!(
                    "attribute {} has a name suffix",
                    String::from_utf8_lossy(&full)
                )));
            }
            INDEX_ACL_ACCESS | INDEX_ACL_DEFAULT => {
                let v = acl_disk_to_xattr(&value).ok_or_else(|| {
                    bad(format!(
                        "malformed ACL in {}",
                        String::from_utf8_lossy(&full)
                    ))
                })?;
                out.push((full.into(), v.into()));
            }
            INDEX_SYSTEM if suffix == b"data" => match inline_data.as_deref_mut() {
                Some(slot) => *slot = Some(value),
                None => {
                    return Err(bad("system.data (inline data) outside the inode".into()));
                }
            },
            _ => out.push((full.into(), value)),
        }
    }
    let mut names: Vec<&[u8]> = out.iter().map(|(n, _)| &**n).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(bad(format!(
            "attribute {} appears twice",
            String::from_utf8_lossy(w[0])
        )));
    }
    Ok(())
}

/// A value stored in an EA inode (ea_inode feature): the inode's data, which must
/// be exactly `size` bytes. Cached by inode number, since equal values share one
/// EA inode.
fn ea_value(ctx: &Ctx, owner: &Inode, inum: u32, size: u32) -> Result<Arc<[u8]>> {
    if let Some(v) = ctx
        .ea_values
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&inum)
    {
        return Ok(v.clone());
    }
    let loc = Location::Inode(u64::from(inum));
    let bad = |d: String| {
        Error::corrupt(
            "ext4 EA inode",
            loc,
            format!("value of an attribute of inode {}: {d}", owner.ino),
        )
    };
    if size > EA_INODE_VALUE_MAX {
        return Err(bad(format!("e_value_size {size} is above 16 MiB")));
    }
    let raw = ctx.read_inode_raw(inum)?;
    let ea = Inode::parse(ctx, inum, &raw)?;
    if !ea.is_regular() || !ea.has_flag(inode_flags::EA_INODE) {
        return Err(bad("not a regular file with the EA_INODE flag".into()));
    }
    if ea.size != u64::from(size) {
        return Err(bad(format!(
            "holds {} bytes where the entry says {size}",
            ea.size
        )));
    }
    let bs = u64::from(ctx.bs);
    let extents = blockmap::map(ctx, &ea, ea.size.div_ceil(bs))?;
    let mut v = vec![0u8; size as usize];
    for e in &extents {
        let s = e.logical * bs;
        let end = ((e.logical + e.len) * bs).min(ea.size);
        if s >= end {
            continue;
        }
        ctx.read_at(e.physical * bs, &mut v[s as usize..end as usize])?;
    }
    let v: Arc<[u8]> = Arc::from(v);
    ctx.ea_values
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(inum, v.clone());
    Ok(v)
}
