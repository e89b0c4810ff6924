//! QCOW2 images (placeholder until the reader lands).

use std::path::Path;

use super::{Disk, DiskInfo, Extent};
use crate::error::{Error, Result};

/// Whether the file starts with the QCOW magic.
pub fn probe_file(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    let mut magic = [0u8; 4];
    match f.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == b"QFI\xfb"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(Error::io(path.display().to_string(), e)),
    }
}

pub struct Qcow2 {}

impl Qcow2 {
    pub fn open(_path: &Path) -> Result<Self> {
        Err(Error::unsupported("qcow2 (reader not built yet)"))
    }
}

impl Disk for Qcow2 {
    fn len(&self) -> u64 {
        0
    }
    fn read_at(&self, _offset: u64, _buf: &mut [u8]) -> Result<()> {
        Err(Error::unsupported("qcow2"))
    }
    fn map(&self, _offset: u64, _len: u64) -> Result<Vec<Extent>> {
        Err(Error::unsupported("qcow2"))
    }
    fn info(&self) -> DiskInfo {
        DiskInfo::default()
    }
}
