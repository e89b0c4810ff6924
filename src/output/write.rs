//! Executing an output plan into a sparse file (parallel, positioned writes,
//! atomic commit) or a stream (in order, zeros written out), with progress.
//!
//! The plan says what goes where; this module only moves bytes. Copies are cut
//! into chunks so that large files spread over threads, and every chunk is read
//! once from its source.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

use super::convert::Target;
use super::digest::{Chunk, Digester, Digests};
use super::hash::{self, Part, SegmentHasher, SEGMENT};
use super::plan::{FileTag, Piece, Plan};
use super::sink::{aligned_slice, SparseFile, StreamSink};
use crate::error::Result;
use crate::progress::{Progress, Unit};

/// A file of the output's trees: (volume index, node id).
pub type FileKey = (u32, u32);

/// What to hash while writing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hashing {
    /// The whole output, byte for byte as written (holes are zeros).
    pub output: bool,
    /// Every file whose bytes the plan's writes are tagged with.
    pub files: bool,
    /// The whole output's MD5 and SHA-512 (what an image service stores), on
    /// threads of their own ([`super::digest`]).
    pub digests: bool,
}

/// What a plan's execution wrote.
#[derive(Debug, Clone, Default)]
pub struct WriteStats {
    /// The output's length.
    pub len: u64,
    /// Bytes written as data (all-zero blocks of a file output stay holes and are
    /// not counted).
    pub data_bytes: u64,
    /// The output's BLAKE3, when asked for.
    pub blake3: Option<blake3::Hash>,
    /// The BLAKE3 of each tagged file's content, when asked for. Files with no
    /// tagged write (empty, inline, all holes) are not here.
    pub files: HashMap<FileKey, blake3::Hash>,
    /// The output's MD5 and SHA-512, when asked for.
    pub digests: Option<Digests>,
}

/// One unit of work: output segment `seg`, touched by writes `first..last`.
#[derive(Clone, Copy)]
struct Job {
    seg: u64,
    first: usize,
    last: usize,
}

/// The jobs: every segment some write touches, or every segment when the whole
/// output is hashed. A sealed plan's writes are sorted and do not overlap.
fn jobs(plan: &Plan, all: bool) -> Vec<Job> {
    let mut v: Vec<Job> = Vec::new();
    for (i, w) in plan.writes.iter().enumerate() {
        if w.len == 0 {
            continue;
        }
        let (a, b) = (w.at / SEGMENT, (w.at + w.len - 1) / SEGMENT);
        for seg in a..=b {
            match v.last_mut() {
                Some(j) if j.seg == seg => j.last = i + 1,
                _ => v.push(Job {
                    seg,
                    first: i,
                    last: i + 1,
                }),
            }
        }
    }
    if all {
        let mut full = Vec::with_capacity(hash::segments(plan.len) as usize);
        let mut it = v.into_iter().peekable();
        for seg in 0..hash::segments(plan.len) {
            match it.peek() {
                Some(j) if j.seg == seg => full.push(it.next().unwrap_or(Job {
                    seg,
                    first: 0,
                    last: 0,
                })),
                _ => full.push(Job {
                    seg,
                    first: 0,
                    last: 0,
                }),
            }
        }
        v = full;
    }
    v
}

/// How one segment of one file's content gets hashed.
#[derive(Clone, Copy)]
enum FileSeg {
    /// All its bytes are in one output segment, in logical order: the job of
    /// that segment hashes them as they pass.
    Local,
    /// Spread over several jobs, or out of order: its bytes are gathered in a
    /// buffer, and the job that completes it hashes it.
    Gathered { bytes: u64 },
}

/// A file segment's buffer and the bytes it still waits for.
type Gather = (Vec<u8>, u64);

/// The per-file hashing state shared by the jobs.
struct FileHashing {
    /// File size, and its segments' parts as they complete.
    files: HashMap<FileKey, u64>,
    kind: HashMap<(FileKey, u64), FileSeg>,
    /// Parts by segment index, only for segments that hold data: a file's size
    /// comes from the image and may be huge.
    parts: Mutex<HashMap<FileKey, BTreeMap<u64, Part>>>,
    /// Buffers of gathered segments, with the bytes they still wait for.
    gathering: Mutex<HashMap<(FileKey, u64), Gather>>,
}

/// The portions of a tagged write, cut at file-segment boundaries and at the
/// output segment boundaries: (output offset, logical offset, length).
fn portions(at: u64, len: u64, tag: &FileTag) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
    let mut done = 0;
    std::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let (o, l) = (at + done, tag.logical + done);
        let n = (len - done)
            .min(SEGMENT - o % SEGMENT)
            .min(SEGMENT - l % SEGMENT);
        done += n;
        Some((o, l, n))
    })
}

impl FileHashing {
    fn new(plan: &Plan) -> Self {
        let mut files = HashMap::new();
        // (first output segment, last logical end seen, bytes, local so far)
        let mut seen: HashMap<(FileKey, u64), (u64, u64, u64, bool)> = HashMap::new();
        for w in &plan.writes {
            let Some(tag) = &w.file else { continue };
            let key = (tag.volume, tag.node);
            files.insert(key, tag.size);
            for (o, l, n) in portions(w.at, w.len, tag) {
                // Bytes past the end of the file (a hostile image's extent beyond
                // i_size) are not content.
                if l >= tag.size {
                    continue;
                }
                let n = n.min(tag.size - l);
                let e = seen
                    .entry((key, l / SEGMENT))
                    .or_insert((o / SEGMENT, 0, 0, true));
                e.3 &= e.0 == o / SEGMENT && l >= e.1;
                e.1 = l + n;
                e.2 += n;
            }
        }
        let kind = seen
            .into_iter()
            .map(|(k, (_, _, bytes, local))| {
                (
                    k,
                    if local {
                        FileSeg::Local
                    } else {
                        FileSeg::Gathered { bytes }
                    },
                )
            })
            .collect();
        let parts = files.keys().map(|&k| (k, BTreeMap::new())).collect();
        FileHashing {
            files,
            kind,
            parts: Mutex::new(parts),
            gathering: Mutex::new(HashMap::new()),
        }
    }

    fn store(&self, key: FileKey, fseg: u64, part: Part) {
        let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = parts.get_mut(&key) {
            v.insert(fseg, part);
        }
    }

    /// Bytes `b` of file `key` at logical offset `l`, all in one file segment.
    fn feed(
        &self,
        local: &mut HashMap<(FileKey, u64), SegmentHasher>,
        key: FileKey,
        l: u64,
        b: &[u8],
    ) {
        let fseg = l / SEGMENT;
        let size = self.files.get(&key).copied().unwrap_or(0);
        if l >= size {
            return;
        }
        let b = &b[..b.len().min((size - l) as usize)];
        match self.kind.get(&(key, fseg)) {
            Some(FileSeg::Local) => local
                .entry((key, fseg))
                .or_insert_with(|| SegmentHasher::new(fseg, size))
                .feed(l, b),
            Some(FileSeg::Gathered { bytes }) => {
                let mut g = self.gathering.lock().unwrap_or_else(|e| e.into_inner());
                let seg_len = (size - fseg * SEGMENT).min(SEGMENT) as usize;
                let e = g
                    .entry((key, fseg))
                    .or_insert_with(|| (vec![0u8; seg_len], *bytes));
                let s = (l - fseg * SEGMENT) as usize;
                let n = b.len().min(seg_len.saturating_sub(s));
                e.0[s..s + n].copy_from_slice(&b[..n]);
                e.1 = e.1.saturating_sub(b.len() as u64);
                if e.1 == 0 {
                    if let Some((buf, _)) = g.remove(&(key, fseg)) {
                        drop(g);
                        let mut h = SegmentHasher::new(fseg, size);
                        h.feed(fseg * SEGMENT, &buf);
                        self.store(key, fseg, h.finish());
                    }
                }
            }
            None => {}
        }
    }

    fn finish_local(&self, local: HashMap<(FileKey, u64), SegmentHasher>) {
        for ((key, fseg), h) in local {
            self.store(key, fseg, h.finish());
        }
    }

    /// The files' hashes; segments no write touched are zeros. A file with more
    /// than [`hash::MAX_HASHED_HOLES`] of such segments is left out.
    fn hashes(self) -> HashMap<FileKey, blake3::Hash> {
        let parts = self.parts.into_inner().unwrap_or_else(|e| e.into_inner());
        parts
            .into_iter()
            .filter_map(|(key, mut have)| {
                let size = self.files.get(&key).copied()?;
                let n = hash::segments(size);
                let holes = (n - have.len() as u64).saturating_mul(SEGMENT);
                if holes > hash::MAX_HASHED_HOLES {
                    return None;
                }
                let v: Vec<Part> = (0..n)
                    .map(|i| {
                        have.remove(&i)
                            .unwrap_or_else(|| SegmentHasher::new(i, size).finish())
                    })
                    .collect();
                Some((key, hash::combine(&v, size)?))
            })
            .collect()
    }
}

/// Run one job: hand every byte range it covers to `out` in output order, and
/// hash what is asked. Returns the output segment's part when hashing it.
fn run_job(
    plan: &Plan,
    job: Job,
    hashing: Hashing,
    fh: Option<&FileHashing>,
    buf: &mut Vec<u8>,
    progress: &dyn Progress,
    out: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
) -> Result<Option<Part>> {
    let (s0, s1) = (job.seg * SEGMENT, ((job.seg + 1) * SEGMENT).min(plan.len));
    let mut seg_hasher = hashing
        .output
        .then(|| SegmentHasher::new(job.seg, plan.len));
    let mut local = HashMap::new();
    for w in &plan.writes[job.first..job.last] {
        let (s, e) = (w.at.max(s0), (w.at + w.len).min(s1));
        if s >= e {
            continue;
        }
        let n = e - s;
        let within = s - w.at;
        let bytes: &[u8] = match &w.piece {
            Piece::Bytes(b) => &b[within as usize..(within + n) as usize],
            // Read, never borrow the source's map: writing from mapped file pages
            // would fault every page of the image into this process (its RSS
            // grows to the image's size) and pin them for the direct write.
            Piece::Copy { src, offset } => {
                let b = aligned_slice(buf, s, n as usize);
                src.read_at(offset + within, b)?;
                b
            }
        };
        out(s, bytes)?;
        if let Some(h) = &mut seg_hasher {
            h.feed(s, bytes);
        }
        if let (Some(fh), Some(tag)) = (fh, &w.file) {
            let key = (tag.volume, tag.node);
            let tag_here = FileTag {
                logical: tag.logical + within,
                ..*tag
            };
            for (o, l, m) in portions(s, n, &tag_here) {
                let i = (o - s) as usize;
                fh.feed(&mut local, key, l, &bytes[i..i + m as usize]);
            }
        }
        progress.advance(n);
    }
    if let Some(fh) = fh {
        fh.finish_local(local);
    }
    Ok(seg_hasher.map(SegmentHasher::finish))
}

/// Pieces at least this long are written as they come; shorter ones that follow
/// each other are gathered first.
const COALESCE_BELOW: usize = 1 << 20;

/// The largest gap between two pieces that are still gathered into one write.
const COALESCE_GAP: u64 = 64 << 10;

/// Gathers adjacent short writes of one job into one request. A directory of
/// small files becomes one write instead of thousands: each direct write waits
/// for the device, so their count, not their size, sets the time.
struct Coalesce<'a> {
    sink: &'a SparseFile,
    /// Backing memory; the window used is aligned like the file offset, so
    /// whole blocks can go out with O_DIRECT.
    raw: &'a mut Vec<u8>,
    start: u64,
    len: usize,
    written: u64,
}

impl Coalesce<'_> {
    fn window(&mut self) -> &mut [u8] {
        aligned_slice(self.raw, self.start, SEGMENT as usize)
    }

    /// `b` at output offset `at`; offsets come in increasing order, all within
    /// one output segment.
    fn push(&mut self, at: u64, b: &[u8]) -> Result<()> {
        // A short gap (the unused tail of a file's last block) is filled with
        // zeros: whole zero blocks still become holes when the window is written.
        let here = self.start + self.len as u64;
        if self.len > 0 && at >= here && at - here <= COALESCE_GAP {
            let from = (at - self.start) as usize;
            let end = from + b.len();
            if end <= SEGMENT as usize {
                let len = self.len;
                let w = self.window();
                w[len..from].fill(0);
                w[from..end].copy_from_slice(b);
                self.len = end;
                return Ok(());
            }
        }
        self.flush()?;
        if b.len() >= COALESCE_BELOW || b.len() > SEGMENT as usize {
            self.written += self.sink.write_sparse_at(at, b)?;
            return Ok(());
        }
        self.start = at;
        self.window()[..b.len()].copy_from_slice(b);
        self.len = b.len();
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.len > 0 {
            let (start, len) = (self.start, self.len);
            let w = aligned_slice(self.raw, start, SEGMENT as usize);
            self.written += self.sink.write_sparse_at(start, &w[..len])?;
            self.len = 0;
        }
        Ok(())
    }
}

/// Threads per core for file output. Direct writes block until the device has the
/// data, so with one thread per core the device sees at most one request per core
/// and the cores wait on it; a few threads per core keep requests in flight while
/// others decompress and hash.
const IO_THREADS_PER_CORE: usize = 4;

/// The pool file output runs in: the current pool's size times
/// [`IO_THREADS_PER_CORE`] (the current pool when one cannot be built).
fn io_pool() -> Option<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(rayon::current_num_threads() * IO_THREADS_PER_CORE)
        .thread_name(|i| format!("imgsan-write-{i}"))
        .build()
        .ok()
}

/// Execute `plan` into `target`. A file target is created under a temporary name
/// and renamed into place only when everything is written and synced; on error
/// nothing is left behind.
pub fn write_plan(plan: &Plan, target: &Target, progress: &dyn Progress) -> Result<WriteStats> {
    write_plan_hashed(plan, target, progress, Hashing::default())
}

/// [`write_plan`], hashing the output and the tagged files as the bytes pass.
pub fn write_plan_hashed(
    plan: &Plan,
    target: &Target,
    progress: &dyn Progress,
    hashing: Hashing,
) -> Result<WriteStats> {
    write_plan_into(plan, target, progress, hashing, None)
}

/// [`write_plan_hashed`]; with a `group`, a file target is completed and synced
/// but not renamed: it becomes final when the group commits, together with the
/// run's other outputs.
pub fn write_plan_into(
    plan: &Plan,
    target: &Target,
    progress: &dyn Progress,
    hashing: Hashing,
    group: Option<&super::temp::OutputGroup>,
) -> Result<WriteStats> {
    let jobs = jobs(plan, hashing.output || hashing.digests);
    let fh = hashing.files.then(|| FileHashing::new(plan));
    let digester = match hashing.digests {
        true => Some(
            Digester::start().map_err(|e| crate::Error::io("starting the digest threads", e))?,
        ),
        false => None,
    };
    progress.start("write", plan.data_bytes(), Unit::Bytes);
    let mut parts: Vec<(u64, Part)> = Vec::new();
    let data_bytes = match target {
        Target::File(path) => {
            let sink = SparseFile::create(path, plan.len)?;
            let written = AtomicU64::new(0);
            let pool = io_pool();
            let one =
                |job: Job, buf: &mut Vec<u8>, raw: &mut Vec<u8>| -> Result<Option<(u64, Part)>> {
                    let mut co = Coalesce {
                        sink: &sink,
                        raw,
                        start: 0,
                        len: 0,
                        written: 0,
                    };
                    let p = match &digester {
                        None => run_job(
                            plan,
                            job,
                            hashing,
                            fh.as_ref(),
                            buf,
                            progress,
                            &mut |at, b| co.push(at, b),
                        )?,
                        Some(d) => {
                            // The segment's bytes are kept for the digests as they go out.
                            let s0 = job.seg * SEGMENT;
                            let len = (plan.len - s0).min(SEGMENT);
                            let mut seg = (job.first < job.last).then(|| vec![0u8; len as usize]);
                            let p = run_job(
                                plan,
                                job,
                                hashing,
                                fh.as_ref(),
                                buf,
                                progress,
                                &mut |at, b| {
                                    if let Some(seg) = seg.as_mut() {
                                        let i = (at - s0) as usize;
                                        seg[i..i + b.len()].copy_from_slice(b);
                                    }
                                    co.push(at, b)
                                },
                            )?;
                            d.submit(job.seg, seg.map_or(Chunk::Zeros(len), Chunk::Data));
                            p
                        }
                    };
                    co.flush()?;
                    written.fetch_add(co.written, Ordering::Relaxed);
                    Ok(p.map(|p| (job.seg, p)))
                };
            let run = || match &digester {
                None => jobs
                    .par_iter()
                    .map_init(
                        || (Vec::new(), Vec::new()),
                        |(buf, raw), &job| one(job, buf, raw),
                    )
                    .collect::<Result<Vec<_>>>(),
                // The digests take segments in order: workers take jobs from a shared
                // counter, lowest first, and wait while they are a window ahead.
                Some(d) => ordered(&jobs, d, |job, buf, raw| one(job, buf, raw)),
            };
            parts = match &pool {
                Some(p) => p.install(run),
                None => run(),
            }?
            .into_iter()
            .flatten()
            .collect();
            match group {
                Some(g) => sink.stage(g)?,
                None => sink.commit()?,
            }
            written.into_inner()
        }
        Target::Stdout => {
            let stdout = std::io::stdout();
            let mut sink = StreamSink::new(stdout.lock(), "standard output");
            // Fill a window of segments in parallel, write them in order; memory
            // is bounded by the window.
            let window = 2 * rayon::current_num_threads() + 2;
            for group in jobs.chunks(window) {
                let filled: Vec<(Vec<u8>, Option<Part>)> = group
                    .par_iter()
                    .map_init(Vec::new, |buf, &job| -> Result<(Vec<u8>, Option<Part>)> {
                        let s0 = job.seg * SEGMENT;
                        let len = (plan.len - s0).min(SEGMENT) as usize;
                        let mut seg = vec![0u8; len];
                        let mut out = |at: u64, b: &[u8]| -> Result<()> {
                            let i = (at - s0) as usize;
                            seg[i..i + b.len()].copy_from_slice(b);
                            Ok(())
                        };
                        let p = run_job(plan, job, hashing, fh.as_ref(), buf, progress, &mut out)?;
                        Ok((seg, p))
                    })
                    .collect::<Result<_>>()?;
                for (job, (seg, p)) in group.iter().zip(filled) {
                    sink.write_at(job.seg * SEGMENT, &seg)?;
                    if let Some(d) = &digester {
                        d.wait_turn(job.seg);
                        d.submit(job.seg, Chunk::Data(seg));
                    }
                    if let Some(p) = p {
                        parts.push((job.seg, p));
                    }
                }
            }
            let mut out = sink.finish(plan.len)?;
            out.flush()
                .map_err(|e| crate::Error::output("standard output", e))?;
            plan.data_bytes()
        }
    };
    let digests = match digester {
        Some(d) => Some(d.finish(hash::segments(plan.len)).ok_or_else(|| {
            crate::Error::output(
                "the output's MD5 and SHA-512",
                std::io::Error::other("a digest thread stopped before the end"),
            )
        })?),
        None => None,
    };
    progress.finish();
    parts.sort_by_key(|p| p.0);
    let blake3 = if hashing.output {
        let v: Vec<Part> = parts.into_iter().map(|p| p.1).collect();
        hash::combine(&v, plan.len)
    } else {
        None
    };
    Ok(WriteStats {
        len: plan.len,
        data_bytes,
        blake3,
        files: fh.map(FileHashing::hashes).unwrap_or_default(),
        digests,
    })
}

/// Runs `jobs` on the current pool's threads in increasing order of segment: each
/// worker takes the next job from a shared counter and waits for its turn at the
/// digester before running it, so segments reach the digests about in order and
/// memory stays bounded by the digester's window.
fn ordered<T: Send>(
    jobs: &[Job],
    d: &Digester,
    run: impl Fn(Job, &mut Vec<u8>, &mut Vec<u8>) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    use std::sync::atomic::AtomicUsize;
    let next = AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let results: Mutex<Vec<(usize, T)>> = Mutex::new(Vec::with_capacity(jobs.len()));
    let first_error: Mutex<Option<crate::Error>> = Mutex::new(None);
    rayon::broadcast(|_| {
        let (mut buf, mut raw) = (Vec::new(), Vec::new());
        loop {
            if failed.load(Ordering::Relaxed) {
                break;
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&job) = jobs.get(i) else { break };
            d.wait_turn(job.seg);
            match run(job, &mut buf, &mut raw) {
                Ok(t) => results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((i, t)),
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    first_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(e);
                    // The hashers would wait for this segment for ever.
                    d.abandon();
                    break;
                }
            }
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    let mut v = results.into_inner().unwrap_or_else(|e| e.into_inner());
    v.sort_by_key(|r| r.0);
    Ok(v.into_iter().map(|r| r.1).collect())
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

    #[test]
    fn output_and_file_hashes_match_sequential_hashes() {
        use crate::output::plan::FileTag;
        let seg = SEGMENT;
        let src: Arc<dyn Disk> = Arc::new(MemDisk::new(
            (0..(24u32 << 20))
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ));
        // File 1: 9 MiB + 5 bytes with a hole from 2 MiB to 3 MiB, its pieces
        // placed out of logical order and across output segments. File 2: small,
        // one piece. File 3: its first segment is all hole.
        let f1 = 9 * (1 << 20) + 5;
        let tag = |node, logical, size| {
            Some(FileTag {
                volume: 1,
                node,
                logical,
                size,
            })
        };
        let mut p = Plan::new(40 << 20);
        p.copy_tagged(seg * 6 + 100, src.clone(), 0, 2 << 20, tag(1, 0, f1));
        p.copy_tagged(
            seg + 7,
            src.clone(),
            3 << 20,
            f1 - (3 << 20),
            tag(1, 3 << 20, f1),
        );
        p.copy_tagged(seg * 8, src.clone(), 1 << 20, 5000, tag(2, 0, 5000));
        p.copy_tagged(
            seg * 9 - 10,
            src.clone(),
            7 << 20,
            4096,
            tag(3, seg + 1, seg + 4097),
        );
        // File 4: a write running past the file's end (a hostile extent beyond
        // i_size): only the first 100 bytes are content.
        p.copy_tagged(seg * 9 + 8192, src.clone(), 5, 5000, tag(4, 0, 100));
        p.bytes(0, vec![9u8; 3000]);
        p.seal().unwrap();
        let want4 = {
            let mut b = vec![0u8; 100];
            src.read_at(5, &mut b).unwrap();
            blake3::hash(&b)
        };

        let want1 = {
            let mut b = vec![0u8; f1 as usize];
            src.read_at(0, &mut b[..2 << 20]).unwrap();
            src.read_at(3 << 20, &mut b[3 << 20..]).unwrap();
            blake3::hash(&b)
        };
        let want2 = {
            let mut b = vec![0u8; 5000];
            src.read_at(1 << 20, &mut b).unwrap();
            blake3::hash(&b)
        };
        let want3 = {
            let mut b = vec![0u8; (seg + 4097) as usize];
            src.read_at(7 << 20, &mut b[seg as usize + 1..]).unwrap();
            blake3::hash(&b)
        };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.raw");
        let all = Hashing {
            output: true,
            files: true,
            digests: true,
        };
        let st = write_plan_hashed(&p, &Target::File(out.clone()), &Silent, all).unwrap();
        let written = std::fs::read(&out).unwrap();
        assert_eq!(st.blake3, Some(blake3::hash(&written)));
        {
            use md5::Digest as _;
            let d = st.digests.expect("digests");
            assert_eq!(d.md5.as_slice(), md5::Md5::digest(&written).as_slice());
            assert_eq!(
                d.sha512.as_slice(),
                sha2::Sha512::digest(&written).as_slice()
            );
        }
        // The same without the files hashed.
        let streamed = write_plan_hashed(
            &p,
            &Target::File(dir.path().join("o2.raw")),
            &Silent,
            Hashing {
                files: false,
                ..all
            },
        )
        .unwrap();
        assert_eq!(streamed.digests, st.digests);
        assert_eq!(st.files.len(), 4);
        assert_eq!(st.files[&(1, 4)], want4);
        assert_eq!(st.files[&(1, 1)], want1);
        assert_eq!(st.files[&(1, 2)], want2);
        assert_eq!(st.files[&(1, 3)], want3);
    }

    #[test]
    fn a_huge_sparse_file_is_not_hashed_and_allocates_nothing() {
        use crate::output::plan::FileTag;
        let src: Arc<dyn Disk> = Arc::new(MemDisk::new(vec![7u8; 8192]));
        let mut p = Plan::new(1 << 20);
        let tag = FileTag {
            volume: 0,
            node: 9,
            logical: 0,
            size: 1 << 50,
        };
        p.copy_tagged(4096, src, 0, 4096, Some(tag));
        p.seal().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let all = Hashing {
            output: true,
            files: true,
            digests: true,
        };
        let out = Target::File(dir.path().join("o.raw"));
        let st = write_plan_hashed(&p, &out, &Silent, all).unwrap();
        assert!(st.files.is_empty());
        assert!(st.blake3.is_some());
    }
}
