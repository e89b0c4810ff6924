//! Fast commits (ext4's logical journal, kept in the last `s_num_fc_blks` blocks
//! of the journal): the scan that finds which of them are valid, and their
//! replay into a [`FastReplay`], a description of what they change that the
//! reader applies while it walks the filesystem.
//!
//! The kernel replays a fast commit by re-running ext4 operations on the disk
//! (fs/ext4/fast_commit.c: ext4_fc_replay; e2fsck does the same in
//! e2fsck/journal.c). imgsan only needs the tree the filesystem then holds, so
//! the replay here is logical: per inode, the last raw inode logged (its block
//! map kept from the disk, as both replayers keep it) and the block ranges
//! mapped or unmapped, in order; per directory, the names linked and unlinked,
//! in order. Bitmaps and counters are the builder's business.
//!
//! The area is a sequence of tag-length-value records (`struct ext4_fc_tl`,
//! little-endian, fs/ext4/fast_commit.h) that never cross a block boundary. A
//! HEAD record names the transaction the fast commits extend; each TAIL record
//! closes one fast commit with a crc32c over the records since the previous TAIL.
//! Only records of commits whose TAIL checks out are replayed.

use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Location, Result};
use crate::fs::codec::{le_u16, le_u32};
use crate::fs::ext4::csum::crc32c_raw;
use crate::fs::ext4::ondisk::{inode_flags, EXT4_EXT_MAGIC, GOOD_OLD_INODE_SIZE};

pub const EXT4_FC_TAG_ADD_RANGE: u16 = 0x1;
pub const EXT4_FC_TAG_DEL_RANGE: u16 = 0x2;
pub const EXT4_FC_TAG_CREAT: u16 = 0x3;
pub const EXT4_FC_TAG_LINK: u16 = 0x4;
pub const EXT4_FC_TAG_UNLINK: u16 = 0x5;
pub const EXT4_FC_TAG_INODE: u16 = 0x6;
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
    /// Records of the fast commit being read (not yet closed by a TAIL).
    pending: Vec<(u16, Vec<u8>)>,
    /// Records of the valid fast commits, in area order (HEAD, PAD and TAIL
    /// left out).
    pub records: Vec<(u16, Vec<u8>)>,
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
            pending: Vec::new(),
            records: Vec::new(),
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
                    if tag != EXT4_FC_TAG_PAD {
                        self.pending.push((tag, block[val..val_end].to_vec()));
                    }
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
                        self.records.append(&mut self.pending);
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

/// One change to an inode's block map, in the order logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOp {
    /// Logical blocks `lblk..lblk + len` now live at `pblk..` (ADD_RANGE of
    /// written blocks).
    Map { lblk: u64, len: u64, pblk: u64 },
    /// Logical blocks `lblk..lblk + len` are no longer mapped, or read as zeros
    /// (DEL_RANGE, and ADD_RANGE of unwritten blocks).
    Unmap { lblk: u64, len: u64 },
}

/// One change to a directory's names, in the order logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameOp {
    pub name: Vec<u8>,
    pub ino: u32,
    /// LINK or CREAT (true), UNLINK (false).
    pub link: bool,
}

/// What the valid fast commits change, for the reader to apply.
#[derive(Debug, Clone, Default)]
pub struct FastReplay {
    /// The last INODE record per inode: `128 + i_extra_isize` bytes.
    pub inodes: HashMap<u32, Vec<u8>>,
    pub ranges: HashMap<u32, Vec<RangeOp>>,
    pub names: HashMap<u32, Vec<NameOp>>,
    /// Records replayed.
    pub records: u32,
}

/// Why a record cannot be replayed.
fn bad(tag: u16, i: usize, why: &str) -> Error {
    Error::corrupt(
        "ext4 fast commit record",
        Location::Entry(i as u64),
        format!("tag {tag}: {why}"),
    )
}

/// Decode the records of the valid fast commits. `inode_size` and
/// `blocks_count` bound what a record may name; `inodes_count` too.
pub fn decode(
    records: &[(u16, Vec<u8>)],
    inode_size: usize,
    inodes_count: u32,
    blocks_count: u64,
) -> Result<FastReplay> {
    let mut out = FastReplay::default();
    let ino_ok = |ino: u32| ino >= 1 && ino <= inodes_count;
    for (i, (tag, v)) in records.iter().enumerate() {
        let tag = *tag;
        let u32_at = |o: usize| le_u32(v, o).ok_or_else(|| bad(tag, i, "too short"));
        match tag {
            EXT4_FC_TAG_ADD_RANGE => {
                // struct ext4_fc_add_range: fc_ino, then a struct ext4_extent.
                let ino = u32_at(0)?;
                let lblk = u64::from(u32_at(4)?);
                let raw_len = le_u16(v, 8).ok_or_else(|| bad(tag, i, "too short"))?;
                let hi = le_u16(v, 10).ok_or_else(|| bad(tag, i, "too short"))?;
                let lo = u32_at(12)?;
                let pblk = (u64::from(hi) << 32) | u64::from(lo);
                // ee_len above 32768 marks an unwritten extent (fs/ext4/ext4_extents.h).
                let (len, unwritten) = if raw_len > 32768 {
                    (u64::from(raw_len - 32768), true)
                } else {
                    (u64::from(raw_len), false)
                };
                if !ino_ok(ino) {
                    return Err(bad(tag, i, &format!("inode {ino} out of range")));
                }
                if len == 0 {
                    continue;
                }
                let op = if unwritten {
                    RangeOp::Unmap { lblk, len }
                } else {
                    if pblk == 0 || pblk.checked_add(len).is_none_or(|e| e > blocks_count) {
                        return Err(bad(
                            tag,
                            i,
                            &format!("blocks {pblk}+{len} outside the filesystem"),
                        ));
                    }
                    RangeOp::Map { lblk, len, pblk }
                };
                out.ranges.entry(ino).or_default().push(op);
            }
            EXT4_FC_TAG_DEL_RANGE => {
                let ino = u32_at(0)?;
                let lblk = u64::from(u32_at(4)?);
                let len = u64::from(u32_at(8)?);
                if !ino_ok(ino) {
                    return Err(bad(tag, i, &format!("inode {ino} out of range")));
                }
                out.ranges
                    .entry(ino)
                    .or_default()
                    .push(RangeOp::Unmap { lblk, len });
            }
            EXT4_FC_TAG_CREAT | EXT4_FC_TAG_LINK | EXT4_FC_TAG_UNLINK => {
                let parent = u32_at(0)?;
                let ino = u32_at(4)?;
                let name = &v[8..];
                if !ino_ok(parent) || !ino_ok(ino) {
                    return Err(bad(
                        tag,
                        i,
                        &format!("inode {parent} or {ino} out of range"),
                    ));
                }
                if name.is_empty() || name.len() > 255 || name.contains(&b'/') || name.contains(&0)
                {
                    return Err(bad(tag, i, "not a valid file name"));
                }
                out.names.entry(parent).or_default().push(NameOp {
                    name: name.to_vec(),
                    ino,
                    link: tag != EXT4_FC_TAG_UNLINK,
                });
            }
            EXT4_FC_TAG_INODE => {
                let ino = u32_at(0)?;
                if !ino_ok(ino) {
                    return Err(bad(tag, i, &format!("inode {ino} out of range")));
                }
                let raw = &v[4..];
                // e2fsck/journal.c: ext4_fc_handle_inode takes 128 bytes plus
                // i_extra_isize, which must hold i_extra_isize and i_checksum_hi.
                let mut len = GOOD_OLD_INODE_SIZE;
                if inode_size > GOOD_OLD_INODE_SIZE {
                    let extra = usize::from(
                        le_u16(raw, GOOD_OLD_INODE_SIZE).ok_or_else(|| bad(tag, i, "too short"))?,
                    );
                    if extra < 4 || extra > inode_size - GOOD_OLD_INODE_SIZE {
                        return Err(bad(tag, i, &format!("i_extra_isize {extra}")));
                    }
                    len += extra;
                }
                let raw = raw
                    .get(..len)
                    .ok_or_else(|| bad(tag, i, "raw inode too short"))?;
                out.inodes.insert(ino, raw.to_vec());
            }
            _ => return Err(bad(tag, i, "not a replayable record")),
        }
        out.records += 1;
    }
    Ok(out)
}

impl FastReplay {
    /// Inode `ino`'s on-disk bytes (`disk`, `s_inode_size` long) with its INODE
    /// record applied the way both replayers apply it: everything up to
    /// `i_block` and from `i_generation` on comes from the record, `i_block`
    /// stays (an empty extent root when it is not one; the record's own for
    /// inline data). `None` when no record names the inode. The caller
    /// recomputes the checksum.
    pub fn patched_inode(&self, ino: u32, disk: &[u8]) -> Option<Vec<u8>> {
        const I_BLOCK: usize = 0x28;
        const I_GENERATION: usize = 0x64;
        const I_FLAGS: usize = 0x20;
        let rec = self.inodes.get(&ino)?;
        let mut b = disk.to_vec();
        let n = rec.len().min(b.len());
        b[..I_BLOCK].copy_from_slice(&rec[..I_BLOCK]);
        b[I_GENERATION..n].copy_from_slice(&rec[I_GENERATION..n]);
        let flags = le_u32(&b, I_FLAGS).unwrap_or(0);
        if flags & inode_flags::EXTENTS != 0 {
            if le_u16(&b, I_BLOCK) != Some(EXT4_EXT_MAGIC) {
                // An empty depth-0 root: magic, no entries, room for 4.
                b[I_BLOCK..I_BLOCK + 12].fill(0);
                b[I_BLOCK..I_BLOCK + 2].copy_from_slice(&EXT4_EXT_MAGIC.to_le_bytes());
                b[I_BLOCK + 4..I_BLOCK + 6].copy_from_slice(&4u16.to_le_bytes());
            }
        } else if flags & inode_flags::INLINE_DATA != 0 {
            b[I_BLOCK..I_GENERATION].copy_from_slice(&rec[I_BLOCK..I_GENERATION]);
        }
        Some(b)
    }

    /// Apply the logged range changes of inode `ino` to its block map, given as
    /// sorted, non-overlapping (logical, physical, length) runs.
    pub fn apply_ranges(&self, ino: u32, runs: &mut Vec<(u64, u64, u64)>) {
        let Some(ops) = self.ranges.get(&ino) else {
            return;
        };
        let mut map: BTreeMap<u64, (u64, u64)> =
            runs.iter().map(|&(l, p, n)| (l, (p, n))).collect();
        for op in ops {
            let (lblk, len) = match *op {
                RangeOp::Map { lblk, len, .. } | RangeOp::Unmap { lblk, len } => (lblk, len),
            };
            let end = lblk.saturating_add(len);
            // Cut lblk..end out of the map: split the run that starts before it,
            // drop or trim the ones that start inside it.
            if let Some((&s, &(p, n))) = map.range(..lblk).next_back() {
                if s + n > lblk {
                    map.insert(s, (p, lblk - s));
                    if s + n > end {
                        map.insert(end, (p + (end - s), s + n - end));
                    }
                }
            }
            let inside: Vec<u64> = map.range(lblk..end).map(|(&s, _)| s).collect();
            for s in inside {
                let (p, n) = map.remove(&s).unwrap_or((0, 0));
                if s + n > end {
                    map.insert(end, (p + (end - s), s + n - end));
                }
            }
            if let RangeOp::Map { pblk, .. } = *op {
                map.insert(lblk, (pblk, len));
            }
        }
        *runs = map.into_iter().map(|(l, (p, n))| (l, p, n)).collect();
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

    #[test]
    fn ranges_map_over_and_cut_the_disk_map() {
        let mut f = FastReplay::default();
        f.ranges.insert(
            12,
            vec![
                // Replace the middle of the first run, punch the second.
                RangeOp::Map {
                    lblk: 2,
                    len: 2,
                    pblk: 900,
                },
                RangeOp::Unmap { lblk: 10, len: 5 },
                RangeOp::Map {
                    lblk: 40,
                    len: 1,
                    pblk: 950,
                },
            ],
        );
        let mut runs = vec![(0, 100, 8), (8, 500, 10)];
        f.apply_ranges(12, &mut runs);
        assert_eq!(
            runs,
            vec![
                (0, 100, 2),
                (2, 900, 2),
                (4, 104, 4),
                (8, 500, 2),
                (15, 507, 3),
                (40, 950, 1)
            ]
        );
        // Another inode is left alone.
        let mut other = vec![(0, 100, 8)];
        f.apply_ranges(13, &mut other);
        assert_eq!(other, vec![(0, 100, 8)]);
    }

    #[test]
    fn records_decode_and_bad_ones_are_refused() {
        let mut inode = vec![0u8; 160];
        inode[0x80] = 32;
        inode[0x20..0x24].copy_from_slice(&inode_flags::EXTENTS.to_le_bytes());
        let mut ino_rec = 12u32.to_le_bytes().to_vec();
        ino_rec.extend_from_slice(&inode);
        let mut add = Vec::new();
        add.extend_from_slice(&12u32.to_le_bytes());
        add.extend_from_slice(&0u32.to_le_bytes());
        add.extend_from_slice(&(32768u16 + 4).to_le_bytes());
        add.extend_from_slice(&0u16.to_le_bytes());
        add.extend_from_slice(&700u32.to_le_bytes());
        let mut link = Vec::new();
        link.extend_from_slice(&2u32.to_le_bytes());
        link.extend_from_slice(&12u32.to_le_bytes());
        link.extend_from_slice(b"new");
        let recs = vec![
            (EXT4_FC_TAG_INODE, ino_rec),
            (EXT4_FC_TAG_ADD_RANGE, add),
            (EXT4_FC_TAG_CREAT, link.clone()),
        ];
        let f = decode(&recs, 256, 1024, 4096).unwrap();
        assert_eq!(f.records, 3);
        assert_eq!(f.ranges[&12], vec![RangeOp::Unmap { lblk: 0, len: 4 }]);
        assert_eq!(f.names[&2][0].name, b"new");
        // The disk's i_block is kept; a disk inode without an extent root gets
        // an empty one.
        let disk = vec![0u8; 256];
        let p = f.patched_inode(12, &disk).unwrap();
        assert_eq!(p.len(), 256);
        assert_eq!(le_u16(&p, 0x28), Some(EXT4_EXT_MAGIC));
        assert!(f.patched_inode(13, &disk).is_none());

        let mut bad_name = link.clone();
        bad_name.push(b'/');
        assert!(decode(&[(EXT4_FC_TAG_LINK, bad_name)], 256, 1024, 4096).is_err());
        let mut far = Vec::new();
        far.extend_from_slice(&12u32.to_le_bytes());
        far.extend_from_slice(&0u32.to_le_bytes());
        far.extend_from_slice(&4u16.to_le_bytes());
        far.extend_from_slice(&0u16.to_le_bytes());
        far.extend_from_slice(&4094u32.to_le_bytes());
        assert!(decode(&[(EXT4_FC_TAG_ADD_RANGE, far)], 256, 1024, 4096).is_err());
        assert!(decode(
            &[(EXT4_FC_TAG_INODE, vec![12, 0, 0, 0, 1])],
            256,
            1024,
            4096
        )
        .is_err());
        assert!(decode(&[(EXT4_FC_TAG_UNLINK, vec![0; 8])], 256, 1024, 4096).is_err());
    }

    #[test]
    fn only_records_of_committed_fast_commits_are_kept() {
        let mut s = Scanner::new(5);
        s.feed(&area(5, 5));
        assert_eq!(s.records.len(), 1);
        assert_eq!(s.records[0].0, 6);
        let mut s = Scanner::new(5);
        s.feed(&area(5, 4));
        assert!(s.records.is_empty());
    }
}
