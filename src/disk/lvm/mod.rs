//! LVM2: physical volumes found among an image's partitions, the volume groups
//! their metadata describes, and logical volumes as disks of their own
//! ([`LvDisk`]), so that the layers above treat an LV like a partition.
//!
//! Reading: each PV's label and metadata areas ([`label`], [`mda`]); every copy
//! of the metadata text is read and checked, the newest valid one (highest
//! seqno) describes the VG, and a damaged or older copy is a warning. The text
//! is parsed strictly ([`text`]) into a checked model ([`vg`]). Only linear and
//! single-stripe LVs are mapped; a VG with anything else, or one whose PVs are
//! not all in the image, is refused, naming what.
//!
//! Writing (fresh labels, metadata areas and text for a VG whose LVs were
//! rebuilt or resized) is [`write`]. Nothing here decides what to rebuild.

pub mod label;
pub mod mda;
pub mod text;
pub mod vg;
pub mod write;

use std::sync::Arc;

use label::{DiskLocn, PvLabel};
use vg::{Lv, Vg};

use crate::disk::{check_range, Disk, DiskInfo, Extent, Slice};
use crate::error::{Error, Location, Result};

/// One metadata area of a PV and what was found in it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MdaCopy {
    pub area: DiskLocn,
    /// The VG and seqno of the text it holds, when it is readable.
    pub vg: Option<String>,
    pub seqno: Option<u64>,
    /// Why it could not be used (a checksum mismatch, a parse error).
    pub error: Option<String>,
}

/// A PV: a volume of the image carrying an LVM2 label.
#[derive(Debug, Clone)]
pub struct PvFound {
    /// The index of the image volume (a partition, or the whole disk).
    pub volume: usize,
    /// "partition 3".
    pub name: String,
    /// Its byte range in the disk.
    pub start: u64,
    pub len: u64,
    pub label: PvLabel,
    pub mdas: Vec<MdaCopy>,
    /// The VG it belongs to (index into [`Lvm::vgs`]) and its index in that
    /// VG's PV list. `None` for an orphan PV.
    pub vg: Option<(usize, usize)>,
}

/// A VG whose PVs are all in the image.
#[derive(Debug, Clone)]
pub struct VgFound {
    pub vg: Vg,
    /// For each of `vg.pvs`, the index into [`Lvm::pvs`].
    pub pvs: Vec<usize>,
    /// Which copy of the metadata was used ("partition 3, metadata area 1").
    pub source: String,
    pub warnings: Vec<String>,
}

/// What an image holds of LVM.
#[derive(Debug, Clone, Default)]
pub struct Lvm {
    pub pvs: Vec<PvFound>,
    pub vgs: Vec<VgFound>,
}

/// A candidate for scanning: an image volume probed as an LVM PV.
pub struct Candidate {
    pub volume: usize,
    pub name: String,
    pub start: u64,
    pub len: u64,
}

/// A readable copy of a VG's metadata.
struct Copy {
    vg: Vg,
    source: String,
}

/// Reads the PVs among `candidates` and assembles their VGs.
pub fn scan(disk: &Arc<dyn Disk>, candidates: &[Candidate]) -> Result<Lvm> {
    let mut lvm = Lvm::default();
    let mut copies: Vec<Copy> = Vec::new();
    let mut damaged: Vec<String> = Vec::new();
    for c in candidates {
        let within = |e| Error::within(format!("{} (LVM PV)", c.name), e);
        let pv = Slice::new(disk.clone(), c.start, c.len)?;
        let Some(label) = label::read(&pv).map_err(within)? else {
            continue;
        };
        if lvm.pvs.iter().any(|p| p.label.pv_uuid == label.pv_uuid) {
            return Err(Error::unsupported(format!(
                "LVM: PV {} appears twice (on {} and on another volume)",
                label.uuid(),
                c.name
            )));
        }
        let mut mdas = Vec::new();
        for (i, area) in label.metadata_areas.iter().enumerate() {
            let source = format!("{}, metadata area {}", c.name, i + 1);
            let mut copy = MdaCopy {
                area: *area,
                vg: None,
                seqno: None,
                error: None,
            };
            let read = mda::read_header(&pv, area.offset, area.size)
                .and_then(|h| mda::read_text(&pv, &h))
                .and_then(|t| t.map(|t| Vg::parse(&t)).transpose());
            match read {
                Ok(Some(vg)) => {
                    copy.vg = Some(vg.name.clone());
                    copy.seqno = Some(vg.seqno);
                    copies.push(Copy { vg, source });
                }
                Ok(None) => {}
                Err(e) if e.kind() == crate::ErrorKind::Io => return Err(within(e)),
                Err(e) => {
                    copy.error = Some(e.to_string());
                    damaged.push(format!("{source}: {e}"));
                }
            }
            mdas.push(copy);
        }
        lvm.pvs.push(PvFound {
            volume: c.volume,
            name: c.name.clone(),
            start: c.start,
            len: c.len,
            label,
            mdas,
            vg: None,
        });
    }

    // The newest copy of each VG (by its ID); the others are warnings.
    let mut ids: Vec<String> = copies.iter().map(|c| c.vg.id.clone()).collect();
    ids.sort();
    ids.dedup();
    for id in ids {
        let of_vg: Vec<&Copy> = copies.iter().filter(|c| c.vg.id == id).collect();
        let Some(best) = of_vg.iter().max_by_key(|c| c.vg.seqno) else {
            continue;
        };
        let mut warnings = Vec::new();
        for c in &of_vg {
            if c.vg.seqno < best.vg.seqno {
                warnings.push(format!(
                    "{} holds older metadata (seqno {}, the newest is {})",
                    c.source, c.vg.seqno, best.vg.seqno
                ));
            } else if c.vg != best.vg {
                return Err(Error::corrupt(
                    "LVM metadata",
                    Location::Whole,
                    format!(
                        "VG {}: {} and {} hold different metadata with the same seqno {}",
                        best.vg.name, best.source, c.source, c.vg.seqno
                    ),
                ));
            }
        }
        let vg = best.vg.clone();
        let vi = lvm.vgs.len();
        let mut pvs = Vec::new();
        for (k, p) in vg.pvs.iter().enumerate() {
            let uuid: Vec<u8> = p.id.bytes().filter(|&b| b != b'-').collect();
            let Some(found) = lvm.pvs.iter().position(|f| f.label.pv_uuid[..] == uuid[..]) else {
                return Err(Error::unsupported(format!(
                    "LVM: VG {} needs PV {} ({}), which is not in the image",
                    vg.name, p.id, p.key
                )));
            };
            let f = &mut lvm.pvs[found];
            if let Some((other, _)) = f.vg {
                return Err(Error::corrupt(
                    "LVM metadata",
                    Location::Whole,
                    format!(
                        "PV {} is claimed by VG {} and VG {}",
                        p.id, lvm.vgs[other].vg.name, vg.name
                    ),
                ));
            }
            let end = (p.pe_start + p.pe_count * vg.extent_size) * vg::SECTOR;
            if end > f.len {
                return Err(Error::corrupt(
                    "LVM metadata",
                    Location::Whole,
                    format!(
                        "VG {}: {} ({}) has extents up to byte {end}, past the end of its {}-byte volume",
                        vg.name, p.key, f.name, f.len
                    ),
                ));
            }
            f.vg = Some((vi, k));
            pvs.push(found);
        }
        vg.check_supported()?;
        lvm.vgs.push(VgFound {
            vg,
            pvs,
            source: best.source.clone(),
            warnings,
        });
    }
    // A damaged copy matters when it leaves a PV without a VG it could belong to.
    for p in &lvm.pvs {
        if p.vg.is_none() {
            if let Some(e) = p.mdas.iter().find_map(|m| m.error.as_ref()) {
                return Err(Error::corrupt(
                    "LVM metadata",
                    Location::Whole,
                    format!("{}: no readable metadata copy names its VG: {e}", p.name),
                ));
            }
        }
    }
    for d in damaged {
        if let Some(vg) = lvm.vgs.first_mut() {
            vg.warnings
                .push(format!("damaged metadata copy, not used: {d}"));
        }
    }
    Ok(lvm)
}

/// One contiguous piece of an LV: `len` bytes at `lv_offset` of the LV are at
/// `disk_offset` of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub lv_offset: u64,
    pub len: u64,
    pub disk_offset: u64,
}

impl VgFound {
    /// Where the LV's bytes are on the disk, in LV order.
    pub fn runs(&self, lvm: &Lvm, lv: &Lv) -> Vec<Run> {
        let eb = self.vg.extent_bytes();
        let mut runs = Vec::new();
        for s in &lv.segments {
            let (pv, pe) = s.stripes[0];
            let p = &self.vg.pvs[pv];
            let found = &lvm.pvs[self.pvs[pv]];
            runs.push(Run {
                lv_offset: s.start_extent * eb,
                len: s.extent_count * eb,
                disk_offset: found.start + p.pe_start * vg::SECTOR + pe * eb,
            });
        }
        runs
    }
}

/// A logical volume read through its segments' extents.
pub struct LvDisk {
    parent: Arc<dyn Disk>,
    runs: Vec<Run>,
    len: u64,
}

impl LvDisk {
    pub fn new(parent: Arc<dyn Disk>, runs: Vec<Run>) -> Result<Self> {
        let mut len = 0u64;
        for r in &runs {
            if r.lv_offset != len {
                return Err(Error::corrupt(
                    "LVM segment map",
                    Location::Byte(r.lv_offset),
                    "segments are not contiguous",
                ));
            }
            check_range("LVM extent", parent.len(), r.disk_offset, r.len)?;
            len += r.len;
        }
        Ok(LvDisk { parent, runs, len })
    }

    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// The runs' pieces covering `offset..offset+len`: (run, offset in run, length).
    fn pieces(&self, offset: u64, len: u64) -> impl Iterator<Item = (&Run, u64, u64)> {
        let end = offset + len;
        let first = self.runs.partition_point(|r| r.lv_offset + r.len <= offset);
        self.runs[first..]
            .iter()
            .take_while(move |r| r.lv_offset < end)
            .map(move |r| {
                let s = offset.max(r.lv_offset);
                let e = end.min(r.lv_offset + r.len);
                (r, s - r.lv_offset, e - s)
            })
    }
}

impl Disk for LvDisk {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range("logical volume", self.len, offset, buf.len() as u64)?;
        let mut done = 0usize;
        for (r, o, n) in self.pieces(offset, buf.len() as u64) {
            self.parent
                .read_at(r.disk_offset + o, &mut buf[done..done + n as usize])?;
            done += n as usize;
        }
        Ok(())
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let end = offset.saturating_add(len).min(self.len);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut v = Vec::new();
        for (r, o, n) in self.pieces(offset, end - offset) {
            for mut e in self.parent.map(r.disk_offset + o, n)? {
                e.offset = e.offset - r.disk_offset + r.lv_offset;
                v.push(e);
            }
        }
        Ok(v)
    }

    fn direct(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        let mut p = self.pieces(offset, len);
        let (r, o, n) = p.next()?;
        if n != len {
            return None;
        }
        self.parent.direct(r.disk_offset + o, len)
    }

    fn info(&self) -> DiskInfo {
        let mut i = self.parent.info();
        i.virtual_size = self.len;
        i
    }
}

/// What `inspect` shows of LVM.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LvmSummary {
    pub pvs: Vec<PvSummary>,
    pub vgs: Vec<VgSummary>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PvSummary {
    /// "partition 3".
    pub volume: String,
    pub uuid: String,
    pub vg: Option<String>,
    pub device_size: u64,
    pub metadata_areas: Vec<MdaCopy>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VgSummary {
    pub name: String,
    pub uuid: String,
    pub seqno: u64,
    pub extent_size: u64,
    /// The copy of the metadata that was used.
    pub metadata: String,
    pub pvs: Vec<VgPvSummary>,
    pub lvs: Vec<LvSummary>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VgPvSummary {
    pub key: String,
    pub uuid: String,
    pub volume: String,
    /// Bytes from the PV's start to its first extent.
    pub pe_start: u64,
    pub pe_count: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LvSummary {
    pub name: String,
    pub uuid: String,
    pub visible: bool,
    pub size: u64,
    pub segments: Vec<SegmentSummary>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SegmentSummary {
    pub start_extent: u64,
    pub extent_count: u64,
    #[serde(rename = "type")]
    pub seg_type: String,
    /// PV key and first physical extent ("pv0", 5).
    pub pv: String,
    pub pe: u64,
}

impl Lvm {
    pub fn summary(&self) -> LvmSummary {
        LvmSummary {
            pvs: self
                .pvs
                .iter()
                .map(|p| PvSummary {
                    volume: p.name.clone(),
                    uuid: p.label.uuid(),
                    vg: p.vg.map(|(v, _)| self.vgs[v].vg.name.clone()),
                    device_size: p.label.device_size,
                    metadata_areas: p.mdas.clone(),
                })
                .collect(),
            vgs: self
                .vgs
                .iter()
                .map(|v| VgSummary {
                    name: v.vg.name.clone(),
                    uuid: v.vg.id.clone(),
                    seqno: v.vg.seqno,
                    extent_size: v.vg.extent_bytes(),
                    metadata: v.source.clone(),
                    pvs: v
                        .vg
                        .pvs
                        .iter()
                        .zip(&v.pvs)
                        .map(|(p, &f)| VgPvSummary {
                            key: p.key.clone(),
                            uuid: p.id.clone(),
                            volume: self.pvs[f].name.clone(),
                            pe_start: p.pe_start * vg::SECTOR,
                            pe_count: p.pe_count,
                        })
                        .collect(),
                    lvs: v
                        .vg
                        .lvs
                        .iter()
                        .map(|l| LvSummary {
                            name: l.name.clone(),
                            uuid: l.id.clone(),
                            visible: l.visible,
                            size: l.extents() * v.vg.extent_bytes(),
                            segments: l
                                .segments
                                .iter()
                                .map(|s| SegmentSummary {
                                    start_extent: s.start_extent,
                                    extent_count: s.extent_count,
                                    seg_type: s.seg_type.clone(),
                                    pv: v.vg.pvs[s.stripes[0].0].key.clone(),
                                    pe: s.stripes[0].1,
                                })
                                .collect(),
                        })
                        .collect(),
                    warnings: v.warnings.clone(),
                })
                .collect(),
        }
    }
}

impl LvmSummary {
    /// The text `inspect` prints: one line per PV, then each VG with its PVs and
    /// its LVs' segments.
    pub fn render(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        for p in &self.pvs {
            writeln!(
                out,
                "LVM PV {} on {}: VG {}, {} bytes, {} metadata area(s)",
                p.uuid,
                p.volume,
                p.vg.as_deref().unwrap_or("(none)"),
                p.device_size,
                p.metadata_areas.len()
            )?;
            for (i, m) in p.metadata_areas.iter().enumerate() {
                if let Some(e) = &m.error {
                    writeln!(out, "  warning: metadata area {}: {e}", i + 1)?;
                }
            }
        }
        for v in &self.vgs {
            writeln!(
                out,
                "LVM VG {} ({}): seqno {}, extent size {}, metadata from {}",
                v.name, v.uuid, v.seqno, v.extent_size, v.metadata
            )?;
            for p in &v.pvs {
                writeln!(
                    out,
                    "  {} {} on {}: first extent at byte {}, {} extents",
                    p.key, p.uuid, p.volume, p.pe_start, p.pe_count
                )?;
            }
            for l in &v.lvs {
                writeln!(
                    out,
                    "  LV {}{} ({}): {} bytes",
                    l.name,
                    if l.visible { "" } else { " (hidden)" },
                    l.uuid,
                    l.size
                )?;
                for s in &l.segments {
                    writeln!(
                        out,
                        "    extents {}..{} {} on {} from extent {}",
                        s.start_extent,
                        s.start_extent + s.extent_count,
                        s.seg_type,
                        s.pv,
                        s.pe
                    )?;
                }
            }
            for w in &v.warnings {
                writeln!(out, "  warning: {w}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;

    #[test]
    fn lv_disk_reads_across_runs() {
        let d: Arc<dyn Disk> = Arc::new(MemDisk::new((0..=255u8).collect()));
        let lv = LvDisk::new(
            d,
            vec![
                Run {
                    lv_offset: 0,
                    len: 8,
                    disk_offset: 100,
                },
                Run {
                    lv_offset: 8,
                    len: 8,
                    disk_offset: 10,
                },
            ],
        )
        .unwrap();
        let mut b = [0u8; 6];
        lv.read_at(5, &mut b).unwrap();
        assert_eq!(b, [105, 106, 107, 10, 11, 12]);
        assert!(lv.read_at(12, &mut b).is_err());
        let m = lv.map(0, 100).unwrap();
        assert_eq!(m.iter().map(|e| e.len).sum::<u64>(), 16);
        assert_eq!(m[1].offset, 8);
        assert!(lv.direct(6, 4).is_none());
        assert_eq!(lv.direct(8, 2), Some(&[10u8, 11][..]));
    }
}
