//! Executing an output plan into a sparse file (parallel, positioned writes,
//! atomic commit) or a stream (in order, zeros written out), with progress.
//!
//! The plan says what goes where; this module only moves bytes. Copies are cut
//! into chunks so that large files spread over threads, and every chunk is read
//! once from its source.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use super::convert::Target;
use super::plan::{Piece, Plan};
use super::sink::{aligned_slice, SparseFile, StreamSink};
use crate::error::Result;
use crate::progress::{Progress, Unit};

/// Copies are cut into chunks of at most this many bytes.
const CHUNK: u64 = 4 << 20;

/// What a plan's execution wrote.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WriteStats {
    /// The output's length.
    pub len: u64,
    /// Bytes written as data (all-zero blocks of a file output stay holes and are
    /// not counted).
    pub data_bytes: u64,
}

/// One unit of work: `len` bytes of write `index`, starting `within` bytes into it.
#[derive(Clone, Copy)]
struct Job {
    index: usize,
    within: u64,
    len: u64,
}

fn jobs(plan: &Plan) -> Vec<Job> {
    let mut v = Vec::with_capacity(plan.writes.len());
    for (index, w) in plan.writes.iter().enumerate() {
        let mut within = 0;
        while within < w.len {
            let len = (w.len - within).min(CHUNK);
            v.push(Job { index, within, len });
            within += len;
        }
    }
    v
}

/// Fill `buf` with the bytes of a job.
fn read_job(plan: &Plan, job: Job, buf: &mut [u8]) -> Result<()> {
    let w = &plan.writes[job.index];
    match &w.piece {
        Piece::Bytes(b) => {
            let s = job.within as usize;
            buf.copy_from_slice(&b[s..s + job.len as usize]);
            Ok(())
        }
        Piece::Copy { src, offset } => src.read_at(offset + job.within, buf),
    }
}

/// Execute `plan` into `target`. A file target is created under a temporary name
/// and renamed into place only when everything is written and synced; on error
/// nothing is left behind.
pub fn write_plan(plan: &Plan, target: &Target, progress: &dyn Progress) -> Result<WriteStats> {
    let jobs = jobs(plan);
    progress.start("write", plan.data_bytes(), Unit::Bytes);
    let stats = match target {
        Target::File(path) => {
            let out = SparseFile::create(path, plan.len)?;
            let written = AtomicU64::new(0);
            jobs.par_iter()
                .try_for_each_init(Vec::new, |buf, &job| -> Result<()> {
                    let at = plan.writes[job.index].at + job.within;
                    let n = match &plan.writes[job.index].piece {
                        Piece::Bytes(b) => {
                            let s = job.within as usize;
                            out.write_sparse_at(at, &b[s..s + job.len as usize])?
                        }
                        Piece::Copy { src, offset } => {
                            let from = offset + job.within;
                            match src.direct(from, job.len) {
                                Some(d) => out.write_sparse_at(at, d)?,
                                None => {
                                    let b = aligned_slice(buf, at, job.len as usize);
                                    src.read_at(from, b)?;
                                    out.write_sparse_at(at, b)?
                                }
                            }
                        }
                    };
                    written.fetch_add(n, Ordering::Relaxed);
                    progress.advance(job.len);
                    Ok(())
                })?;
            out.commit()?;
            WriteStats {
                len: plan.len,
                data_bytes: written.into_inner(),
            }
        }
        Target::Stdout => {
            let stdout = std::io::stdout();
            let mut sink = StreamSink::new(stdout.lock(), "standard output");
            // Read a window of chunks in parallel, write them in order; memory is
            // bounded by the window.
            let window = 2 * rayon::current_num_threads() + 2;
            for group in jobs.chunks(window) {
                let bufs: Vec<Vec<u8>> = group
                    .par_iter()
                    .map(|&job| -> Result<Vec<u8>> {
                        let mut b = vec![0u8; job.len as usize];
                        read_job(plan, job, &mut b)?;
                        Ok(b)
                    })
                    .collect::<Result<_>>()?;
                for (job, b) in group.iter().zip(bufs) {
                    sink.write_at(plan.writes[job.index].at + job.within, &b)?;
                    progress.advance(job.len);
                }
            }
            let mut out = sink.finish(plan.len)?;
            out.flush()
                .map_err(|e| crate::Error::output("standard output", e))?;
            WriteStats {
                len: plan.len,
                data_bytes: plan.data_bytes(),
            }
        }
    };
    progress.finish();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::{Disk, MemDisk};
    use crate::progress::Silent;
    use std::sync::Arc;

    #[test]
    fn file_output_matches_the_reference_executor_and_is_sparse() {
        let src: Arc<dyn Disk> = Arc::new(MemDisk::new(
            (0..(10u32 << 20)).map(|i| (i % 251) as u8).collect(),
        ));
        let mut p = Plan::new(64 << 20);
        p.copy(1 << 20, src.clone(), 7, 9 << 20);
        p.bytes(100, vec![3u8; 5000]);
        p.bytes(40 << 20, vec![0u8; 8192]);
        p.seal().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.raw");
        let st = write_plan(&p, &Target::File(out.clone()), &Silent).unwrap();
        assert_eq!(st.len, 64 << 20);
        let reference = dir.path().join("ref.raw");
        let f = std::fs::File::create(&reference).unwrap();
        f.set_len(64 << 20).unwrap();
        p.write_to(&f, 0).unwrap();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&reference).unwrap()
        );
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&out).unwrap().blocks() * 512;
        assert!(
            blocks < 12 << 20,
            "output is sparse ({blocks} bytes allocated)"
        );
        assert!(
            std::fs::read_dir(dir.path()).unwrap().count() == 2,
            "no temporary file left"
        );
    }
}
