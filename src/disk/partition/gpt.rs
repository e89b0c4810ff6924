//! The GUID partition table (UEFI spec, chapter 5): the header at LBA 1 and its
//! backup at the last LBA, their partition entry arrays, and the CRC32s that guard
//! both, read (with fallback to the backup) and rewritten for a new disk size.
//!
//! It reads only table sectors, never partition contents. The writer side returns
//! byte images of the structures; writing them is the caller's business.

use super::mbr::{self, RECORD};
use super::types::{array16, gpt_type, le32, le64, put_le32, put_le64, Guid};
use super::{check_overlaps, Partition, RewriteError, Role, Span, TableWrite};
use crate::disk::Disk;
use crate::error::{Error, Location, Result};

pub const SIGNATURE: &[u8; 8] = b"EFI PART";
/// The size of the header's defined fields; the rest of the sector is reserved.
pub const HEADER_SIZE: u32 = 92;
pub const REVISION_1_0: u32 = 0x0001_0000;
/// The spec's minimum entry size; larger entries are allowed (128 * 2^n).
pub const MIN_ENTRY_SIZE: u32 = 128;
/// Larger entries than this are hostile, not a future revision.
pub const MAX_ENTRY_SIZE: u32 = 4096;
/// The most bytes of entry array imgsan reads (32768 entries of 128 bytes; tools
/// write 16 KiB). Checked before anything is allocated.
pub const MAX_ARRAY_BYTES: u64 = 4 << 20;

/// Offsets of the header fields (UEFI spec, table 5-5).
mod off {
    pub const SIGNATURE: usize = 0;
    pub const REVISION: usize = 8;
    pub const HEADER_SIZE: usize = 12;
    pub const HEADER_CRC32: usize = 16;
    pub const RESERVED: usize = 20;
    pub const MY_LBA: usize = 24;
    pub const ALTERNATE_LBA: usize = 32;
    pub const FIRST_USABLE_LBA: usize = 40;
    pub const LAST_USABLE_LBA: usize = 48;
    pub const DISK_GUID: usize = 56;
    pub const PARTITION_ENTRY_LBA: usize = 72;
    pub const NUMBER_OF_PARTITION_ENTRIES: usize = 80;
    pub const SIZE_OF_PARTITION_ENTRY: usize = 84;
    pub const PARTITION_ENTRY_ARRAY_CRC32: usize = 88;
}

/// Offsets in a partition entry (UEFI spec, table 5-6).
mod eoff {
    pub const PARTITION_TYPE_GUID: usize = 0;
    pub const UNIQUE_PARTITION_GUID: usize = 16;
    pub const STARTING_LBA: usize = 32;
    pub const ENDING_LBA: usize = 40;
    pub const ATTRIBUTES: usize = 48;
    pub const PARTITION_NAME: usize = 56;
    pub const PARTITION_NAME_LEN: usize = 72;
}

/// Attribute bit 2: legacy BIOS bootable.
pub const ATTR_LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;

/// A GPT header's fields, named as in the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptHeader {
    pub revision: u32,
    pub header_size: u32,
    pub header_crc32: u32,
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub disk_guid: Guid,
    pub partition_entry_lba: u64,
    pub number_of_partition_entries: u32,
    pub size_of_partition_entry: u32,
    pub partition_entry_array_crc32: u32,
}

impl GptHeader {
    /// The fields of a header sector, without any check but the signature. `sector`
    /// is at least [`HEADER_SIZE`] bytes.
    pub fn parse(sector: &[u8]) -> Option<GptHeader> {
        if sector.len() < HEADER_SIZE as usize || &sector[..8] != SIGNATURE {
            return None;
        }
        Some(GptHeader {
            revision: le32(sector, off::REVISION),
            header_size: le32(sector, off::HEADER_SIZE),
            header_crc32: le32(sector, off::HEADER_CRC32),
            my_lba: le64(sector, off::MY_LBA),
            alternate_lba: le64(sector, off::ALTERNATE_LBA),
            first_usable_lba: le64(sector, off::FIRST_USABLE_LBA),
            last_usable_lba: le64(sector, off::LAST_USABLE_LBA),
            disk_guid: Guid(array16(sector, off::DISK_GUID)),
            partition_entry_lba: le64(sector, off::PARTITION_ENTRY_LBA),
            number_of_partition_entries: le32(sector, off::NUMBER_OF_PARTITION_ENTRIES),
            size_of_partition_entry: le32(sector, off::SIZE_OF_PARTITION_ENTRY),
            partition_entry_array_crc32: le32(sector, off::PARTITION_ENTRY_ARRAY_CRC32),
        })
    }

    /// A whole header sector: the defined fields with `header_size` 92, the CRC
    /// computed over them, zeros elsewhere (as the spec asks of the reserved part).
    pub fn to_sector(&self, sector_size: u32) -> Vec<u8> {
        let mut s = vec![0u8; sector_size as usize];
        s[off::SIGNATURE..off::SIGNATURE + 8].copy_from_slice(SIGNATURE);
        put_le32(&mut s, off::REVISION, self.revision);
        put_le32(&mut s, off::HEADER_SIZE, HEADER_SIZE);
        put_le32(&mut s, off::RESERVED, 0);
        put_le64(&mut s, off::MY_LBA, self.my_lba);
        put_le64(&mut s, off::ALTERNATE_LBA, self.alternate_lba);
        put_le64(&mut s, off::FIRST_USABLE_LBA, self.first_usable_lba);
        put_le64(&mut s, off::LAST_USABLE_LBA, self.last_usable_lba);
        s[off::DISK_GUID..off::DISK_GUID + 16].copy_from_slice(&self.disk_guid.0);
        put_le64(&mut s, off::PARTITION_ENTRY_LBA, self.partition_entry_lba);
        put_le32(
            &mut s,
            off::NUMBER_OF_PARTITION_ENTRIES,
            self.number_of_partition_entries,
        );
        put_le32(
            &mut s,
            off::SIZE_OF_PARTITION_ENTRY,
            self.size_of_partition_entry,
        );
        put_le32(
            &mut s,
            off::PARTITION_ENTRY_ARRAY_CRC32,
            self.partition_entry_array_crc32,
        );
        let crc = header_crc(&s, HEADER_SIZE as usize);
        put_le32(&mut s, off::HEADER_CRC32, crc);
        s
    }

    /// The entry array's length in bytes (bounded: both factors are u32).
    pub fn array_bytes(&self) -> u64 {
        u64::from(self.number_of_partition_entries) * u64::from(self.size_of_partition_entry)
    }
}

/// CRC32 of the first `header_size` bytes with the CRC field taken as zero.
pub fn header_crc(sector: &[u8], header_size: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&sector[..off::HEADER_CRC32]);
    h.update(&[0u8; 4]);
    h.update(&sector[off::HEADER_CRC32 + 4..header_size]);
    h.finalize()
}

/// One used partition entry, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptEntry {
    pub partition_type_guid: Guid,
    pub unique_partition_guid: Guid,
    pub starting_lba: u64,
    pub ending_lba: u64,
    pub attributes: u64,
    pub partition_name: String,
}

impl GptEntry {
    /// Decode an entry (at least 128 bytes). `None` for an unused entry (zero type).
    pub fn parse(e: &[u8]) -> Option<GptEntry> {
        let t = Guid(array16(e, eoff::PARTITION_TYPE_GUID));
        if t.is_zero() {
            return None;
        }
        let name_bytes = &e[eoff::PARTITION_NAME..eoff::PARTITION_NAME + eoff::PARTITION_NAME_LEN];
        let units = name_bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0);
        let partition_name = char::decode_utf16(units)
            .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect();
        Some(GptEntry {
            partition_type_guid: t,
            unique_partition_guid: Guid(array16(e, eoff::UNIQUE_PARTITION_GUID)),
            starting_lba: le64(e, eoff::STARTING_LBA),
            ending_lba: le64(e, eoff::ENDING_LBA),
            attributes: le64(e, eoff::ATTRIBUTES),
            partition_name,
        })
    }
}

/// What the rewriter needs of a parsed GPT.
#[derive(Debug, Clone)]
pub struct GptLayout {
    pub sector_size: u32,
    /// The header whose entry array was used (primary, or backup after a fallback).
    pub header: GptHeader,
    pub used_backup: bool,
    /// Where the primary entry array lives (from the primary header when it could
    /// be read, otherwise LBA 2, where every tool puts it).
    pub primary_entry_lba: u64,
    /// The entry array as read, `number_of_partition_entries * size_of_partition_entry`
    /// bytes.
    pub entries: Vec<u8>,
    /// Sector 0's first 512 bytes when they carry the 0x55AA signature (the
    /// protective or hybrid MBR, with any boot code).
    pub sector0: Option<[u8; RECORD]>,
    /// The disk size in logical sectors when read.
    pub disk_sectors: u64,
    /// Where the other copy is (header LBA, entry array LBA), when it could be read.
    pub other_copy: Option<(u64, u64)>,
}

/// How an attempt to use one header failed.
struct Attempt {
    /// The sector had the "EFI PART" signature.
    had_signature: bool,
    /// For a header that parsed, where it says the other copy is.
    alternate_lba: Option<u64>,
    error: Error,
}

fn header_error(lba: u64, ss: u64, detail: String) -> Error {
    Error::corrupt("GPT header", Location::Byte(lba * ss), detail)
}

/// Validate the header at `lba` and load its entry array.
fn load(
    disk: &dyn Disk,
    lba: u64,
    ss: u32,
    disk_sectors: u64,
) -> std::result::Result<(GptHeader, Vec<u8>), Attempt> {
    let ssz = u64::from(ss);
    let fail = |had_signature, alternate_lba, error| Attempt {
        had_signature,
        alternate_lba,
        error,
    };
    let mut sector = vec![0u8; ss as usize];
    if let Err(e) = disk.read_at(lba * ssz, &mut sector) {
        return Err(fail(false, None, e));
    }
    let Some(h) = GptHeader::parse(&sector) else {
        return Err(fail(
            false,
            None,
            header_error(lba, ssz, "no \"EFI PART\" signature".into()),
        ));
    };
    let alt = Some(h.alternate_lba);
    if h.header_size < HEADER_SIZE || h.header_size > ss {
        return Err(fail(
            true,
            None,
            header_error(
                lba,
                ssz,
                format!(
                    "header_size {} is outside {HEADER_SIZE}..={ss}",
                    h.header_size
                ),
            ),
        ));
    }
    let crc = header_crc(&sector, h.header_size as usize);
    if crc != h.header_crc32 {
        return Err(fail(
            true,
            alt,
            Error::checksum(
                "GPT header",
                Location::Byte(lba * ssz),
                u64::from(h.header_crc32),
                u64::from(crc),
            ),
        ));
    }
    let bad = |detail: String| fail(true, alt, header_error(lba, ssz, detail));
    if h.my_lba != lba {
        return Err(bad(format!(
            "my_lba is {}, but the header is at LBA {lba}",
            h.my_lba
        )));
    }
    if h.first_usable_lba > h.last_usable_lba {
        return Err(bad(format!(
            "first_usable_lba {} is past last_usable_lba {}",
            h.first_usable_lba, h.last_usable_lba
        )));
    }
    if h.last_usable_lba >= disk_sectors {
        return Err(bad(format!(
            "last_usable_lba {} is past the end of the {disk_sectors}-sector disk (truncated image?)",
            h.last_usable_lba
        )));
    }
    if h.first_usable_lba <= 1 || (lba >= h.first_usable_lba && lba <= h.last_usable_lba) {
        return Err(bad(format!(
            "the usable area {}..={} covers a header",
            h.first_usable_lba, h.last_usable_lba
        )));
    }
    let esize = h.size_of_partition_entry;
    if !(MIN_ENTRY_SIZE..=MAX_ENTRY_SIZE).contains(&esize) || esize % 8 != 0 {
        return Err(bad(format!(
            "size_of_partition_entry {esize} is not a multiple of 8 in {MIN_ENTRY_SIZE}..={MAX_ENTRY_SIZE}"
        )));
    }
    let array_bytes = h.array_bytes();
    if array_bytes > MAX_ARRAY_BYTES {
        return Err(bad(format!(
            "{} entries of {esize} bytes exceed the {MAX_ARRAY_BYTES}-byte limit",
            h.number_of_partition_entries
        )));
    }
    let array_sectors = array_bytes.div_ceil(ssz);
    let array_start = h.partition_entry_lba;
    let array_end = array_start.saturating_add(array_sectors);
    if array_start < 2 && array_sectors > 0 || array_end > disk_sectors {
        return Err(bad(format!(
            "the entry array (LBA {array_start}, {array_sectors} sectors) is not inside the {disk_sectors}-sector disk"
        )));
    }
    if array_sectors > 0
        && (array_start <= h.last_usable_lba && h.first_usable_lba < array_end
            || (array_start..array_end).contains(&lba))
    {
        return Err(bad(format!(
            "the entry array (LBA {array_start}, {array_sectors} sectors) overlaps the usable area or its header"
        )));
    }
    // Bounded by MAX_ARRAY_BYTES above.
    let mut entries = vec![0u8; array_bytes as usize];
    if let Err(e) = disk.read_at(array_start * ssz, &mut entries) {
        return Err(fail(true, alt, e));
    }
    let crc = crc32fast::hash(&entries);
    if crc != h.partition_entry_array_crc32 {
        return Err(fail(
            true,
            alt,
            Error::checksum(
                "GPT partition entry array",
                Location::Byte(array_start * ssz),
                u64::from(h.partition_entry_array_crc32),
                u64::from(crc),
            ),
        ));
    }
    Ok((h, entries))
}

/// Read the GPT of a disk with `ss`-byte logical sectors. `sector0` is the first
/// record when it has the boot signature.
pub fn read(
    disk: &dyn Disk,
    ss: u32,
    sector0: Option<&[u8; RECORD]>,
    warnings: &mut Vec<String>,
) -> Result<(GptLayout, Vec<Partition>)> {
    let ssz = u64::from(ss);
    if !disk.len().is_multiple_of(ssz) {
        warnings.push(format!(
            "the disk size {} is not a multiple of the {ss}-byte sector; the last {} bytes are ignored",
            disk.len(),
            disk.len() % ssz
        ));
    }
    let disk_sectors = disk.len() / ssz;
    if disk_sectors < 3 {
        return Err(Error::corrupt(
            "GPT",
            Location::Whole,
            format!("a {}-byte disk cannot hold a GPT", disk.len()),
        ));
    }
    let last_lba = disk_sectors - 1;

    let mut other_copy = None;
    let (header, entries, used_backup, primary_entry_lba) = match load(disk, 1, ss, disk_sectors) {
        Ok((h, e)) => {
            if h.alternate_lba != last_lba {
                warnings.push(format!(
                    "the primary GPT header puts its backup at LBA {}, not at the last LBA {last_lba} (was the image resized?)",
                    h.alternate_lba
                ));
            }
            // Check the backup too, to report damage the next tool would repair.
            let backup_lba = if h.alternate_lba < disk_sectors && h.alternate_lba > 1 {
                h.alternate_lba
            } else {
                last_lba
            };
            match load(disk, backup_lba, ss, disk_sectors) {
                Ok((b, _)) => {
                    other_copy = Some((backup_lba, b.partition_entry_lba));
                    if b.disk_guid != h.disk_guid
                        || b.partition_entry_array_crc32 != h.partition_entry_array_crc32
                    {
                        warnings.push(format!(
                            "the backup GPT at LBA {backup_lba} differs from the primary; the primary is used"
                        ));
                    }
                }
                Err(a) => warnings.push(format!(
                    "the backup GPT header at LBA {backup_lba} is unusable ({}); the primary is used",
                    a.error
                )),
            }
            let pel = h.partition_entry_lba;
            (h, e, false, pel)
        }
        Err(primary) => {
            let mut candidates = vec![last_lba];
            if let Some(alt) = primary.alternate_lba {
                if alt != last_lba && alt > 1 && alt < disk_sectors {
                    candidates.push(alt);
                }
            }
            let mut found = None;
            let mut first_backup_error: Option<Attempt> = None;
            for lba in candidates {
                match load(disk, lba, ss, disk_sectors) {
                    Ok(x) => {
                        found = Some((lba, x));
                        break;
                    }
                    Err(a) => {
                        if first_backup_error.is_none() || a.had_signature {
                            first_backup_error = Some(a);
                        }
                    }
                }
            }
            match found {
                Some((lba, (h, e))) => {
                    warnings.push(format!(
                        "the primary GPT header is damaged ({}); using the backup at LBA {lba}",
                        primary.error
                    ));
                    // The primary array's place cannot be trusted from a damaged
                    // header; LBA 2 is where every tool puts it.
                    other_copy = Some((1, 2));
                    (h, e, true, 2)
                }
                None => {
                    let backup = first_backup_error;
                    return Err(match backup {
                        _ if primary.had_signature => primary.error,
                        Some(b) if b.had_signature => b.error,
                        _ => Error::corrupt(
                            "GPT",
                            Location::Byte(ssz),
                            "the protective MBR announces a GPT, but neither LBA 1 nor the last LBA holds a GPT header",
                        ),
                    });
                }
            }
        }
    };

    let esize = header.size_of_partition_entry as usize;
    let mut parts = Vec::new();
    let mut spans = Vec::new();
    let array_offset = header.partition_entry_lba * ssz;
    for (slot, e) in entries.chunks_exact(esize).enumerate() {
        let Some(entry) = GptEntry::parse(e) else {
            continue;
        };
        // Bounded by MAX_ARRAY_BYTES / MIN_ENTRY_SIZE.
        let index = slot as u32 + 1;
        let loc = Location::Byte(array_offset + (slot * esize) as u64);
        if entry.starting_lba > entry.ending_lba {
            return Err(Error::corrupt(
                "GPT partition entry",
                loc,
                format!(
                    "partition {index} starts at LBA {} after its end at LBA {}",
                    entry.starting_lba, entry.ending_lba
                ),
            ));
        }
        if entry.ending_lba > last_lba {
            return Err(Error::corrupt(
                "GPT partition entry",
                loc,
                format!(
                    "partition {index} ends at LBA {}, past the end of the disk (last LBA {last_lba})",
                    entry.ending_lba
                ),
            ));
        }
        if entry.starting_lba < header.first_usable_lba || entry.ending_lba > header.last_usable_lba
        {
            warnings.push(format!(
                "partition {index} (LBA {}..={}) is outside the usable area {}..={}",
                entry.starting_lba,
                entry.ending_lba,
                header.first_usable_lba,
                header.last_usable_lba
            ));
        }
        let start = entry.starting_lba * ssz;
        let len = (entry.ending_lba - entry.starting_lba + 1) * ssz;
        spans.push(Span {
            index,
            start,
            end: start + len,
        });
        parts.push(Partition {
            index,
            start,
            len,
            part_type: gpt_type(&entry.partition_type_guid),
            role: Role::Gpt,
            uuid: Some(entry.unique_partition_guid.to_string()),
            name: Some(entry.partition_name),
            bootable: entry.attributes & ATTR_LEGACY_BIOS_BOOTABLE != 0,
            attributes: entry.attributes,
        });
    }
    check_overlaps("GPT partition entry array", &spans)?;

    Ok((
        GptLayout {
            sector_size: ss,
            header,
            used_backup,
            primary_entry_lba,
            entries,
            sector0: sector0.copied(),
            disk_sectors,
            other_copy,
        },
        parts,
    ))
}

/// Rewrite the GPT for a disk of `new_sectors` sectors, with new sizes (in sectors)
/// for the partitions `new_sizes` names. Returns the protective MBR (when the
/// source had one), the primary header and array, the backup array and header.
pub fn rewrite(
    layout: &GptLayout,
    new_sectors: u64,
    new_sizes: &[(u32, u64)],
) -> Result<Vec<TableWrite>, RewriteError> {
    let h = &layout.header;
    let ss = layout.sector_size;
    let ssz = u64::from(ss);
    let esize = h.size_of_partition_entry as usize;
    let array_sectors = h.array_bytes().div_ceil(ssz);
    let too_small = || RewriteError::DiskTooSmall {
        sectors: new_sectors,
    };
    let last_lba = new_sectors.checked_sub(1).ok_or_else(too_small)?;
    let backup_array_lba = last_lba.checked_sub(array_sectors).ok_or_else(too_small)?;
    let last_usable_lba = backup_array_lba.checked_sub(1).ok_or_else(too_small)?;
    let first_usable_lba = h.first_usable_lba;
    if layout.primary_entry_lba + array_sectors > first_usable_lba
        || first_usable_lba > last_usable_lba
    {
        return Err(too_small());
    }

    let mut entries = layout.entries.clone();
    let mut resized = Vec::new();
    for &(index, sectors) in new_sizes {
        let slot = index
            .checked_sub(1)
            .ok_or(RewriteError::NoSuchPartition { index })? as usize;
        let Some(e) = entries.get_mut(slot * esize..(slot + 1) * esize) else {
            return Err(RewriteError::NoSuchPartition { index });
        };
        let Some(entry) = GptEntry::parse(e) else {
            return Err(RewriteError::NoSuchPartition { index });
        };
        let old = entry.ending_lba - entry.starting_lba + 1;
        let end = entry
            .starting_lba
            .checked_add(sectors)
            .and_then(|x| x.checked_sub(1))
            .ok_or(RewriteError::BadLength {
                index,
                len: sectors.saturating_mul(ssz),
            })?;
        put_le64(e, eoff::ENDING_LBA, end);
        resized.push((entry.starting_lba, old, sectors));
    }

    let mut spans = Vec::new();
    for (slot, e) in entries.chunks_exact(esize).enumerate() {
        let Some(entry) = GptEntry::parse(e) else {
            continue;
        };
        let index = slot as u32 + 1;
        if entry.ending_lba > last_usable_lba || entry.starting_lba < first_usable_lba {
            return Err(RewriteError::PastEnd {
                index,
                end_lba: entry.ending_lba,
                last_lba: last_usable_lba,
            });
        }
        spans.push(Span {
            index,
            start: entry.starting_lba,
            end: entry.ending_lba + 1,
        });
    }
    check_overlaps("GPT partition entry array", &spans).map_err(|e| RewriteError::Overlap {
        detail: e.to_string(),
    })?;

    let array_crc = crc32fast::hash(&entries);
    let mut padded = entries;
    padded.resize((array_sectors * ssz) as usize, 0);

    let primary = GptHeader {
        revision: h.revision,
        header_size: HEADER_SIZE,
        header_crc32: 0,
        my_lba: 1,
        alternate_lba: last_lba,
        first_usable_lba,
        last_usable_lba,
        disk_guid: h.disk_guid,
        partition_entry_lba: layout.primary_entry_lba,
        number_of_partition_entries: h.number_of_partition_entries,
        size_of_partition_entry: h.size_of_partition_entry,
        partition_entry_array_crc32: array_crc,
    };
    let backup = GptHeader {
        my_lba: last_lba,
        alternate_lba: 1,
        partition_entry_lba: backup_array_lba,
        ..primary.clone()
    };

    let mut out = Vec::new();
    if let Some(s0) = &layout.sector0 {
        let patched = mbr::patch_protective(s0, layout.disk_sectors, new_sectors, &resized);
        out.push(TableWrite {
            offset: 0,
            bytes: patched.to_vec(),
            what: "protective MBR",
        });
    }
    out.push(TableWrite {
        offset: ssz,
        bytes: primary.to_sector(ss),
        what: "primary GPT header",
    });
    out.push(TableWrite {
        offset: layout.primary_entry_lba * ssz,
        bytes: padded.clone(),
        what: "primary GPT entry array",
    });
    out.push(TableWrite {
        offset: backup_array_lba * ssz,
        bytes: padded,
        what: "backup GPT entry array",
    });
    out.push(TableWrite {
        offset: last_lba * ssz,
        bytes: backup.to_sector(ss),
        what: "backup GPT header",
    });
    Ok(out)
}

/// Whether the sector at `lba` (of `ss` bytes) starts with the GPT signature.
pub fn signature_at(disk: &dyn Disk, offset: u64) -> Result<bool> {
    let mut sig = [0u8; 8];
    if offset.checked_add(8).is_none_or(|e| e > disk.len()) {
        return Ok(false);
    }
    disk.read_at(offset, &mut sig)?;
    Ok(&sig == SIGNATURE)
}
