//! Repacking a whole disk: every volume with a filesystem imgsan reads (through
//! [`crate::fs`]) is read into a tree and rebuilt fresh with its source's
//! geometry; swap is re-created empty with the same UUID and label. Outside the
//! rebuilt volumes only what can be accounted for is copied: the boot regions
//! ([`crate::disk::partition::boot`]: sector 0, the tables, GRUB's embedded core
//! image) and the boot-only partitions (BIOS boot, an EFI system or XBOOTLDR
//! partition holding FAT). A partition with no data is a hole. Any other
//! partition is refused ([`Others::Refuse`], sanitize's rule) unless the operator
//! keeps it, or copied with a note ([`Others::CopyNoted`], repack's). Every other
//! byte is a hole. With a size change, the physically last volume grows or
//! shrinks and the partition table is rewritten to match.
//!
//! `repack` with no edits is the identity transform (compact, zero free space);
//! `sanitize` edits the trees between [`read_volumes`] and [`plan`].

pub mod lvm;

use std::collections::BTreeSet;

use crate::disk::partition::{boot, TypeClass};
use crate::disk::probe::FsType;
use crate::disk::{Alloc, Disk};
use crate::error::{Error, Result};
use crate::fs::{self, BuildStats, Geometry, OpenOptions, TargetSize};
use crate::image::Image;
use crate::output::assemble::{self, Fill, Layout, VolumeFill};
use crate::output::plan::Plan;
use crate::tree::Tree;

/// The output disk's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskSize {
    /// The same as the source.
    #[default]
    Same,
    /// The smallest that holds the last volume's files plus `margin` bytes (default:
    /// the larger of 10 % and 256 MiB), never larger than the source.
    Shrink { margin: Option<u64> },
    /// Exactly this many bytes (the last volume absorbs the difference).
    Bytes(u64),
}

/// What to do with a partition imgsan can neither rebuild nor classify as
/// boot-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Others {
    /// Refuse the image, naming the partition (sanitize: its bytes would pass
    /// through uncleaned).
    #[default]
    Refuse,
    /// Copy it verbatim and say so in the outcome (repack, which has no rules).
    CopyNoted,
}

/// How to plan the output disk.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    pub size: DiskSize,
    /// Partitions (by number) to copy verbatim although imgsan cannot tell what
    /// they hold (`--keep-partition N`).
    pub keep_partitions: BTreeSet<u32>,
    pub others: Others,
    /// Volumes (by index) whose trees were emptied because the guest never mounts
    /// them: reported as such.
    pub emptied: BTreeSet<usize>,
    /// The LVM choices of the run.
    pub lvm: lvm::LvmOptions,
}

/// What happened to one volume.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VolumeOutcome {
    /// Index into the image's volumes.
    pub volume: usize,
    /// "partition 3" or "the whole disk".
    pub name: String,
    /// "rebuilt", "emptied" (re-created empty: not mounted by the guest),
    /// "verbatim", "swap re-created", "LVM PV rewritten" or "hole" (no data,
    /// nothing written).
    pub action: String,
    /// Why a volume was copied verbatim (or other notes).
    pub note: Option<String>,
    pub source_size: u64,
    pub output_size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildStats>,
}

/// The repack plan with what it will do.
pub struct Repacked {
    pub plan: Plan,
    pub volumes: Vec<VolumeOutcome>,
    /// The partition table was rewritten for a new disk size.
    pub table_rewritten: bool,
}

/// A volume to rebuild: its (possibly edited) tree and its source's geometry.
pub struct Rebuild {
    pub tree: Tree,
    pub geometry: Geometry,
}

/// Read every volume that holds a filesystem imgsan reads into a tree (journal or
/// log replayed). Other volumes get `None`.
pub fn read_volumes(image: &Image, opts: &OpenOptions) -> Result<Vec<Option<Rebuild>>> {
    image
        .volumes
        .iter()
        .map(|v| {
            fs::open(v.disk.clone(), v.probed.fs, opts)
                .map(|r| {
                    r.map(|(tree, info)| Rebuild {
                        tree,
                        geometry: info.geometry,
                    })
                })
                .map_err(|e| Error::within(v.name(), e))
        })
        .collect()
}

/// Whether a volume holds no data: every byte its allocation map calls data is
/// zero. Reads until the first non-zero byte.
fn holds_no_data(disk: &dyn Disk) -> Result<bool> {
    let mut buf = vec![0u8; 1 << 20];
    for ext in disk.map(0, disk.len())? {
        if ext.alloc != Alloc::Data {
            continue;
        }
        let mut at = ext.offset;
        while at < ext.end() {
            let n = (ext.end() - at).min(buf.len() as u64) as usize;
            disk.read_at(at, &mut buf[..n])?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += n as u64;
        }
    }
    Ok(true)
}

/// Why a volume imgsan does not rebuild is copied as it is, or `None` when
/// nothing accounts for its bytes.
fn boot_only(v: &crate::image::ImageVolume) -> Option<&'static str> {
    let class = v.partition.as_ref()?.part_type.class;
    match (class, v.probed.fs) {
        (TypeClass::BiosBoot, _) => Some("BIOS boot partition (GRUB's core image)"),
        (TypeClass::Efi, FsType::Vfat) => Some("EFI system partition"),
        (TypeClass::Xbootldr, FsType::Vfat) => Some("extended boot partition (FAT)"),
        _ => None,
    }
}

/// What becomes of a volume imgsan neither rebuilds nor re-creates: the fill,
/// the outcome's action, and why.
fn other_fill(
    v: &crate::image::ImageVolume,
    opts: &PlanOptions,
) -> Result<(Fill, &'static str, String)> {
    if let Some(why) = boot_only(v) {
        return Ok((Fill::Verbatim, "verbatim", why.to_string()));
    }
    if let Some(p) = v
        .partition
        .as_ref()
        .filter(|p| opts.keep_partitions.contains(&p.index))
    {
        return Ok((
            Fill::Verbatim,
            "verbatim",
            format!("kept verbatim as asked (--keep-partition {})", p.index),
        ));
    }
    if holds_no_data(v.disk.as_ref())? {
        return Ok((Fill::Hole, "hole", "holds no data: left a hole".to_string()));
    }
    match opts.others {
        Others::Refuse => Err(Error::unsupported(format!(
            "{}: imgsan can neither rebuild it nor tell that it holds only boot code, and copying it \
             would keep whatever it holds (--keep-partition N copies it verbatim)",
            describe(v)
        ))),
        Others::CopyNoted => Ok((
            Fill::Verbatim,
            "verbatim",
            format!(
                "copied verbatim: imgsan does not rebuild {}",
                v.probed.blkid_type()
            ),
        )),
    }
}

/// Refuses (as [`plan`] would with [`Others::Refuse`]) an image with a volume
/// that is neither rebuilt (`rebuilt(i)`), swap, boot-only, empty, nor kept by
/// the operator; run before any work so that the refusal comes first.
pub fn refuse_unaccounted(
    image: &Image,
    rebuilt: impl Fn(usize) -> bool,
    keep_partitions: &BTreeSet<u32>,
) -> Result<()> {
    let opts = PlanOptions {
        keep_partitions: keep_partitions.clone(),
        ..PlanOptions::default()
    };
    for (i, v) in image.volumes.iter().enumerate() {
        // LVs and the PVs of a VG are rebuilt through their VG.
        let in_vg = image
            .lvm
            .pvs
            .iter()
            .any(|p| p.volume == i && p.vg.is_some());
        if rebuilt(i) || v.probed.fs == FsType::Swap || v.lv.is_some() || in_vg {
            continue;
        }
        other_fill(v, &opts)?;
    }
    Ok(())
}

/// Plan the output disk from the image and its (possibly edited) volumes.
pub fn plan(image: &Image, volumes: &[Option<Rebuild>], opts: &PlanOptions) -> Result<Repacked> {
    let size = opts.size;
    let lvm_opts = &opts.lvm;
    let src_len = image.disk.len();
    // The physically last volume is the one that may change size. LVs live
    // inside their PVs' partitions and do not count.
    let last = (0..image.volumes.len())
        .filter(|&i| image.volumes[i].lv.is_none())
        .max_by_key(|&i| image.volumes[i].start + image.volumes[i].len);
    let tail = last.map_or(0, |i| {
        src_len - (image.volumes[i].start + image.volumes[i].len)
    });
    let sector = u64::from(image.table.sector_size.max(512));

    let mut fills = Vec::new();
    let mut outcomes = Vec::new();
    let mut new_lengths = Vec::new();
    let mut out_len = src_len;
    // The PVs of a VG are planned together with its LVs.
    let in_vg = |i: usize| {
        image
            .lvm
            .pvs
            .iter()
            .any(|p| p.volume == i && p.vg.is_some())
    };
    for (vi, _) in image.lvm.vgs.iter().enumerate() {
        let on_last = |l: usize| {
            image
                .lvm
                .pvs
                .iter()
                .any(|p| p.volume == l && p.vg.map(|x| x.0) == Some(vi))
        };
        let resize = match last {
            Some(l) if size != DiskSize::Same && on_last(l) => {
                let v = &image.volumes[l];
                let room = match size {
                    DiskSize::Bytes(n) => {
                        n.checked_sub(v.start + tail)
                            .filter(|&r| r >= sector)
                            .ok_or_else(|| {
                                Error::unsupported(format!(
                                    "a {n}-byte disk: {} starts at byte {} and the table needs {tail} bytes after it",
                                    v.name(),
                                    v.start
                                ))
                            })?
                            / sector
                            * sector
                    }
                    _ => v.len,
                };
                Some((size, room))
            }
            _ => None,
        };
        let vp = lvm::plan_vg(image, volumes, vi, resize, lvm_opts)?;
        if let Some((index, len)) = vp.resized {
            let part_len = len.div_ceil(sector) * sector;
            if let Some(l) = last {
                out_len = image.volumes[l].start + part_len + tail;
            }
            new_lengths.push((index, part_len));
        }
        fills.extend(vp.fills.into_iter().map(|(_, f)| f));
        outcomes.extend(vp.outcomes);
    }
    for (i, v) in image.volumes.iter().enumerate() {
        if v.lv.is_some() || in_vg(i) {
            continue;
        }
        let resizable = Some(i) == last && size != DiskSize::Same;
        let mut outcome = VolumeOutcome {
            volume: i,
            name: v.name(),
            action: "verbatim".into(),
            note: None,
            source_size: v.len,
            output_size: v.len,
            build: None,
        };
        let fill = match (&volumes.get(i).and_then(|x| x.as_ref()), v.probed.fs) {
            (Some(ext), _) => {
                let target = match size {
                    _ if !resizable => TargetSize::Bytes(v.len),
                    DiskSize::Same => TargetSize::Bytes(v.len),
                    DiskSize::Shrink { margin } => TargetSize::Shrink { margin },
                    DiskSize::Bytes(n) => {
                        let room = n.checked_sub(v.start + tail).filter(|&r| r >= sector).ok_or_else(|| {
                            Error::unsupported(format!(
                                "a {n}-byte disk: {} starts at byte {} and the table needs {tail} bytes after it",
                                v.name(),
                                v.start
                            ))
                        })?;
                        TargetSize::Bytes(room / sector * sector)
                    }
                };
                let mut built = fs::build(&ext.tree, &ext.geometry, target)?;
                if matches!(size, DiskSize::Shrink { .. }) && resizable && built.plan.len > v.len {
                    // Nothing to gain: the files and the margin need the whole volume.
                    built = fs::build(&ext.tree, &ext.geometry, TargetSize::Bytes(v.len))?;
                    outcome.note =
                        Some("shrinking would not make it smaller; kept its size".into());
                }
                let fs_len = built.plan.len;
                let part_len = if resizable {
                    fs_len.div_ceil(sector) * sector
                } else {
                    v.len
                };
                if resizable {
                    out_len = v.start + part_len + tail;
                    if let Some(p) = &v.partition {
                        new_lengths.push((p.index, part_len));
                    }
                }
                outcome.action = if opts.emptied.contains(&i) {
                    outcome.note = Some(
                        "the guest never mounts it: re-created empty with its UUID and label"
                            .into(),
                    );
                    "emptied".into()
                } else {
                    "rebuilt".into()
                };
                if !built.stats.normalised.is_empty() {
                    // Values e2fsck would reject, changed by the builder: say which.
                    let n = format!("normalised: {}", built.stats.normalised.join("; "));
                    outcome.note = Some(match outcome.note.take() {
                        Some(old) => format!("{old}; {n}"),
                        None => n,
                    });
                }
                outcome.output_size = part_len;
                outcome.build = Some(built.stats.clone());
                VolumeFill {
                    start: v.start,
                    src_len: v.len,
                    out_len: part_len,
                    fill: Fill::Rebuilt({
                        let mut p = built.plan;
                        p.tag_volume(i as u32);
                        p
                    }),
                }
            }
            (None, FsType::Swap) => {
                let header = v.probed.swap.as_ref().ok_or_else(|| {
                    Error::corrupt(
                        "swap",
                        crate::Location::Byte(v.start),
                        "probed as swap without a header",
                    )
                })?;
                let page = header.recreate(v.len)?.to_page()?;
                outcome.action = "swap re-created".into();
                match size {
                    _ if !resizable => {}
                    DiskSize::Bytes(_) => {
                        return Err(Error::unsupported(format!(
                            "resizing the disk: its last volume ({}) is swap, and imgsan does not move partitions",
                            v.name()
                        )))
                    }
                    _ => {
                        outcome.note = Some(
                            "the disk was not shrunk: its last partition is swap, re-created at its size"
                                .into(),
                        )
                    }
                }
                VolumeFill {
                    start: v.start,
                    src_len: v.len,
                    out_len: v.len,
                    fill: Fill::Fresh(page),
                }
            }
            (None, _) => {
                let (fill, action, note) = other_fill(v, opts)?;
                outcome.action = action.into();
                if resizable && !matches!(fill, Fill::Hole) {
                    return Err(Error::unsupported(format!(
                        "resizing the disk: its last volume ({}) is {}, which imgsan copies verbatim and cannot resize",
                        v.name(),
                        v.probed.blkid_type()
                    )));
                }
                outcome.note = Some(note);
                VolumeFill {
                    start: v.start,
                    src_len: v.len,
                    out_len: v.len,
                    fill,
                }
            }
        };
        fills.push(fill);
        outcomes.push(outcome);
    }

    let (table_writes, blank) = if out_len != src_len {
        let writes = image
            .table
            .rewrite(out_len, &new_lengths)
            .map_err(Error::from)?;
        let blank = image
            .table
            .regions()
            .iter()
            .map(|r| (r.offset, r.offset + r.len))
            .collect();
        (writes, blank)
    } else {
        (Vec::new(), Vec::new())
    };
    outcomes.sort_by_key(|o| o.volume);
    let table_rewritten = !table_writes.is_empty();
    if !fills.iter().any(|f| matches!(f.fill, Fill::Rebuilt(_))) {
        return Err(Error::unsupported(
            "nothing to rebuild: the image holds no filesystem imgsan can rebuild",
        ));
    }
    let boot = boot::accounted_regions(image.disk.as_ref(), &image.table)?;
    let plan = assemble::assemble(Layout {
        source: image.disk.clone(),
        out_len,
        volumes: fills,
        boot,
        table_writes,
        blank,
    })?;
    Ok(Repacked {
        plan,
        volumes: outcomes,
        table_rewritten,
    })
}

/// "partition 3 (type Linux filesystem, 0x83; unknown, 64.0 MiB)" for messages.
fn describe(v: &crate::image::ImageVolume) -> String {
    let size = crate::units::human(v.len);
    match &v.partition {
        Some(p) => format!(
            "{} (type {}, {}; holds {}, {size})",
            v.name(),
            p.part_type.name,
            p.part_type.raw,
            v.probed.blkid_type()
        ),
        None => format!("{} (holds {}, {size})", v.name(), v.probed.blkid_type()),
    }
}
