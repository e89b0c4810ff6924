//! Repacking a whole disk: every volume with a filesystem imgsan reads (through
//! [`crate::fs`]) is read into a tree and rebuilt
//! fresh with its source's geometry; swap is re-created empty with the same UUID
//! and label; everything else (the partition table, the post-MBR gap, BIOS boot
//! and EFI system partitions, unknown partitions) is copied verbatim. With a size
//! change, the physically last volume grows or shrinks and the partition table is
//! rewritten to match.
//!
//! `repack` with no edits is the identity transform (compact, zero free space);
//! `sanitize` edits the trees between [`read_volumes`] and [`plan`].

use crate::disk::probe::FsType;
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

/// What happened to one volume.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VolumeOutcome {
    /// Index into the image's volumes.
    pub volume: usize,
    /// "partition 3" or "the whole disk".
    pub name: String,
    /// "rebuilt", "verbatim" or "swap re-created".
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

/// Plan the output disk from the image and its (possibly edited) volumes.
pub fn plan(image: &Image, volumes: &[Option<Rebuild>], size: DiskSize) -> Result<Repacked> {
    let src_len = image.disk.len();
    // The physically last volume is the one that may change size.
    let last =
        (0..image.volumes.len()).max_by_key(|&i| image.volumes[i].start + image.volumes[i].len);
    let tail = last.map_or(0, |i| {
        src_len - (image.volumes[i].start + image.volumes[i].len)
    });
    let sector = u64::from(image.table.sector_size.max(512));

    let mut fills = Vec::new();
    let mut outcomes = Vec::new();
    let mut new_lengths = Vec::new();
    let mut out_len = src_len;
    for (i, v) in image.volumes.iter().enumerate() {
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
                outcome.action = "rebuilt".into();
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
            (None, fs) => {
                if resizable {
                    return Err(Error::unsupported(format!(
                        "resizing the disk: its last volume ({}) is {}, which imgsan copies verbatim and cannot resize",
                        v.name(),
                        v.probed.blkid_type()
                    )));
                }
                outcome.note = Some(match fs {
                    FsType::Xfs => "XFS is copied verbatim (no XFS builder yet)".to_string(),
                    FsType::Ext2 | FsType::Ext3 | FsType::Ext4 => "not read".to_string(),
                    _ => format!("{} copied as it is", v.probed.blkid_type()),
                });
                VolumeFill {
                    start: v.start,
                    src_len: v.len,
                    out_len: v.len,
                    fill: Fill::Verbatim,
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
    let table_rewritten = !table_writes.is_empty();
    let plan = assemble::assemble(Layout {
        source: image.disk.clone(),
        out_len,
        volumes: fills,
        table_writes,
        blank,
    })?;
    Ok(Repacked {
        plan,
        volumes: outcomes,
        table_rewritten,
    })
}
