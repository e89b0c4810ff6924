//! The XFS log: finding its head and tail and telling a clean log (its last
//! record is an unmount record) from one that needs recovery.
//!
//! Layout (the kernel's `xfs_log_recover.c`): the log is a ring of 512-byte
//! basic blocks. Every block written in one pass of the ring starts with that
//! pass's cycle number (the bytes it hides are kept in the record header's
//! `h_cycle_data`), except record headers, which start with the magic
//! 0xFEEDBABE. The head is where the cycle number drops: blocks before it were
//! written in the current pass, blocks from it on in the previous one. A write
//! torn by a crash shows as old-cycle blocks inside the newest records, so the
//! first old-cycle block is taken as the head and the records are cut there.
//!
//! Replaying a dirty log is not done here yet: a log that needs recovery is
//! reported, and the reader refuses it (naming the log's head and tail) rather
//! than read a stale filesystem.

use crate::disk::Disk;
use crate::error::{Error, Location, Result};

/// Record header magic.
pub const XLOG_HEADER_MAGIC: u32 = 0xFEED_BABE;
/// Basic block size.
pub const BBSIZE: u64 = 512;
/// Operation header flags (`oh_flags`).
pub mod op_flag {
    pub const START_TRANS: u8 = 0x01;
    pub const COMMIT_TRANS: u8 = 0x02;
    pub const CONTINUE_TRANS: u8 = 0x04;
    pub const WAS_CONT_TRANS: u8 = 0x08;
    pub const END_TRANS: u8 = 0x10;
    pub const UNMOUNT_TRANS: u8 = 0x20;
}

crate::ondisk_struct! {
    /// `struct xlog_rec_header` (its fixed part; the header occupies a whole
    /// basic block, or more with extended headers).
    pub struct RecordHeader: 324, be {
        h_magicno: u32 = 0,
        h_cycle: u32 = 4,
        h_version: u32 = 8,
        h_len: u32 = 12,
        h_lsn: u64 = 16,
        h_tail_lsn: u64 = 24,
        /// Little-endian.
        h_crc: u32 = 32,
        h_prev_block: u32 = 36,
        h_num_logops: u32 = 40,
        h_cycle_data: [u32; 64] = 44,
        h_fmt: u32 = 300,
        h_fs_uuid: [u8; 16] = 304,
        h_size: u32 = 320,
    }
}

/// The size of an operation header (`struct xlog_op_header`).
pub const OP_HEADER_LEN: usize = 12;

/// What the log looks like.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LogState {
    /// The log is clean: its newest record is an unmount record.
    pub clean: bool,
    /// The head (first block not written in the current pass), in basic blocks
    /// from the log's start, and its cycle.
    pub head_block: u64,
    pub head_cycle: u32,
    /// The newest record's start and its tail LSN (cycle, block).
    pub last_record: u64,
    pub tail_cycle: u32,
    pub tail_block: u32,
    /// The log has never been written (all zeros): treated as clean.
    pub empty: bool,
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

/// Examine the log at byte `start` of `disk`, `len` bytes long.
pub fn examine(disk: &dyn Disk, start: u64, len: u64) -> Result<LogState> {
    let what = "XFS log";
    let nbb = len / BBSIZE;
    if nbb < 2 || !len.is_multiple_of(BBSIZE) {
        return Err(Error::corrupt(
            what,
            Location::Byte(start),
            format!("log of {len} bytes"),
        ));
    }
    crate::disk::check_range(what, disk.len(), start, len)?;
    // The cycle word of every basic block, read in pieces so a large log does
    // not need its whole size in memory at once.
    let mut cycles = Vec::with_capacity(nbb as usize);
    let mut magic = Vec::with_capacity(nbb as usize);
    const PIECE: u64 = 1 << 20;
    let mut buf = vec![0u8; PIECE as usize];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(PIECE);
        disk.read_at(start + at, &mut buf[..n as usize])?;
        for bb in buf[..n as usize].chunks_exact(BBSIZE as usize) {
            let w = be32(bb, 0);
            if w == XLOG_HEADER_MAGIC {
                magic.push(true);
                cycles.push(be32(bb, 4));
            } else {
                magic.push(false);
                cycles.push(w);
            }
        }
        at += n;
    }
    if cycles.iter().all(|&c| c == 0) {
        return Ok(LogState {
            clean: true,
            empty: true,
            ..Default::default()
        });
    }
    let first = cycles[0];
    // The head: the first block of an older cycle than block 0's. If there is
    // none, the current pass ended exactly at the log's end.
    let head = cycles
        .iter()
        .position(|&c| c != first)
        .map(|p| p as u64)
        .unwrap_or(0);
    let head_cycle = first;
    if head != 0 && cycles[head as usize] != first.wrapping_sub(1) && cycles[head as usize] != 0 {
        return Err(Error::corrupt(
            what,
            Location::Byte(start + head * BBSIZE),
            format!(
                "cycle {} follows cycle {first}: not a log written in passes",
                cycles[head as usize]
            ),
        ));
    }
    // The newest record header: the nearest one before the head (going round).
    let mut k = if head == 0 { nbb - 1 } else { head - 1 };
    let mut steps = 0;
    while !magic[k as usize] {
        steps += 1;
        if steps >= nbb {
            return Err(Error::corrupt(
                what,
                Location::Byte(start),
                "no record header in the log",
            ));
        }
        k = if k == 0 { nbb - 1 } else { k - 1 };
    }
    let mut hb = vec![0u8; BBSIZE as usize];
    disk.read_at(start + k * BBSIZE, &mut hb)?;
    let h = RecordHeader::decode(hb[..RecordHeader::SIZE].try_into().expect("324"));
    let hdr_bbs = if h.h_version & 2 != 0 && h.h_size > 32 * 1024 {
        u64::from(h.h_size.div_ceil(32 * 1024))
    } else {
        1
    };
    let rec_bbs = u64::from(h.h_len).div_ceil(BBSIZE);
    let data = (k + hdr_bbs) % nbb;
    // An unmount record is one operation with the UNMOUNT flag, whose record
    // ends at the head.
    let ends_at_head = (k + hdr_bbs + rec_bbs) % nbb == head % nbb;
    let mut clean = false;
    if ends_at_head && h.h_num_logops == 1 && h.h_len as usize >= OP_HEADER_LEN {
        let mut db = vec![0u8; BBSIZE as usize];
        disk.read_at(start + data * BBSIZE, &mut db)?;
        clean = db[9] & op_flag::UNMOUNT_TRANS != 0;
    }
    Ok(LogState {
        clean,
        head_block: head,
        head_cycle,
        last_record: k,
        tail_cycle: (h.h_tail_lsn >> 32) as u32,
        tail_block: h.h_tail_lsn as u32,
        empty: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;

    /// A log of `nbb` blocks: records of `rec` blocks (header + data) written
    /// from block 0 in cycle `cycle` up to `head`, the rest left from cycle
    /// `cycle - 1` (or zero when `cycle` is 1). The record ending at the head
    /// is an unmount record when `unmount`.
    fn log(nbb: usize, head: usize, rec: usize, cycle: u32, unmount: bool) -> Vec<u8> {
        let mut b = vec![0u8; nbb * 512];
        let old = cycle.saturating_sub(1);
        let stamp = |from: usize, to: usize, c: u32, b: &mut Vec<u8>| {
            let mut k = from;
            while k < to {
                let h = k * 512;
                b[h..h + 4].copy_from_slice(&XLOG_HEADER_MAGIC.to_be_bytes());
                b[h + 4..h + 8].copy_from_slice(&c.to_be_bytes());
                b[h + 12..h + 16].copy_from_slice(&(((rec - 1) * 512) as u32).to_be_bytes());
                b[h + 40..h + 44].copy_from_slice(&1u32.to_be_bytes());
                for d in k + 1..(k + rec).min(nbb) {
                    b[d * 512..d * 512 + 4].copy_from_slice(&c.to_be_bytes());
                }
                k += rec;
            }
        };
        if old > 0 {
            stamp(0, nbb, old, &mut b);
        }
        stamp(0, head, cycle, &mut b);
        // The last record before the head: its first op's flags.
        let last = head - rec;
        b[(last + 1) * 512 + 9] = if unmount {
            op_flag::UNMOUNT_TRANS
        } else {
            op_flag::COMMIT_TRANS
        };
        b
    }

    fn examine_bytes(b: Vec<u8>) -> LogState {
        let len = b.len() as u64;
        examine(&MemDisk::new(b), 0, len).unwrap()
    }

    #[test]
    fn head_is_found_in_the_first_pass_and_after_a_wrap() {
        let st = examine_bytes(log(400, 120, 4, 1, true));
        assert!(st.clean);
        assert_eq!(
            (st.head_block, st.head_cycle, st.last_record),
            (120, 1, 116)
        );
        let st = examine_bytes(log(400, 200, 4, 7, true));
        assert!(st.clean);
        assert_eq!(
            (st.head_block, st.head_cycle, st.last_record),
            (200, 7, 196)
        );
        let st = examine_bytes(log(400, 200, 4, 7, false));
        assert!(!st.clean);
    }

    #[test]
    fn a_pass_ending_at_the_log_end_puts_the_head_at_zero() {
        let st = examine_bytes(log(400, 400, 4, 3, true));
        assert!(st.clean);
        assert_eq!((st.head_block, st.last_record), (0, 396));
    }

    #[test]
    fn a_torn_record_makes_the_log_dirty() {
        // The newest record lost its last block: it no longer ends at the head.
        let mut b = log(400, 200, 4, 7, true);
        b[199 * 512..199 * 512 + 4].copy_from_slice(&6u32.to_be_bytes());
        let st = examine_bytes(b);
        assert_eq!(st.head_block, 199);
        assert!(!st.clean);
    }

    #[test]
    fn zeroed_and_garbage_logs() {
        assert!(examine_bytes(vec![0u8; 512 * 64]).empty);
        let mut b = vec![0u8; 512 * 64];
        b[0..4].copy_from_slice(&9u32.to_be_bytes());
        b[512..516].copy_from_slice(&3u32.to_be_bytes());
        assert!(examine(&MemDisk::new(b), 0, 512 * 64).is_err());
    }
}
