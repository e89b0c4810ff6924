//! jbd2 journal replay into an in-memory overlay.
//!
//! Owns: reading the internal journal (through the journal inode's extent map),
//! validating its superblock, walking the circular log, and computing the final
//! content of every filesystem block that committed transactions wrote, after
//! revokes. Must not: write anything, read filesystem blocks outside the journal,
//! or interpret what the replayed blocks mean (that is the ext4 reader's job).
//!
//! Contract (stable, the ext4 reader depends on it):
//! - `replay` reads the journal through `read_block` (filesystem block numbers) and
//!   the journal inode's mapping, and returns the final content of every filesystem
//!   block the committed transactions wrote, after revokes, as an [`Overlay`].
//! - It never writes anything. The reader consults the overlay before the volume
//!   for every block it reads, including the superblock's block.
//!
//! What the replay matches: the kernel's recovery (fs/jbd2/recovery.c), whose three
//! passes (find the end of the log, collect revokes, write blocks) are folded here
//! into one walk that reads each journal block once:
//! - the log starts at `s_start` with transaction `s_sequence` and wraps from the
//!   end of the log area back to `s_first`;
//! - it ends at the first block that is not a control block of the expected
//!   transaction; a transaction is applied only once its commit block has been
//!   read and checked, so a torn last transaction is never applied;
//! - a commit block whose checksum fails ends the log: that transaction and
//!   everything after it are not applied. An older commit time than the previous
//!   commit's marks stale blocks and ends the log quietly, as in the kernel;
//! - a descriptor or revoke block whose checksum fails inside a transaction that
//!   then commits with a newer time is corruption: the kernel refuses to mount, and
//!   replay returns a checksum error;
//! - a revoke record for block B in transaction T cancels the writes of B by
//!   transactions up to and including T, and only those;
//! - a data block whose tag checksum fails and that no revoke cancels makes the
//!   kernel fail recovery (and the mount): replay returns a checksum error too.
//!
//! Fast commits that extend the last applied transaction are decoded into
//! [`Overlay::fast`] (see `fast_commit`), which the reader applies as it walks;
//! the report counts them and says so in a note.
//!
//! Bounds on hostile journals: every walk stops after as many blocks as the log
//! holds (a log cannot hold more live blocks than its own length, so going past
//! it means the log loops or lies), each journal block is read at most once, and
//! the overlay holds at most one block per journal block read.

pub mod fast_commit;
pub mod ondisk;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::superblock::{incompat, Superblock};
use crate::error::{Error, Location, Result};
pub use fast_commit::FastReplay;
use ondisk::{
    blocktype, feature, tag_flag, CsumKind, JournalSuperblock, LogFormat, JBD2_MAGIC_NUMBER,
};

/// Where the journal lives: the journal inode's extents as
/// (logical block, physical block, length in blocks), sorted by logical block.
#[derive(Debug, Clone, Default)]
pub struct JournalLocation {
    pub extents: Vec<(u64, u64, u64)>,
    /// Journal length in blocks (from the journal inode's size).
    pub len_blocks: u64,
}

/// Filesystem blocks replaced by the journal: block number -> block content.
#[derive(Debug, Clone, Default)]
pub struct Overlay {
    pub blocks: BTreeMap<u64, Arc<[u8]>>,
    /// What valid fast commits change on top of the blocks (inodes, block maps,
    /// directory names); the reader applies it as it walks.
    pub fast: Option<Arc<FastReplay>>,
}

impl Overlay {
    pub fn get(&self, block: u64) -> Option<&Arc<[u8]>> {
        self.blocks.get(&block)
    }

    /// Overlaid blocks in `start..start + len`.
    pub fn range(&self, start: u64, len: u64) -> impl Iterator<Item = (&u64, &Arc<[u8]>)> {
        self.blocks.range(start..start.saturating_add(len))
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }
}

/// What replay found and did, for `inspect` and reports.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplayReport {
    /// The superblock asked for recovery (needs_recovery).
    pub needed: bool,
    /// Committed transactions applied.
    pub transactions: u64,
    /// Distinct filesystem blocks written by replay.
    pub blocks: u64,
    /// Block writes skipped because a later revoke record cancelled them.
    pub revoked: u64,
    /// The sequence numbers of the first and last transactions applied.
    pub first_sequence: Option<u32>,
    pub last_sequence: Option<u32>,
    /// Valid fast commits found for the transaction after the last one applied,
    /// replayed into [`Overlay::fast`].
    pub fast_commits: u32,
    /// Things worth telling the user (a torn last transaction, ...).
    pub notes: Vec<String>,
    /// Journal blocks read (the superblock, the log, the fast-commit area).
    pub journal_blocks_read: u64,
    /// The first transaction not applied: where the log ended. The kernel starts
    /// its next transaction with this number.
    pub end_sequence: Option<u32>,
    /// A transaction that had blocks in the log but was not applied (no commit
    /// block, a bad commit checksum, or a log that ran past its own start).
    pub unapplied_transaction: Option<u32>,
    /// The journal's feature names, as dumpe2fs prints them.
    pub journal_features: Vec<String>,
}

/// The function the reader gives to read a filesystem block.
pub type ReadBlock<'a> = &'a (dyn Fn(u64, &mut [u8]) -> Result<()> + Sync);

/// Replay the journal. `read_block(n, buf)` reads filesystem block `n` of the volume
/// (without any overlay).
///
/// With needs_recovery clear nothing is replayed, whatever the journal holds: the
/// kernel wipes such a journal instead of recovering it.
pub fn replay(
    sb: &Superblock,
    journal: &JournalLocation,
    read_block: ReadBlock<'_>,
) -> Result<(Overlay, ReplayReport)> {
    let mut report = ReplayReport {
        needed: sb.has_incompat(incompat::RECOVER),
        ..Default::default()
    };
    if !report.needed {
        report
            .notes
            .push("needs_recovery is clear: the journal is not replayed".into());
        return Ok((Overlay::default(), report));
    }
    let mut j = Journal::open(sb, journal, read_block)?;
    report.journal_features = j.jsb.feature_names();
    if j.jsb.s_errno != 0 {
        report.notes.push(format!(
            "the journal records an abort (s_errno {})",
            j.jsb.s_errno
        ));
    }
    if j.jsb.s_start == 0 {
        report.notes.push(format!(
            "the journal is empty (s_start 0, next transaction {}): nothing to replay",
            j.jsb.s_sequence
        ));
        report.end_sequence = Some(j.jsb.s_sequence);
        report.journal_blocks_read = j.blocks_read;
        return Ok((Overlay::default(), report));
    }
    let mut overlay = walk(&mut j, sb.blocks_count(), &mut report)?;
    if j.fast_commit.is_some() {
        // What the fast commits change is part of the filesystem as the kernel
        // would mount it: an area that cannot be read or replayed fails the
        // replay, as it fails the kernel's recovery.
        overlay.fast = scan_fast_commits(&mut j, sb, &mut report)?.map(Arc::new);
    }
    report.blocks = overlay.blocks.len() as u64;
    report.journal_blocks_read = j.blocks_read;
    Ok((overlay, report))
}

/// Read and validate the journal superblock alone (for `inspect`).
pub fn read_superblock(
    sb: &Superblock,
    journal: &JournalLocation,
    read_block: ReadBlock<'_>,
) -> Result<JournalSuperblock> {
    Ok(Journal::open(sb, journal, read_block)?.jsb)
}

/// The journal inode's mapping, checked once.
struct JournalMap {
    extents: Vec<(u64, u64, u64)>,
}

impl JournalMap {
    fn new(loc: &JournalLocation, fs_blocks: u64) -> Result<Self> {
        let mut prev_end = 0u64;
        for (i, &(logical, physical, len)) in loc.extents.iter().enumerate() {
            let bad = |detail: String| {
                Error::corrupt(
                    "journal inode extent map",
                    Location::Inode(u64::from(crate::fs::ext4::ondisk::ino::JOURNAL)),
                    format!("extent {i}: {detail}"),
                )
            };
            if len == 0 {
                return Err(bad("empty extent".into()));
            }
            if logical < prev_end {
                return Err(bad(format!(
                    "logical block {logical} overlaps or precedes the previous extent"
                )));
            }
            if physical.checked_add(len).is_none_or(|e| e > fs_blocks) {
                return Err(bad(format!(
                    "blocks {physical}+{len} pass the filesystem's {fs_blocks} blocks"
                )));
            }
            prev_end = logical
                .checked_add(len)
                .ok_or_else(|| bad("logical range overflows".into()))?;
        }
        Ok(JournalMap {
            extents: loc.extents.clone(),
        })
    }

    /// The filesystem block holding journal block `j`.
    fn bmap(&self, j: u64) -> Result<u64> {
        let i = self.extents.partition_point(|&(l, _, _)| l <= j);
        if i > 0 {
            let (l, p, n) = self.extents[i - 1];
            if j - l < n {
                return Ok(p + (j - l));
            }
        }
        Err(Error::corrupt(
            "journal inode extent map",
            Location::Inode(u64::from(crate::fs::ext4::ondisk::ino::JOURNAL)),
            format!("journal block {j} is not mapped (a hole in the journal)"),
        ))
    }
}

/// Where fast commits live: `first..end` in journal blocks.
#[derive(Debug, Clone, Copy)]
struct FastCommitArea {
    first: u64,
    end: u64,
}

/// An open journal: the validated superblock and the log's geometry.
struct Journal<'a> {
    map: JournalMap,
    read_block: ReadBlock<'a>,
    jsb: JournalSuperblock,
    fmt: LogFormat,
    /// The log area is `first..last` (journal blocks); it wraps at `last`.
    first: u64,
    last: u64,
    fast_commit: Option<FastCommitArea>,
    blocks_read: u64,
}

impl<'a> Journal<'a> {
    /// Read and validate the journal superblock, with the checks the kernel makes
    /// before recovering (fs/jbd2/journal.c: journal_check_superblock and
    /// load_superblock).
    fn open(sb: &Superblock, loc: &JournalLocation, read_block: ReadBlock<'a>) -> Result<Self> {
        let bs = sb.block_size();
        let map = JournalMap::new(loc, sb.blocks_count())?;
        let sb_phys = map.bmap(0)?;
        let mut buf = vec![0u8; bs as usize];
        read_block(sb_phys, &mut buf)?;
        let raw: &[u8; 1024] = buf[..1024].try_into().map_err(|_| {
            Error::corrupt("jbd2 superblock", Location::Block(sb_phys), "short block")
        })?;
        let jsb = JournalSuperblock::decode(raw);
        let corrupt =
            |detail: String| Error::corrupt("jbd2 superblock", Location::Block(sb_phys), detail);
        if jsb.h_magic != JBD2_MAGIC_NUMBER {
            return Err(corrupt(format!("bad magic {:#010x}", jsb.h_magic)));
        }
        match jsb.h_blocktype {
            blocktype::SUPERBLOCK_V1 | blocktype::SUPERBLOCK_V2 => {}
            blocktype::DESCRIPTOR | blocktype::COMMIT | blocktype::REVOKE | blocktype::FC => {
                return Err(corrupt(format!(
                    "block type {} where the superblock should be",
                    jsb.h_blocktype
                )))
            }
            t => {
                return Err(Error::unsupported(format!(
                    "jbd2 superblock format {t} (only 3 and 4 are known)"
                )))
            }
        }
        if jsb.s_blocksize != bs {
            return Err(corrupt(format!(
                "s_blocksize {} differs from the filesystem's {bs}",
                jsb.s_blocksize
            )));
        }
        let maxlen = u64::from(jsb.s_maxlen);
        if maxlen > loc.len_blocks {
            return Err(corrupt(format!(
                "s_maxlen {maxlen} passes the journal inode's {} blocks",
                loc.len_blocks
            )));
        }
        let first = u64::from(jsb.s_first);
        if first == 0 || first >= maxlen {
            return Err(corrupt(format!(
                "s_first {first} outside the journal's {maxlen} blocks"
            )));
        }
        let unknown = jsb.incompat() & !feature::INCOMPAT_KNOWN;
        if unknown != 0 {
            return Err(Error::unsupported(format!(
                "unknown jbd2 incompatible feature bits {unknown:#x}"
            )));
        }
        let unknown = jsb.ro_compat() & !feature::RO_COMPAT_KNOWN;
        if unknown != 0 {
            return Err(Error::unsupported(format!(
                "unknown jbd2 read-only-compatible feature bits {unknown:#x}"
            )));
        }
        let incompat = jsb.incompat();
        let v2 = incompat & feature::INCOMPAT_CSUM_V2 != 0;
        let v3 = incompat & feature::INCOMPAT_CSUM_V3 != 0;
        let v1 = jsb.compat() & feature::COMPAT_CHECKSUM != 0;
        if v2 && v3 {
            return Err(corrupt("both checksum v2 and v3 are set".into()));
        }
        if v1 && (v2 || v3) {
            return Err(corrupt("both checksum v1 and v2/v3 are set".into()));
        }
        let fast = incompat & feature::INCOMPAT_FAST_COMMIT != 0;
        let num_fc = if fast {
            match jsb.s_num_fc_blks {
                0 => ondisk::JBD2_DEFAULT_FAST_COMMIT_BLOCKS,
                n => n,
            }
        } else {
            0
        };
        if jsb.is_v2()
            && (jsb.s_maxlen < ondisk::JBD2_MIN_JOURNAL_BLOCKS
                || jsb.s_maxlen - ondisk::JBD2_MIN_JOURNAL_BLOCKS < num_fc)
        {
            return Err(corrupt(format!(
                "journal of {maxlen} blocks with {num_fc} fast-commit blocks is too short"
            )));
        }
        let csum = if v3 {
            CsumKind::V3
        } else if v2 {
            CsumKind::V2
        } else if v1 {
            CsumKind::V1
        } else {
            CsumKind::None
        };
        if v2 || v3 {
            if jsb.s_checksum_type != ondisk::JBD2_CRC32C_CHKSUM {
                return Err(Error::unsupported(format!(
                    "jbd2 checksum type {}",
                    jsb.s_checksum_type
                )));
            }
            let computed = JournalSuperblock::compute_checksum(raw);
            if computed != jsb.s_checksum {
                return Err(Error::checksum(
                    "jbd2 superblock",
                    Location::Block(sb_phys),
                    u64::from(jsb.s_checksum),
                    u64::from(computed),
                ));
            }
        }
        // With fast commits the log ends where their area starts; the block at
        // `last` itself is never used (fs/jbd2/journal.c: j_fc_first = j_last + 1).
        let last = maxlen - u64::from(num_fc);
        if first >= last {
            return Err(corrupt(format!(
                "s_first {first} leaves no room for a log before block {last}"
            )));
        }
        let start = u64::from(jsb.s_start);
        if start != 0 && !(first..last).contains(&start) {
            return Err(corrupt(format!(
                "s_start {start} outside the log area {first}..{last}"
            )));
        }
        let fmt = LogFormat {
            block_size: bs as usize,
            csum,
            bit64: incompat & feature::INCOMPAT_64BIT != 0,
            csum_seed: crate::fs::ext4::csum::crc32c_raw(!0, &jsb.s_uuid),
        };
        Ok(Journal {
            map,
            read_block,
            jsb,
            fmt,
            first,
            last,
            fast_commit: fast.then_some(FastCommitArea {
                first: last + 1,
                end: maxlen,
            }),
            blocks_read: 1,
        })
    }

    /// Read journal block `j` into `buf`; returns the filesystem block it lives in.
    fn read(&mut self, j: u64, buf: &mut [u8]) -> Result<u64> {
        let phys = self.map.bmap(j)?;
        (self.read_block)(phys, buf)?;
        self.blocks_read += 1;
        Ok(phys)
    }

    /// The log position after `pos`, wrapping at the end of the log area.
    fn next(&self, pos: u64) -> u64 {
        if pos + 1 >= self.last {
            self.first
        } else {
            pos + 1
        }
    }
}

/// A block write logged by a transaction that has not committed yet.
struct PendingWrite {
    block: u64,
    data: Arc<[u8]>,
    /// Where it was logged, for error messages.
    phys: u64,
    /// (stored, computed) when the tag's checksum does not match.
    bad_csum: Option<(u32, u32)>,
}

/// A control block whose checksum failed inside the current transaction.
struct Taint {
    structure: &'static str,
    phys: u64,
    stored: u32,
    computed: u32,
}

/// The transaction being read.
struct Txn {
    sequence: u32,
    /// Blocks of this transaction seen so far (descriptor, data, revoke).
    blocks: u64,
    writes: Vec<PendingWrite>,
    /// Revoke records as logged. Kept raw because they only take effect if the
    /// transaction commits; bounded by the revoke blocks read.
    revokes: Vec<u64>,
    taint: Option<Taint>,
    /// Running checksum v1 (crc32_be) over descriptor and data blocks.
    crc_v1: u32,
}

impl Txn {
    fn new(sequence: u32) -> Self {
        Txn {
            sequence,
            blocks: 0,
            writes: Vec::new(),
            revokes: Vec::new(),
            taint: None,
            crc_v1: !0,
        }
    }
}

/// A block in the overlay while the log is being walked.
struct Slot {
    data: Arc<[u8]>,
    /// Writes of this block applied since it was last revoked (for the count of
    /// cancelled writes).
    writes: u64,
    sequence: u32,
    phys: u64,
}

/// A committed write whose tag checksum failed.
struct BadWrite {
    block: u64,
    phys: u64,
    stored: u32,
    computed: u32,
}

/// The replay state across transactions.
#[derive(Default)]
struct Applied {
    slots: BTreeMap<u64, Slot>,
    /// Writes skipped for a bad tag checksum: an error unless a revoke cancels
    /// them later.
    bad: Vec<BadWrite>,
    revoked: u64,
}

impl Applied {
    /// Apply a committed transaction: its revokes cancel earlier writes and its
    /// own, then its remaining writes land in log order.
    fn commit(&mut self, txn: Txn) {
        let written: HashSet<u64> = txn.writes.iter().map(|w| w.block).collect();
        let mut revoked_here = HashSet::new();
        for &b in &txn.revokes {
            if let Some(s) = self.slots.remove(&b) {
                self.revoked += s.writes;
            }
            let before = self.bad.len();
            self.bad.retain(|w| w.block != b);
            self.revoked += (before - self.bad.len()) as u64;
            if written.contains(&b) {
                revoked_here.insert(b);
            }
        }
        for w in txn.writes {
            if revoked_here.contains(&w.block) {
                self.revoked += 1;
                continue;
            }
            if let Some((stored, computed)) = w.bad_csum {
                self.bad.push(BadWrite {
                    block: w.block,
                    phys: w.phys,
                    stored,
                    computed,
                });
                continue;
            }
            let writes = self.slots.get(&w.block).map_or(0, |s| s.writes) + 1;
            self.slots.insert(
                w.block,
                Slot {
                    data: w.data,
                    writes,
                    sequence: txn.sequence,
                    phys: w.phys,
                },
            );
        }
    }
}

/// Why the log walk ended.
enum End {
    /// A block without the jbd2 magic, a control block of another transaction, or
    /// an unknown block type: the normal end of the log.
    Log(String),
    /// The walk consumed as many blocks as the log holds.
    FullCircle,
    /// The commit block failed its checksum.
    BadCommit {
        phys: u64,
        stored: u32,
        computed: u32,
    },
    /// A checksum failed on a block older than the previous commit: stale data
    /// from an earlier use of the log.
    Stale(u64),
}

fn walk(j: &mut Journal<'_>, fs_blocks: u64, report: &mut ReplayReport) -> Result<Overlay> {
    let bs = j.fmt.block_size;
    let log_len = j.last - j.first;
    let mut pos = u64::from(j.jsb.s_start);
    let mut txn = Txn::new(j.jsb.s_sequence);
    let mut applied = Applied::default();
    let mut consumed = 0u64;
    let mut last_commit_time = 0u64;
    let mut buf = vec![0u8; bs];
    let mut data = vec![0u8; bs];

    let end = 'log: loop {
        if consumed >= log_len {
            break End::FullCircle;
        }
        let jblock = pos;
        let phys = j.read(jblock, &mut buf)?;
        consumed += 1;
        pos = j.next(pos);
        let Some(h) = ondisk::header(&buf) else {
            break End::Log(format!("journal block {jblock} is too short"));
        };
        if h.h_magic != JBD2_MAGIC_NUMBER {
            break End::Log(format!("no jbd2 magic at journal block {jblock}"));
        }
        if h.h_sequence != txn.sequence {
            break End::Log(format!(
                "journal block {jblock} belongs to transaction {}, not {}",
                h.h_sequence, txn.sequence
            ));
        }
        match h.h_blocktype {
            blocktype::DESCRIPTOR => {
                txn.blocks += 1;
                if j.fmt.has_tail() && txn.taint.is_none() {
                    let (stored, computed) = j.fmt.tail_checksum(&buf);
                    if stored != computed {
                        // The kernel's scan tolerates this until the commit
                        // block tells stale blocks from corruption.
                        txn.taint = Some(Taint {
                            structure: "jbd2 descriptor block",
                            phys,
                            stored,
                            computed,
                        });
                    }
                }
                if j.fmt.csum == CsumKind::V1 {
                    txn.crc_v1 = ondisk::crc32_be(txn.crc_v1, &buf);
                }
                for tag in j.fmt.tags(&buf) {
                    if consumed >= log_len {
                        break 'log End::FullCircle;
                    }
                    let data_phys = j.read(pos, &mut data)?;
                    consumed += 1;
                    pos = j.next(pos);
                    txn.blocks += 1;
                    if j.fmt.csum == CsumKind::V1 {
                        txn.crc_v1 = ondisk::crc32_be(txn.crc_v1, &data);
                    }
                    let bad_csum = if j.fmt.has_tail() {
                        let computed = j.fmt.tag_checksum(txn.sequence, &data);
                        (computed != tag.checksum).then_some((tag.checksum, computed))
                    } else {
                        None
                    };
                    if tag.flags & tag_flag::ESCAPE != 0 {
                        data[..4].copy_from_slice(&JBD2_MAGIC_NUMBER.to_be_bytes());
                    }
                    txn.writes.push(PendingWrite {
                        block: tag.blocknr,
                        data: Arc::from(&data[..]),
                        phys: data_phys,
                        bad_csum,
                    });
                }
            }
            blocktype::REVOKE => {
                txn.blocks += 1;
                if j.fmt.has_tail() && txn.taint.is_none() {
                    let (stored, computed) = j.fmt.tail_checksum(&buf);
                    if stored != computed {
                        txn.taint = Some(Taint {
                            structure: "jbd2 revoke block",
                            phys,
                            stored,
                            computed,
                        });
                    }
                }
                let r_count = crate::fs::codec::be_u32(&buf, 12).unwrap_or(0);
                let r_count = usize::try_from(r_count).unwrap_or(usize::MAX);
                if r_count > j.fmt.max_r_count() {
                    return Err(Error::corrupt(
                        "jbd2 revoke block",
                        Location::Block(phys),
                        format!(
                            "r_count {r_count} passes the {} usable bytes of the block \
                             (journal block {jblock}, transaction {})",
                            j.fmt.max_r_count(),
                            txn.sequence
                        ),
                    ));
                }
                txn.revokes.extend(j.fmt.revoke_records(&buf, r_count));
            }
            blocktype::COMMIT => {
                let Some(ch) = ondisk::commit_header(&buf) else {
                    break End::Log(format!("journal block {jblock} is too short"));
                };
                let commit_time = ch.h_commit_sec;
                if let Some(t) = txn.taint.take() {
                    if commit_time >= last_commit_time {
                        return Err(Error::Checksum {
                            structure: t.structure,
                            location: Location::Block(t.phys),
                            stored: u64::from(t.stored),
                            computed: u64::from(t.computed),
                        });
                    }
                    break End::Stale(jblock);
                }
                let (ok, stored, computed) = match j.fmt.csum {
                    CsumKind::V1 => {
                        let found = ch.h_chksum[0];
                        let ok = (found == txn.crc_v1
                            && ch.h_chksum_type == ondisk::JBD2_CRC32_CHKSUM
                            && ch.h_chksum_size == ondisk::JBD2_CRC32_CHKSUM_SIZE)
                            || (ch.h_chksum_type == 0 && ch.h_chksum_size == 0 && found == 0);
                        (ok, found, txn.crc_v1)
                    }
                    CsumKind::V2 | CsumKind::V3 => {
                        let (stored, computed, ok) = j.fmt.commit_checksum(&buf);
                        (ok, stored, computed)
                    }
                    CsumKind::None => (true, 0, 0),
                };
                if !ok {
                    if commit_time < last_commit_time {
                        break End::Stale(jblock);
                    }
                    break End::BadCommit {
                        phys,
                        stored,
                        computed,
                    };
                }
                last_commit_time = commit_time;
                let seq = txn.sequence;
                applied.commit(std::mem::replace(&mut txn, Txn::new(seq.wrapping_add(1))));
                report.transactions += 1;
                report.first_sequence.get_or_insert(seq);
                report.last_sequence = Some(seq);
            }
            t => break End::Log(format!("unknown block type {t} at journal block {jblock}")),
        }
    };

    report.end_sequence = Some(txn.sequence);
    let unapplied = txn.blocks > 0 || matches!(end, End::BadCommit { .. });
    match &end {
        End::Log(why) => report.notes.push(format!("end of log: {why}")),
        End::FullCircle => report.notes.push(format!(
            "the log walk used all {log_len} blocks of the log without finding its end \
             (a looping or overrunning log); stopped there"
        )),
        End::BadCommit {
            phys,
            stored,
            computed,
        } => report.notes.push(format!(
            "the commit block of transaction {} (block {phys}) fails its checksum \
             (stored {stored:#x}, computed {computed:#x}): it and everything after it \
             are not applied",
            txn.sequence
        )),
        End::Stale(jblock) => report.notes.push(format!(
            "a checksum mismatch at journal block {jblock} with an older commit time \
             marks stale blocks: end of log"
        )),
    }
    if unapplied {
        report.unapplied_transaction = Some(txn.sequence);
        if matches!(end, End::Log(_)) {
            report.notes.push(format!(
                "transaction {} has no commit block (torn): not applied",
                txn.sequence
            ));
        }
    }
    report.revoked = applied.revoked;

    if let Some(w) = applied.bad.first() {
        return Err(Error::checksum(
            "jbd2 data block",
            Location::Block(w.phys),
            u64::from(w.stored),
            u64::from(w.computed),
        ));
    }
    let mut overlay = Overlay::default();
    for (block, slot) in applied.slots {
        if block >= fs_blocks {
            return Err(Error::corrupt(
                "jbd2 block tag",
                Location::Block(slot.phys),
                format!(
                    "transaction {} writes block {block}, past the filesystem's {fs_blocks} blocks",
                    slot.sequence
                ),
            ));
        }
        overlay.blocks.insert(block, slot.data);
    }
    Ok(overlay)
}

/// Find the fast commits that extend the last applied transaction, and decode
/// what they change.
fn scan_fast_commits(
    j: &mut Journal<'_>,
    sb: &Superblock,
    report: &mut ReplayReport,
) -> Result<Option<fast_commit::FastReplay>> {
    let Some(area) = j.fast_commit else {
        return Ok(None);
    };
    let expected = report.end_sequence.unwrap_or(j.jsb.s_sequence);
    let mut scanner = fast_commit::Scanner::new(expected);
    let mut buf = vec![0u8; j.fmt.block_size];
    let mut b = area.first;
    while b < area.end && scanner.wants_more() {
        j.read(b, &mut buf)?;
        scanner.feed(&buf);
        b += 1;
    }
    let r = &scanner.result;
    report.fast_commits = r.commits;
    if r.commits == 0 {
        return Ok(None);
    }
    let fast = fast_commit::decode(
        &scanner.records,
        usize::from(sb.inode_size()),
        sb.s_inodes_count,
        sb.blocks_count(),
    )?;
    report.notes.push(format!(
        "replayed {} fast commit(s) for transaction {expected}: {} inode(s), {} block \
         range change(s), {} name change(s)",
        r.commits,
        fast.inodes.len(),
        fast.ranges.values().map(Vec::len).sum::<usize>(),
        fast.names.values().map(Vec::len).sum::<usize>(),
    ));
    Ok(Some(fast))
}

#[cfg(test)]
mod tests {
    //! Synthetic journals for the cases e2fsprogs' writer cannot produce: stale
    //! blocks, damaged control blocks, a log that overruns itself, and a log that
    //! wraps in front of a fast-commit area.

    use super::*;
    use crate::fs::ext4::csum::crc32c_raw;

    const BS: usize = 1024;
    /// Where the journal starts in the synthetic volume.
    const J0: u64 = 100;

    struct Volume {
        blocks: Vec<Vec<u8>>,
        sb: Superblock,
        loc: JournalLocation,
        fmt: LogFormat,
        first: u64,
        last: u64,
    }

    /// A volume with a csum v3 journal of `maxlen` blocks (`num_fc` of them for
    /// fast commits) whose log starts at `start` with transaction `seq`.
    fn volume(maxlen: u32, num_fc: u32, start: u32, seq: u32) -> Volume {
        let total = 4096u64;
        let mut raw = [0u8; 1024];
        raw[0x4..0x8].copy_from_slice(&(total as u32).to_le_bytes());
        raw[0x60..0x64].copy_from_slice(&incompat::RECOVER.to_le_bytes());
        let sb = Superblock::decode(&raw);
        let mut jsb = JournalSuperblock::decode(&[0; 1024]);
        jsb.h_magic = JBD2_MAGIC_NUMBER;
        jsb.h_blocktype = blocktype::SUPERBLOCK_V2;
        jsb.s_blocksize = BS as u32;
        jsb.s_maxlen = maxlen;
        jsb.s_first = 1;
        jsb.s_sequence = seq;
        jsb.s_start = start;
        jsb.s_feature_incompat = feature::INCOMPAT_CSUM_V3
            | feature::INCOMPAT_REVOKE
            | if num_fc > 0 {
                feature::INCOMPAT_FAST_COMMIT
            } else {
                0
            };
        jsb.s_num_fc_blks = num_fc;
        jsb.s_checksum_type = ondisk::JBD2_CRC32C_CHKSUM;
        jsb.s_uuid = [7; 16];
        let mut b = jsb.to_bytes();
        let c = JournalSuperblock::compute_checksum(&b);
        b[0xFC..0x100].copy_from_slice(&c.to_be_bytes());
        let mut blocks = vec![vec![0u8; BS]; total as usize];
        blocks[J0 as usize][..1024].copy_from_slice(&b);
        Volume {
            blocks,
            sb,
            loc: JournalLocation {
                extents: vec![(0, J0, u64::from(maxlen))],
                len_blocks: u64::from(maxlen),
            },
            fmt: LogFormat {
                block_size: BS,
                csum: CsumKind::V3,
                bit64: false,
                csum_seed: crc32c_raw(!0, &[7; 16]),
            },
            first: 1,
            last: u64::from(maxlen - num_fc),
        }
    }

    fn header(buf: &mut [u8], kind: u32, seq: u32) {
        buf[..4].copy_from_slice(&JBD2_MAGIC_NUMBER.to_be_bytes());
        buf[4..8].copy_from_slice(&kind.to_be_bytes());
        buf[8..12].copy_from_slice(&seq.to_be_bytes());
    }

    impl Volume {
        /// Writes log blocks from `pos`, wrapping as the kernel does; returns the
        /// position after them.
        fn put(&mut self, mut pos: u64, blocks: Vec<Vec<u8>>) -> u64 {
            for b in blocks {
                self.blocks[(J0 + pos) as usize] = b;
                pos = if pos + 1 >= self.last {
                    self.first
                } else {
                    pos + 1
                };
            }
            pos
        }

        /// A transaction: descriptor, data blocks, commit block at `time`.
        fn txn(&self, seq: u32, writes: &[(u64, u8)], time: u64) -> Vec<Vec<u8>> {
            let mut d = vec![0u8; BS];
            header(&mut d, blocktype::DESCRIPTOR, seq);
            let mut out = vec![];
            for (i, &(blk, fill)) in writes.iter().enumerate() {
                let data = vec![fill; BS];
                let off = 12 + 16 * i;
                let mut flags = u32::from(tag_flag::SAME_UUID);
                if i + 1 == writes.len() {
                    flags |= u32::from(tag_flag::LAST_TAG);
                }
                d[off..off + 4].copy_from_slice(&(blk as u32).to_be_bytes());
                d[off + 4..off + 8].copy_from_slice(&flags.to_be_bytes());
                d[off + 12..off + 16]
                    .copy_from_slice(&self.fmt.tag_checksum(seq, &data).to_be_bytes());
                out.push(data);
            }
            let (_, c) = self.fmt.tail_checksum(&d);
            d[BS - 4..].copy_from_slice(&c.to_be_bytes());
            out.insert(0, d);
            out.push(self.commit(seq, time));
            out
        }

        fn commit(&self, seq: u32, time: u64) -> Vec<u8> {
            let mut c = vec![0u8; BS];
            header(&mut c, blocktype::COMMIT, seq);
            c[0x30..0x38].copy_from_slice(&time.to_be_bytes());
            let (_, sum, _) = self.fmt.commit_checksum(&c);
            c[0x10..0x14].copy_from_slice(&sum.to_be_bytes());
            c
        }

        fn replay(&self) -> Result<(Overlay, ReplayReport)> {
            let read = |b: u64, buf: &mut [u8]| -> Result<()> {
                buf.copy_from_slice(&self.blocks[b as usize]);
                Ok(())
            };
            replay(&self.sb, &self.loc, &read)
        }
    }

    fn contents(o: &Overlay) -> Vec<(u64, u8)> {
        o.blocks.iter().map(|(&b, v)| (b, v[0])).collect()
    }

    /// With fast commits the log wraps at `s_maxlen - s_num_fc_blks`, not at
    /// `s_maxlen`; the fast-commit area after it is not part of the log.
    #[test]
    fn log_wraps_before_the_fast_commit_area() {
        let mut v = volume(1040, 16, 1022, 10);
        let t = v.txn(10, &[(3000, 1), (3001, 2), (3002, 3)], 5);
        let next = v.put(1022, t);
        assert_eq!(next, 4, "descriptor 1022, data 1023 1 2, commit 3");
        // Junk that would look like a log continuation if the wrap were wrong.
        let junk = v.txn(10, &[(3999, 9)], 5);
        for (i, b) in junk.into_iter().enumerate() {
            v.blocks[(J0 + 1024 + i as u64) as usize] = b;
        }
        let (o, r) = v.replay().unwrap();
        assert_eq!(contents(&o), vec![(3000, 1), (3001, 2), (3002, 3)]);
        assert_eq!(r.transactions, 1);
        assert_eq!(r.end_sequence, Some(11));
        assert!(o.fast.is_none() && r.fast_commits == 0);
        assert_eq!(r.journal_blocks_read, 1 + 6 + 1);
    }

    /// A descriptor failing its checksum, in a transaction whose commit is older
    /// than the previous one, is stale: the log ends quietly. With a newer
    /// commit it is corruption.
    #[test]
    fn damaged_descriptor_is_stale_or_corrupt_by_commit_time() {
        for (time, stale) in [(50u64, true), (200, false)] {
            let mut v = volume(1024, 0, 1, 1);
            let t1 = v.txn(1, &[(3000, 1)], 100);
            let pos = v.put(1, t1);
            let mut t2 = v.txn(2, &[(3001, 2)], time);
            t2[0][500] ^= 1;
            v.put(pos, t2);
            match v.replay() {
                Ok((o, r)) => {
                    assert!(stale);
                    assert_eq!(contents(&o), vec![(3000, 1)]);
                    assert!(r.notes.iter().any(|n| n.contains("stale")), "{r:?}");
                }
                Err(e) => {
                    assert!(!stale);
                    assert_eq!(e.kind(), crate::ErrorKind::Checksum, "{e}");
                }
            }
        }
    }

    /// A descriptor whose data blocks run over the start of the log: the walk
    /// stops after one lap and applies nothing of that transaction.
    #[test]
    fn overrunning_descriptor_stops_after_one_lap() {
        let mut v = volume(1024, 0, 1, 1);
        let t1 = v.txn(1, &[(3000, 1)], 100);
        let pos = v.put(1, t1);
        // Descriptors of transaction 2 claiming 60 data blocks each (16-byte
        // tags in a 1 KiB block) up to the end of the log: the last one's data
        // would run over the start of the log, where transaction 1 is.
        let mut p = pos;
        while p < v.last {
            let mut d = vec![0u8; BS];
            header(&mut d, blocktype::DESCRIPTOR, 2);
            for i in 0..60 {
                let off = 12 + 16 * i;
                d[off..off + 4].copy_from_slice(&4000u32.to_be_bytes());
                let mut flags = tag_flag::SAME_UUID;
                if i == 59 {
                    flags |= tag_flag::LAST_TAG;
                }
                d[off + 4..off + 8].copy_from_slice(&u32::from(flags).to_be_bytes());
            }
            let (_, c) = v.fmt.tail_checksum(&d);
            d[BS - 4..].copy_from_slice(&c.to_be_bytes());
            v.blocks[(J0 + p) as usize] = d;
            p += 61;
        }
        let (o, r) = v.replay().unwrap();
        assert_eq!(contents(&o), vec![(3000, 1)]);
        assert_eq!(r.unapplied_transaction, Some(2));
        assert!(r.journal_blocks_read <= 1024);
        assert!(r.notes.iter().any(|n| n.contains("looping")), "{r:?}");
    }

    /// A revoke record cancels writes of its own and earlier transactions only.
    #[test]
    fn revokes_cancel_up_to_their_own_transaction() {
        let mut v = volume(1024, 0, 1, 0xFFFF_FFFF);
        let t1 = v.txn(0xFFFF_FFFF, &[(3000, 1), (3001, 1)], 1);
        let mut pos = v.put(1, t1);
        // T2 (sequence 0 after the wrap) revokes 3000 and 3002, then writes 3002.
        let mut r = vec![0u8; BS];
        header(&mut r, blocktype::REVOKE, 0);
        r[12..16].copy_from_slice(&24u32.to_be_bytes());
        r[16..20].copy_from_slice(&3000u32.to_be_bytes());
        r[20..24].copy_from_slice(&3002u32.to_be_bytes());
        let (_, c) = v.fmt.tail_checksum(&r);
        r[BS - 4..].copy_from_slice(&c.to_be_bytes());
        let mut t2 = v.txn(0, &[(3002, 2)], 2);
        t2.insert(0, r);
        pos = v.put(pos, t2);
        let t3 = v.txn(1, &[(3000, 3)], 3);
        v.put(pos, t3);
        let (o, r) = v.replay().unwrap();
        assert_eq!(contents(&o), vec![(3000, 3), (3001, 1)]);
        assert_eq!(r.revoked, 2);
        assert_eq!(r.first_sequence, Some(0xFFFF_FFFF));
        assert_eq!(r.last_sequence, Some(1));
    }
}
