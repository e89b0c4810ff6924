//! The LVM structures of a PV in the output: its label sector and every metadata
//! area, written fresh with the VG's new text (both copies when the PV has two,
//! the second one following the device's end when the PV changes size). The
//! space between them is left unwritten: old metadata versions in the circular
//! buffer do not survive.

use super::label::PvLabel;
use super::mda;
use super::PvFound;
use crate::error::{Error, Result};

/// Bytes to place at an offset of the PV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvWrite {
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// Where a PV's metadata areas go in a PV of `new_len` bytes: an area in the
/// first half of the source keeps its offset, one near the end keeps its
/// distance from the end.
pub fn moved_areas(pv: &PvFound, new_len: u64) -> Result<Vec<label::DiskLocn>> {
    let mut v = Vec::new();
    for a in &pv.label.metadata_areas {
        let offset = if a.offset > pv.len / 2 {
            let from_end = pv.len.checked_sub(a.offset).ok_or_else(|| {
                Error::unsupported(format!("{}: a metadata area past the PV's end", pv.name))
            })?;
            new_len.checked_sub(from_end).ok_or_else(|| {
                Error::unsupported(format!(
                    "{}: a PV too small for its metadata areas",
                    pv.name
                ))
            })?
        } else {
            a.offset
        };
        v.push(label::DiskLocn {
            offset,
            size: a.size,
        });
    }
    Ok(v)
}

use super::label;

/// How many bytes at the end of the source PV its end-side metadata area (and
/// anything after it) takes; extents must stay before them.
pub fn tail_reserved(pv: &PvFound) -> u64 {
    pv.label
        .metadata_areas
        .iter()
        .filter(|a| a.offset > pv.len / 2)
        .map(|a| pv.len.saturating_sub(a.offset))
        .max()
        .unwrap_or(0)
}

/// The label and metadata areas of `pv` for an output PV of `new_len` bytes
/// holding `text`, with `pv_uuid` (the source's, or a new one).
pub fn pv_structures(
    pv: &PvFound,
    new_len: u64,
    pv_uuid: [u8; 32],
    text: &str,
) -> Result<Vec<PvWrite>> {
    let areas = moved_areas(pv, new_len)?;
    let label = PvLabel {
        device_size: new_len,
        pv_uuid,
        metadata_areas: areas.clone(),
        ..pv.label.clone()
    };
    let mut out = vec![PvWrite {
        offset: label.sector * 512,
        bytes: label.to_sector()?.to_vec(),
    }];
    for a in areas {
        out.push(PvWrite {
            offset: a.offset,
            bytes: mda::area_bytes(a.offset, a.size, text.as_bytes())?,
        });
    }
    Ok(out)
}
