//! Where whole-disk output goes: a sparse file written with positioned writes and
//! committed atomically, or a stream written strictly in order. Both take
//! (offset, bytes) writes and treat everything not written as zeros. Shared by
//! `convert` and the whole-disk writers that come after it (repack, sanitize).
//!
//! Nothing here reads images; every failure is an [`Error::Output`].

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Granularity of the all-zero check: blocks of this size that hold only zeros
/// are left as holes. 4 KiB matches the page and filesystem block size.
pub const ZERO_BLOCK: usize = 4096;

/// Whole blocks of this size, at this file offset and memory alignment, are
/// written with O_DIRECT.
pub const DIRECT_ALIGN: usize = 4096;

/// A slice of `len` bytes inside `buf` whose address is aligned like `offset` is
/// modulo [`DIRECT_ALIGN`], so that blocks aligned in the file are aligned in
/// memory too and can take the O_DIRECT path. `buf` grows as needed.
pub fn aligned_slice(buf: &mut Vec<u8>, offset: u64, len: usize) -> &mut [u8] {
    let need = len + 2 * DIRECT_ALIGN;
    if buf.len() < need {
        buf.resize(need, 0);
    }
    let base = buf.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
    let start = base + (offset % DIRECT_ALIGN as u64) as usize;
    &mut buf[start..start + len]
}

/// Whether `b` holds only zero bytes. Reads eight bytes at a time in groups of
/// 64 so the compiler can vectorise it.
pub fn is_zero(b: &[u8]) -> bool {
    let mut chunks = b.chunks_exact(64);
    for c in &mut chunks {
        let mut acc = 0u64;
        for w in c.chunks_exact(8) {
            let mut a = [0u8; 8];
            a.copy_from_slice(w);
            acc |= u64::from_ne_bytes(a);
        }
        if acc != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&x| x == 0)
}

/// A sparse output file under construction. It lives under a temporary name in
/// the destination's folder, is `len` bytes long from the start (all holes), takes
/// positioned writes from many threads at once, and becomes the destination only
/// on [`SparseFile::commit`]. Dropped without a commit, it removes itself.
///
/// Whole aligned blocks go through a second descriptor opened with O_DIRECT:
/// an image is written once and not read back, so the page cache only adds a
/// copy and dirty-page throttling (on the machine this was measured on, buffered
/// writes ran at 90 MB/s and direct ones at 660 MB/s, and a 1.6 GB convert took
/// 17-20 s buffered plus fsync against 7-8 s direct). Partial blocks, and
/// filesystems that refuse O_DIRECT (tmpfs), use the ordinary descriptor. A block
/// is only ever written through one of the two.
#[derive(Debug)]
pub struct SparseFile {
    dest: PathBuf,
    tmp: PathBuf,
    file: File,
    direct: Option<File>,
    len: u64,
    committed: bool,
    data_bytes: AtomicU64,
}

impl SparseFile {
    /// Create the temporary file beside `dest`, `len` bytes long.
    pub fn create(dest: &Path, len: u64) -> Result<Self> {
        let (tmp, file) = super::temp::create_beside(dest)?;
        let direct = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
                .open(&tmp)
                .ok()
        };
        let sink = SparseFile {
            dest: dest.to_path_buf(),
            tmp,
            file,
            direct,
            len,
            committed: false,
            data_bytes: AtomicU64::new(0),
        };
        sink.file
            .set_len(len)
            .map_err(|e| Error::output(sink.tmp.display().to_string(), e))?;
        Ok(sink)
    }

    /// The final length.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes written as data so far.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes.load(Ordering::Relaxed)
    }

    /// Write `data` at `offset` as it is: its whole aligned blocks with O_DIRECT
    /// when they are aligned in memory too, the rest through the page cache.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let a = DIRECT_ALIGN as u64;
        let head = ((a - offset % a) % a).min(data.len() as u64) as usize;
        let body = (data.len() - head) / DIRECT_ALIGN * DIRECT_ALIGN;
        let aligned = (data[head..].as_ptr() as usize).is_multiple_of(DIRECT_ALIGN);
        if self.direct.is_none() || body == 0 || !aligned {
            return self.write_buffered(offset, data);
        }
        self.write_buffered(offset, &data[..head])?;
        let mid = offset + head as u64;
        self.write_direct(mid, &data[head..head + body])?;
        self.write_buffered(mid + body as u64, &data[head + body..])
    }

    fn write_direct(&self, offset: u64, data: &[u8]) -> Result<()> {
        let Some(d) = &self.direct else {
            return self.write_buffered(offset, data);
        };
        match d.write_all_at(data, offset) {
            Ok(()) => {
                self.data_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            // The filesystem wants another alignment: the page cache takes it.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                self.write_buffered(offset, data)
            }
            Err(e) => Err(Error::output(self.tmp.display().to_string(), e)),
        }
    }

    fn write_buffered(&self, offset: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if offset
            .checked_add(data.len() as u64)
            .is_none_or(|e| e > self.len)
        {
            return Err(Error::output(
                self.tmp.display().to_string(),
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "write of {} bytes at {offset:#x} passes the {}-byte end",
                        data.len(),
                        self.len
                    ),
                ),
            ));
        }
        self.file
            .write_all_at(data, offset)
            .map_err(|e| Error::output(self.tmp.display().to_string(), e))?;
        self.data_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Write `data` at `offset`, leaving every all-zero [`ZERO_BLOCK`] (aligned to
    /// the file, not to `offset`) as a hole. Returns the bytes actually written.
    pub fn write_sparse_at(&self, offset: u64, data: &[u8]) -> Result<u64> {
        let mut written = 0u64;
        let mut run: Option<usize> = None; // start (in `data`) of a non-zero run
        let mut i = 0usize;
        while i < data.len() {
            let block_end = ((offset + i as u64) / ZERO_BLOCK as u64 + 1) * ZERO_BLOCK as u64;
            let j = ((block_end - offset) as usize).min(data.len());
            if is_zero(&data[i..j]) {
                if let Some(s) = run.take() {
                    self.write_at(offset + s as u64, &data[s..i])?;
                    written += (i - s) as u64;
                }
            } else if run.is_none() {
                run = Some(i);
            }
            i = j;
        }
        if let Some(s) = run {
            self.write_at(offset + s as u64, &data[s..])?;
            written += (data.len() - s) as u64;
        }
        Ok(written)
    }

    /// Make the file durable and give it its final name.
    pub fn commit(self) -> Result<()> {
        self.commit_with(true)
    }

    /// Give the file its final name; with `sync`, fsync it first (and the folder
    /// after). Without, a crash soon after may lose the data but never leaves a
    /// partial file under the final name.
    pub fn commit_with(mut self, sync: bool) -> Result<()> {
        self.finish(sync)?;
        super::temp::rename_all(&[(self.tmp.clone(), self.dest.clone())])?;
        self.committed = true;
        if sync {
            super::temp::sync_folder(&self.dest);
        }
        Ok(())
    }

    /// Complete and sync the file, and hand it to `group`, which gives it its
    /// final name together with the run's other outputs.
    pub fn stage(mut self, group: &super::temp::OutputGroup) -> Result<()> {
        self.finish(true)?;
        group.stage(self.tmp.clone(), self.dest.clone());
        self.committed = true;
        Ok(())
    }

    fn finish(&mut self, sync: bool) -> Result<()> {
        let tmp = self.tmp.display().to_string();
        self.file
            .set_len(self.len)
            .map_err(|e| Error::output(tmp.clone(), e))?;
        if sync {
            self.file.sync_all().map_err(|e| Error::output(tmp, e))?;
        }
        Ok(())
    }
}

impl Drop for SparseFile {
    fn drop(&mut self) {
        if !self.committed {
            super::temp::remove(&self.tmp);
        }
    }
}

/// A stream written strictly in order: writes must come at increasing offsets,
/// and gaps between them are written out as zeros.
pub struct StreamSink<W: Write> {
    out: W,
    pos: u64,
    what: String,
}

/// A buffer of zeros for filling gaps.
static ZEROS: [u8; 1 << 16] = [0; 1 << 16];

impl<W: Write> StreamSink<W> {
    /// `what` names the stream in errors ("standard output").
    pub fn new(out: W, what: impl Into<String>) -> Self {
        StreamSink {
            out,
            pos: 0,
            what: what.into(),
        }
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Write `data` at `offset`, which must not be behind the current position.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if offset < self.pos {
            return Err(Error::output(
                self.what.clone(),
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "write at {offset:#x} is behind the stream position {:#x}",
                        self.pos
                    ),
                ),
            ));
        }
        self.zeros_to(offset)?;
        self.out
            .write_all(data)
            .map_err(|e| Error::output(self.what.clone(), e))?;
        self.pos += data.len() as u64;
        Ok(())
    }

    /// Write zeros up to `offset`.
    pub fn zeros_to(&mut self, offset: u64) -> Result<()> {
        while self.pos < offset {
            let n = (offset - self.pos).min(ZEROS.len() as u64) as usize;
            self.out
                .write_all(&ZEROS[..n])
                .map_err(|e| Error::output(self.what.clone(), e))?;
            self.pos += n as u64;
        }
        Ok(())
    }

    /// Pad with zeros to `len` and flush.
    pub fn finish(mut self, len: u64) -> Result<W> {
        self.zeros_to(len)?;
        self.out
            .flush()
            .map_err(|e| Error::output(self.what.clone(), e))?;
        Ok(self.out)
    }
}

/// Writes a small file (a report, a manifest) through a temporary name beside
/// `path`, synced and renamed when `fill` has written everything: a failed run
/// leaves nothing under the final name, and no temporary file.
pub use super::temp::write_file_atomically;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zero_check() {
        assert!(is_zero(&[0u8; 4097]));
        let mut b = vec![0u8; 4097];
        b[4096] = 1;
        assert!(!is_zero(&b));
        b[4096] = 0;
        b[63] = 1;
        assert!(!is_zero(&b));
        assert!(is_zero(&[]));
    }

    #[test]
    fn sparse_file_skips_zero_blocks_and_commits() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.raw");
        let s = SparseFile::create(&dest, 1 << 20).unwrap();
        let mut data = vec![0u8; 64 << 10];
        data[5000] = 9; // second block of the write
        let n = s.write_sparse_at(4096, &data).unwrap();
        assert_eq!(n, 4096);
        assert!(!dest.exists());
        s.commit().unwrap();
        let meta = std::fs::metadata(&dest).unwrap();
        assert_eq!(meta.len(), 1 << 20);
        assert!(meta.blocks() * 512 <= 8192, "{} blocks", meta.blocks());
        let back = std::fs::read(&dest).unwrap();
        assert_eq!(back[4096 + 5000], 9);
        assert_eq!(back.iter().filter(|&&b| b != 0).count(), 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn unaligned_writes_mix_direct_and_buffered_paths() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("mix.raw");
        let s = SparseFile::create(&dest, 64 << 10).unwrap();
        let mut buf = Vec::new();
        // 1000 bytes before a block boundary through 3 whole blocks and a tail.
        let off = 4096 - 1000;
        let len = 1000 + 3 * 4096 + 123;
        let b = aligned_slice(&mut buf, off, len);
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i % 251) as u8 + 1;
        }
        let expect = b.to_vec();
        s.write_at(off, b).unwrap();
        // A misaligned slice of the same bytes, elsewhere.
        s.write_at(32 << 10, &expect[1..]).unwrap();
        assert_eq!(s.data_bytes(), (2 * len - 1) as u64);
        s.commit().unwrap();
        let back = std::fs::read(&dest).unwrap();
        assert_eq!(&back[off as usize..off as usize + len], &expect[..]);
        assert_eq!(&back[32 << 10..(32 << 10) + len - 1], &expect[1..]);
        assert!(back[..off as usize].iter().all(|&x| x == 0));
    }

    #[test]
    fn dropped_sparse_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.raw");
        let s = SparseFile::create(&dest, 4096).unwrap();
        assert!(s.write_at(4000, &[1u8; 200]).is_err());
        drop(s);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn stream_fills_gaps_and_refuses_going_back() {
        let mut s = StreamSink::new(Vec::new(), "test");
        s.write_at(3, b"ab").unwrap();
        assert!(s.write_at(4, b"x").is_err());
        let v = s.finish(8).unwrap();
        assert_eq!(v, b"\0\0\0ab\0\0\0");
    }
}
