//! Extended attributes: shortform (in the inode), leaf and node forms in the
//! attribute fork, and remote values. Names come out in VFS form ("user.x",
//! "trusted.x", "security.selinux"); the root-namespace ACLs become
//! `system.posix_acl_access` / `_default` in the VFS xattr format, the form the
//! ext4 reader gives, so trees of the same files compare equal.

use super::inode::{self, Fork, Inode};
use super::Ctx;
use crate::error::{Error, Location, Result};
use crate::fs::xfs::ondisk::{
    acl_disk_to_xattr, attr_flag, attr_vfs_name, da_magic, fork_format, BmbtRec,
    ATTR3_LEAF_HDR_LEN, ATTR3_RMT_CRC_OFF, ATTR3_RMT_HDR_LEN, ATTR_LEAF_ENTRY_LEN,
    ATTR_LEAF_HDR_LEN, DA3_CRC_OFF, DA3_NODE_HDR_LEN, DA_NODE_ENTRY_LEN, DA_NODE_HDR_LEN,
    VFS_ACL_ACCESS, VFS_ACL_DEFAULT,
};

/// The largest attribute value Linux allows (XATTR_SIZE_MAX).
const VALUE_MAX: usize = 64 * 1024;
/// Dabtree depth bound (the kernel's XFS_DA_NODE_MAXDEPTH is 5).
const MAX_DEPTH: u32 = 5;

type NameValue = (Vec<u8>, Vec<u8>);

fn corrupt(ino: u64, detail: impl Into<String>) -> Error {
    Error::corrupt("XFS attributes", Location::Inode(ino), detail)
}

pub(crate) fn read(ctx: &Ctx, i: &Inode) -> Result<Vec<NameValue>> {
    if i.core.di_forkoff == 0 {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    match i.core.di_aformat {
        fork_format::LOCAL => shortform(i, &mut out)?,
        fork_format::EXTENTS | fork_format::BTREE => {
            let exts = inode::extents(ctx, i, Fork::Attr)?;
            if !exts.is_empty() {
                leaves(ctx, i, &exts, &mut out)?;
            }
        }
        f => return Err(corrupt(i.ino, format!("attribute fork format {f}"))),
    }
    Ok(out)
}

/// Add one attribute (VFS name mapping, ACL conversion, duplicates refused).
fn push(ino: u64, flags: u8, name: &[u8], value: Vec<u8>, out: &mut Vec<NameValue>) -> Result<()> {
    if flags & attr_flag::INCOMPLETE != 0 {
        return Ok(());
    }
    if flags & attr_flag::PARENT != 0 {
        return Err(Error::unsupported(format!(
            "XFS inode {ino}: parent pointer attributes"
        )));
    }
    if name.is_empty() {
        return Err(corrupt(ino, "attribute with an empty name"));
    }
    let full = attr_vfs_name(flags, name)
        .ok_or_else(|| corrupt(ino, format!("attribute namespace flags {flags:#x}")))?;
    let value = if full == VFS_ACL_ACCESS || full == VFS_ACL_DEFAULT {
        acl_disk_to_xattr(&value).ok_or_else(|| {
            corrupt(
                ino,
                format!("malformed ACL in {}", String::from_utf8_lossy(&full)),
            )
        })?
    } else {
        value
    };
    if out.iter().any(|(n, _)| *n == full) {
        return Err(corrupt(
            ino,
            format!("attribute {} appears twice", String::from_utf8_lossy(&full)),
        ));
    }
    out.push((full, value));
    Ok(())
}

fn shortform(i: &Inode, out: &mut Vec<NameValue>) -> Result<()> {
    let b = i.attr;
    if b.len() < 4 {
        return Err(corrupt(
            i.ino,
            "shortform attributes shorter than their header",
        ));
    }
    let totsize = usize::from(u16::from_be_bytes([b[0], b[1]]));
    let count = usize::from(b[2]);
    if totsize < 4 || totsize > b.len() {
        return Err(corrupt(
            i.ino,
            format!(
                "shortform attributes of {totsize} bytes in a {}-byte fork",
                b.len()
            ),
        ));
    }
    let b = &b[..totsize];
    let mut p = 4;
    for k in 0..count {
        let bad = || corrupt(i.ino, format!("shortform attribute {k} passes the fork"));
        let h = b.get(p..p + 3).ok_or_else(bad)?;
        let (namelen, valuelen, flags) = (usize::from(h[0]), usize::from(h[1]), h[2]);
        let name = b.get(p + 3..p + 3 + namelen).ok_or_else(bad)?;
        let value = b
            .get(p + 3 + namelen..p + 3 + namelen + valuelen)
            .ok_or_else(bad)?;
        push(i.ino, flags, name, value.to_vec(), out)?;
        p += 3 + namelen + valuelen;
    }
    Ok(())
}

/// Read one attribute-fork block and check its V5 header.
fn block(ctx: &Ctx, i: &Inode, exts: &[BmbtRec], logical: u64) -> Result<Vec<u8>> {
    let buf = inode::read_mapped(ctx, i.ino, exts, logical, 1, "XFS attribute block")?;
    if ctx.v5 {
        let loc = Location::InodeByte(i.ino, logical << ctx.blocklog);
        let magic = u16::from_be_bytes([buf[8], buf[9]]);
        if magic == da_magic::ATTR3_LEAF || magic == da_magic::DA3_NODE {
            ctx.check_crc(&buf, DA3_CRC_OFF, "XFS attribute block", loc)?;
            let blkno = u64::from_be_bytes(buf[16..24].try_into().expect("8"));
            let owner = u64::from_be_bytes(buf[48..56].try_into().expect("8"));
            ctx.check_uuid(&buf[32..48], "XFS attribute block", loc)?;
            if owner != i.ino || Some(blkno) != inode::daddr_of(ctx, exts, logical) {
                return Err(Error::corrupt(
                    "XFS attribute block",
                    loc,
                    format!("block owned by inode {owner} or at the wrong address"),
                ));
            }
        }
    }
    Ok(buf)
}

/// Walk from block 0 down the leftmost path to the first leaf, then along the
/// leaves' forward links.
fn leaves(ctx: &Ctx, i: &Inode, exts: &[BmbtRec], out: &mut Vec<NameValue>) -> Result<()> {
    let (leaf_magic, node_magic, node_hdr) = if ctx.v5 {
        (da_magic::ATTR3_LEAF, da_magic::DA3_NODE, DA3_NODE_HDR_LEN)
    } else {
        (da_magic::ATTR_LEAF, da_magic::DA_NODE, DA_NODE_HDR_LEN)
    };
    let mapped: u64 = exts.iter().map(|e| u64::from(e.blockcount)).sum();
    let mut logical = 0u64;
    let mut depth = 0;
    let mut buf = block(ctx, i, exts, logical)?;
    loop {
        let magic = u16::from_be_bytes([buf[8], buf[9]]);
        if magic == leaf_magic {
            break;
        }
        if magic != node_magic || depth >= MAX_DEPTH {
            return Err(Error::corrupt(
                "XFS attribute block",
                Location::InodeByte(i.ino, logical << ctx.blocklog),
                format!("bad magic {magic:#x} or dabtree deeper than {MAX_DEPTH}"),
            ));
        }
        let count_off = if ctx.v5 { 56 } else { 12 };
        let count = usize::from(u16::from_be_bytes([buf[count_off], buf[count_off + 1]]));
        if count == 0 || node_hdr + count * DA_NODE_ENTRY_LEN > buf.len() {
            return Err(Error::corrupt(
                "XFS attribute block",
                Location::InodeByte(i.ino, logical << ctx.blocklog),
                format!("dabtree node with {count} entries"),
            ));
        }
        let before = u32::from_be_bytes(buf[node_hdr + 4..node_hdr + 8].try_into().expect("4"));
        logical = u64::from(before);
        depth += 1;
        buf = block(ctx, i, exts, logical)?;
    }
    let mut seen = 0u64;
    loop {
        seen += 1;
        if seen > mapped {
            return Err(corrupt(
                i.ino,
                "attribute leaf chain is longer than the fork",
            ));
        }
        let magic = u16::from_be_bytes([buf[8], buf[9]]);
        if magic != leaf_magic {
            return Err(Error::corrupt(
                "XFS attribute block",
                Location::InodeByte(i.ino, logical << ctx.blocklog),
                format!("bad leaf magic {magic:#x}"),
            ));
        }
        leaf(ctx, i, exts, logical, &buf, out)?;
        let forw = u32::from_be_bytes(buf[0..4].try_into().expect("4"));
        if forw == 0 {
            return Ok(());
        }
        logical = u64::from(forw);
        buf = block(ctx, i, exts, logical)?;
    }
}

fn leaf(
    ctx: &Ctx,
    i: &Inode,
    exts: &[BmbtRec],
    logical: u64,
    buf: &[u8],
    out: &mut Vec<NameValue>,
) -> Result<()> {
    let (hlen, count_off) = if ctx.v5 {
        (ATTR3_LEAF_HDR_LEN, 56)
    } else {
        (ATTR_LEAF_HDR_LEN, 12)
    };
    let loc = |o: usize| Location::InodeByte(i.ino, (logical << ctx.blocklog) + o as u64);
    let bad = |o: usize, d: String| Error::corrupt("XFS attribute leaf", loc(o), d);
    let count = usize::from(u16::from_be_bytes([buf[count_off], buf[count_off + 1]]));
    if hlen + count * ATTR_LEAF_ENTRY_LEN > buf.len() {
        return Err(bad(count_off, format!("{count} entries do not fit")));
    }
    for k in 0..count {
        let e = hlen + k * ATTR_LEAF_ENTRY_LEN;
        let nameidx = usize::from(u16::from_be_bytes([buf[e + 4], buf[e + 5]]));
        let flags = buf[e + 6];
        if flags & attr_flag::LOCAL != 0 {
            let h = buf
                .get(nameidx..nameidx + 3)
                .ok_or_else(|| bad(e, "entry's name passes the block".into()))?;
            let valuelen = usize::from(u16::from_be_bytes([h[0], h[1]]));
            let namelen = usize::from(h[2]);
            let s = nameidx + 3;
            let name = buf
                .get(s..s + namelen)
                .ok_or_else(|| bad(e, "entry's name passes the block".into()))?;
            let value = buf
                .get(s + namelen..s + namelen + valuelen)
                .ok_or_else(|| bad(e, "entry's value passes the block".into()))?;
            push(i.ino, flags, name, value.to_vec(), out)?;
        } else {
            let h = buf
                .get(nameidx..nameidx + 9)
                .ok_or_else(|| bad(e, "entry's name passes the block".into()))?;
            let valueblk = u32::from_be_bytes(h[0..4].try_into().expect("4"));
            let valuelen = u32::from_be_bytes(h[4..8].try_into().expect("4")) as usize;
            let namelen = usize::from(h[8]);
            let name = buf
                .get(nameidx + 9..nameidx + 9 + namelen)
                .ok_or_else(|| bad(e, "entry's name passes the block".into()))?
                .to_vec();
            if flags & attr_flag::INCOMPLETE != 0 {
                continue;
            }
            if valuelen > VALUE_MAX {
                return Err(bad(e, format!("remote value of {valuelen} bytes")));
            }
            let value = remote(ctx, i, exts, u64::from(valueblk), valuelen)?;
            push(i.ino, flags, &name, value, out)?;
        }
    }
    Ok(())
}

/// A value kept in its own blocks of the attribute fork.
fn remote(ctx: &Ctx, i: &Inode, exts: &[BmbtRec], first: u64, len: usize) -> Result<Vec<u8>> {
    let bs = ctx.bs as usize;
    let per = if ctx.v5 { bs - ATTR3_RMT_HDR_LEN } else { bs };
    let nblocks = len.div_ceil(per).max(1) as u64;
    let raw = inode::read_mapped(
        ctx,
        i.ino,
        exts,
        first,
        nblocks,
        "XFS remote attribute value",
    )?;
    if !ctx.v5 {
        return Ok(raw[..len].to_vec());
    }
    let mut out = Vec::with_capacity(len);
    for (k, b) in raw.chunks_exact(bs).enumerate() {
        let loc = Location::InodeByte(i.ino, (first + k as u64) << ctx.blocklog);
        let magic = u32::from_be_bytes(b[0..4].try_into().expect("4"));
        let off = u32::from_be_bytes(b[4..8].try_into().expect("4")) as usize;
        let bytes = u32::from_be_bytes(b[8..12].try_into().expect("4")) as usize;
        let owner = u64::from_be_bytes(b[32..40].try_into().expect("8"));
        if magic != da_magic::ATTR3_RMT
            || off != out.len()
            || bytes > per
            || out.len() + bytes > len
            || owner != i.ino
        {
            return Err(Error::corrupt(
                "XFS remote attribute value",
                loc,
                "bad header (magic, offset, length or owner)",
            ));
        }
        ctx.check_crc(b, ATTR3_RMT_CRC_OFF, "XFS remote attribute value", loc)?;
        out.extend_from_slice(&b[ATTR3_RMT_HDR_LEN..ATTR3_RMT_HDR_LEN + bytes]);
    }
    if out.len() != len {
        return Err(corrupt(
            i.ino,
            "remote attribute value shorter than its length",
        ));
    }
    Ok(out)
}
