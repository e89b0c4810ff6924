//! Recognising fast commits (ext4's logical journal, kept in the last
//! `s_num_fc_blks` blocks of the journal) without replaying them.
//!
//! Replaying a fast commit means re-running ext4 operations (add and remove
//! extents, link and unlink names, rewrite inodes, reallocate blocks in the
//! bitmaps), which only a writable ext4 implementation can do. imgsan does not
//! have one, so it only tells whether the area holds fast commits that the kernel
//! would have replayed on top of the full commits. It never changes the overlay.
//!
//! The area is a sequence of tag-length-value records (`struct ext4_fc_tl`,
//! little-endian, fs/ext4/fast_commit.h) that never cross a block boundary. A
//! HEAD record names the transaction the fast commits extend; each TAIL record
//! closes one fast commit with a crc32c over the records since the previous TAIL.

use crate::fs::codec::{le_u16, le_u32};
use crate::fs::ext4::csum::crc32c_raw;

pub const EXT4_FC_TAG_ADD_RANGE: u16 = 0x1;
pub const EXT4_FC_TAG_PAD: u16 = 0x7;
pub const EXT4_FC_TAG_TAIL: u16 = 0x8;
pub const EXT4_FC_TAG_HEAD: u16 = 0x9;
/// `fc_features` bits a HEAD may carry (none are defined).
const EXT4_FC_SUPPORTED_FEATURES: u32 = 0;
/// Bytes of `struct ext4_fc_tl`.
const TL_SIZE: usize = 4;

/// What a scan of the fast-commit area found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FastCommitScan {
    /// Fast commits whose TAIL names the expected transaction and whose crc
    /// matches: the kernel would replay these.
    pub commits: u32,
    /// Records inside those commits (HEAD and TAIL included).
    pub tags: u32,
    /// Why the scan stopped before the end of the area, if it did.
    pub stop: Option<String>,
}

/// Scans fast-commit blocks one at a time, the way the kernel's scan pass does
/// (fs/ext4/fast_commit.c: ext4_fc_replay_scan).
pub struct Scanner {
    expected_tid: u32,
    crc: u32,
    cur_tag: u32,
    done: bool,
    blocks: u32,
    pub result: FastCommitScan,
}

impl Scanner {
    pub fn new(expected_tid: u32) -> Self {
        Scanner {
            expected_tid,
            crc: 0,
            cur_tag: 0,
            done: false,
            blocks: 0,
            result: FastCommitScan::default(),
        }
    }

    /// Whether more blocks can change the result.
    pub fn wants_more(&self) -> bool {
        !self.done
    }

    fn stop(&mut self, why: String) {
        self.done = true;
        if self.result.stop.is_none() {
            self.result.stop = Some(why);
        }
    }

    /// Feed the next block of the area.
    pub fn feed(&mut self, block: &[u8]) {
        if self.done {
            return;
        }
        let first = self.blocks == 0;
        self.blocks += 1;
        if first && le_u16(block, 0) != Some(EXT4_FC_TAG_HEAD) {
            // No fast commit since the last full commit: the common case.
            self.done = true;
            return;
        }
        // Records start anywhere before the last byte, as in the kernel's loop.
        let end = block.len().saturating_sub(1);
        let mut cur = 0usize;
        while cur < end {
            let (Some(tag), Some(len)) = (le_u16(block, cur), le_u16(block, cur + 2)) else {
                self.stop(format!("record header at byte {cur} crosses the block end"));
                return;
            };
            let val = cur + TL_SIZE;
            let Some(val_end) = val
                .checked_add(usize::from(len))
                .filter(|&e| e <= block.len())
            else {
                self.stop(format!(
                    "record {tag} at byte {cur} claims {len} bytes past the block end"
                ));
                return;
            };
            match tag {
                EXT4_FC_TAG_ADD_RANGE..=EXT4_FC_TAG_PAD => {
                    self.cur_tag += 1;
                    self.crc = crc32c_raw(self.crc, &block[cur..val_end]);
                }
                EXT4_FC_TAG_TAIL => {
                    self.cur_tag += 1;
                    let (Some(tid), Some(crc)) = (le_u32(block, val), le_u32(block, val + 4))
                    else {
                        self.stop("short TAIL record".into());
                        return;
                    };
                    if len < 8 {
                        self.stop("short TAIL record".into());
                        return;
                    }
                    // The crc covers the TAIL's own header and tid, not its crc.
                    self.crc = crc32c_raw(self.crc, &block[cur..val + 4]);
                    if tid == self.expected_tid && crc == self.crc {
                        self.result.commits += 1;
                        self.result.tags = self.cur_tag;
                    } else {
                        self.stop(format!(
                            "TAIL for transaction {tid} (expected {}) or crc mismatch",
                            self.expected_tid
                        ));
                        return;
                    }
                    self.crc = 0;
                }
                EXT4_FC_TAG_HEAD => {
                    let (Some(features), Some(tid)) = (le_u32(block, val), le_u32(block, val + 4))
                    else {
                        self.stop("short HEAD record".into());
                        return;
                    };
                    if len < 8 {
                        self.stop("short HEAD record".into());
                        return;
                    }
                    if features & !EXT4_FC_SUPPORTED_FEATURES != 0 {
                        self.stop(format!("HEAD with unknown features {features:#x}"));
                        return;
                    }
                    if tid != self.expected_tid {
                        // A fast-commit area left over from an earlier transaction.
                        self.stop(format!(
                            "HEAD for transaction {tid}, expected {}",
                            self.expected_tid
                        ));
                        return;
                    }
                    self.cur_tag += 1;
                    self.crc = crc32c_raw(self.crc, &block[cur..val_end]);
                }
                other => {
                    self.stop(format!("unknown record {other}"));
                    return;
                }
            }
            cur = val_end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(out: &mut Vec<u8>, tag: u16, val: &[u8]) {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&(val.len() as u16).to_le_bytes());
        out.extend_from_slice(val);
    }

    fn area(tid: u32, tail_tid: u32) -> Vec<u8> {
        let mut b = Vec::new();
        let mut head = Vec::new();
        head.extend_from_slice(&0u32.to_le_bytes());
        head.extend_from_slice(&tid.to_le_bytes());
        rec(&mut b, EXT4_FC_TAG_HEAD, &head);
        rec(&mut b, 6, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let start = b.len();
        b.extend_from_slice(&EXT4_FC_TAG_TAIL.to_le_bytes());
        b.extend_from_slice(&8u16.to_le_bytes());
        b.extend_from_slice(&tail_tid.to_le_bytes());
        let crc = crc32c_raw(0, &b[..start + 8]);
        b.extend_from_slice(&crc.to_le_bytes());
        // Pad the rest of the block.
        let pad = 1024 - b.len() - 4;
        rec(&mut b, EXT4_FC_TAG_PAD, &vec![0; pad]);
        b
    }

    #[test]
    fn a_valid_fast_commit_is_counted() {
        let mut s = Scanner::new(5);
        s.feed(&area(5, 5));
        assert_eq!(s.result.commits, 1);
        assert_eq!(s.result.tags, 3);
    }

    #[test]
    fn stale_or_damaged_areas_count_nothing() {
        let mut s = Scanner::new(6);
        s.feed(&area(5, 5));
        assert_eq!(s.result.commits, 0);
        assert!(s.result.stop.is_some());

        let mut b = area(5, 5);
        b[10] ^= 1; // inside the INODE record: the TAIL crc no longer matches
        let mut s = Scanner::new(5);
        s.feed(&b);
        assert_eq!(s.result.commits, 0);

        let mut s = Scanner::new(5);
        s.feed(&[0u8; 1024]);
        assert_eq!(s.result, FastCommitScan::default());
        assert!(!s.wants_more());
    }
}
