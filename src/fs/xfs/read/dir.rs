//! Directories: shortform (in the inode), and block, leaf, node and B+tree
//! forms. The last four keep every entry in data blocks below the 32 GiB leaf
//! offset of the data fork, so they are read the same way: each data block in
//! turn, skipping the leaf, node and free-index blocks above it (their hash
//! indexes are the builder's business, not the reader's).

use super::inode::{self, DirEntry, Fork, Inode};
use super::Ctx;
use crate::error::{Error, Location, Result};
use crate::fs::xfs::ondisk::{
    da_magic, dir2_data_entsize, dir2_sf_hdr_size, fork_format, DIR2_BLOCK_TAIL_LEN,
    DIR2_DATA_FREE_TAG, DIR2_DATA_HDR_LEN, DIR2_LEAF_ENTRY_LEN, DIR2_LEAF_OFFSET, DIR3_CRC_OFF,
    DIR3_DATA_HDR_LEN,
};

fn corrupt(ino: u64, detail: impl Into<String>) -> Error {
    Error::corrupt("XFS directory", Location::Inode(ino), detail)
}

pub(crate) fn read(ctx: &Ctx, i: &Inode) -> Result<Vec<DirEntry>> {
    match i.core.di_format {
        fork_format::LOCAL => shortform(ctx, i),
        fork_format::EXTENTS | fork_format::BTREE => blocks(ctx, i),
        f => Err(corrupt(
            i.ino,
            format!("directory with data fork format {f}"),
        )),
    }
}

fn shortform(ctx: &Ctx, i: &Inode) -> Result<Vec<DirEntry>> {
    let size = usize::try_from(i.core.di_size).unwrap_or(usize::MAX);
    let b = i.data.get(..size).ok_or_else(|| {
        corrupt(
            i.ino,
            format!("shortform directory of {size} bytes passes its fork"),
        )
    })?;
    if b.len() < 6 {
        return Err(corrupt(
            i.ino,
            "shortform directory shorter than its header",
        ));
    }
    let count = usize::from(b[0]);
    let i8count = b[1];
    let inosize = if i8count > 0 { 8 } else { 4 };
    let mut p = dir2_sf_hdr_size(i8count);
    let get_ino = |p: usize| -> Option<u64> {
        let s = b.get(p..p + inosize)?;
        Some(if inosize == 8 {
            u64::from_be_bytes(s.try_into().ok()?)
        } else {
            u64::from(u32::from_be_bytes(s.try_into().ok()?))
        })
    };
    get_ino(2).ok_or_else(|| corrupt(i.ino, "shortform header truncated"))?;
    let mut out = Vec::with_capacity(count);
    for k in 0..count {
        let bad = || {
            corrupt(
                i.ino,
                format!("shortform entry {k} passes the directory's size"),
            )
        };
        let namelen = usize::from(*b.get(p).ok_or_else(bad)?);
        if namelen == 0 {
            return Err(corrupt(
                i.ino,
                format!("shortform entry {k} has an empty name"),
            ));
        }
        let name = b.get(p + 3..p + 3 + namelen).ok_or_else(bad)?;
        let mut q = p + 3 + namelen;
        let ftype = if ctx.ftype {
            let t = *b.get(q).ok_or_else(bad)?;
            q += 1;
            t
        } else {
            0
        };
        let ino = get_ino(q).ok_or_else(bad)?;
        q += inosize;
        out.push(DirEntry {
            name: Box::from(name),
            ino,
            ftype,
        });
        p = q;
    }
    Ok(out)
}

fn blocks(ctx: &Ctx, i: &Inode) -> Result<Vec<DirEntry>> {
    let exts = inode::extents(ctx, i, Fork::Data)?;
    let dbf = ctx.dirblkfsbs;
    let leaf_fsb = DIR2_LEAF_OFFSET >> ctx.blocklog;
    // The directory blocks of the data section that are mapped, in order.
    let mut dblocks: Vec<u64> = Vec::new();
    for e in &exts {
        if e.startoff >= leaf_fsb {
            break;
        }
        let end = (e.startoff + u64::from(e.blockcount)).min(leaf_fsb);
        let mut d = e.startoff / dbf;
        while d * dbf < end {
            if dblocks.last() != Some(&d) {
                dblocks.push(d);
            }
            d += 1;
        }
    }
    let mut out = Vec::new();
    for (n, &d) in dblocks.iter().enumerate() {
        let buf = inode::read_mapped(ctx, i.ino, &exts, d * dbf, dbf, "XFS directory block")?;
        data_block(
            ctx,
            i,
            &exts,
            d * dbf,
            &buf,
            n == 0 && dblocks.len() == 1,
            &mut out,
        )?;
    }
    Ok(out)
}

fn data_block(
    ctx: &Ctx,
    i: &Inode,
    exts: &[crate::fs::xfs::ondisk::BmbtRec],
    logical: u64,
    buf: &[u8],
    only: bool,
    out: &mut Vec<DirEntry>,
) -> Result<()> {
    let what = "XFS directory block";
    let loc = Location::InodeByte(i.ino, logical << ctx.blocklog);
    let magic = u32::from_be_bytes(buf[0..4].try_into().expect("4"));
    let (block_magic, data_magic, hlen) = if ctx.v5 {
        (da_magic::DIR3_BLOCK, da_magic::DIR3_DATA, DIR3_DATA_HDR_LEN)
    } else {
        (da_magic::DIR2_BLOCK, da_magic::DIR2_DATA, DIR2_DATA_HDR_LEN)
    };
    let is_block = magic == block_magic;
    if !is_block && magic != data_magic {
        return Err(Error::corrupt(what, loc, format!("bad magic {magic:#x}")));
    }
    if is_block && !only {
        return Err(Error::corrupt(
            what,
            loc,
            "a single-block directory header in a directory of several blocks",
        ));
    }
    if ctx.v5 {
        ctx.check_crc(buf, DIR3_CRC_OFF, what, loc)?;
        let blkno = u64::from_be_bytes(buf[8..16].try_into().expect("8"));
        let owner = u64::from_be_bytes(buf[40..48].try_into().expect("8"));
        ctx.check_uuid(&buf[24..40], what, loc)?;
        if owner != i.ino || Some(blkno) != inode::daddr_of(ctx, exts, logical) {
            return Err(Error::corrupt(
                what,
                loc,
                format!("block owned by inode {owner} or at the wrong address"),
            ));
        }
    }
    let end = if is_block {
        let t = buf.len() - DIR2_BLOCK_TAIL_LEN;
        let count = u32::from_be_bytes(buf[t..t + 4].try_into().expect("4")) as usize;
        count
            .checked_mul(DIR2_LEAF_ENTRY_LEN)
            .and_then(|l| t.checked_sub(l))
            .filter(|&e| e >= hlen)
            .ok_or_else(|| Error::corrupt(what, loc, format!("{count} leaf entries do not fit")))?
    } else {
        buf.len()
    };
    let mut p = hlen;
    while p < end {
        let bad = |d: String| {
            Error::corrupt(
                what,
                Location::InodeByte(i.ino, (logical << ctx.blocklog) + p as u64),
                d,
            )
        };
        if p + 8 > end {
            return Err(bad("entry passes the end of the block".into()));
        }
        let tag = u16::from_be_bytes([buf[p], buf[p + 1]]);
        if tag == DIR2_DATA_FREE_TAG {
            let len = usize::from(u16::from_be_bytes([buf[p + 2], buf[p + 3]]));
            if len < 8 || !len.is_multiple_of(8) || p + len > end {
                return Err(bad(format!("free region of {len} bytes")));
            }
            p += len;
            continue;
        }
        if p + 12 > end {
            return Err(bad("entry passes the end of the block".into()));
        }
        let ino = u64::from_be_bytes(buf[p..p + 8].try_into().expect("8"));
        let namelen = usize::from(buf[p + 8]);
        let size = dir2_data_entsize(namelen, ctx.ftype);
        if namelen == 0 || p + size > end {
            return Err(bad(format!(
                "entry with a {namelen}-byte name does not fit"
            )));
        }
        let name = &buf[p + 9..p + 9 + namelen];
        let ftype = if ctx.ftype { buf[p + 9 + namelen] } else { 0 };
        let stored_tag = usize::from(u16::from_be_bytes([buf[p + size - 2], buf[p + size - 1]]));
        if stored_tag != p {
            return Err(bad(format!(
                "entry tag {stored_tag} does not name its offset"
            )));
        }
        if name != b"." && name != b".." {
            out.push(DirEntry {
                name: Box::from(name),
                ino,
                ftype,
            });
        }
        p += size;
    }
    Ok(())
}
