//! RAW images: the file is the disk. Read through a read-only memory map; the
//! allocation map comes from the host filesystem's SEEK_DATA / SEEK_HOLE.

#![allow(unsafe_code)]

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rustix::fs::SeekFrom;

use super::{check_range, Alloc, Disk, DiskInfo, Extent};
use crate::error::{Error, Result};

/// Reads at least this long use `pread` instead of the memory map.
const PREAD_MIN: usize = 64 << 10;

pub struct Raw {
    path: PathBuf,
    file: File,
    /// `None` for an empty file (a zero-length map is not allowed).
    map: Option<Mmap>,
    len: u64,
}

impl Raw {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path.display().to_string(), e))?;
        Self::from_file(path, file)
    }

    /// Wrap an already opened file (read-only use only).
    pub fn from_file(path: &Path, file: File) -> Result<Self> {
        let meta = file
            .metadata()
            .map_err(|e| Error::io(path.display().to_string(), e))?;
        let len = if meta.file_type().is_block_device() {
            // A block device's length comes from seeking to its end.
            rustix::fs::seek(&file, SeekFrom::End(0))
                .map_err(|e| Error::io(path.display().to_string(), e.into()))?
        } else {
            meta.len()
        };
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the map is read-only. imgsan never writes to its input, and
            // the CLI tells users not to modify an image while it is being read; a
            // concurrent truncation by another process would raise SIGBUS, which is
            // the same hazard every mmap-based reader (and `cp --reflink`) accepts.
            let m = unsafe { Mmap::map(&file) }
                .map_err(|e| Error::io(format!("{}: mmap", path.display()), e))?;
            #[cfg(unix)]
            {
                let _ = m.advise(memmap2::Advice::Sequential);
            }
            Some(m)
        };
        Ok(Raw {
            path: path.to_path_buf(),
            file,
            map,
            len,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying file, for `copy_file_range` fast paths.
    pub fn file(&self) -> &File {
        &self.file
    }

    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Next data offset at or after `off`, or `None` when only a hole remains.
    fn seek_data(&self, off: u64) -> Result<Option<u64>> {
        match rustix::fs::seek(&self.file, SeekFrom::Data(off)) {
            Ok(p) => Ok(Some(p)),
            Err(rustix::io::Errno::NXIO) => Ok(None),
            // Filesystems without SEEK_DATA support: everything is data.
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::OPNOTSUPP) => Ok(Some(off)),
            Err(e) => Err(Error::io(
                format!("{}: SEEK_DATA at {off:#x}", self.path.display()),
                e.into(),
            )),
        }
    }

    fn seek_hole(&self, off: u64) -> Result<u64> {
        match rustix::fs::seek(&self.file, SeekFrom::Hole(off)) {
            Ok(p) => Ok(p),
            Err(rustix::io::Errno::NXIO)
            | Err(rustix::io::Errno::INVAL)
            | Err(rustix::io::Errno::OPNOTSUPP) => Ok(self.len),
            Err(e) => Err(Error::io(
                format!("{}: SEEK_HOLE at {off:#x}", self.path.display()),
                e.into(),
            )),
        }
    }
}

impl Disk for Raw {
    fn files(&self) -> Vec<(PathBuf, &'static str)> {
        vec![(self.path.clone(), "image")]
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range("raw image", self.len, offset, buf.len() as u64)?;
        if buf.len() >= PREAD_MIN {
            // Bulk reads go through pread: copying from the map would leave every
            // page read mapped into the process, and a whole-disk copy would then
            // show the whole image as resident memory.
            use std::os::unix::fs::FileExt;
            return self.file.read_exact_at(buf, offset).map_err(|e| {
                Error::io(format!("{}: read at {offset:#x}", self.path.display()), e)
            });
        }
        let o = offset as usize;
        buf.copy_from_slice(&self.bytes()[o..o + buf.len()]);
        Ok(())
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let end = offset.saturating_add(len).min(self.len);
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < end {
            let data = self.seek_data(pos)?.unwrap_or(end).min(end);
            if data > pos {
                out.push(Extent {
                    offset: pos,
                    len: data - pos,
                    alloc: Alloc::Unallocated,
                });
            }
            if data >= end {
                break;
            }
            // SEEK_HOLE always makes progress past a data offset (there is an
            // implicit hole at EOF); guard anyway so a lying filesystem cannot
            // make this loop forever.
            let hole = self.seek_hole(data)?.clamp(data + 1, end);
            out.push(Extent {
                offset: data,
                len: hole - data,
                alloc: Alloc::Data,
            });
            pos = hole;
        }
        Ok(out)
    }

    fn direct(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        Some(&self.bytes()[offset as usize..end as usize])
    }

    fn info(&self) -> DiskInfo {
        let allocated = self.file.metadata().map(|m| m.blocks() * 512).unwrap_or(0);
        DiskInfo {
            format: "raw".into(),
            virtual_size: self.len,
            allocated_size: allocated,
            details: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};

    #[test]
    fn map_finds_holes_and_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        let mut f = File::create(&p).unwrap();
        f.set_len(8 << 20).unwrap();
        f.seek(std::io::SeekFrom::Start(4 << 20)).unwrap();
        f.write_all(&[7u8; 65536]).unwrap();
        drop(f);
        let r = Raw::open(&p).unwrap();
        let m = r.map(0, r.len()).unwrap();
        let data: Vec<_> = m.iter().filter(|e| e.alloc == Alloc::Data).collect();
        assert_eq!(data.len(), 1);
        assert!(data[0].offset <= 4 << 20 && data[0].end() >= (4 << 20) + 65536);
        assert_eq!(m.first().unwrap().offset, 0);
        assert_eq!(m.last().unwrap().end(), 8 << 20);
        let mut b = [0u8; 2];
        r.read_at((4 << 20) - 1, &mut b).unwrap();
        assert_eq!(b, [0, 7]);
        assert!(r.read_at((8 << 20) - 1, &mut b).is_err());
    }

    #[test]
    fn empty_file_is_an_empty_disk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty");
        File::create(&p).unwrap();
        let r = Raw::open(&p).unwrap();
        assert_eq!(r.len(), 0);
        assert!(r.map(0, 10).unwrap().is_empty());
    }
}
