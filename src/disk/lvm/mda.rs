//! An LVM2 metadata area: the 512-byte `mda_header` (checksum, magic, version,
//! start and size, then the `raw_locn` list) and the circular buffer after it
//! that holds the VG metadata text. The first `raw_locn` points at the current
//! text; when the text runs past the area's end it continues right after the
//! header (lvm2 `lib/format_text/format-text.c`: `_read_metadata_location_vg`,
//! `_vg_write_raw`).
//!
//! Everything read is checked: the header's CRC, the text's CRC, and every
//! offset and size against the area before anything is allocated.

use crate::disk::partition::types::{le32, le64};
use crate::disk::probe::lvm::lvm_crc;
use crate::disk::Disk;
use crate::error::{Error, Location, Result};

pub const MDA_HEADER_SIZE: usize = 512;
/// `FMTT_MAGIC`.
pub const FMTT_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
pub const FMTT_VERSION: u32 = 1;
/// `raw_locn.flags`: this copy of the metadata is to be ignored.
pub const RAW_LOCN_IGNORED: u32 = 1;
/// The largest metadata text imgsan reads. lvm2's own default area is 1 MiB and
/// holds two copies; a VG with thousands of LVs stays well below this.
pub const MAX_TEXT: u64 = 16 << 20;
const RAW_LOCN: usize = 24;

/// `struct raw_locn`: where the text is, relative to the area's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLocn {
    pub offset: u64,
    pub size: u64,
    pub checksum: u32,
    pub flags: u32,
}

/// A parsed `mda_header`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdaHeader {
    /// Absolute start of the area on the PV, in bytes.
    pub start: u64,
    pub size: u64,
    pub locns: Vec<RawLocn>,
}

/// Reads the header of the area at `area_start` (bytes from the PV's start) that
/// the PV header says is `area_size` bytes long.
pub fn read_header(pv: &dyn Disk, area_start: u64, area_size: u64) -> Result<MdaHeader> {
    let loc = Location::Byte(area_start);
    let corrupt = |d: String| Error::corrupt("LVM metadata area header", loc, d);
    if area_size < MDA_HEADER_SIZE as u64 {
        return Err(corrupt(format!(
            "the area is {area_size} bytes, smaller than its header"
        )));
    }
    crate::disk::check_range("LVM metadata area", pv.len(), area_start, area_size)?;
    let mut h = [0u8; MDA_HEADER_SIZE];
    pv.read_at(area_start, &mut h)?;
    let stored = le32(&h, 0);
    let computed = lvm_crc(&h[4..]);
    if stored != computed {
        return Err(Error::checksum(
            "LVM metadata area header",
            loc,
            u64::from(stored),
            u64::from(computed),
        ));
    }
    if &h[4..20] != FMTT_MAGIC {
        return Err(corrupt("wrong magic".into()));
    }
    let version = le32(&h, 20);
    if version != FMTT_VERSION {
        return Err(Error::unsupported(format!(
            "LVM metadata area version {version}"
        )));
    }
    let start = le64(&h, 24);
    let size = le64(&h, 32);
    if start != area_start {
        return Err(corrupt(format!(
            "the header says the area starts at {start}"
        )));
    }
    if size != area_size {
        return Err(corrupt(format!(
            "the header says the area is {size} bytes, the PV header {area_size}"
        )));
    }
    let mut locns = Vec::new();
    let mut at = 40;
    while at + RAW_LOCN <= MDA_HEADER_SIZE {
        let l = RawLocn {
            offset: le64(&h, at),
            size: le64(&h, at + 8),
            checksum: le32(&h, at + 16),
            flags: le32(&h, at + 20),
        };
        if l.offset == 0 {
            break;
        }
        locns.push(l);
        at += RAW_LOCN;
    }
    Ok(MdaHeader { start, size, locns })
}

/// The current metadata text of an area, checked against its CRC, without the
/// terminating NUL. `Ok(None)` when the area holds no text (a fresh PV, an
/// ignored copy).
pub fn read_text(pv: &dyn Disk, h: &MdaHeader) -> Result<Option<Vec<u8>>> {
    let Some(l) = h.locns.first() else {
        return Ok(None);
    };
    if l.flags & RAW_LOCN_IGNORED != 0 || l.size == 0 {
        return Ok(None);
    }
    let loc = Location::Byte(h.start);
    let ring = h.size - MDA_HEADER_SIZE as u64;
    if l.offset < MDA_HEADER_SIZE as u64 || l.offset >= h.size || l.size > ring || l.size > MAX_TEXT
    {
        return Err(Error::corrupt(
            "LVM metadata location",
            loc,
            format!(
                "text of {} bytes at offset {} does not fit a {}-byte area",
                l.size, l.offset, h.size
            ),
        ));
    }
    let first = l.size.min(h.size - l.offset);
    let mut text = vec![0u8; l.size as usize];
    pv.read_at(h.start + l.offset, &mut text[..first as usize])?;
    if first < l.size {
        pv.read_at(
            h.start + MDA_HEADER_SIZE as u64,
            &mut text[first as usize..],
        )?;
    }
    let computed = lvm_crc(&text);
    if computed != l.checksum {
        return Err(Error::checksum(
            "LVM metadata text",
            Location::Byte(h.start + l.offset),
            u64::from(l.checksum),
            u64::from(computed),
        ));
    }
    while text.last() == Some(&0) {
        text.pop();
    }
    Ok(Some(text))
}

/// A fresh area: the header with one location, and the text (NUL-terminated)
/// right after it, padded to a whole sector. The rest of the area is left
/// unwritten. Fails if the text does not fit.
pub fn area_bytes(start: u64, size: u64, text: &[u8]) -> Result<Vec<u8>> {
    let len = text.len() as u64 + 1;
    // lvm2 keeps room for two copies (the old one stays until the new one is
    // committed); imgsan's output should leave lvm2 that room too.
    let max = (size.saturating_sub(MDA_HEADER_SIZE as u64) / 2).saturating_sub(512);
    if len > max {
        return Err(Error::unsupported(format!(
            "LVM metadata of {len} bytes in a {size}-byte metadata area"
        )));
    }
    let padded = (MDA_HEADER_SIZE as u64 + len).div_ceil(512) * 512;
    let mut b = vec![0u8; padded as usize];
    b[MDA_HEADER_SIZE..MDA_HEADER_SIZE + text.len()].copy_from_slice(text);
    let checksum = lvm_crc(&b[MDA_HEADER_SIZE..MDA_HEADER_SIZE + len as usize]);
    b[4..20].copy_from_slice(FMTT_MAGIC);
    b[20..24].copy_from_slice(&FMTT_VERSION.to_le_bytes());
    b[24..32].copy_from_slice(&start.to_le_bytes());
    b[32..40].copy_from_slice(&size.to_le_bytes());
    b[40..48].copy_from_slice(&(MDA_HEADER_SIZE as u64).to_le_bytes());
    b[48..56].copy_from_slice(&len.to_le_bytes());
    b[56..60].copy_from_slice(&checksum.to_le_bytes());
    let crc = lvm_crc(&b[4..MDA_HEADER_SIZE]);
    b[0..4].copy_from_slice(&crc.to_le_bytes());
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;

    fn disk_with(at: u64, bytes: &[u8], len: usize) -> MemDisk {
        let mut d = vec![0u8; len];
        d[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
        MemDisk::new(d)
    }

    #[test]
    fn written_area_reads_back() {
        let b = area_bytes(4096, 0x10000, b"vg {\nseqno = 1\n}\n").unwrap();
        let d = disk_with(4096, &b, 0x20000);
        let h = read_header(&d, 4096, 0x10000).unwrap();
        assert_eq!(read_text(&d, &h).unwrap().unwrap(), b"vg {\nseqno = 1\n}\n");
        // The header's own size must match what the PV header says.
        assert!(read_header(&d, 4096, 0x8000).is_err());
        // A flipped text byte fails the text CRC.
        let mut b2 = b.clone();
        b2[520] ^= 1;
        let d = disk_with(4096, &b2, 0x20000);
        let h = read_header(&d, 4096, 0x10000).unwrap();
        assert_eq!(
            read_text(&d, &h).unwrap_err().kind(),
            crate::ErrorKind::Checksum
        );
        assert!(area_bytes(4096, 2048, &[b'x'; 2000]).is_err());
    }

    #[test]
    fn text_wraps_around_the_ring() {
        // An area of 4096 bytes at 0: the text starts 100 bytes before the end
        // and continues after the header.
        let text = [b'a'; 300];
        let mut d = vec![0u8; 4096];
        d[3996..4096].copy_from_slice(&text[..100]);
        d[512..712].copy_from_slice(&text[100..]);
        let h = MdaHeader {
            start: 0,
            size: 4096,
            locns: vec![RawLocn {
                offset: 3996,
                size: 300,
                checksum: lvm_crc(&text),
                flags: 0,
            }],
        };
        assert_eq!(
            read_text(&MemDisk::new(d.clone()), &h).unwrap().unwrap(),
            text
        );
        let mut bad = h.clone();
        bad.locns[0].size = 4000;
        assert!(read_text(&MemDisk::new(d), &bad).is_err());
    }
}
