//! An opened image: the disk, its partition table, and what each volume holds.
//! This is the first step of every command that looks inside an image (inspect,
//! check, repack, sanitize); it reads only headers and tables.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk::partition::{self, Partition, Table};
use crate::disk::probe::{self, FsType, Probed};
use crate::disk::{self, Disk, DiskInfo, OpenOptions, Slice};
use crate::error::{Error, Result};
use crate::guest::VolumeId;

/// One volume of the image: a partition, or the whole disk of a table-less image.
#[derive(Clone)]
pub struct ImageVolume {
    /// The partition, `None` for a bare filesystem image.
    pub partition: Option<Partition>,
    /// Byte range in the disk.
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
        }
    }

    /// A short name for messages: "partition 1" or "the whole disk".
    pub fn name(&self) -> String {
        match &self.partition {
            Some(p) => format!("partition {}", p.index),
            None => "the whole disk".to_string(),
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
    pub volumes: Vec<ImageVolume>,
}

/// The smallest image that can hold anything: one 512-byte sector (an MBR).
const MIN_DISK: u64 = 512;

impl Image {
    /// Open an image file, read its partition table and probe every volume.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Self> {
        let disk = disk::open_with(path, opts)?;
        Self::from_disk(path, disk)
    }

    /// The same over an already opened disk.
    pub fn from_disk(path: &Path, disk: Arc<dyn Disk>) -> Result<Self> {
        // A text file or a truncated download is no disk: say so instead of
        // describing it as a raw disk without partitions.
        if disk.len() < MIN_DISK {
            return Err(Error::unsupported(format!(
                "{}: a {}-byte image is too small to hold a partition table or a filesystem (an MBR alone takes {MIN_DISK} bytes)",
                path.display(),
                disk.len()
            )));
        }
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
                start: v.start,
                len: v.len,
                disk: slice,
                probed,
            });
        }
        Ok(Image {
            path: path.to_path_buf(),
            disk,
            info,
            table,
            volumes,
        })
    }
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
                    start: v.start,
                    size: v.len,
                    filesystem: v.probed.clone(),
                })
                .collect(),
        }
    }
}
