//! Encoding one inode record: ids split into low and high halves, timestamps with
//! their extra (epoch + nanosecond) words, sizes, `i_blocks`, the in-inode xattr
//! region and the metadata_csum checksum.
//!
//! Decides nothing about layout; the caller says what goes in `i_block` and how
//! many blocks the inode holds.

use crate::error::{Error, Result};
use crate::fs::ext4::ondisk::{inode_checksum, set_inode_checksum, RawInode, GOOD_OLD_INODE_SIZE};
use crate::tree::Time;

/// Everything that goes into one inode record.
#[derive(Debug, Clone)]
pub struct InodeRec {
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u16,
    pub flags: u32,
    pub generation: u32,
    pub projid: u32,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub crtime: Option<Time>,
    pub i_block: [u8; 60],
    /// `i_blocks` in 512-byte units.
    pub blocks_512: u64,
    pub file_acl: u64,
    /// The in-inode xattr region, empty for none.
    pub ibody: Vec<u8>,
}

impl Default for InodeRec {
    fn default() -> Self {
        InodeRec {
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            links: 0,
            flags: 0,
            generation: 0,
            projid: 0,
            atime: Time::default(),
            mtime: Time::default(),
            ctime: Time::default(),
            crtime: None,
            i_block: [0; 60],
            blocks_512: 0,
            file_acl: 0,
            ibody: Vec::new(),
        }
    }
}

/// Filesystem-wide facts inode encoding depends on.
#[derive(Debug, Clone, Copy)]
pub struct InodeParams {
    pub inode_size: usize,
    /// `i_extra_isize` for new inodes (0 with 128-byte inodes).
    pub extra_isize: u16,
    pub huge_file: bool,
    /// metadata_csum
    pub csum: bool,
    /// The project feature: `i_projid` is meaningful.
    pub project: bool,
}

/// The low 32 bits of a time and its extra word (`ext4_encode_extra_time`:
/// two epoch bits extending the seconds to 34 bits, then nanoseconds).
fn split_time(t: Time, extra: bool, what: &str, ino: u32) -> Result<(u32, u32)> {
    let lo = t.sec as i32;
    if !extra {
        if i64::from(lo) != t.sec {
            return Err(Error::unsupported(format!(
                "{what} {} of inode {ino} does not fit a 128-byte inode's 32-bit time",
                t.sec
            )));
        }
        return Ok((lo as u32, 0));
    }
    let epoch = (t.sec - i64::from(lo)) >> 32;
    if !(0..=3).contains(&epoch) || t.nsec >= 1_000_000_000 {
        return Err(Error::unsupported(format!(
            "{what} {}.{:09} of inode {ino} is outside ext4's time range",
            t.sec, t.nsec
        )));
    }
    Ok((lo as u32, (epoch as u32) | (t.nsec << 2)))
}

/// Encode `rec` as inode `ino` into `out` (`inode_size` bytes, zeroed by the
/// caller).
pub fn encode(p: &InodeParams, rec: &InodeRec, ino: u32, seed: u32, out: &mut [u8]) -> Result<()> {
    let extra = p.inode_size > GOOD_OLD_INODE_SIZE;
    let extra_isize = usize::from(p.extra_isize);
    // Times need 24 extra bytes (through i_crtime_extra) to keep nanoseconds.
    let xtime = extra && extra_isize >= 24;
    let (atime, atime_x) = split_time(rec.atime, xtime, "atime", ino)?;
    let (mtime, mtime_x) = split_time(rec.mtime, xtime, "mtime", ino)?;
    let (ctime, ctime_x) = split_time(rec.ctime, xtime, "ctime", ino)?;
    let (crtime, crtime_x) = match rec.crtime {
        Some(t) if xtime => split_time(t, true, "crtime", ino)?,
        _ => (0, 0),
    };
    let blocks = rec.blocks_512;
    let flags = rec.flags;
    if blocks >= 1 << 32 && (!p.huge_file || blocks >= 1 << 48) {
        return Err(Error::unsupported(format!(
            "inode {ino} holds {blocks} sectors, more than i_blocks can count"
        )));
    }
    if p.project && extra_isize < 32 && rec.projid != 0 {
        return Err(Error::unsupported(format!(
            "project id of inode {ino} needs 32 bytes of extra inode space"
        )));
    }
    if !p.project && rec.projid != 0 {
        return Err(Error::unsupported(format!(
            "inode {ino} has project id {} but the filesystem lacks the project feature",
            rec.projid
        )));
    }
    let raw = RawInode {
        i_mode: rec.mode,
        i_uid: rec.uid as u16,
        i_size_lo: rec.size as u32,
        i_atime: atime,
        i_ctime: ctime,
        i_mtime: mtime,
        i_dtime: 0,
        i_gid: rec.gid as u16,
        i_links_count: rec.links,
        i_blocks_lo: blocks as u32,
        i_flags: flags,
        l_i_version: 0,
        i_block: rec.i_block,
        i_generation: rec.generation,
        i_file_acl_lo: rec.file_acl as u32,
        i_size_high: (rec.size >> 32) as u32,
        i_obso_faddr: 0,
        l_i_blocks_high: (blocks >> 32) as u16,
        l_i_file_acl_high: (rec.file_acl >> 32) as u16,
        l_i_uid_high: (rec.uid >> 16) as u16,
        l_i_gid_high: (rec.gid >> 16) as u16,
        l_i_checksum_lo: 0,
        l_i_reserved: 0,
        i_extra_isize: if extra { p.extra_isize } else { 0 },
        i_checksum_hi: 0,
        i_ctime_extra: ctime_x,
        i_mtime_extra: mtime_x,
        i_atime_extra: atime_x,
        i_crtime: crtime,
        i_crtime_extra: crtime_x,
        i_version_hi: 0,
        i_projid: rec.projid,
    };
    let bytes = raw.to_bytes();
    let fixed = if extra {
        GOOD_OLD_INODE_SIZE + extra_isize
    } else {
        GOOD_OLD_INODE_SIZE
    };
    // Fields past i_extra_isize do not belong to the inode; copy only the ones
    // that do (the rest of the struct is zero anyway, but the xattr region may
    // start inside it when i_extra_isize < 32).
    out[..fixed.min(bytes.len())].copy_from_slice(&bytes[..fixed.min(bytes.len())]);
    if !rec.ibody.is_empty() {
        out[fixed..fixed + rec.ibody.len()].copy_from_slice(&rec.ibody);
    }
    if p.csum {
        let c = inode_checksum(seed, out);
        set_inode_checksum(out, c);
    }
    Ok(())
}
