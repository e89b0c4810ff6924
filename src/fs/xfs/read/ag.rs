//! One allocation group: its AGF and AGI headers, the inode B+tree that lists
//! its inode chunks, and the decoding of every allocated inode in them. Runs on
//! one rayon worker per AG.

use super::inode::{self, Decoded};
use super::Ctx;
use crate::error::{Error, Location, Result};
use crate::fs::xfs::ondisk::{
    btree_magic, InobtRec, RawAgf, RawAgi, ShortBtreeHeader, AGF_CRC_OFF, AGF_MAGIC, AGF_SECTOR,
    AGI_CRC_OFF, AGI_MAGIC, AGI_SECTOR, INODES_PER_CHUNK, SHORT_BTREE_CRC_OFF, SHORT_BTREE_V4_LEN,
};

/// The deepest inode B+tree the kernel builds is far below this.
const MAX_BTREE_LEVELS: u16 = 9;

/// What one AG contributes.
pub(crate) struct AgInodes {
    pub count: u32,
    pub freecount: u32,
    pub free_blocks: u32,
    /// Allocated inodes, in inode-number order.
    pub inodes: Vec<Decoded>,
}

fn header(ctx: &Ctx, agno: u32, sector: u64, what: &'static str) -> Result<Vec<u8>> {
    let at = u64::from(agno) * u64::from(ctx.agblocks) * ctx.bs + sector * ctx.sectsize;
    let mut buf = vec![0u8; ctx.sectsize as usize];
    crate::disk::check_range(what, ctx.disk.len(), at, ctx.sectsize)?;
    ctx.read(at, &mut buf)?;
    Ok(buf)
}

pub(crate) fn read_ag(ctx: &Ctx, agno: u32) -> Result<AgInodes> {
    let ag_len = if agno + 1 == ctx.agcount {
        (ctx.sb.sb_dblocks - u64::from(agno) * u64::from(ctx.agblocks)) as u32
    } else {
        ctx.agblocks
    };
    // AGF: only its counters are used (free space is not read).
    let agf_buf = header(ctx, agno, AGF_SECTOR, "XFS AGF")?;
    let agf = RawAgf::decode(
        agf_buf[..RawAgf::SIZE]
            .try_into()
            .expect("sector holds AGF"),
    );
    let agf_loc = Location::Byte(u64::from(agno) * u64::from(ctx.agblocks) * ctx.bs + ctx.sectsize);
    if agf.agf_magicnum != AGF_MAGIC || agf.agf_seqno != agno || agf.agf_length != ag_len {
        return Err(Error::corrupt(
            "XFS AGF",
            agf_loc,
            format!(
                "AG {agno}: bad magic, sequence number {} or length {} (want {ag_len})",
                agf.agf_seqno, agf.agf_length
            ),
        ));
    }
    ctx.check_crc(&agf_buf, AGF_CRC_OFF, "XFS AGF", agf_loc)?;
    ctx.check_uuid(&agf.agf_uuid, "XFS AGF", agf_loc)?;

    let agi_buf = header(ctx, agno, AGI_SECTOR, "XFS AGI")?;
    let agi = RawAgi::decode(
        agi_buf[..RawAgi::SIZE]
            .try_into()
            .expect("sector holds AGI"),
    );
    let agi_loc =
        Location::Byte(u64::from(agno) * u64::from(ctx.agblocks) * ctx.bs + 2 * ctx.sectsize);
    if agi.agi_magicnum != AGI_MAGIC || agi.agi_seqno != agno || agi.agi_length != ag_len {
        return Err(Error::corrupt(
            "XFS AGI",
            agi_loc,
            format!(
                "AG {agno}: bad magic, sequence number {} or length {} (want {ag_len})",
                agi.agi_seqno, agi.agi_length
            ),
        ));
    }
    ctx.check_crc(&agi_buf, AGI_CRC_OFF, "XFS AGI", agi_loc)?;
    ctx.check_uuid(&agi.agi_uuid, "XFS AGI", agi_loc)?;
    if agi.agi_level == 0 || agi.agi_level > u32::from(MAX_BTREE_LEVELS) {
        return Err(Error::corrupt(
            "XFS AGI",
            agi_loc,
            format!("AG {agno}: inode B+tree has {} levels", agi.agi_level),
        ));
    }

    let mut recs = Vec::new();
    walk_inobt(
        ctx,
        agno,
        agi.agi_root,
        agi.agi_level as u16 - 1,
        &mut recs,
        &mut 0,
    )?;
    let mut inodes = Vec::new();
    let mut last_start: Option<u32> = None;
    for r in &recs {
        if last_start.is_some_and(|s| r.ir_startino <= s) {
            return Err(Error::corrupt(
                "XFS inode B+tree",
                Location::Whole,
                format!(
                    "AG {agno}: record for inode {} is out of order",
                    r.ir_startino
                ),
            ));
        }
        last_start = Some(r.ir_startino);
        read_chunk(ctx, agno, r, &mut inodes)?;
    }
    Ok(AgInodes {
        count: agi.agi_count,
        freecount: agi.agi_freecount,
        free_blocks: agf.agf_freeblks,
        inodes,
    })
}

/// Collect the leaf records of the inode B+tree below `agbno`, left to right.
/// `visits` bounds the walk by the AG's size (a cycle or a shared subtree can
/// not make it loop or blow up).
fn walk_inobt(
    ctx: &Ctx,
    agno: u32,
    agbno: u32,
    level: u16,
    out: &mut Vec<InobtRec>,
    visits: &mut u32,
) -> Result<()> {
    *visits += 1;
    let what = "XFS inode B+tree block";
    if *visits > ctx.agblocks {
        return Err(Error::corrupt(
            what,
            Location::Block(u64::from(agbno)),
            format!("AG {agno}: the inode B+tree visits more blocks than the AG has"),
        ));
    }
    let at = ctx.ag_byte(agno, agbno, what)?;
    let mut buf = vec![0u8; ctx.bs as usize];
    ctx.read(at, &mut buf)?;
    let loc = Location::Block(u64::from(agbno));
    let hdr = ShortBtreeHeader::decode(buf[..ShortBtreeHeader::SIZE].try_into().expect("56"));
    let (magic, hlen) = if ctx.v5 {
        (btree_magic::IBT_CRC, ShortBtreeHeader::SIZE)
    } else {
        (btree_magic::IBT, SHORT_BTREE_V4_LEN)
    };
    if hdr.bb_magic != magic {
        return Err(Error::corrupt(
            what,
            loc,
            format!("AG {agno} block {agbno}: bad magic {:#x}", hdr.bb_magic),
        ));
    }
    ctx.check_crc(&buf, SHORT_BTREE_CRC_OFF, what, loc)?;
    if ctx.v5 {
        ctx.check_uuid(&hdr.bb_uuid, what, loc)?;
        if hdr.bb_owner != agno || hdr.bb_blkno != at / 512 {
            return Err(Error::corrupt(
                what,
                loc,
                format!(
                    "AG {agno} block {agbno}: owner {} / address {} do not match",
                    hdr.bb_owner, hdr.bb_blkno
                ),
            ));
        }
    }
    if hdr.bb_level != level {
        return Err(Error::corrupt(
            what,
            loc,
            format!(
                "AG {agno} block {agbno}: level {} where {level} was expected",
                hdr.bb_level
            ),
        ));
    }
    let space = buf.len() - hlen;
    let n = usize::from(hdr.bb_numrecs);
    if level == 0 {
        if n > space / InobtRec::SIZE {
            return Err(Error::corrupt(
                what,
                loc,
                format!("AG {agno} block {agbno}: {n} records do not fit"),
            ));
        }
        for i in 0..n {
            let o = hlen + i * InobtRec::SIZE;
            let r = InobtRec::decode(buf[o..o + 16].try_into().expect("16"), ctx.sparse);
            out.push(r);
        }
        return Ok(());
    }
    let maxrecs = space / 8;
    if n == 0 || n > maxrecs {
        return Err(Error::corrupt(
            what,
            loc,
            format!("AG {agno} block {agbno}: {n} keys in a node of {maxrecs}"),
        ));
    }
    let ptrs = hlen + maxrecs * 4;
    for i in 0..n {
        let o = ptrs + i * 4;
        let child = u32::from_be_bytes(buf[o..o + 4].try_into().expect("4"));
        walk_inobt(ctx, agno, child, level - 1, out, visits)?;
    }
    Ok(())
}

/// Read the inodes of one chunk record and decode the allocated ones.
fn read_chunk(ctx: &Ctx, agno: u32, r: &InobtRec, out: &mut Vec<Decoded>) -> Result<()> {
    let inopb = 1u32 << ctx.inopblog;
    let agbno = r.ir_startino >> ctx.inopblog;
    let base = ctx.ag_byte(agno, agbno, "XFS inode chunk")?
        + u64::from(r.ir_startino % inopb) * ctx.isize as u64;
    // Read in pieces of four inodes (one holemask bit), skipping holes and
    // pieces with nothing allocated; adjacent pieces are read together.
    let mut i = 0u32;
    let mut buf = Vec::new();
    while i < INODES_PER_CHUNK {
        let piece = |j: u32| (j..j + 4).any(|k| r.is_allocated(k));
        if !piece(i) {
            i += 4;
            continue;
        }
        let start = i;
        while i < INODES_PER_CHUNK && piece(i) {
            i += 4;
        }
        let len = (i - start) as usize * ctx.isize;
        let at = base + u64::from(start) * ctx.isize as u64;
        crate::disk::check_range("XFS inode chunk", ctx.disk.len(), at, len as u64)?;
        // The chunk must stay inside the AG.
        let last_agbno = (r.ir_startino + i - 1) >> ctx.inopblog;
        ctx.ag_byte(agno, last_agbno, "XFS inode chunk")?;
        buf.resize(len, 0);
        ctx.read(at, &mut buf)?;
        for k in start..i {
            if !r.is_allocated(k) {
                continue;
            }
            let off = (k - start) as usize * ctx.isize;
            let agino = r.ir_startino + k;
            let ino = crate::fs::xfs::ondisk::ino_make(agno, agino, ctx.agblklog, ctx.inopblog);
            out.push(inode::decode(ctx, ino, &buf[off..off + ctx.isize])?);
        }
    }
    Ok(())
}
