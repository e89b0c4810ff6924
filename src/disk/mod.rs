//! The disk layer: turns an image file (RAW or QCOW2) into a [`Disk`], a byte-addressed
//! device with an allocation map, and slices a disk into volumes ([`Slice`]).
//!
//! It knows nothing of partitions' meaning, filesystems or policy. Every `Disk` is
//! usable from many threads at once (`Send + Sync`, `&self` reads).

pub mod bytes;
pub mod lvm;
pub mod partition;
pub mod probe;
pub mod qcow2;
pub mod raw;
pub mod swap;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Location, Result};

/// What a range of a disk holds, as far as the image format knows without reading
/// the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alloc {
    /// Bytes stored in the image. They may still happen to be all zeros.
    Data,
    /// Known to read as zeros (a QCOW2 zero cluster, an explicit zero range).
    Zero,
    /// Not stored anywhere in the chain: reads as zeros.
    Unallocated,
}

impl Alloc {
    /// Whether the range reads as zeros without looking at any bytes.
    pub fn is_zero(self) -> bool {
        !matches!(self, Alloc::Data)
    }
}

/// One run of an allocation map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
    pub alloc: Alloc,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// Facts about an opened image, for `inspect` and reports.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DiskInfo {
    /// "raw" or "qcow2".
    pub format: String,
    /// The virtual size in bytes.
    pub virtual_size: u64,
    /// Bytes the image file (and its chain) occupies on the host filesystem.
    pub allocated_size: u64,
    /// Format-specific details, one "key: value" line each (qcow2 version, cluster
    /// size, compression type, backing chain, dirty bit, ...).
    pub details: Vec<(String, String)>,
    /// Things the reader noticed and the user should know (dirty bit set, ...).
    pub warnings: Vec<String>,
}

/// A readable, random-access disk.
///
/// Contract for implementations:
/// - `read_at` fills the whole buffer or fails; a range that passes `len()` is an
///   error, never a short read and never zeros.
/// - `map` returns extents in order that exactly cover the requested range (clipped
///   to `len()`); adjacent extents may share a kind.
/// - Both are safe to call from many threads at once.
pub trait Disk: Send + Sync {
    /// The virtual size in bytes.
    fn len(&self) -> u64;

    /// Whether the disk has no bytes at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fill `buf` with the bytes at `offset..offset + buf.len()`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// The allocation map of `offset..offset + len`.
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>>;

    /// The bytes of `offset..offset + len` without copying, when the image stores
    /// them contiguously and uncompressed (RAW always, QCOW2 within one cluster
    /// run). `None` means "use `read_at`", never "zeros".
    fn direct(&self, _offset: u64, _len: u64) -> Option<&[u8]> {
        None
    }

    /// Facts for reports.
    fn info(&self) -> DiskInfo;
}

impl fmt::Debug for dyn Disk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Disk({} bytes)", self.len())
    }
}

/// Check that `offset..offset+len` lies inside a disk of `disk_len` bytes.
pub fn check_range(structure: &'static str, disk_len: u64, offset: u64, len: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= disk_len => Ok(()),
        _ => Err(Error::corrupt(
            structure,
            Location::Byte(offset),
            format!("read of {len} bytes passes the end of the {disk_len}-byte device"),
        )),
    }
}

/// A window of another disk: a partition, or a filesystem inside one. Offsets in
/// its reads and maps are relative to its start.
pub struct Slice {
    parent: Arc<dyn Disk>,
    start: u64,
    len: u64,
}

impl Slice {
    /// A window `start..start + len` of `parent`. Fails if it passes the parent's end.
    pub fn new(parent: Arc<dyn Disk>, start: u64, len: u64) -> Result<Self> {
        check_range("volume", parent.len(), start, len)?;
        Ok(Slice { parent, start, len })
    }

    /// Where this window starts in its parent.
    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn parent(&self) -> &Arc<dyn Disk> {
        &self.parent
    }
}

impl Disk for Slice {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range("volume", self.len, offset, buf.len() as u64)?;
        self.parent.read_at(self.start + offset, buf)
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let end = offset.saturating_add(len).min(self.len);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut v = self.parent.map(self.start + offset, end - offset)?;
        for e in &mut v {
            e.offset -= self.start;
        }
        Ok(v)
    }

    fn direct(&self, offset: u64, len: u64) -> Option<&[u8]> {
        if offset.checked_add(len)? > self.len {
            return None;
        }
        self.parent.direct(self.start + offset, len)
    }

    fn info(&self) -> DiskInfo {
        let mut i = self.parent.info();
        i.virtual_size = self.len;
        i
    }
}

/// A disk held in memory. Used for tests and for small synthetic devices (a
/// re-created swap header); everything in it is `Data`.
pub struct MemDisk {
    bytes: Vec<u8>,
}

impl MemDisk {
    pub fn new(bytes: Vec<u8>) -> Self {
        MemDisk { bytes }
    }
}

impl Disk for MemDisk {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range("memory disk", self.len(), offset, buf.len() as u64)?;
        let o = offset as usize;
        buf.copy_from_slice(&self.bytes[o..o + buf.len()]);
        Ok(())
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let end = offset.saturating_add(len).min(self.len());
        if offset >= end {
            return Ok(Vec::new());
        }
        Ok(vec![Extent {
            offset,
            len: end - offset,
            alloc: Alloc::Data,
        }])
    }

    fn direct(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        self.bytes.get(offset as usize..usize::try_from(end).ok()?)
    }

    fn info(&self) -> DiskInfo {
        DiskInfo {
            format: "memory".into(),
            virtual_size: self.len(),
            allocated_size: self.len(),
            ..Default::default()
        }
    }
}

/// Open an image file, detecting its format (QCOW2 by magic, otherwise RAW).
/// Never writes to it.
pub fn open(path: &Path) -> Result<Arc<dyn Disk>> {
    open_with(path, &OpenOptions::default())
}

/// How to open an image.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Force the format instead of probing: "raw" or "qcow2".
    pub format: Option<String>,
}

pub fn open_with(path: &Path, opts: &OpenOptions) -> Result<Arc<dyn Disk>> {
    let format = match opts.format.as_deref() {
        Some(f) => f.to_string(),
        None => {
            if qcow2::probe_file(path)? {
                "qcow2".into()
            } else {
                "raw".into()
            }
        }
    };
    match format.as_str() {
        "qcow2" => Ok(Arc::new(qcow2::Qcow2::open(path)?)),
        "raw" => Ok(Arc::new(raw::Raw::open(path)?)),
        other => Err(Error::unsupported(format!("image format {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_reads_are_relative_and_bounded() {
        let d: Arc<dyn Disk> = Arc::new(MemDisk::new((0..=255u8).collect()));
        let s = Slice::new(d.clone(), 16, 32).unwrap();
        let mut b = [0u8; 4];
        s.read_at(4, &mut b).unwrap();
        assert_eq!(b, [20, 21, 22, 23]);
        assert!(s.read_at(30, &mut b).is_err());
        assert!(Slice::new(d, 250, 10).is_err());
        assert_eq!(s.map(0, 100).unwrap()[0].len, 32);
    }
}
