//! The bytes outside every partition that a disk needs to boot, and nothing else:
//! sector 0 (boot code, disk signature, partition table), the EBR tables of
//! logical partitions, both GPT headers and entry arrays, and GRUB's core image
//! when it is embedded in the gap after an MBR.
//!
//! The output writer copies these ranges and leaves every other byte outside the
//! partitions a hole, so a marker planted in a gap, in sectors 34-2047 of a GPT
//! disk or past the last partition never reaches the output. What is listed here
//! is recognised by structure (a table as parsed, GRUB's core by its signature and
//! its own length fields), never because it holds data.
//!
//! Must not: write, or copy partition contents (the writer decides those).

use serde::Serialize;

use crate::disk::partition::{mbr, Layout, Scheme, Table};
use crate::disk::Disk;
use crate::error::Result;

/// One range of the source disk that is copied as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BootRegion {
    pub offset: u64,
    pub len: u64,
    pub what: &'static str,
}

impl BootRegion {
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// Bytes of an MBR partition table in a boot record: four 16-byte entries and the
/// 0x55AA signature, from byte 446.
const TABLE_OFFSET: u64 = 446;
const TABLE_LEN: u64 = 66;

/// GRUB's diskboot.img (the first sector of an i386-pc core image) ends with its
/// block list: entries of {start: u64, len: u16, segment: u16}, the first at the
/// sector's last 12 bytes, further ones below it, a zero length ending the list
/// (grub-core/boot/i386/pc/diskboot.S, `firstlist`; filled in by grub-mkimage and
/// grub-bios-setup).
const BLOCKLIST_ENTRY: usize = 12;
/// diskboot.S loads the rest of the core image at segment 0x820 (0x8200).
const GRUB_CORE_SEGMENT: u16 = 0x0820;
/// The error messages diskboot.S prints ("Geom", "Read", " Error"), laid out
/// together in its data; a sector holding them and a valid block list is GRUB's.
const GRUB_DISKBOOT_MESSAGES: &[u8] = b"Geom\0Read\0 Error\0";

/// The ranges of `disk` outside its partitions that are copied: see the module
/// comment. Sorted by offset, non-overlapping, inside the disk.
pub fn accounted_regions(disk: &dyn Disk, table: &Table) -> Result<Vec<BootRegion>> {
    let len = disk.len();
    let mut v = Vec::new();
    match &table.layout {
        Layout::None => {}
        Layout::Mbr(m) => {
            let ss = u64::from(m.sector_size);
            v.push(BootRegion {
                offset: 0,
                len: mbr::RECORD as u64,
                what: "MBR (boot code and partition table)",
            });
            // An EBR holds a table only; whatever else is in its sector is not
            // accounted for.
            for e in &m.ebrs {
                v.push(BootRegion {
                    offset: e.lba * ss + TABLE_OFFSET,
                    len: TABLE_LEN,
                    what: "EBR partition table",
                });
            }
            if let Some(core) = grub_core(disk, table)? {
                v.push(core);
            }
        }
        Layout::Gpt(g) => {
            let ss = u64::from(g.sector_size);
            if g.sector0.is_some() {
                v.push(BootRegion {
                    offset: 0,
                    len: mbr::RECORD as u64,
                    what: "protective MBR (boot code and table)",
                });
            }
            let header = u64::from(g.header.header_size).min(ss);
            for r in table.regions() {
                let what = r.what;
                if what == "protective MBR" {
                    continue;
                }
                let n = if what.ends_with("header") {
                    header
                } else {
                    r.len
                };
                v.push(BootRegion {
                    offset: r.offset,
                    len: n,
                    what,
                });
            }
        }
    }
    // Keep what lies inside the disk; sort; drop duplicates and overlaps (a
    // damaged table may name the same sector twice).
    v.retain(|r| r.len > 0 && r.offset.checked_add(r.len).is_some_and(|e| e <= len));
    v.sort_by_key(|r| (r.offset, r.len));
    let mut out: Vec<BootRegion> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.offset < last.end() => {
                if r.end() > last.end() {
                    last.len = r.end() - last.offset;
                }
            }
            _ => out.push(r),
        }
    }
    Ok(out)
}

/// GRUB's core image embedded right after an MBR: diskboot.img in sector 1 and
/// the sectors its block list names, when they are contiguous from sector 2 and
/// end before the first partition. `None` when sector 1 is not GRUB's.
pub fn grub_core(disk: &dyn Disk, table: &Table) -> Result<Option<BootRegion>> {
    if table.scheme != Scheme::Mbr || table.sector_size != 512 {
        return Ok(None);
    }
    const SS: u64 = 512;
    // The gap ends at the first partition (or the disk's end).
    let gap_end = table
        .partitions
        .iter()
        .map(|p| p.start)
        .min()
        .unwrap_or(disk.len())
        .min(disk.len());
    if gap_end < 2 * SS {
        return Ok(None);
    }
    let mut sector = [0u8; SS as usize];
    disk.read_at(SS, &mut sector)?;
    if !sector
        .windows(GRUB_DISKBOOT_MESSAGES.len())
        .any(|w| w == GRUB_DISKBOOT_MESSAGES)
    {
        return Ok(None);
    }
    // Walk the block list down from the end of the sector. It must describe one
    // contiguous run starting at sector 2 (diskboot's own sector is 1), which is
    // how grub-bios-setup writes it for an embedded core.
    let mut next = 2u64;
    let mut at = sector.len() - BLOCKLIST_ENTRY;
    let mut first = true;
    loop {
        let e = &sector[at..at + BLOCKLIST_ENTRY];
        let start = u64::from_le_bytes(e[0..8].try_into().expect("8 bytes"));
        let n = u64::from(u16::from_le_bytes([e[8], e[9]]));
        let segment = u16::from_le_bytes([e[10], e[11]]);
        if n == 0 {
            break;
        }
        if start != next || (first && segment != GRUB_CORE_SEGMENT) {
            return Ok(None);
        }
        first = false;
        next += n;
        if next * SS > gap_end {
            return Ok(None);
        }
        // The list may not run into diskboot's code; the messages sit well below.
        match at.checked_sub(BLOCKLIST_ENTRY) {
            Some(a) if a >= 0x150 => at = a,
            _ => break,
        }
    }
    if first {
        return Ok(None);
    }
    Ok(Some(BootRegion {
        offset: SS,
        len: (next - 1) * SS,
        what: "GRUB core image",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::partition;
    use crate::disk::MemDisk;

    /// A one-partition MBR disk (partition at sector 2048) with `gap` at sector 1.
    fn mbr_disk(gap: &[u8]) -> MemDisk {
        let mut b = vec![0u8; 4 << 20];
        b[446 + 4] = 0x83;
        b[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
        b[446 + 12..446 + 16].copy_from_slice(&4096u32.to_le_bytes());
        b[510] = 0x55;
        b[511] = 0xaa;
        b[512..512 + gap.len()].copy_from_slice(gap);
        MemDisk::new(b)
    }

    fn diskboot(start: u64, len: u16, segment: u16) -> Vec<u8> {
        let mut s = vec![0u8; 512];
        s[0x128..0x128 + GRUB_DISKBOOT_MESSAGES.len()].copy_from_slice(GRUB_DISKBOOT_MESSAGES);
        s[0x1f4..0x1fc].copy_from_slice(&start.to_le_bytes());
        s[0x1fc..0x1fe].copy_from_slice(&len.to_le_bytes());
        s[0x1fe..0x200].copy_from_slice(&segment.to_le_bytes());
        s
    }

    fn regions(d: &MemDisk) -> Vec<BootRegion> {
        let t = partition::read(d).unwrap();
        accounted_regions(d, &t).unwrap()
    }

    #[test]
    fn grub_core_is_copied_to_its_block_list_length() {
        let d = mbr_disk(&diskboot(2, 52, 0x820));
        let r = regions(&d);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].offset, r[0].len), (0, 512));
        assert_eq!(
            (r[1].offset, r[1].len, r[1].what),
            (512, 53 * 512, "GRUB core image")
        );
    }

    #[test]
    fn junk_or_a_lying_block_list_is_not_grub() {
        // Junk in the gap.
        assert_eq!(regions(&mbr_disk(&[0xa5; 4096])).len(), 1);
        // The right messages, but a list that starts elsewhere, runs into the
        // partition, or has the wrong segment.
        for s in [
            diskboot(3, 52, 0x820),
            diskboot(2, 4000, 0x820),
            diskboot(2, 52, 0x800),
            diskboot(2, 0, 0x820),
        ] {
            assert_eq!(regions(&mbr_disk(&s)).len(), 1, "{:?}", &s[0x1f4..]);
        }
    }
}
