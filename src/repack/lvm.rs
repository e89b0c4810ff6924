//! Repacking the LVM side of a disk: each VG's LVs are filled like partitions
//! (filesystems rebuilt, swap re-created, anything else copied), placed into their
//! extents, and every PV of the VG gets a fresh label and metadata (new seqno,
//! both copies, CRCs). When the disk changes size and its last partition is a
//! PV, the LVs shrink (or the largest rebuilt one grows) to what they hold, are
//! packed from the PV's first extent in their source order, and the PV shrinks
//! with them.
//!
//! Placement only: building is `fs::build`, writing is `output`.

use std::sync::Arc;

use super::{DiskSize, Rebuild, VolumeOutcome};
use crate::disk::lvm::vg::{Segment, SECTOR, STRIPED};
use crate::disk::lvm::{self, write, Lvm, VgFound};
use crate::disk::probe::FsType;
use crate::disk::Disk;
use crate::error::{Error, Location, Result};
use crate::fs::{self, TargetSize};
use crate::image::Image;
use crate::output::assemble::{Fill, VolumeFill};
use crate::output::plan::{Piece, Plan, Write};

/// LVM choices of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LvmOptions {
    /// Give the VGs, PVs and LVs new random UUIDs (virt-sysprep's lvm-uuids).
    pub new_uuids: bool,
}

/// What the VG pass contributes to the disk plan.
pub struct VgPlan {
    /// One fill per PV partition of the VG.
    pub fills: Vec<(usize, VolumeFill)>,
    /// One outcome per LV volume and per PV.
    pub outcomes: Vec<VolumeOutcome>,
    /// A resized PV partition: (partition index, new length) and the disk's new
    /// end (partition end plus the tail the table needs).
    pub resized: Option<(u32, u64)>,
}

/// An LV's content, relative to its start, and the length it needs.
struct Content {
    plan: Plan,
    outcome: VolumeOutcome,
}

fn content(
    image: &Image,
    volumes: &[Option<Rebuild>],
    vol: usize,
    target: TargetSize,
) -> Result<Content> {
    let v = &image.volumes[vol];
    let mut outcome = VolumeOutcome {
        volume: vol,
        name: v.name(),
        action: "verbatim".into(),
        note: None,
        source_size: v.len,
        output_size: v.len,
        build: None,
    };
    let plan = match (volumes.get(vol).and_then(|x| x.as_ref()), v.probed.fs) {
        (Some(ext), _) => {
            let built = fs::build(&ext.tree, &ext.geometry, target)
                .map_err(|e| Error::within(v.name(), e))?;
            outcome.action = "rebuilt".into();
            outcome.build = Some(built.stats.clone());
            let mut p = built.plan;
            p.tag_volume(vol as u32);
            p
        }
        (None, FsType::Swap) => {
            let header = v.probed.swap.as_ref().ok_or_else(|| {
                Error::corrupt("swap", Location::Whole, "probed as swap without a header")
            })?;
            outcome.action = "swap re-created".into();
            let mut p = Plan::new(v.len);
            p.bytes(0, header.recreate(v.len)?.to_page()?);
            p
        }
        (None, fs) => {
            outcome.note = Some(match fs {
                FsType::Ext2 | FsType::Ext3 | FsType::Ext4 => "not read".to_string(),
                _ => format!("{} copied as it is", v.probed.blkid_type()),
            });
            let mut p = Plan::new(v.len);
            for e in v.disk.map(0, v.len)? {
                if e.alloc == crate::disk::Alloc::Data {
                    p.copy(e.offset, v.disk.clone(), e.offset, e.len);
                }
            }
            p
        }
    };
    Ok(Content { plan, outcome })
}

/// The image volume of LV `li` of VG `vi`.
fn lv_volume(image: &Image, vi: usize, li: usize) -> Option<usize> {
    image
        .volumes
        .iter()
        .position(|v| v.lv.as_ref().is_some_and(|l| l.vg == vi && l.lv == li))
}

/// Splits an LV-relative write at extent-run boundaries and moves each piece to
/// its place: (PV index in the VG, offset in that PV).
fn place(w: Write, runs: &[(u64, u64, usize, u64)], out: &mut [Plan]) -> Result<()> {
    let end = w.at + w.len;
    let mut at = w.at;
    while at < end {
        let Some(&(lv_off, len, pv, pv_off)) = runs.iter().find(|r| r.0 <= at && at < r.0 + r.1)
        else {
            return Err(Error::corrupt(
                "LVM placement",
                Location::Byte(at),
                "a write of the LV's content lies outside its extents",
            ));
        };
        let n = (end - at).min(lv_off + len - at);
        let delta = at - w.at;
        let piece = match &w.piece {
            Piece::Bytes(b) if delta == 0 && n == w.len => Piece::Bytes(b.clone()),
            Piece::Bytes(b) => Piece::Bytes(Arc::from(&b[delta as usize..(delta + n) as usize])),
            Piece::Copy { src, offset } => Piece::Copy {
                src: src.clone(),
                offset: offset + delta,
            },
        };
        let mut file = w.file;
        if let Some(f) = file.as_mut() {
            f.logical += delta;
        }
        out[pv].writes.push(Write {
            at: pv_off + (at - lv_off),
            len: n,
            piece,
            file,
        });
        at += n;
    }
    Ok(())
}

/// A fresh lvm2 ID from /dev/urandom, with the characters `id_create` uses.
fn new_id() -> Result<[u8; 32]> {
    use std::io::Read;
    const C: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::io("reading /dev/urandom for new LVM UUIDs", e))?;
    for x in &mut b {
        *x = C[usize::from(*x) % C.len()];
    }
    Ok(b)
}

fn dashed(id: &[u8; 32]) -> String {
    crate::disk::probe::lvm::format_pv_uuid(id)
}

/// Plans VG `vi`. `resize` is set when this VG's PV is the disk's last
/// partition and the disk changes size: the size mode and the bytes the PV
/// partition may take at most (for `--size`).
pub fn plan_vg(
    image: &Image,
    volumes: &[Option<Rebuild>],
    vi: usize,
    resize: Option<(DiskSize, u64)>,
    opts: &LvmOptions,
) -> Result<VgPlan> {
    let lvm: &Lvm = &image.lvm;
    let found: &VgFound = &lvm.vgs[vi];
    let mut vg = found.vg.clone();
    let eb = vg.extent_bytes();
    if resize.is_some() && found.pvs.len() != 1 {
        return Err(Error::unsupported(format!(
            "resizing the disk: its last partition is a PV of VG {}, which spans {} PVs",
            vg.name,
            found.pvs.len()
        )));
    }

    // The LVs in the order of their first extent on the disk.
    let mut order: Vec<usize> = (0..vg.lvs.len()).collect();
    let first = |li: usize| {
        let s = &vg.lvs[li].segments[0];
        (s.stripes[0].0, s.stripes[0].1)
    };
    order.sort_by_key(|&li| first(li));

    let mut contents: Vec<Option<Content>> = (0..vg.lvs.len()).map(|_| None).collect();
    let mut outcomes = Vec::new();
    if let Some((mode, room)) = resize {
        let pv = &lvm.pvs[found.pvs[0]];
        let vpv = &vg.pvs[0];
        let fixed = vpv.pe_start * SECTOR + write::tail_reserved(pv);
        // Every rebuilt LV shrinks; with --size the largest rebuilt one takes
        // what is left.
        let absorber = match mode {
            DiskSize::Bytes(_) => order
                .iter()
                .copied()
                .filter(|&li| {
                    lv_volume(image, vi, li)
                        .is_some_and(|v| volumes.get(v).is_some_and(|x| x.is_some()))
                })
                .max_by_key(|&li| vg.lvs[li].extents()),
            _ => None,
        };
        if matches!(mode, DiskSize::Bytes(_)) && absorber.is_none() {
            return Err(Error::unsupported(format!(
                "resizing the disk: its last partition is a PV of VG {}, which has no rebuilt LV to take the new size",
                vg.name
            )));
        }
        let margin = match mode {
            DiskSize::Shrink { margin } => margin,
            _ => None,
        };
        let mut used = 0u64;
        for &li in order.iter().filter(|&&li| Some(li) != absorber) {
            let lv_len = vg.lvs[li].extents() * eb;
            let c = match lv_volume(image, vi, li) {
                Some(vol) => {
                    let mut c = content(image, volumes, vol, TargetSize::Shrink { margin })?;
                    if c.plan.len > lv_len {
                        c = content(image, volumes, vol, TargetSize::Bytes(lv_len))?;
                        c.outcome.note =
                            Some("shrinking would not make it smaller; kept its size".into());
                    }
                    c
                }
                None => hidden_content(&image.disk, found, lvm, li)?,
            };
            used += c.plan.len.div_ceil(eb);
            contents[li] = Some(c);
        }
        if let Some(li) = absorber {
            let extents = (room.saturating_sub(fixed) / eb)
                .checked_sub(used)
                .filter(|&n| n > 0);
            let Some(extents) = extents else {
                return Err(Error::unsupported(format!(
                    "a disk of the size asked: VG {} needs more than {room} bytes on its PV",
                    vg.name
                )));
            };
            let vol = lv_volume(image, vi, li)
                .ok_or_else(|| Error::unsupported("LV without a volume"))?;
            contents[li] = Some(content(
                image,
                volumes,
                vol,
                TargetSize::Bytes(extents * eb),
            )?);
        }
        // Pack from extent 0, one segment per LV.
        let mut next = 0u64;
        for &li in &order {
            let c = contents[li]
                .as_mut()
                .ok_or_else(|| Error::unsupported("LV not planned"))?;
            let n = c.plan.len.div_ceil(eb).max(1);
            vg.lvs[li].segments = vec![Segment {
                start_extent: 0,
                extent_count: n,
                seg_type: STRIPED.into(),
                stripes: vec![(0, next)],
            }];
            c.plan.len = n * eb;
            c.outcome.output_size = n * eb;
            next += n;
        }
        vg.pvs[0].pe_count = next;
        vg.pvs[0].dev_size = (fixed + next * eb) / SECTOR;
    } else {
        for (li, slot) in contents.iter_mut().enumerate() {
            let lv_len = vg.lvs[li].extents() * eb;
            *slot = Some(match lv_volume(image, vi, li) {
                Some(vol) => {
                    let mut c = content(image, volumes, vol, TargetSize::Bytes(lv_len))?;
                    c.plan.len = lv_len;
                    c
                }
                None => hidden_content(&image.disk, found, lvm, li)?,
            });
        }
    }

    // New IDs when asked; the seqno moves on either way.
    vg.seqno += 1;
    let mut pv_uuids: Vec<[u8; 32]> = found
        .pvs
        .iter()
        .map(|&p| lvm.pvs[p].label.pv_uuid)
        .collect();
    if opts.new_uuids {
        vg.id = dashed(&new_id()?);
        for (k, p) in vg.pvs.iter_mut().enumerate() {
            pv_uuids[k] = new_id()?;
            p.id = dashed(&pv_uuids[k]);
        }
        for lv in &mut vg.lvs {
            lv.id = dashed(&new_id()?);
        }
    }
    let text = vg.to_text("Written by imgsan.")?;

    // Each PV's plan: its structures, then the LVs' content in their extents.
    let mut pv_plans: Vec<Plan> = Vec::new();
    for (k, &p) in found.pvs.iter().enumerate() {
        let pv = &lvm.pvs[p];
        let new_len = if resize.is_some() {
            vg.pvs[k].dev_size * SECTOR
        } else {
            pv.len
        };
        let mut plan = Plan::new(new_len);
        for w in write::pv_structures(pv, new_len, pv_uuids[k], &text)? {
            plan.bytes(w.offset, w.bytes);
        }
        pv_plans.push(plan);
    }
    for (li, c) in contents.into_iter().enumerate() {
        let Some(c) = c else { continue };
        let runs: Vec<(u64, u64, usize, u64)> = vg.lvs[li]
            .segments
            .iter()
            .map(|s| {
                let (pv, pe) = s.stripes[0];
                (
                    s.start_extent * eb,
                    s.extent_count * eb,
                    pv,
                    vg.pvs[pv].pe_start * SECTOR + pe * eb,
                )
            })
            .collect();
        for w in c.plan.writes {
            place(w, &runs, &mut pv_plans)?;
        }
        if vg.lvs[li].visible {
            outcomes.push(c.outcome);
        }
    }

    let mut fills = Vec::new();
    let mut resized = None;
    for (k, (&p, mut plan)) in found.pvs.iter().zip(pv_plans).enumerate() {
        let pv = &lvm.pvs[p];
        plan.seal()?;
        let out_len = plan.len;
        if resize.is_some() {
            let part = image.volumes[pv.volume]
                .partition
                .as_ref()
                .ok_or_else(|| Error::unsupported("resizing a disk that is one bare PV"))?;
            resized = Some((part.index, out_len));
        }
        outcomes.push(VolumeOutcome {
            volume: pv.volume,
            name: pv.name.clone(),
            action: "LVM PV rewritten".into(),
            note: Some(format!(
                "VG {} seqno {}, {} extents on {}",
                vg.name, vg.seqno, vg.pvs[k].pe_count, vg.pvs[k].key
            )),
            source_size: pv.len,
            output_size: out_len,
            build: None,
        });
        fills.push((
            pv.volume,
            VolumeFill {
                start: pv.start,
                src_len: pv.len,
                out_len,
                fill: Fill::Rebuilt(plan),
            },
        ));
    }
    Ok(VgPlan {
        fills,
        outcomes,
        resized,
    })
}

/// A hidden LV (no image volume) is copied as it is.
fn hidden_content(
    parent: &Arc<dyn Disk>,
    found: &VgFound,
    lvm: &Lvm,
    li: usize,
) -> Result<Content> {
    let lv = &found.vg.lvs[li];
    let disk: Arc<dyn Disk> = Arc::new(lvm::LvDisk::new(parent.clone(), found.runs(lvm, lv))?);
    let mut plan = Plan::new(disk.len());
    for e in disk.map(0, disk.len())? {
        if e.alloc == crate::disk::Alloc::Data {
            plan.copy(e.offset, disk.clone(), e.offset, e.len);
        }
    }
    Ok(Content {
        plan,
        outcome: VolumeOutcome {
            volume: usize::MAX,
            name: format!("LV {}/{}", found.vg.name, lv.name),
            action: "verbatim".into(),
            note: Some("hidden LV".into()),
            source_size: disk.len(),
            output_size: disk.len(),
            build: None,
        },
    })
}
