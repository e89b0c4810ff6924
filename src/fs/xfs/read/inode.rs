//! One inode: the core (v1/v2/v3, CRC, timestamps in both encodings), its data
//! fork (device, local, extents, B+tree; unwritten extents are holes) and its
//! attribute fork, decoded into a tree node plus its directory entries and
//! attributes, which the assembly step links up.

use super::Ctx;
use crate::error::{Error, Location, Result};
use crate::fs::xfs::ondisk::{
    btree_magic, crc_compute, crc_stored, dev_decode, diflag, diflag2, fork_format, time_decode,
    BmbtRec, LongBtreeHeader, RawDinode, BMDR_HEADER_LEN, DINODE_CRC_OFF, DINODE_MAGIC,
    LONG_BTREE_CRC_OFF, LONG_BTREE_V4_LEN,
};
use crate::tree::{Dev, FsRaw, Kind, Node, Run, Src, Time};

/// The deepest block map B+tree the kernel can build is far below this.
const MAX_BMAP_LEVELS: u16 = 9;

/// A directory entry as read, before the assembly step resolves it.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: Box<[u8]>,
    pub ino: u64,
    /// The entry's file type byte (0 without ftype).
    pub ftype: u8,
}

/// An allocated inode, decoded.
#[derive(Debug)]
pub struct Decoded {
    pub ino: u64,
    pub nlink: u32,
    pub node: Node,
    /// Directory entries without "." and "..".
    pub entries: Vec<DirEntry>,
    /// Attributes in VFS form (full names, VFS ACL values).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Which fork of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    Data,
    Attr,
}

/// The pieces of an inode the fork readers need.
pub(crate) struct Inode<'a> {
    pub ino: u64,
    pub core: RawDinode,
    pub data: &'a [u8],
    pub attr: &'a [u8],
}

fn corrupt(ino: u64, detail: impl Into<String>) -> Error {
    Error::corrupt("XFS inode", Location::Inode(ino), detail)
}

fn time(raw: u64, bigtime: bool) -> Time {
    let (sec, nsec) = time_decode(raw, bigtime);
    Time { sec, nsec }
}

/// Decode the inode `ino` from its `inodesize` bytes.
pub(crate) fn decode(ctx: &Ctx, ino: u64, buf: &[u8]) -> Result<Decoded> {
    let core = RawDinode::decode(
        buf[..RawDinode::SIZE]
            .try_into()
            .expect("inode >= 256 bytes"),
    );
    if core.di_magic != DINODE_MAGIC {
        return Err(corrupt(ino, format!("bad magic {:#x}", core.di_magic)));
    }
    let want_v3 = ctx.v5;
    let ok_version = if want_v3 {
        core.di_version == 3
    } else {
        core.di_version == 1 || core.di_version == 2
    };
    if !ok_version {
        return Err(corrupt(
            ino,
            format!(
                "inode version {} on a V{} filesystem",
                core.di_version,
                ctx.sb.version()
            ),
        ));
    }
    if core.di_version == 3 {
        if ctx.verify {
            let stored = crc_stored(buf, DINODE_CRC_OFF);
            let computed = crc_compute(buf, DINODE_CRC_OFF);
            if stored != computed {
                return Err(Error::checksum(
                    "XFS inode",
                    Location::Inode(ino),
                    u64::from(stored),
                    u64::from(computed),
                ));
            }
        }
        if core.di_ino != ino {
            return Err(corrupt(
                ino,
                format!("inode records its number as {}", core.di_ino),
            ));
        }
        ctx.check_uuid(&core.di_uuid, "XFS inode", Location::Inode(ino))?;
        let known = diflag2::DAX
            | diflag2::REFLINK
            | diflag2::COWEXTSIZE
            | diflag2::BIGTIME
            | diflag2::NREXT64;
        if core.di_flags2 & !known != 0 {
            return Err(Error::unsupported(format!(
                "XFS inode {ino}: di_flags2 bits {:#x}",
                core.di_flags2 & !known
            )));
        }
    }
    if core.di_flags & diflag::REALTIME != 0 {
        return Err(Error::unsupported(format!(
            "XFS inode {ino}: realtime file"
        )));
    }
    let nlink = if core.di_version == 1 {
        u32::from(core.di_onlink)
    } else {
        core.di_nlink
    };
    let lit_start = core.core_size();
    let lit = &buf[lit_start..];
    let forkoff = usize::from(core.di_forkoff) * 8;
    if forkoff >= lit.len() {
        return Err(corrupt(
            ino,
            format!(
                "attribute fork offset {forkoff} passes the {}-byte literal area",
                lit.len()
            ),
        ));
    }
    let (data, attr) = if core.di_forkoff == 0 {
        (lit, &lit[lit.len()..])
    } else {
        lit.split_at(forkoff)
    };
    if core.di_forkoff == 0 && core.di_aformat != fork_format::EXTENTS && core.di_anextents != 0 {
        return Err(corrupt(ino, "attribute extents without an attribute fork"));
    }
    if i64::try_from(core.di_size).is_err() {
        return Err(corrupt(ino, format!("size {} is negative", core.di_size)));
    }
    let bigtime = core.is_bigtime();
    if bigtime
        && !ctx
            .sb
            .has_incompat(crate::fs::xfs::ondisk::incompat::BIGTIME)
    {
        return Err(corrupt(
            ino,
            "bigtime timestamps on a filesystem without bigtime",
        ));
    }
    let i = Inode {
        ino,
        core: core.clone(),
        data,
        attr,
    };
    let size = core.di_size;
    let mut entries = Vec::new();
    let mode = core.di_mode;
    let kind = match u32::from(mode) & 0o170000 {
        0o100000 => Kind::File(file_runs(ctx, &i)?),
        0o040000 => {
            entries = super::dir::read(ctx, &i)?;
            Kind::Dir(Vec::new())
        }
        0o120000 => Kind::Symlink(symlink(ctx, &i)?),
        t @ (0o020000 | 0o060000 | 0o010000 | 0o140000) => {
            if core.di_format != fork_format::DEV {
                return Err(corrupt(
                    ino,
                    format!("special file with data fork format {}", core.di_format),
                ));
            }
            let raw = u32::from_be_bytes(data[..4].try_into().expect("fork >= 4 bytes"));
            let (major, minor) = dev_decode(raw);
            match t {
                0o020000 => Kind::CharDev(Dev { major, minor }),
                0o060000 => Kind::BlockDev(Dev { major, minor }),
                0o010000 => Kind::Fifo,
                _ => Kind::Socket,
            }
        }
        other => {
            return Err(corrupt(
                ino,
                format!("unknown file type {other:#o} in di_mode {mode:#o}"),
            ))
        }
    };
    let xattrs = if nlink == 0 {
        Vec::new()
    } else {
        super::attr::read(ctx, &i)?
    };
    let node = Node {
        kind,
        perm: mode & 0o7777,
        uid: core.di_uid,
        gid: core.di_gid,
        atime: time(core.di_atime, bigtime),
        mtime: time(core.di_mtime, bigtime),
        ctime: time(core.di_ctime, bigtime),
        crtime: (core.di_version == 3).then(|| time(core.di_crtime, bigtime)),
        size,
        flags: u32::from(core.di_flags),
        generation: core.di_gen,
        projid: core.projid(),
        fs_raw: FsRaw {
            flags2: if core.di_version == 3 {
                core.di_flags2
            } else {
                0
            },
            extsize: core.di_extsize,
            cowextsize: if core.di_version == 3 {
                core.di_cowextsize
            } else {
                0
            },
            forkoff: core.di_forkoff,
        },
        xattrs: Vec::new(),
        source_ino: ino,
    };
    Ok(Decoded {
        ino,
        nlink,
        node,
        entries,
        xattrs,
    })
}

/// A regular file's data runs: written extents inside the size.
fn file_runs(ctx: &Ctx, i: &Inode) -> Result<Vec<Run>> {
    let exts = extents(ctx, i, Fork::Data)?;
    let size = i.core.di_size;
    let mut runs = Vec::new();
    for e in exts {
        if e.unwritten {
            continue;
        }
        let logical = e.startoff << ctx.blocklog;
        if logical >= size {
            continue;
        }
        let len = (u64::from(e.blockcount) << ctx.blocklog).min(size - logical);
        let at = ctx.fsb_byte(e.startblock, u64::from(e.blockcount), "XFS file extent")?;
        runs.push(Run {
            logical,
            len,
            src: Src::Volume(at),
        });
    }
    Ok(runs)
}

/// A symlink's target: in the inode, or in remote blocks.
fn symlink(ctx: &Ctx, i: &Inode) -> Result<Box<[u8]>> {
    use crate::fs::xfs::ondisk::{da_magic, SYMLINK_CRC_OFF, SYMLINK_HDR_LEN, SYMLINK_MAXLEN};
    let size = i.core.di_size as usize;
    if size == 0 || size > SYMLINK_MAXLEN {
        return Err(corrupt(
            i.ino,
            format!("symlink of {} bytes", i.core.di_size),
        ));
    }
    match i.core.di_format {
        fork_format::LOCAL => {
            let t = i
                .data
                .get(..size)
                .ok_or_else(|| corrupt(i.ino, "local symlink larger than its fork"))?;
            Ok(Box::from(t))
        }
        fork_format::EXTENTS | fork_format::BTREE => {
            // One buffer per extent (fs/xfs/xfs_symlink_remote.c), with one
            // header at its start on V5.
            let exts = extents(ctx, i, Fork::Data)?;
            let mut out = Vec::with_capacity(size);
            let mut logical = 0u64;
            let max_blocks = ((SYMLINK_MAXLEN + SYMLINK_HDR_LEN) as u64).div_ceil(ctx.bs);
            for e in exts {
                if e.startoff != logical || e.unwritten {
                    return Err(corrupt(i.ino, "remote symlink with a hole"));
                }
                logical += u64::from(e.blockcount);
                if logical > max_blocks {
                    return Err(corrupt(
                        i.ino,
                        "remote symlink maps more blocks than a target needs",
                    ));
                }
                let at =
                    ctx.fsb_byte(e.startblock, u64::from(e.blockcount), "XFS symlink block")?;
                let mut block = vec![0u8; (u64::from(e.blockcount) * ctx.bs) as usize];
                ctx.read(at, &mut block)?;
                let loc = Location::Block(e.startblock);
                let data = if ctx.v5 {
                    let magic = u32::from_be_bytes(block[0..4].try_into().expect("4"));
                    let off = u32::from_be_bytes(block[4..8].try_into().expect("4")) as usize;
                    let bytes = u32::from_be_bytes(block[8..12].try_into().expect("4")) as usize;
                    let owner = u64::from_be_bytes(block[32..40].try_into().expect("8"));
                    if magic != da_magic::SYMLINK
                        || off != out.len()
                        || bytes > block.len() - SYMLINK_HDR_LEN
                        || owner != i.ino
                    {
                        return Err(Error::corrupt(
                            "XFS symlink block",
                            loc,
                            format!("inode {}: bad header", i.ino),
                        ));
                    }
                    ctx.check_crc(&block, SYMLINK_CRC_OFF, "XFS symlink block", loc)?;
                    &block[SYMLINK_HDR_LEN..SYMLINK_HDR_LEN + bytes]
                } else {
                    &block[..]
                };
                let take = data.len().min(size - out.len());
                out.extend_from_slice(&data[..take]);
            }
            if out.len() != size {
                return Err(corrupt(i.ino, "remote symlink shorter than its size"));
            }
            Ok(out.into_boxed_slice())
        }
        f => Err(corrupt(i.ino, format!("symlink with data fork format {f}"))),
    }
}

/// The extent records of a fork, validated: sorted, not overlapping, inside the
/// filesystem. Local forks have none.
pub(crate) fn extents(ctx: &Ctx, i: &Inode, fork: Fork) -> Result<Vec<BmbtRec>> {
    let (bytes, format, nextents) = match fork {
        Fork::Data => (i.data, i.core.di_format, i.core.extent_counts().0),
        Fork::Attr => (
            i.attr,
            i.core.di_aformat,
            u64::from(i.core.extent_counts().1),
        ),
    };
    let mut out = Vec::new();
    match format {
        fork_format::EXTENTS => {
            let n = usize::try_from(nextents).unwrap_or(usize::MAX);
            if n > bytes.len() / BmbtRec::SIZE {
                return Err(corrupt(
                    i.ino,
                    format!("{nextents} extents do not fit a {}-byte fork", bytes.len()),
                ));
            }
            for k in 0..n {
                let o = k * BmbtRec::SIZE;
                out.push(BmbtRec::decode(bytes[o..o + 16].try_into().expect("16")));
            }
        }
        fork_format::BTREE => {
            if bytes.len() < BMDR_HEADER_LEN + 16 {
                return Err(corrupt(i.ino, "B+tree root in a fork too small to hold it"));
            }
            let level = u16::from_be_bytes([bytes[0], bytes[1]]);
            let n = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
            let maxrecs = (bytes.len() - BMDR_HEADER_LEN) / 16;
            if level == 0 || level > MAX_BMAP_LEVELS || n == 0 || n > maxrecs {
                return Err(corrupt(
                    i.ino,
                    format!("block map root: level {level}, {n} records of {maxrecs}"),
                ));
            }
            let ptrs = BMDR_HEADER_LEN + maxrecs * 8;
            let budget = i.core.di_nblocks.min(ctx.sb.sb_dblocks) + 1;
            let mut visits = 0u64;
            for k in 0..n {
                let o = ptrs + k * 8;
                let child = u64::from_be_bytes(bytes[o..o + 8].try_into().expect("8"));
                bmbt_walk(
                    ctx,
                    i,
                    child,
                    level - 1,
                    &mut out,
                    &mut visits,
                    budget,
                    nextents,
                )?;
            }
        }
        fork_format::LOCAL => return Ok(out),
        f => {
            return Err(corrupt(
                i.ino,
                format!("{fork:?} fork has format {f}, which this inode type cannot have"),
            ))
        }
    }
    if out.len() as u64 != nextents {
        return Err(corrupt(
            i.ino,
            format!(
                "{fork:?} fork holds {} extents, the inode says {nextents}",
                out.len()
            ),
        ));
    }
    let mut next = 0u64;
    for e in &out {
        if e.blockcount == 0 || e.startoff < next {
            return Err(corrupt(
                i.ino,
                format!(
                    "{fork:?} fork extent at block {} overlaps or is empty",
                    e.startoff
                ),
            ));
        }
        next = e.startoff + u64::from(e.blockcount);
        if next > 1 << 54 {
            return Err(corrupt(i.ino, "extent passes the largest file offset"));
        }
        ctx.fsb_byte(e.startblock, u64::from(e.blockcount), "XFS extent")
            .map_err(|err| Error::within(format!("inode {}", i.ino), err))?;
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn bmbt_walk(
    ctx: &Ctx,
    i: &Inode,
    fsb: u64,
    level: u16,
    out: &mut Vec<BmbtRec>,
    visits: &mut u64,
    budget: u64,
    nextents: u64,
) -> Result<()> {
    let what = "XFS block map B+tree block";
    *visits += 1;
    if *visits > budget {
        return Err(Error::corrupt(
            what,
            Location::Block(fsb),
            format!(
                "inode {}: the block map visits more blocks than the inode has",
                i.ino
            ),
        ));
    }
    let at = ctx.fsb_byte(fsb, 1, what)?;
    let mut buf = vec![0u8; ctx.bs as usize];
    ctx.read(at, &mut buf)?;
    let loc = Location::Block(fsb);
    let hdr = LongBtreeHeader::decode(buf[..LongBtreeHeader::SIZE].try_into().expect("72"));
    let (magic, hlen) = if ctx.v5 {
        (btree_magic::BMAP_CRC, LongBtreeHeader::SIZE)
    } else {
        (btree_magic::BMAP, LONG_BTREE_V4_LEN)
    };
    if hdr.bb_magic != magic || hdr.bb_level != level {
        return Err(Error::corrupt(
            what,
            loc,
            format!(
                "inode {}: bad magic {:#x} or level {} (want {level})",
                i.ino, hdr.bb_magic, hdr.bb_level
            ),
        ));
    }
    ctx.check_crc(&buf, LONG_BTREE_CRC_OFF, what, loc)?;
    if ctx.v5 {
        ctx.check_uuid(&hdr.bb_uuid, what, loc)?;
        if hdr.bb_owner != i.ino || hdr.bb_blkno != at / 512 {
            return Err(Error::corrupt(
                what,
                loc,
                format!(
                    "inode {}: block owned by inode {} or at the wrong address",
                    i.ino, hdr.bb_owner
                ),
            ));
        }
    }
    let n = usize::from(hdr.bb_numrecs);
    let space = buf.len() - hlen;
    if level == 0 {
        if n > space / BmbtRec::SIZE || out.len() as u64 + n as u64 > nextents {
            return Err(Error::corrupt(
                what,
                loc,
                format!(
                    "inode {}: {n} records do not fit or pass the extent count",
                    i.ino
                ),
            ));
        }
        for k in 0..n {
            let o = hlen + k * BmbtRec::SIZE;
            out.push(BmbtRec::decode(buf[o..o + 16].try_into().expect("16")));
        }
        return Ok(());
    }
    let maxrecs = space / 16;
    if n == 0 || n > maxrecs {
        return Err(Error::corrupt(
            what,
            loc,
            format!("inode {}: {n} keys in a node of {maxrecs}", i.ino),
        ));
    }
    let ptrs = hlen + maxrecs * 8;
    for k in 0..n {
        let o = ptrs + k * 8;
        let child = u64::from_be_bytes(buf[o..o + 8].try_into().expect("8"));
        bmbt_walk(ctx, i, child, level - 1, out, visits, budget, nextents)?;
    }
    Ok(())
}

/// Read `count` consecutive fork blocks starting at logical block `first`
/// through the fork's extents. A hole in that range is corruption (directory and
/// attribute blocks are never sparse).
pub(crate) fn read_mapped(
    ctx: &Ctx,
    ino: u64,
    exts: &[BmbtRec],
    first: u64,
    count: u64,
    what: &'static str,
) -> Result<Vec<u8>> {
    let mut out = vec![0u8; (count * ctx.bs) as usize];
    let mut done = 0u64;
    while done < count {
        let want = first + done;
        let k = exts.partition_point(|e| e.startoff + u64::from(e.blockcount) <= want);
        let e = exts
            .get(k)
            .filter(|e| e.startoff <= want && !e.unwritten)
            .ok_or_else(|| {
                Error::corrupt(
                    what,
                    Location::Inode(ino),
                    format!("fork block {want} is not mapped"),
                )
            })?;
        let within = want - e.startoff;
        let n = (u64::from(e.blockcount) - within).min(count - done);
        let at = ctx.fsb_byte(e.startblock + within, n, what)?;
        let s = (done * ctx.bs) as usize;
        ctx.read(at, &mut out[s..s + (n * ctx.bs) as usize])?;
        done += n;
    }
    Ok(out)
}

/// The disk address (512-byte units) of a fork block, for V5 header checks.
pub(crate) fn daddr_of(ctx: &Ctx, exts: &[BmbtRec], logical: u64) -> Option<u64> {
    let k = exts.partition_point(|e| e.startoff + u64::from(e.blockcount) <= logical);
    let e = exts.get(k).filter(|e| e.startoff <= logical)?;
    let fsb = e.startblock + (logical - e.startoff);
    let (agno, agbno) = ctx.fsb_split(fsb);
    Some((agno * u64::from(ctx.agblocks) + agbno) * ctx.bs / 512)
}
