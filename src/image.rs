//! An opened image: the disk, its partition table, and what each volume holds.
//! This is the first step of every command that looks inside an image (inspect,
//! check, repack, sanitize); it reads only headers and tables.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk::lvm::{self, Lvm, LvmSummary};
use crate::disk::partition::{self, Partition, Table};
use crate::disk::probe::{self, FsType, Probed};
use crate::disk::{self, Disk, DiskInfo, OpenOptions, Slice};
use crate::error::Result;
use crate::guest::VolumeId;

/// Which logical volume an image volume is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvRef {
    /// Index into [`Lvm::vgs`], and into that VG's LVs.
    pub vg: usize,
    pub lv: usize,
    pub vg_name: String,
    pub lv_name: String,
}

/// One volume of the image: a partition, the whole disk of a table-less image, or
/// an LVM logical volume.
#[derive(Clone)]
pub struct ImageVolume {
    /// The partition, `None` for a bare filesystem image and for an LV.
    pub partition: Option<Partition>,
    /// The logical volume, `None` for a partition or a whole disk.
    pub lv: Option<LvRef>,
    /// Byte range in the disk (an LV: where its first extent is, and its size;
    /// its bytes are wherever its segments say).
    pub start: u64,
    pub len: u64,
    /// The volume as a disk of its own.
    pub disk: Arc<dyn Disk>,
    pub probed: Probed,
}

impl ImageVolume {
    /// The identity the guest layer matches fstab entries against.
    pub fn id(&self) -> VolumeId {
        VolumeId {
            partition: self.partition.as_ref().map(|p| p.index),
            partuuid: self.partition.as_ref().and_then(|p| p.uuid.clone()),
            partlabel: self.partition.as_ref().and_then(|p| p.name.clone()),
            fs_type: Some(self.probed.blkid_type().to_string()),
            uuid: self.probed.uuid.clone(),
            label: self.probed.label.clone(),
            vg: self.lv.as_ref().map(|l| l.vg_name.clone()),
            lv: self.lv.as_ref().map(|l| l.lv_name.clone()),
        }
    }

    /// A short name for messages: "partition 1", "LV rocky/root" or "the whole
    /// disk".
    pub fn name(&self) -> String {
        match (&self.partition, &self.lv) {
            (Some(p), _) => format!("partition {}", p.index),
            (None, Some(l)) => format!("LV {}/{}", l.vg_name, l.lv_name),
            (None, None) => "the whole disk".to_string(),
        }
    }

    pub fn is_ext(&self) -> bool {
        matches!(self.probed.fs, FsType::Ext2 | FsType::Ext3 | FsType::Ext4)
    }
}

/// An opened image.
pub struct Image {
    pub path: PathBuf,
    pub disk: Arc<dyn Disk>,
    pub info: DiskInfo,
    pub table: Table,
    /// Partitions (or the whole disk) first, in table order, then the LVs of
    /// every VG found on them.
    pub volumes: Vec<ImageVolume>,
    /// The LVM PVs and VGs among the volumes.
    pub lvm: Lvm,
}

impl Image {
    /// Open an image file, read its partition table and probe every volume.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Self> {
        let disk = disk::open_with(path, opts)?;
        Self::from_disk(path, disk)
    }

    /// The same over an already opened disk.
    pub fn from_disk(path: &Path, disk: Arc<dyn Disk>) -> Result<Self> {
        let info = disk.info();
        let table = partition::read(disk.as_ref())?;
        let mut volumes = Vec::new();
        for v in table.volumes() {
            let slice: Arc<dyn Disk> = Arc::new(Slice::new(disk.clone(), v.start, v.len)?);
            // A volume whose header is damaged (an ext4 superblock failing its
            // checksum) fails the whole image: say which volume.
            let probed = probe::probe(slice.as_ref()).map_err(|e| {
                let name = match v.partition {
                    Some(p) => format!("partition {}", p.index),
                    None => "the whole disk".to_string(),
                };
                crate::Error::within(name, e)
            })?;
            volumes.push(ImageVolume {
                partition: v.partition.cloned(),
                lv: None,
                start: v.start,
                len: v.len,
                disk: slice,
                probed,
            });
        }
        let lvm = scan_lvm(&disk, &mut volumes)?;
        Ok(Image {
            path: path.to_path_buf(),
            disk,
            info,
            table,
            volumes,
            lvm,
        })
    }
}

/// Reads the VGs on the volumes probed as LVM PVs and appends their LVs to
/// `volumes`, each probed like a partition.
fn scan_lvm(disk: &Arc<dyn Disk>, volumes: &mut Vec<ImageVolume>) -> Result<Lvm> {
    let candidates: Vec<lvm::Candidate> = volumes
        .iter()
        .enumerate()
        .filter(|(_, v)| v.probed.fs == FsType::LvmPv)
        .map(|(i, v)| lvm::Candidate {
            volume: i,
            name: v.name(),
            start: v.start,
            len: v.len,
        })
        .collect();
    if candidates.is_empty() {
        return Ok(Lvm::default());
    }
    let found = lvm::scan(disk, &candidates)?;
    for (vi, vg) in found.vgs.iter().enumerate() {
        for (li, lv) in vg.vg.lvs.iter().enumerate() {
            if !lv.visible {
                continue;
            }
            let runs = vg.runs(&found, lv);
            let start = runs.first().map_or(0, |r| r.disk_offset);
            let lv_disk = lvm::LvDisk::new(disk.clone(), runs)?;
            let len = lv_disk.len();
            let lv_disk: Arc<dyn Disk> = Arc::new(lv_disk);
            let name = format!("LV {}/{}", vg.vg.name, lv.name);
            let probed =
                probe::probe(lv_disk.as_ref()).map_err(|e| crate::Error::within(name, e))?;
            volumes.push(ImageVolume {
                partition: None,
                lv: Some(LvRef {
                    vg: vi,
                    lv: li,
                    vg_name: vg.vg.name.clone(),
                    lv_name: lv.name.clone(),
                }),
                start,
                len,
                disk: lv_disk,
                probed,
            });
        }
    }
    Ok(found)
}

/// What `inspect` reports about the disk layer, serializable for `--json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DiskSummary {
    pub image: String,
    pub format: String,
    pub virtual_size: u64,
    pub allocated_size: u64,
    pub details: Vec<(String, String)>,
    pub warnings: Vec<String>,
    pub partition_table: TableSummary,
    pub volumes: Vec<VolumeSummary>,
    /// PVs, VGs and LVs with their segments; absent when the image has no PV.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lvm: Option<LvmSummary>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TableSummary {
    pub scheme: partition::Scheme,
    pub sector_size: u32,
    pub id: Option<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VolumeSummary {
    pub partition: Option<Partition>,
    /// "VG/LV" for a logical volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lv: Option<String>,
    pub start: u64,
    pub size: u64,
    pub filesystem: Probed,
}

impl Image {
    pub fn summary(&self) -> DiskSummary {
        DiskSummary {
            image: self.path.display().to_string(),
            format: self.info.format.clone(),
            virtual_size: self.info.virtual_size,
            allocated_size: self.info.allocated_size,
            details: self.info.details.clone(),
            warnings: self.info.warnings.clone(),
            partition_table: TableSummary {
                scheme: self.table.scheme,
                sector_size: self.table.sector_size,
                id: self.table.id.clone(),
                warnings: self.table.warnings.clone(),
            },
            volumes: self
                .volumes
                .iter()
                .map(|v| VolumeSummary {
                    partition: v.partition.clone(),
                    lv: v
                        .lv
                        .as_ref()
                        .map(|l| format!("{}/{}", l.vg_name, l.lv_name)),
                    start: v.start,
                    size: v.len,
                    filesystem: v.probed.clone(),
                })
                .collect(),
            lvm: (!self.lvm.pvs.is_empty()).then(|| self.lvm.summary()),
        }
    }
}
