//! The LVM2 physical-volume label: the 32-byte label header ("LABELONE") in one of
//! a device's first four 512-byte sectors, and the PV header after it (PV UUID,
//! device size, the lists of data areas and metadata areas, and the extension with
//! its bootloader areas). Layout from lvm2's `lib/label/label.h` and
//! `lib/format_text/layout.h`; field names follow them.
//!
//! Reading and writing sit together: [`PvLabel::to_sector`] produces the sector
//! that [`parse`] accepts, with the CRC computed just before it is returned.

use crate::disk::partition::types::{le32, le64};
use crate::disk::probe::lvm::{
    lvm_crc, ID_LEN, LABEL_ID, LABEL_SCAN_SECTORS, LABEL_SIZE, LVM2_TYPE,
};
use crate::disk::Disk;
use crate::error::{Error, Location, Result};

/// Offsets in the label header (`struct label_header`).
mod off {
    pub const SECTOR_XL: usize = 8;
    pub const CRC_XL: usize = 16;
    pub const OFFSET_XL: usize = 20;
    pub const TYPE: usize = 24;
}
/// Where the PV header starts in the label sector: right after the label header.
const PV_HEADER: usize = 32;
/// A `disk_locn` is two little-endian u64: offset and size, in bytes.
const DISK_LOCN: usize = 16;
/// The PV header extension version lvm2 writes.
pub const PV_HEADER_EXTENSION_VSN: u32 = 2;
/// Extension flag: the PV belongs to a VG.
pub const PV_EXT_USED: u32 = 1;

/// An area of the device: byte offset from the PV's start, and size in bytes (0
/// for a data area means "to the end of the device").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DiskLocn {
    pub offset: u64,
    pub size: u64,
}

/// A parsed label sector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvLabel {
    /// The sector (0..4) the label was found in; it is written back there.
    pub sector: u64,
    /// The 32 characters of the PV UUID, without dashes.
    pub pv_uuid: [u8; ID_LEN],
    /// `device_size_xl`: the PV size in bytes as pvcreate recorded it.
    pub device_size: u64,
    pub data_areas: Vec<DiskLocn>,
    pub metadata_areas: Vec<DiskLocn>,
    /// `None` for labels written before the extension existed (lvm2 < 2.02.116).
    pub extension: Option<(u32, u32)>,
    pub bootloader_areas: Vec<DiskLocn>,
}

/// The characters of an lvm2 ID (`lib/id/id.c`).
pub fn is_id_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'!' || c == b'#'
}

/// Reads the NULL-terminated list of areas at `at`; returns it and the offset
/// after its terminator.
fn areas(s: &[u8], mut at: usize, label_at: u64, what: &str) -> Result<(Vec<DiskLocn>, usize)> {
    let mut v = Vec::new();
    loop {
        if at + DISK_LOCN > s.len() {
            return Err(Error::corrupt(
                "LVM PV header",
                Location::Byte(label_at + at as u64),
                format!("the list of {what} has no terminator inside the label sector"),
            ));
        }
        let (offset, size) = (le64(s, at), le64(s, at + 8));
        at += DISK_LOCN;
        if offset == 0 {
            // lvm2 ends a list at the first zero offset (`dlocn_xl->offset`).
            return Ok((v, at));
        }
        v.push(DiskLocn { offset, size });
    }
}

/// Parses the label sector found at `sector`. The caller has checked that it
/// starts with "LABELONE".
pub fn parse(s: &[u8], sector: u64) -> Result<PvLabel> {
    let at = sector * LABEL_SIZE as u64;
    let bad = |detail: String| Error::corrupt("LVM label", Location::Byte(at), detail);
    if s.len() != LABEL_SIZE || &s[..8] != LABEL_ID {
        return Err(bad("no LABELONE signature".into()));
    }
    if le64(s, off::SECTOR_XL) != sector {
        return Err(bad(format!(
            "the label says it is in sector {}, found in sector {sector}",
            le64(s, off::SECTOR_XL)
        )));
    }
    let stored = le32(s, off::CRC_XL);
    let computed = lvm_crc(&s[off::OFFSET_XL..]);
    if stored != computed {
        return Err(Error::checksum(
            "LVM label",
            Location::Byte(at),
            u64::from(stored),
            u64::from(computed),
        ));
    }
    if &s[off::TYPE..off::TYPE + 8] != LVM2_TYPE {
        return Err(Error::unsupported(format!(
            "LVM label type {:?} (only \"LVM2 001\" is known)",
            String::from_utf8_lossy(&s[off::TYPE..off::TYPE + 8])
        )));
    }
    let contents = le32(s, off::OFFSET_XL) as usize;
    if contents != PV_HEADER {
        return Err(bad(format!(
            "PV header at offset {contents} of the label (lvm2 puts it at 32)"
        )));
    }
    let mut pv_uuid = [0u8; ID_LEN];
    pv_uuid.copy_from_slice(&s[PV_HEADER..PV_HEADER + ID_LEN]);
    if !pv_uuid.iter().copied().all(is_id_char) {
        return Err(bad(
            "the PV UUID holds characters lvm2 never puts in one".into()
        ));
    }
    let device_size = le64(s, PV_HEADER + ID_LEN);
    let (data_areas, next) = areas(s, PV_HEADER + ID_LEN + 8, at, "data areas")?;
    let (metadata_areas, next) = areas(s, next, at, "metadata areas")?;
    let mut extension = None;
    let mut bootloader_areas = Vec::new();
    if next + 8 <= s.len() {
        let version = le32(s, next);
        if version != 0 {
            extension = Some((version, le32(s, next + 4)));
            bootloader_areas = areas(s, next + 8, at, "bootloader areas")?.0;
        }
    }
    if data_areas.len() != 1 {
        return Err(Error::unsupported(format!(
            "an LVM PV with {} data areas (lvm2 writes exactly one)",
            data_areas.len()
        )));
    }
    if metadata_areas.len() > 2 {
        return Err(Error::unsupported(format!(
            "an LVM PV with {} metadata areas (lvm2 writes at most two)",
            metadata_areas.len()
        )));
    }
    Ok(PvLabel {
        sector,
        pv_uuid,
        device_size,
        data_areas,
        metadata_areas,
        extension,
        bootloader_areas,
    })
}

/// Finds and parses the label of a device: `Ok(None)` when no sector of the first
/// four starts with "LABELONE". A label that is there but damaged is an error.
pub fn read(disk: &dyn Disk) -> Result<Option<PvLabel>> {
    let scan = LABEL_SCAN_SECTORS * LABEL_SIZE as u64;
    if disk.len() < scan {
        return Ok(None);
    }
    let mut area = vec![0u8; scan as usize];
    disk.read_at(0, &mut area)?;
    for (i, s) in area.chunks_exact(LABEL_SIZE).enumerate() {
        if &s[..8] == LABEL_ID {
            return parse(s, i as u64).map(Some);
        }
    }
    Ok(None)
}

fn put64(s: &mut [u8], at: usize, v: u64) {
    s[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn put32(s: &mut [u8], at: usize, v: u32) {
    s[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

impl PvLabel {
    /// The PV UUID as lvm2 prints it (6-4-4-4-4-4-6).
    pub fn uuid(&self) -> String {
        crate::disk::probe::lvm::format_pv_uuid(&self.pv_uuid)
    }

    /// The label sector, as lvm2's `label_write` and `_text_write` lay it out.
    pub fn to_sector(&self) -> Result<[u8; LABEL_SIZE]> {
        let mut s = [0u8; LABEL_SIZE];
        s[..8].copy_from_slice(LABEL_ID);
        put64(&mut s, off::SECTOR_XL, self.sector);
        put32(&mut s, off::OFFSET_XL, PV_HEADER as u32);
        s[off::TYPE..off::TYPE + 8].copy_from_slice(LVM2_TYPE);
        s[PV_HEADER..PV_HEADER + ID_LEN].copy_from_slice(&self.pv_uuid);
        put64(&mut s, PV_HEADER + ID_LEN, self.device_size);
        let mut at = PV_HEADER + ID_LEN + 8;
        let lists: [&[DiskLocn]; 2] = [&self.data_areas, &self.metadata_areas];
        let need = (self.data_areas.len() + self.metadata_areas.len() + 2) * DISK_LOCN
            + 8
            + (self.bootloader_areas.len() + 1) * DISK_LOCN;
        if at + need > LABEL_SIZE {
            return Err(Error::unsupported(
                "an LVM label with more areas than its sector holds",
            ));
        }
        for list in lists {
            for a in list {
                put64(&mut s, at, a.offset);
                put64(&mut s, at + 8, a.size);
                at += DISK_LOCN;
            }
            at += DISK_LOCN;
        }
        if let Some((version, flags)) = self.extension {
            put32(&mut s, at, version);
            put32(&mut s, at + 4, flags);
            at += 8;
            for a in &self.bootloader_areas {
                put64(&mut s, at, a.offset);
                put64(&mut s, at + 8, a.size);
                at += DISK_LOCN;
            }
        }
        let crc = lvm_crc(&s[off::OFFSET_XL..]);
        put32(&mut s, off::CRC_XL, crc);
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> PvLabel {
        PvLabel {
            sector: 1,
            pv_uuid: *b"traF6cpQtveyOE02x2ouvi4aasDS2dkd",
            device_size: 64 << 20,
            data_areas: vec![DiskLocn {
                offset: 1 << 20,
                size: 0,
            }],
            metadata_areas: vec![DiskLocn {
                offset: 4096,
                size: 0xff000,
            }],
            extension: Some((PV_HEADER_EXTENSION_VSN, PV_EXT_USED)),
            bootloader_areas: vec![],
        }
    }

    #[test]
    fn round_trip_and_rejections() {
        let l = sample();
        let s = l.to_sector().unwrap();
        assert_eq!(parse(&s, 1).unwrap(), l);
        assert_eq!(l.uuid(), "traF6c-pQtv-eyOE-02x2-ouvi-4aas-DS2dkd");
        // Wrong sector, flipped byte (CRC), unknown type.
        assert!(parse(&s, 2).is_err());
        let mut t = s;
        t[100] ^= 1;
        assert_eq!(parse(&t, 1).unwrap_err().kind(), crate::ErrorKind::Checksum);
        let mut t = s;
        t[off::TYPE] = b'X';
        let crc = lvm_crc(&t[off::OFFSET_XL..]);
        put32(&mut t, off::CRC_XL, crc);
        assert_eq!(
            parse(&t, 1).unwrap_err().kind(),
            crate::ErrorKind::Unsupported
        );
    }

    #[test]
    fn unterminated_lists_are_corrupt() {
        let mut s = [0u8; LABEL_SIZE];
        s[..8].copy_from_slice(LABEL_ID);
        put64(&mut s, off::SECTOR_XL, 0);
        put32(&mut s, off::OFFSET_XL, 32);
        s[off::TYPE..off::TYPE + 8].copy_from_slice(LVM2_TYPE);
        s[32..64].copy_from_slice(&[b'a'; 32]);
        for at in (72..LABEL_SIZE - 15).step_by(16) {
            put64(&mut s, at, 4096);
        }
        let crc = lvm_crc(&s[off::OFFSET_XL..]);
        put32(&mut s, off::CRC_XL, crc);
        assert_eq!(parse(&s, 0).unwrap_err().kind(), crate::ErrorKind::Corrupt);
    }
}
