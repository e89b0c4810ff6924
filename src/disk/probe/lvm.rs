//! LVM2 physical volume recognition: the label header ("LABELONE") in one of the
//! first four 512-byte sectors, naming its own sector, with a valid CRC and the
//! type "LVM2 001", followed by the PV header whose first field is the PV UUID
//! (lvm2 `lib/label/label.h`, `lib/format_text/layout.h`). Reading volume groups
//! is out of scope.

use super::{read_if_fits, FsType, Probed};
use crate::disk::partition::types::{le32, le64};
use crate::disk::Disk;
use crate::error::Result;

pub const LABEL_ID: &[u8; 8] = b"LABELONE";
pub const LVM2_TYPE: &[u8; 8] = b"LVM2 001";
pub const LABEL_SIZE: usize = 512;
/// The label may sit in any of the first four sectors.
pub const LABEL_SCAN_SECTORS: u64 = 4;
pub const ID_LEN: usize = 32;

mod off {
    pub const SECTOR_XL: usize = 8;
    pub const CRC_XL: usize = 16;
    pub const OFFSET_XL: usize = 20;
    pub const TYPE: usize = 24;
}

/// LVM's CRC: the reflected CRC-32 polynomial seeded with 0xf597a6cf and without
/// final inversion (lvm2 `lib/misc/crc.c`). crc32fast computes the standard CRC,
/// which inverts on the way in and out; inverting around it undoes both.
pub fn lvm_crc(data: &[u8]) -> u32 {
    const INITIAL_CRC: u32 = 0xf597a6cf;
    let mut h = crc32fast::Hasher::new_with_initial(!INITIAL_CRC);
    h.update(data);
    !h.finalize()
}

/// The PV UUID as LVM and blkid print it: 6-4-4-4-4-4-6.
pub fn format_pv_uuid(id: &[u8]) -> String {
    let mut s = String::with_capacity(ID_LEN + 6);
    for (i, c) in id.iter().enumerate() {
        if matches!(i, 6 | 10 | 14 | 18 | 22 | 26) {
            s.push('-');
        }
        s.push(if c.is_ascii_graphic() {
            *c as char
        } else {
            '?'
        });
    }
    s
}

pub fn probe(disk: &dyn Disk) -> Result<Option<Probed>> {
    let Some(area) = read_if_fits(disk, 0, LABEL_SCAN_SECTORS as usize * LABEL_SIZE)? else {
        return Ok(None);
    };
    for (sector, label) in area.chunks_exact(LABEL_SIZE).enumerate() {
        if &label[..8] != LABEL_ID {
            continue;
        }
        if le64(label, off::SECTOR_XL) != sector as u64 {
            continue;
        }
        if lvm_crc(&label[off::OFFSET_XL..]) != le32(label, off::CRC_XL) {
            continue;
        }
        if &label[off::TYPE..off::TYPE + 8] != LVM2_TYPE {
            continue;
        }
        let contents = le32(label, off::OFFSET_XL) as usize;
        let Some(pv_uuid) = label.get(contents..contents.saturating_add(ID_LEN)) else {
            continue;
        };
        if contents < 32 {
            continue;
        }
        let device_size = label
            .get(contents + ID_LEN..contents + ID_LEN + 8)
            .map(|b| le64(b, 0));
        let mut details = vec![("label sector".to_string(), sector.to_string())];
        if let Some(sz) = device_size {
            details.push(("device size".into(), sz.to_string()));
        }
        return Ok(Some(Probed {
            fs: FsType::LvmPv,
            uuid: Some(format_pv_uuid(pv_uuid)),
            label: None,
            version: Some("LVM2 001".into()),
            details,
            warnings: Vec::new(),
            swap: None,
        }));
    }
    Ok(None)
}
