//! The MBR (DOS) partition table: the four primary entries in sector 0, extended
//! partitions (0x05, 0x0f, 0x85) and the chain of extended boot records (EBRs) that
//! holds the logical partitions, read and rewritten.
//!
//! It reads only the table sectors and never interprets partition contents. The
//! writer side patches the source's sectors (boot code and all) and returns them; it
//! never writes anything itself. CHS fields are ignored when reading.

use super::types::{le32, mbr_type, put_le32};
use super::{check_overlaps, Partition, RewriteError, Role, Span, TableWrite};
use crate::disk::Disk;
use crate::error::{Error, Location, Result};

/// The MBR and each EBR are 512-byte records at the start of their logical sector.
pub const RECORD: usize = 512;
/// Where the four entries start in a record.
pub const ENTRIES_OFFSET: usize = 446;
pub const ENTRY_SIZE: usize = 16;
/// Where the 32-bit disk signature sits (Windows' "disk identifier", Linux's PARTUUID
/// prefix).
pub const DISK_SIGNATURE_OFFSET: usize = 440;

/// Linux numbers at most 256 partitions per disk; a longer EBR chain is hostile.
pub const MAX_LOGICALS: usize = 252;

/// One 16-byte partition entry, named as in the usual MBR descriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MbrEntry {
    pub boot_indicator: u8,
    pub starting_chs: [u8; 3],
    pub os_type: u8,
    pub ending_chs: [u8; 3],
    pub starting_lba: u32,
    pub size_in_lba: u32,
}

impl MbrEntry {
    /// Parse entry `slot` (0..4) of a 512-byte record.
    pub fn parse(record: &[u8; RECORD], slot: usize) -> MbrEntry {
        let b = &record[ENTRIES_OFFSET + ENTRY_SIZE * (slot & 3)..][..ENTRY_SIZE];
        MbrEntry {
            boot_indicator: b[0],
            starting_chs: [b[1], b[2], b[3]],
            os_type: b[4],
            ending_chs: [b[5], b[6], b[7]],
            starting_lba: le32(b, 8),
            size_in_lba: le32(b, 12),
        }
    }

    /// Store this entry as entry `slot` of a record.
    pub fn write(&self, record: &mut [u8; RECORD], slot: usize) {
        let b = &mut record[ENTRIES_OFFSET + ENTRY_SIZE * (slot & 3)..][..ENTRY_SIZE];
        b[0] = self.boot_indicator;
        b[1..4].copy_from_slice(&self.starting_chs);
        b[4] = self.os_type;
        b[5..8].copy_from_slice(&self.ending_chs);
        put_le32(b, 8, self.starting_lba);
        put_le32(b, 12, self.size_in_lba);
    }

    /// Linux and util-linux treat an entry as used when its size is non-zero,
    /// whatever its type byte (block/partitions/msdos.c).
    pub fn is_used(&self) -> bool {
        self.size_in_lba != 0
    }

    pub fn is_extended(&self) -> bool {
        is_extended_type(self.os_type)
    }
}

pub fn is_extended_type(t: u8) -> bool {
    matches!(t, 0x05 | 0x0f | 0x85)
}

/// Whether a record ends with the 0x55 0xAA boot signature.
pub fn has_boot_signature(record: &[u8; RECORD]) -> bool {
    record[510] == 0x55 && record[511] == 0xAA
}

/// The end CHS address tools write for `lba` with the conventional 255-head,
/// 63-sector geometry (what sfdisk and sgdisk use for images), saturating at
/// cylinder 1023 the way they do.
pub fn chs_for(lba: u64) -> [u8; 3] {
    const HEADS: u64 = 255;
    const SECTORS: u64 = 63;
    let cyl = lba / (HEADS * SECTORS);
    if cyl > 1023 {
        return [0xfe, 0xff, 0xff];
    }
    let head = (lba / SECTORS) % HEADS;
    let sector = lba % SECTORS + 1;
    // Bounded above: head < 255, sector <= 63, cyl <= 1023.
    [
        head as u8,
        (sector as u8) | (((cyl >> 2) & 0xc0) as u8),
        (cyl & 0xff) as u8,
    ]
}

/// An extended boot record as read: where it is and its bytes.
#[derive(Debug, Clone)]
pub struct Ebr {
    pub lba: u64,
    pub record: [u8; RECORD],
    /// The primary slot of the extended partition this EBR belongs to.
    pub extended_slot: usize,
}

/// Where a logical partition's entry lives.
#[derive(Debug, Clone, Copy)]
pub struct LogicalRef {
    pub index: u32,
    /// Index into [`MbrLayout::ebrs`].
    pub ebr: usize,
    pub slot: usize,
}

/// What the rewriter needs of a parsed MBR: the source records, verbatim.
#[derive(Debug, Clone)]
pub struct MbrLayout {
    pub sector_size: u32,
    pub sector0: [u8; RECORD],
    pub ebrs: Vec<Ebr>,
    pub logicals: Vec<LogicalRef>,
}

/// The disk signature of sector 0.
pub fn disk_signature(sector0: &[u8; RECORD]) -> u32 {
    le32(sector0, DISK_SIGNATURE_OFFSET)
}

fn entry_location(record_lba: u64, sector_size: u32, slot: usize) -> Location {
    Location::Byte(
        record_lba * u64::from(sector_size) + (ENTRIES_OFFSET + ENTRY_SIZE * slot) as u64,
    )
}

fn make_partition(
    index: u32,
    e: &MbrEntry,
    abs_start: u64,
    sector_size: u32,
    sig: u32,
    role: Role,
) -> Partition {
    let ss = u64::from(sector_size);
    Partition {
        index,
        start: abs_start * ss,
        len: u64::from(e.size_in_lba) * ss,
        part_type: mbr_type(e.os_type),
        role,
        // Linux's form (block/partitions/msdos.c): signature, then the partition
        // number, both in lowercase hex.
        uuid: Some(format!("{sig:08x}-{index:02x}")),
        name: None,
        bootable: e.boot_indicator == 0x80,
        attributes: u64::from(e.boot_indicator),
    }
}

/// Read the MBR's partitions from a disk whose sector 0 is `sector0` (already known
/// to carry the boot signature). Logical sectors are `sector_size` bytes.
pub fn read(
    disk: &dyn Disk,
    sector0: &[u8; RECORD],
    sector_size: u32,
    warnings: &mut Vec<String>,
) -> Result<(MbrLayout, Vec<Partition>)> {
    let ss = u64::from(sector_size);
    let disk_sectors = disk.len() / ss;
    let sig = disk_signature(sector0);
    let mut parts = Vec::new();
    let mut layout = MbrLayout {
        sector_size,
        sector0: *sector0,
        ebrs: Vec::new(),
        logicals: Vec::new(),
    };

    for slot in 0..4 {
        let e = MbrEntry::parse(sector0, slot);
        if !e.is_used() {
            continue;
        }
        let start = u64::from(e.starting_lba);
        let end = start + u64::from(e.size_in_lba);
        if end > disk_sectors {
            return Err(Error::corrupt(
                "MBR partition entry",
                entry_location(0, sector_size, slot),
                format!(
                    "partition {} ends at sector {end}, past the end of the {disk_sectors}-sector disk",
                    slot + 1
                ),
            ));
        }
        if start == 0 {
            return Err(Error::corrupt(
                "MBR partition entry",
                entry_location(0, sector_size, slot),
                format!("partition {} starts at sector 0, over the MBR", slot + 1),
            ));
        }
        let role = if e.is_extended() {
            Role::Extended
        } else {
            Role::Primary
        };
        parts.push(make_partition(
            slot as u32 + 1,
            &e,
            start,
            sector_size,
            sig,
            role,
        ));
    }

    // Logical partitions, numbered from 5 across every extended partition in slot
    // order, as Linux does.
    let mut next_index = 5u32;
    for slot in 0..4 {
        let e = MbrEntry::parse(sector0, slot);
        if e.is_used() && e.is_extended() {
            read_chain(
                disk,
                &mut layout,
                &mut parts,
                slot,
                &e,
                &mut next_index,
                sig,
                warnings,
            )?;
        }
    }

    check_mbr_overlaps(&parts, sector_size)?;
    Ok((layout, parts))
}

/// Follow one extended partition's EBR chain.
#[allow(clippy::too_many_arguments)]
fn read_chain(
    disk: &dyn Disk,
    layout: &mut MbrLayout,
    parts: &mut Vec<Partition>,
    ext_slot: usize,
    ext: &MbrEntry,
    next_index: &mut u32,
    sig: u32,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let sector_size = layout.sector_size;
    let ss = u64::from(sector_size);
    let disk_sectors = disk.len() / ss;
    let ext_start = u64::from(ext.starting_lba);
    let ext_end = ext_start + u64::from(ext.size_in_lba);
    let mut visited = std::collections::HashSet::new();
    let mut this = ext_start;
    loop {
        if !visited.insert(this) {
            return Err(Error::corrupt(
                "EBR chain",
                Location::Byte(this * ss),
                format!(
                    "the chain of extended partition {} loops back to sector {this}",
                    ext_slot + 1
                ),
            ));
        }
        if layout.logicals.len() >= MAX_LOGICALS || layout.ebrs.len() >= MAX_LOGICALS {
            return Err(Error::corrupt(
                "EBR chain",
                Location::Byte(this * ss),
                format!("more than {MAX_LOGICALS} extended boot records"),
            ));
        }
        if this < ext_start || this >= ext_end {
            return Err(Error::corrupt(
                "EBR chain",
                Location::Byte(this * ss),
                format!(
                    "EBR at sector {this} lies outside extended partition {} (sectors {ext_start}..{ext_end})",
                    ext_slot + 1
                ),
            ));
        }
        let mut record = [0u8; RECORD];
        disk.read_at(this * ss, &mut record)?;
        if !has_boot_signature(&record) {
            // Linux and blkid end the chain here without complaint; say so.
            warnings.push(format!(
                "EBR at sector {this} has no 0x55AA signature; the logical partition chain ends there"
            ));
            break;
        }
        let ebr_index = layout.ebrs.len();
        layout.ebrs.push(Ebr {
            lba: this,
            record,
            extended_slot: ext_slot,
        });

        for slot in 0..4 {
            let e = MbrEntry::parse(&record, slot);
            if !e.is_used() || e.is_extended() {
                continue;
            }
            let start = this + u64::from(e.starting_lba);
            let end = start + u64::from(e.size_in_lba);
            // The third and fourth entries of an EBR often hold garbage; Linux
            // accepts them only when they make sense, and so do we.
            if slot >= 2 && (e.starting_lba == 0 || start < ext_start || end > ext_end) {
                warnings.push(format!(
                    "EBR at sector {this}: ignoring implausible entry {}",
                    slot + 1
                ));
                continue;
            }
            let index = *next_index;
            if end > disk_sectors {
                return Err(Error::corrupt(
                    "EBR partition entry",
                    entry_location(this, sector_size, slot),
                    format!(
                        "logical partition {index} ends at sector {end}, past the end of the {disk_sectors}-sector disk"
                    ),
                ));
            }
            if e.starting_lba == 0 {
                return Err(Error::corrupt(
                    "EBR partition entry",
                    entry_location(this, sector_size, slot),
                    format!("logical partition {index} starts on its own EBR"),
                ));
            }
            if start < ext_start || end > ext_end {
                warnings.push(format!(
                    "logical partition {index} (sectors {start}..{end}) is not inside its extended partition"
                ));
            }
            parts.push(make_partition(
                index,
                &e,
                start,
                sector_size,
                sig,
                Role::Logical,
            ));
            layout.logicals.push(LogicalRef {
                index,
                ebr: ebr_index,
                slot,
            });
            *next_index += 1;
        }

        // The first extended-type entry links to the next EBR; its start is relative
        // to the extended partition's start.
        let link = (0..4)
            .map(|s| MbrEntry::parse(&record, s))
            .find(|e| e.is_used() && e.is_extended());
        match link {
            Some(l) if l.starting_lba != 0 => this = ext_start + u64::from(l.starting_lba),
            _ => break,
        }
    }
    Ok(())
}

/// Data partitions must not overlap one another, and no two logical partitions may
/// overlap; an extended container may (must) hold its logicals.
fn check_mbr_overlaps(parts: &[Partition], sector_size: u32) -> Result<()> {
    let spans: Vec<Span> = parts
        .iter()
        .filter(|p| p.role != Role::Extended)
        .map(|p| Span {
            index: p.index,
            start: p.start,
            end: p.start + p.len,
        })
        .collect();
    check_overlaps("MBR partition table", &spans)?;
    // Primaries must also stay clear of extended containers.
    for ext in parts.iter().filter(|p| p.role == Role::Extended) {
        for p in parts.iter().filter(|p| p.role == Role::Primary) {
            if p.start < ext.start + ext.len && ext.start < p.start + p.len {
                return Err(Error::corrupt(
                    "MBR partition table",
                    Location::Entry(u64::from(p.index)),
                    format!(
                        "partition {} overlaps extended partition {} (sector size {sector_size})",
                        p.index, ext.index
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Rewrite the table for a disk of `new_sectors` sectors, with new sizes (in
/// sectors) for the partitions `new_sizes` names by index. Starts never move.
/// Returns sector 0 and every EBR, each a 512-byte record to place at the start of
/// its sector.
pub fn rewrite(
    layout: &MbrLayout,
    parts: &[Partition],
    new_sectors: u64,
    new_sizes: &[(u32, u64)],
) -> Result<Vec<TableWrite>, RewriteError> {
    let ss = u64::from(layout.sector_size);
    // Sector 0 and every EBR must stay on the disk, partition or not.
    let last_record = layout.ebrs.iter().map(|e| e.lba).max().unwrap_or(0);
    if new_sectors <= last_record {
        return Err(RewriteError::DiskTooSmall {
            sectors: new_sectors,
        });
    }
    let size_of = |index: u32, old: u64| -> u64 {
        new_sizes
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, s)| *s)
            .unwrap_or(old)
    };
    let fits_u32 = |index: u32, v: u64| -> Result<u32, RewriteError> {
        u32::try_from(v).map_err(|_| RewriteError::TooLargeForMbr { index, sectors: v })
    };

    let mut sector0 = layout.sector0;
    let mut ebrs: Vec<[u8; RECORD]> = layout.ebrs.iter().map(|e| e.record).collect();
    let mut new_parts: Vec<Partition> = Vec::new();

    // Logical partitions first: the extended containers' sizes follow from them.
    for l in &layout.logicals {
        let ebr = &layout.ebrs[l.ebr];
        let mut e = MbrEntry::parse(&ebr.record, l.slot);
        let old = u64::from(e.size_in_lba);
        let new = size_of(l.index, old);
        let start = ebr.lba + u64::from(e.starting_lba);
        if new != old {
            let old_end_chs = chs_for(start + old - 1);
            e.size_in_lba = fits_u32(l.index, new)?;
            if e.ending_chs == old_end_chs && new > 0 {
                e.ending_chs = chs_for(start + new - 1);
            }
            e.write(&mut ebrs[l.ebr], l.slot);
        }
        if let Some(p) = parts.iter().find(|p| p.index == l.index) {
            let mut q = p.clone();
            q.len = new * ss;
            new_parts.push(q);
        }
    }

    // Each EBR's link entry describes the next EBR and its logical partition; keep
    // its size in step when that logical partition's size changed and the link had
    // the conventional size (EBR through the end of the logical partition).
    for (k, next) in layout.ebrs.iter().enumerate().skip(1) {
        let prev = k - 1;
        if layout.ebrs[prev].extended_slot != next.extended_slot {
            continue;
        }
        let Some(l) = layout.logicals.iter().find(|l| l.ebr == k) else {
            continue;
        };
        let old_e = MbrEntry::parse(&next.record, l.slot);
        let new_e = MbrEntry::parse(&ebrs[k], l.slot);
        if old_e == new_e {
            continue;
        }
        let link_slot = (0..4).find(|s| {
            let e = MbrEntry::parse(&layout.ebrs[prev].record, *s);
            e.is_used() && e.is_extended()
        });
        let Some(link_slot) = link_slot else { continue };
        let mut link = MbrEntry::parse(&ebrs[prev], link_slot);
        let old_span = u64::from(old_e.starting_lba) + u64::from(old_e.size_in_lba);
        if u64::from(link.size_in_lba) == old_span {
            let new_span = u64::from(new_e.starting_lba) + u64::from(new_e.size_in_lba);
            link.size_in_lba = fits_u32(l.index, new_span)?;
            let link_start = next.lba;
            if link.ending_chs == chs_for(link_start + old_span - 1) && new_span > 0 {
                link.ending_chs = chs_for(link_start + new_span - 1);
            }
            link.write(&mut ebrs[prev], link_slot);
        }
    }

    for slot in 0..4 {
        let mut e = MbrEntry::parse(&layout.sector0, slot);
        if !e.is_used() {
            continue;
        }
        let index = slot as u32 + 1;
        let start = u64::from(e.starting_lba);
        let old = u64::from(e.size_in_lba);
        let mut new = size_of(index, old);
        if e.is_extended() && new == old {
            // An extended container that ended with its last logical partition
            // follows that partition; one that reached past the new end of the
            // disk is cut back to it.
            let ext_end_old = start + old;
            let lasts = |ps: &[Partition]| {
                ps.iter()
                    .filter(|p| {
                        p.role == Role::Logical
                            && layout.logicals.iter().any(|l| {
                                l.index == p.index && layout.ebrs[l.ebr].extended_slot == slot
                            })
                    })
                    .map(|p| (p.start + p.len) / ss)
                    .max()
            };
            let old_last = lasts(parts);
            let new_last = lasts(&new_parts);
            if let (Some(ol), Some(nl)) = (old_last, new_last) {
                if ol == ext_end_old {
                    new = nl - start;
                }
            }
            if start + new > new_sectors && new_sectors > start {
                new = new_sectors - start;
            }
        }
        if new != old {
            let old_end_chs = chs_for(start + old - 1);
            e.size_in_lba = fits_u32(index, new)?;
            if e.ending_chs == old_end_chs && new > 0 {
                e.ending_chs = chs_for(start + new - 1);
            }
            e.write(&mut sector0, slot);
        }
        if let Some(p) = parts.iter().find(|p| p.index == index) {
            let mut q = p.clone();
            q.len = new * ss;
            new_parts.push(q);
        }
    }

    // Every partition inside the new disk; logical partitions inside their
    // containers; no overlaps.
    for p in &new_parts {
        let end = (p.start + p.len) / ss;
        if end > new_sectors {
            return Err(RewriteError::PastEnd {
                index: p.index,
                end_lba: end.saturating_sub(1),
                last_lba: new_sectors.saturating_sub(1),
            });
        }
    }
    for l in &layout.logicals {
        let ext_slot = layout.ebrs[l.ebr].extended_slot;
        let (Some(lp), Some(ep)) = (
            new_parts.iter().find(|p| p.index == l.index),
            new_parts.iter().find(|p| p.index == ext_slot as u32 + 1),
        ) else {
            continue;
        };
        if lp.start + lp.len > ep.start + ep.len {
            return Err(RewriteError::PastEnd {
                index: l.index,
                end_lba: (lp.start + lp.len) / ss - 1,
                last_lba: (ep.start + ep.len) / ss - 1,
            });
        }
    }
    check_mbr_overlaps(&new_parts, layout.sector_size).map_err(|e| RewriteError::Overlap {
        detail: e.to_string(),
    })?;

    // Every record, changed or not: the caller then needs no knowledge of which
    // source sectors are table structures beyond `Table::regions`.
    let mut out = vec![TableWrite {
        offset: 0,
        bytes: sector0.to_vec(),
        what: "MBR",
    }];
    for (new, old) in ebrs.iter().zip(&layout.ebrs) {
        out.push(TableWrite {
            offset: old.lba * ss,
            bytes: new.to_vec(),
            what: "EBR",
        });
    }
    Ok(out)
}

/// Whether sector 0 belongs to a filesystem rather than a partition table, or is
/// otherwise not a table (util-linux and Linux apply the same tests): a valid FAT
/// BPB, an NTFS or exFAT boot sector, or boot indicators other than 0 and 0x80.
/// Returns the reason when it is not a table.
pub fn not_a_table(sector0: &[u8; RECORD]) -> Option<String> {
    if &sector0[3..11] == b"NTFS    " || &sector0[3..11] == b"EXFAT   " {
        return Some("sector 0 is an NTFS or exFAT boot sector".into());
    }
    if crate::disk::probe::fat::valid_bpb(sector0) {
        return Some("sector 0 is a FAT boot sector".into());
    }
    for slot in 0..4 {
        let e = MbrEntry::parse(sector0, slot);
        if e.boot_indicator != 0 && e.boot_indicator != 0x80 {
            return Some(format!(
                "sector 0 has the 0x55AA signature but entry {} has boot indicator {:#04x}",
                slot + 1,
                e.boot_indicator
            ));
        }
    }
    None
}

/// Whether any primary entry could describe a partition of a disk of `disk_len`
/// bytes (512-byte sectors): used, typed, starting after sector 0 and ending
/// inside the disk.
pub fn has_valid_entry(sector0: &[u8; RECORD], disk_len: u64) -> bool {
    let sectors = disk_len / 512;
    (0..4).any(|s| {
        let e = MbrEntry::parse(sector0, s);
        e.is_used()
            && e.os_type != 0
            && e.starting_lba != 0
            && u64::from(e.starting_lba) + u64::from(e.size_in_lba) <= sectors
    })
}

/// Whether any primary entry is the GPT protective type.
pub fn has_protective_entry(sector0: &[u8; RECORD]) -> bool {
    (0..4).any(|s| {
        let e = MbrEntry::parse(sector0, s);
        e.os_type == 0xee
    })
}

/// Number of used primary entries that are not the protective one (a hybrid MBR
/// has some).
pub fn hybrid_entries(sector0: &[u8; RECORD]) -> usize {
    (0..4)
        .map(|s| MbrEntry::parse(sector0, s))
        .filter(|e| e.is_used() && e.os_type != 0xee)
        .count()
}

/// Patch a protective MBR for a disk of `new_sectors` sectors: the 0xEE entry that
/// covered the old disk covers the new one; hybrid entries that described a
/// partition whose size changed follow it. `resized` holds (start, old size, new
/// size) in sectors.
pub fn patch_protective(
    sector0: &[u8; RECORD],
    old_sectors: u64,
    new_sectors: u64,
    resized: &[(u64, u64, u64)],
) -> [u8; RECORD] {
    let mut out = *sector0;
    for slot in 0..4 {
        let mut e = MbrEntry::parse(sector0, slot);
        if !e.is_used() {
            continue;
        }
        let start = u64::from(e.starting_lba);
        let old = u64::from(e.size_in_lba);
        let new = if e.os_type == 0xee {
            // 0xFFFFFFFF means "the whole disk, however large": keep it. An entry
            // that reached the old end reaches the new one.
            if old == u64::from(u32::MAX) || start + old < old_sectors {
                continue;
            }
            new_sectors.saturating_sub(start).min(u64::from(u32::MAX))
        } else if let Some((_, _, n)) = resized.iter().find(|(s, o, _)| *s == start && *o == old) {
            (*n).min(u64::from(u32::MAX))
        } else {
            continue;
        };
        if new == old || new == 0 {
            continue;
        }
        if e.ending_chs == chs_for(start + old - 1) {
            e.ending_chs = chs_for(start + new - 1);
        }
        e.size_in_lba = new as u32; // bounded by u32::MAX above
        e.write(&mut out, slot);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chs_matches_what_sfdisk_writes() {
        // Seen in an sfdisk-made image: sector 2048 is head 32, sector 33, cylinder 0.
        assert_eq!(chs_for(2048), [0x20, 0x21, 0x00]);
        // sgdisk's protective entry end for a 64 MiB disk (LBA 131071).
        assert_eq!(chs_for(131071), [0x28, 0x20, 0x08]);
        assert_eq!(chs_for(u64::from(u32::MAX)), [0xfe, 0xff, 0xff]);
    }

    #[test]
    fn entry_round_trips() {
        let mut r = [0u8; RECORD];
        let e = MbrEntry {
            boot_indicator: 0x80,
            starting_chs: [1, 2, 3],
            os_type: 0x83,
            ending_chs: [4, 5, 6],
            starting_lba: 2048,
            size_in_lba: 0xdead_beef,
        };
        e.write(&mut r, 2);
        assert_eq!(MbrEntry::parse(&r, 2), e);
        assert_eq!(MbrEntry::parse(&r, 1), MbrEntry::default());
    }
}
