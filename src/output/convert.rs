//! `imgsan convert`: copy a whole disk to a sparse RAW file or a stream.
//! (Placeholder until the writer lands.)

use std::path::PathBuf;

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::progress::Progress;

/// Where a converted image goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// A file, written under a temporary name and renamed when complete.
    File(PathBuf),
    /// Standard output, streamed in order, zeros written out.
    Stdout,
}

/// What a conversion did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConvertStats {
    /// The output's length in bytes.
    pub virtual_size: u64,
    /// Bytes written as data.
    pub data_bytes: u64,
    /// Bytes left as holes (or, on a stream, written as zeros).
    pub zero_bytes: u64,
}

pub fn convert(
    _disk: &dyn Disk,
    _target: &Target,
    _progress: &dyn Progress,
) -> Result<ConvertStats> {
    Err(Error::unsupported("convert (writer not built yet)"))
}
