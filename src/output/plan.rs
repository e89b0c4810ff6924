//! An output plan: the list of writes that make up an output region (a rebuilt
//! filesystem, a whole disk), each either owned bytes or a copy from a source
//! disk. Everything not written is a hole. Builders produce plans; writers
//! execute them (in parallel, sparse, or streamed in order).
//!
//! Keeping "what to write" apart from "how to write it" lets the same builder feed a
//! sparse file, a stream and a dry run, and lets tests inspect a plan.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::disk::Disk;
use crate::error::{Error, Location, Result};

/// Where a write's bytes come from.
#[derive(Clone)]
pub enum Piece {
    /// Bytes the builder produced (metadata, small file contents).
    Bytes(Arc<[u8]>),
    /// `len` bytes of `src` starting at `offset`.
    Copy { src: Arc<dyn Disk>, offset: u64 },
}

impl std::fmt::Debug for Piece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Piece::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Piece::Copy { offset, .. } => write!(f, "Copy(from {offset:#x})"),
        }
    }
}

/// `len` bytes at output offset `at`.
#[derive(Debug, Clone)]
pub struct Write {
    pub at: u64,
    pub len: u64,
    pub piece: Piece,
    /// The file whose bytes these are, when the builder knows: the writer hashes
    /// them for the manifest as it copies.
    pub file: Option<FileTag>,
}

/// Whose bytes a write carries: node `node` of volume `volume`'s tree, from
/// logical offset `logical` of a file `size` bytes long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileTag {
    pub volume: u32,
    pub node: u32,
    pub logical: u64,
    pub size: u64,
}

/// A region of output: its total length and the writes inside it.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub len: u64,
    pub writes: Vec<Write>,
}

impl Plan {
    pub fn new(len: u64) -> Self {
        Plan {
            len,
            writes: Vec::new(),
        }
    }

    /// Add owned bytes at `at`. Empty writes are dropped.
    pub fn bytes(&mut self, at: u64, bytes: impl Into<Arc<[u8]>>) {
        let b: Arc<[u8]> = bytes.into();
        if !b.is_empty() {
            self.writes.push(Write {
                at,
                len: b.len() as u64,
                piece: Piece::Bytes(b),
                file: None,
            });
        }
    }

    /// Add a copy of `len` bytes of `src` from `offset` to `at`.
    pub fn copy(&mut self, at: u64, src: Arc<dyn Disk>, offset: u64, len: u64) {
        self.copy_tagged(at, src, offset, len, None);
    }

    /// [`Plan::copy`] of a file's bytes, tagged with whose they are.
    pub fn copy_tagged(
        &mut self,
        at: u64,
        src: Arc<dyn Disk>,
        offset: u64,
        len: u64,
        file: Option<FileTag>,
    ) {
        if len > 0 {
            self.writes.push(Write {
                at,
                len,
                piece: Piece::Copy { src, offset },
                file,
            });
        }
    }

    /// Say which volume the tagged writes' nodes belong to.
    pub fn tag_volume(&mut self, volume: u32) {
        for t in self.writes.iter_mut().filter_map(|w| w.file.as_mut()) {
            t.volume = volume;
        }
    }

    /// Shift every write by `by` bytes (placing a volume's plan inside a disk).
    pub fn shifted(mut self, by: u64) -> Self {
        for w in &mut self.writes {
            w.at += by;
        }
        self.len += by;
        self
    }

    /// Sort the writes by offset and check that none overlaps another or passes
    /// the end. Builders call this before handing a plan over; an overlap is a bug
    /// in the builder, reported as such rather than written.
    pub fn seal(&mut self) -> Result<()> {
        self.writes.sort_by_key(|w| w.at);
        let mut end = 0u64;
        for (i, w) in self.writes.iter().enumerate() {
            if w.at < end {
                return Err(Error::corrupt(
                    "output plan",
                    Location::Byte(w.at),
                    format!("write {i} overlaps the previous one (which ends at {end:#x})"),
                ));
            }
            end = w.at + w.len;
            if end > self.len {
                return Err(Error::corrupt(
                    "output plan",
                    Location::Byte(w.at),
                    format!(
                        "write {i} ends at {end:#x}, past the region's end {:#x}",
                        self.len
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Bytes the plan writes.
    pub fn data_bytes(&self) -> u64 {
        self.writes.iter().map(|w| w.len).sum()
    }

    /// Execute the plan into `file` at `base`, one write after another. The simple
    /// reference executor (tests, small regions); [`Plan::write_parallel`] is the
    /// fast one.
    pub fn write_to(&self, file: &std::fs::File, base: u64) -> Result<()> {
        let mut buf = Vec::new();
        for w in &self.writes {
            match &w.piece {
                Piece::Bytes(b) => file
                    .write_all_at(b, base + w.at)
                    .map_err(|e| Error::output(format!("offset {:#x}", base + w.at), e))?,
                Piece::Copy { src, offset } => {
                    const CHUNK: u64 = 8 << 20;
                    let mut done = 0;
                    while done < w.len {
                        let n = (w.len - done).min(CHUNK);
                        let at = base + w.at + done;
                        if let Some(d) = src.direct(offset + done, n) {
                            file.write_all_at(d, at)
                                .map_err(|e| Error::output(format!("offset {at:#x}"), e))?;
                        } else {
                            buf.resize(n as usize, 0);
                            src.read_at(offset + done, &mut buf)?;
                            file.write_all_at(&buf, at)
                                .map_err(|e| Error::output(format!("offset {at:#x}"), e))?;
                        }
                        done += n;
                    }
                }
            }
        }
        Ok(())
    }

    /// Execute the plan into `file` at `base` with positioned writes from a rayon
    /// pool. Copies are cut into pieces of at most `PARALLEL_CHUNK` bytes so large
    /// files spread over threads; small writes run as they are. Each thread reuses
    /// one buffer for sources that cannot lend their bytes (`Disk::direct`). Order
    /// does not matter: a sealed plan's writes do not overlap.
    pub fn write_parallel(&self, file: &std::fs::File, base: u64) -> Result<()> {
        use rayon::prelude::*;
        const PARALLEL_CHUNK: u64 = 4 << 20;
        let mut jobs: Vec<(u64, u64, usize)> = Vec::with_capacity(self.writes.len());
        for (i, w) in self.writes.iter().enumerate() {
            match w.piece {
                Piece::Bytes(_) => jobs.push((0, w.len, i)),
                Piece::Copy { .. } => {
                    let mut done = 0;
                    while done < w.len {
                        let n = (w.len - done).min(PARALLEL_CHUNK);
                        jobs.push((done, n, i));
                        done += n;
                    }
                }
            }
        }
        jobs.par_iter()
            .try_for_each_init(Vec::new, |buf, &(within, n, i)| {
                let w = &self.writes[i];
                let at = base + w.at + within;
                let out = |bytes: &[u8]| {
                    file.write_all_at(bytes, at)
                        .map_err(|e| Error::output(format!("offset {at:#x}"), e))
                };
                match &w.piece {
                    Piece::Bytes(b) => out(b),
                    Piece::Copy { src, offset } => {
                        let from = offset + within;
                        if let Some(d) = src.direct(from, n) {
                            out(d)
                        } else {
                            buf.resize(n as usize, 0);
                            src.read_at(from, buf)?;
                            out(buf)
                        }
                    }
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;

    #[test]
    fn parallel_and_reference_executors_agree() {
        let src: Arc<dyn Disk> = Arc::new(MemDisk::new(
            (0..(9u32 << 20)).map(|i| (i * 7) as u8).collect(),
        ));
        let mut p = Plan::new(32 << 20);
        p.copy(1 << 20, src.clone(), 5, 8 << 20);
        p.bytes(100, vec![1u8; 50]);
        p.copy(20 << 20, src, 3, 4097);
        p.seal().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let a = std::fs::File::create(dir.path().join("a")).unwrap();
        let b = std::fs::File::create(dir.path().join("b")).unwrap();
        p.write_to(&a, 512).unwrap();
        p.write_parallel(&b, 512).unwrap();
        let ra = std::fs::read(dir.path().join("a")).unwrap();
        let rb = std::fs::read(dir.path().join("b")).unwrap();
        assert_eq!(ra.len(), rb.len());
        assert!(ra == rb);
        assert_eq!(ra[512 + (1 << 20)], 35);
    }
}
