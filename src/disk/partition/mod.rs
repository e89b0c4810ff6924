//! Partition tables: finds which scheme a disk uses (MBR, GPT, or none at all),
//! lists its partitions the way Linux numbers them, and rewrites the table for a
//! disk whose size changes (`--shrink`).
//!
//! It reads only table structures through [`Disk`] and never interprets partition
//! contents (that is [`crate::disk::probe`]). It never writes: the rewrite returns
//! the bytes and where they go, and the output writer places them.
//!
//! A disk with no partition table (a bare filesystem image) is an explicit
//! [`Scheme::None`] table with no partitions; [`Table::volumes`] then yields one
//! volume covering the whole disk, so callers that only want "the things to probe"
//! need no special case, while the writer can still tell that there is no table to
//! rewrite.

pub mod boot;
pub mod gpt;
pub mod mbr;
pub mod types;

use serde::Serialize;

pub use types::{Guid, PartType, TypeClass};

use crate::disk::Disk;
use crate::error::{Error, Location, Result};

/// Which partitioning scheme a disk uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Mbr,
    Gpt,
    /// No partition table: the whole disk is one volume (a bare filesystem image,
    /// or something imgsan does not recognize).
    None,
}

/// How a partition sits in its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An MBR primary entry (numbers 1..=4).
    Primary,
    /// An MBR extended partition: a container of logical partitions.
    Extended,
    /// A logical partition inside an extended one (numbers 5..).
    Logical,
    /// A GPT entry (numbered by its slot in the entry array, from 1).
    Gpt,
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// The number Linux gives it (sda1, sda5, ...).
    pub index: u32,
    /// Start in bytes from the start of the disk.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    #[serde(rename = "type")]
    pub part_type: PartType,
    pub role: Role,
    /// PARTUUID: the GPT unique partition GUID, or for MBR Linux's
    /// `<disk signature>-<number>` (both lowercase hex).
    pub uuid: Option<String>,
    /// PARTLABEL: the GPT partition name (UTF-16LE decoded). `None` on MBR.
    pub name: Option<String>,
    /// MBR: the boot indicator is 0x80. GPT: the legacy BIOS bootable attribute.
    pub bootable: bool,
    /// GPT: the attribute bits. MBR: the boot indicator byte.
    pub attributes: u64,
}

impl Partition {
    pub fn end(&self) -> u64 {
        self.start + self.len
    }

    /// Whether the partition holds a volume (extended containers do not).
    pub fn is_volume(&self) -> bool {
        self.role != Role::Extended
    }
}

/// A byte range of the disk that holds one volume to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Volume<'a> {
    /// The partition, or `None` for the whole disk of a table-less image.
    pub partition: Option<&'a Partition>,
    pub start: u64,
    pub len: u64,
}

/// A range holding partition-table structures (MBR, EBR, GPT headers and arrays).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Region {
    pub offset: u64,
    pub len: u64,
    pub what: &'static str,
}

/// Bytes to place at `offset` of the output disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableWrite {
    pub offset: u64,
    pub bytes: Vec<u8>,
    pub what: &'static str,
}

/// Why a table cannot be rewritten as asked. These are refusals of the plan, not
/// damage in the input; `From` maps them to [`Error::Unsupported`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("partition {index} would end at LBA {end_lba}, past the last usable LBA {last_lba}")]
    PastEnd {
        index: u32,
        end_lba: u64,
        last_lba: u64,
    },
    #[error("partitions would overlap: {detail}")]
    Overlap { detail: String },
    #[error("a disk of {sectors} sectors is too small for this partition table")]
    DiskTooSmall { sectors: u64 },
    #[error("the disk size {size} is not a whole number of {sector_size}-byte sectors")]
    BadDiskSize { size: u64, sector_size: u32 },
    #[error("new length {len} of partition {index} is zero or not a whole number of sectors")]
    BadLength { index: u32, len: u64 },
    #[error("there is no partition {index} to resize")]
    NoSuchPartition { index: u32 },
    #[error("partition {index} would need {sectors} sectors, more than an MBR entry can hold")]
    TooLargeForMbr { index: u32, sectors: u64 },
}

impl From<RewriteError> for Error {
    fn from(e: RewriteError) -> Error {
        Error::unsupported(format!("rewriting the partition table: {e}"))
    }
}

/// The scheme-specific source structures, kept for rewriting.
#[derive(Debug, Clone)]
enum Layout {
    None,
    Mbr(mbr::MbrLayout),
    Gpt(gpt::GptLayout),
}

/// A disk's partition table.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub scheme: Scheme,
    /// The logical sector size the table was read with (512 or 4096).
    pub sector_size: u32,
    /// The disk size in bytes when read.
    pub disk_size: u64,
    /// The disk identifier: the GPT disk GUID, or the MBR disk signature as
    /// "0x1234abcd".
    pub id: Option<String>,
    /// GPT: the first and last usable LBA.
    pub first_usable_lba: Option<u64>,
    pub last_usable_lba: Option<u64>,
    /// GPT: whether the backup header had to be used.
    pub used_backup: bool,
    /// Primaries (or GPT entries) first, in index order, then logical partitions.
    pub partitions: Vec<Partition>,
    /// Things the reader noticed and the user should know (fallback to the backup
    /// GPT, a stale GPT signature, a hybrid MBR, ...).
    pub warnings: Vec<String>,
    #[serde(skip)]
    layout: Layout,
}

/// How to read a table.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Force the logical sector size (512, 1024, 2048 or 4096). By default GPT's
    /// is detected (the "EFI PART" signature at 512 or at 4096) and an MBR is read
    /// with 512-byte sectors, since an MBR alone does not record its sector size.
    pub sector_size: Option<u32>,
}

/// Read a disk's partition table.
pub fn read(disk: &dyn Disk) -> Result<Table> {
    read_with(disk, &ReadOptions::default())
}

pub fn read_with(disk: &dyn Disk, opts: &ReadOptions) -> Result<Table> {
    let len = disk.len();
    let mut warnings = Vec::new();
    let sizes: Vec<u32> = match opts.sector_size {
        Some(s) if matches!(s, 512 | 1024 | 2048 | 4096) => vec![s],
        Some(s) => return Err(Error::unsupported(format!("logical sector size {s}"))),
        None => vec![512, 4096],
    };
    let none = |ss: u32, warnings: Vec<String>| Table {
        scheme: Scheme::None,
        sector_size: ss,
        disk_size: len,
        id: None,
        first_usable_lba: None,
        last_usable_lba: None,
        used_backup: false,
        partitions: Vec::new(),
        warnings,
        layout: Layout::None,
    };
    if len < mbr::RECORD as u64 {
        return Ok(none(sizes[0], warnings));
    }
    let mut s0 = [0u8; mbr::RECORD];
    disk.read_at(0, &mut s0)?;
    let boot_sig = mbr::has_boot_signature(&s0);
    let protective = boot_sig && mbr::has_protective_entry(&s0);

    // Where is a GPT header, if anywhere? Primary first, then the backup.
    let mut gpt_ss = None;
    for &ss in &sizes {
        if gpt::signature_at(disk, u64::from(ss))? {
            gpt_ss = Some(ss);
            break;
        }
    }
    if gpt_ss.is_none() {
        for &ss in &sizes {
            let ssz = u64::from(ss);
            let sectors = len / ssz;
            if sectors >= 3 && gpt::signature_at(disk, (sectors - 1) * ssz)? {
                gpt_ss = Some(ss);
                break;
            }
        }
    }

    let use_gpt = if protective {
        if mbr::hybrid_entries(&s0) > 0 {
            warnings.push(
                "hybrid MBR: sector 0 lists partitions besides the protective entry; the GPT is used"
                    .into(),
            );
        }
        true
    } else if boot_sig {
        if let Some(reason) = mbr::not_a_table(&s0) {
            if gpt_ss.is_some() {
                warnings.push(format!("{reason}; a GPT signature is present but ignored"));
            } else if reason.contains("boot indicator") {
                warnings.push(format!("{reason}; read as a disk without partition table"));
            }
            return Ok(none(sizes[0], warnings));
        }
        if gpt_ss.is_none() && !mbr::has_valid_entry(&s0, len) && ext_superblock_at_1024(disk)? {
            // mke2fs leaves sector 0 alone, so an ext2 image made over an old disk
            // keeps its 0x55AA; with no entry that could hold a partition, the
            // superblock is what the disk is.
            warnings.push(
                "sector 0 has the 0x55AA signature but no valid partition entry, and an ext \
                 superblock follows: read as a bare filesystem"
                    .into(),
            );
            return Ok(none(sizes[0], warnings));
        }
        if gpt_ss.is_some() {
            warnings.push(
                "a GPT header is present but the MBR has no protective entry; the MBR is used (as Linux does)"
                    .into(),
            );
        }
        false
    } else if gpt_ss.is_some() {
        warnings.push("GPT without a protective MBR in sector 0".into());
        true
    } else {
        return Ok(none(sizes[0], warnings));
    };

    if use_gpt {
        let ss = gpt_ss.unwrap_or(sizes[0]);
        let sector0 = boot_sig.then_some(&s0);
        let (layout, partitions) = gpt::read(disk, ss, sector0, &mut warnings)?;
        Ok(Table {
            scheme: Scheme::Gpt,
            sector_size: ss,
            disk_size: len,
            id: Some(layout.header.disk_guid.to_string()),
            first_usable_lba: Some(layout.header.first_usable_lba),
            last_usable_lba: Some(layout.header.last_usable_lba),
            used_backup: layout.used_backup,
            partitions,
            warnings,
            layout: Layout::Gpt(layout),
        })
    } else {
        let ss = sizes[0];
        let (layout, partitions) = mbr::read(disk, &s0, ss, &mut warnings)?;
        Ok(Table {
            scheme: Scheme::Mbr,
            sector_size: ss,
            disk_size: len,
            id: Some(format!("{:#010x}", mbr::disk_signature(&s0))),
            first_usable_lba: None,
            last_usable_lba: None,
            used_backup: false,
            partitions,
            warnings,
            layout: Layout::Mbr(layout),
        })
    }
}

/// Whether an ext2/3/4 superblock magic sits where a bare filesystem keeps it.
fn ext_superblock_at_1024(disk: &dyn Disk) -> Result<bool> {
    use crate::disk::probe::ext::{EXT4_SUPER_MAGIC, SUPERBLOCK_OFFSET};
    const S_MAGIC: u64 = 0x38;
    if disk.len() < SUPERBLOCK_OFFSET + 1024 {
        return Ok(false);
    }
    let mut m = [0u8; 2];
    disk.read_at(SUPERBLOCK_OFFSET + S_MAGIC, &mut m)?;
    Ok(u16::from_le_bytes(m) == EXT4_SUPER_MAGIC)
}

impl Table {
    /// The volumes to probe: every partition but extended containers, or the whole
    /// disk when there is no table.
    pub fn volumes(&self) -> Vec<Volume<'_>> {
        if self.scheme == Scheme::None {
            return vec![Volume {
                partition: None,
                start: 0,
                len: self.disk_size,
            }];
        }
        self.partitions
            .iter()
            .filter(|p| p.is_volume())
            .map(|p| Volume {
                partition: Some(p),
                start: p.start,
                len: p.len,
            })
            .collect()
    }

    /// The partition numbered `index`.
    pub fn partition(&self, index: u32) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.index == index)
    }

    /// Where the table's own structures are in the source disk: sector 0, EBRs, GPT
    /// headers and entry arrays. A writer that rewrites the table must not also
    /// copy these verbatim.
    pub fn regions(&self) -> Vec<Region> {
        let mut v = Vec::new();
        match &self.layout {
            Layout::None => {}
            Layout::Mbr(m) => {
                let ss = u64::from(m.sector_size);
                v.push(Region {
                    offset: 0,
                    len: ss,
                    what: "MBR",
                });
                for e in &m.ebrs {
                    v.push(Region {
                        offset: e.lba * ss,
                        len: ss,
                        what: "EBR",
                    });
                }
            }
            Layout::Gpt(g) => {
                let ss = u64::from(g.sector_size);
                let array = g.header.array_bytes().div_ceil(ss) * ss;
                v.push(Region {
                    offset: 0,
                    len: ss,
                    what: "protective MBR",
                });
                // The copy that was used is known exactly; the other one is where
                // it was found, or where tools put it when it was unreadable (the
                // end of the disk), so that a damaged copy is not carried over.
                let last = g.disk_sectors - 1;
                let conventional_backup = (last, last.saturating_sub(array / ss));
                let (primary, backup) = if g.used_backup {
                    (
                        g.other_copy.unwrap_or((1, g.primary_entry_lba)),
                        (g.header.my_lba, g.header.partition_entry_lba),
                    )
                } else {
                    (
                        (1, g.header.partition_entry_lba),
                        g.other_copy.unwrap_or(conventional_backup),
                    )
                };
                let structures = [
                    (primary.0, ss, "primary GPT header"),
                    (primary.1, array, "primary GPT entry array"),
                    (backup.1, array, "backup GPT entry array"),
                    (backup.0, ss, "backup GPT header"),
                ];
                for (lba, len, what) in structures {
                    v.push(Region {
                        offset: lba * ss,
                        len,
                        what,
                    });
                }
            }
        }
        v
    }

    /// The table for a disk of `new_disk_size` bytes in which the partitions named
    /// in `new_lengths` (index, length in bytes) have new lengths. Partitions keep
    /// their starts. Returns the structures to write into the output disk; the
    /// caller writes them over (not beside) whatever it copied from the source.
    ///
    /// GPT: the protective MBR's 0xEE entry, both headers (new alternate and last
    /// usable LBAs, new CRCs), the primary array in place and the backup array and
    /// header at the new end. MBR: sector 0 and the EBRs whose entries changed; an
    /// extended partition that ended with its last logical partition follows it.
    /// No table: nothing.
    pub fn rewrite(
        &self,
        new_disk_size: u64,
        new_lengths: &[(u32, u64)],
    ) -> Result<Vec<TableWrite>, RewriteError> {
        let ss = u64::from(self.sector_size);
        if !new_disk_size.is_multiple_of(ss) {
            return Err(RewriteError::BadDiskSize {
                size: new_disk_size,
                sector_size: self.sector_size,
            });
        }
        let mut sizes = Vec::with_capacity(new_lengths.len());
        for &(index, len) in new_lengths {
            if self.partition(index).is_none() {
                return Err(RewriteError::NoSuchPartition { index });
            }
            if len == 0 || len % ss != 0 {
                return Err(RewriteError::BadLength { index, len });
            }
            sizes.push((index, len / ss));
        }
        let new_sectors = new_disk_size / ss;
        match &self.layout {
            Layout::None => Ok(Vec::new()),
            Layout::Mbr(m) => mbr::rewrite(m, &self.partitions, new_sectors, &sizes),
            Layout::Gpt(g) => gpt::rewrite(g, new_sectors, &sizes),
        }
    }
}

/// A partition's extent, for overlap checks (any unit, end exclusive).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub index: u32,
    pub start: u64,
    pub end: u64,
}

/// Fail if any two spans overlap.
pub(crate) fn check_overlaps(structure: &'static str, spans: &[Span]) -> Result<()> {
    let mut s: Vec<Span> = spans.to_vec();
    s.sort_by_key(|x| (x.start, x.end));
    for w in s.windows(2) {
        if w[1].start < w[0].end {
            return Err(Error::corrupt(
                structure,
                Location::Entry(u64::from(w[1].index)),
                format!("partitions {} and {} overlap", w[0].index, w[1].index),
            ));
        }
    }
    Ok(())
}
