//! QCOW2 images (versions 2 and 3): the header, the active L1/L2 tables, zero and
//! compressed clusters, extended L2 entries (subclusters), an external data file,
//! and the backing chain. Read-only, synchronous, on a read-only memory map, and
//! usable from many threads (`&self` reads).
//!
//! It never writes to any file and never uses refcounts (so a dirty image reads
//! fine); it must not know about partitions or filesystems. Every table entry is
//! checked against the file's length before it is followed.

#![allow(unsafe_code)] // only for the memory map, see `Store::map_file`

pub mod compress;
pub mod header;

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use self::compress::ClusterCache;
pub use self::header::{Compression, Header};
use super::{check_range, raw::Raw, Alloc, Disk, DiskInfo, Extent};
use crate::error::{Error, Location, Result};

/// How deep a backing chain may go before it is taken for a mistake.
pub const MAX_CHAIN_DEPTH: usize = 32;

/// A `read_at` call at least this long is a bulk read: its pieces go through
/// `pread` instead of the memory map, so that whole-disk copies do not leave the
/// image mapped into the process (resident pages of a file map count against the
/// process's memory). Smaller reads copy from the map, without a system call.
const BULK_READ: usize = 64 << 10;

/// Budget for the cache of inflated clusters.
const CACHE_BYTES: u64 = 8 << 20;

/// Bits 9..=55 of an L1 entry or a standard L2 entry: the host offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2_COMPRESSED: u64 = 1 << 62;
const L2_COPIED: u64 = 1 << 63;
const L2_ZERO: u64 = 1;

/// Whether the file starts with the QCOW magic.
pub fn probe_file(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut f = File::open(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    let mut magic = [0u8; 4];
    match f.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == header::MAGIC),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(Error::io(path.display().to_string(), e)),
    }
}

/// The bytes of one file: the image itself or its external data file.
enum Store {
    File {
        path: PathBuf,
        file: File,
        /// `None` for an empty file (a zero-length map is not allowed).
        map: Option<Mmap>,
    },
    Memory(Vec<u8>),
}

impl Store {
    fn map_file(path: &Path) -> Result<Store> {
        let file = File::open(path).map_err(|e| Error::io(path.display().to_string(), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(path.display().to_string(), e))?
            .len();
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the map is read-only and imgsan never writes to its input.
            // Another process truncating the image while it is read would raise
            // SIGBUS; that is the hazard every mmap-based reader accepts, and the
            // CLI documents that images must not change while they are read.
            let m = unsafe { Mmap::map(&file) }
                .map_err(|e| Error::io(format!("{}: mmap", path.display()), e))?;
            Some(m)
        };
        Ok(Store::File {
            path: path.to_path_buf(),
            file,
            map,
        })
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Store::File { map, .. } => map.as_deref().unwrap_or(&[]),
            Store::Memory(v) => v,
        }
    }

    fn len(&self) -> u64 {
        self.bytes().len() as u64
    }

    /// Copy `buf.len()` bytes at `off`, by `pread` for a bulk read.
    fn read_exact_at(&self, off: u64, buf: &mut [u8], bulk: bool) -> Result<()> {
        if let Store::File { file, path, .. } = self {
            if bulk {
                return file
                    .read_exact_at(buf, off)
                    .map_err(|e| Error::io(format!("{}: read at {off:#x}", path.display()), e));
            }
        }
        let src = usize::try_from(off)
            .ok()
            .and_then(|o| self.bytes().get(o..o.checked_add(buf.len())?));
        match src {
            Some(s) => {
                buf.copy_from_slice(s);
                Ok(())
            }
            None => Err(Error::corrupt(
                "qcow2 image",
                Location::Byte(off),
                format!("read of {} bytes passes the end of the file", buf.len()),
            )),
        }
    }

    /// Call `f` with the bytes at `off..off + len`: a slice of the map for small
    /// ranges or in-memory images, a per-thread buffer filled by `pread` for the
    /// rest (so streaming through compressed data leaves nothing mapped).
    fn with_range<T>(
        &self,
        off: u64,
        len: usize,
        bulk: bool,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<T> {
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        if matches!(self, Store::File { .. }) && bulk {
            BUF.with(|b| {
                let mut b = b.borrow_mut();
                b.resize(len, 0);
                self.read_exact_at(off, &mut b, true)?;
                Ok(f(&b))
            })
        } else {
            let s = usize::try_from(off)
                .ok()
                .and_then(|o| self.bytes().get(o..o.checked_add(len)?))
                .ok_or_else(|| {
                    Error::corrupt(
                        "qcow2 image",
                        Location::Byte(off),
                        format!("read of {len} bytes passes the end of the file"),
                    )
                })?;
            Ok(f(s))
        }
    }

    fn allocated(&self) -> u64 {
        match self {
            Store::File { file, .. } => file.metadata().map(|m| m.blocks() * 512).unwrap_or(0),
            Store::Memory(v) => v.len() as u64,
        }
    }
}

/// The image below this one in the chain.
struct Backing {
    /// This backing file and everything below it.
    chain: Vec<(PathBuf, &'static str)>,
    path: PathBuf,
    disk: Box<dyn Disk>,
}

/// What one guest cluster (or subcluster) holds, from its L2 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Stored uncompressed at this host offset (of the data file).
    Data {
        host: u64,
    },
    /// Stored compressed: the compressed bytes' range in the image file, and the
    /// guest offset where the cluster starts.
    Compressed {
        host: u64,
        len: u64,
        cluster: u64,
    },
    Zero,
    /// Not in this image: read from the backing file, or zeros.
    Unallocated,
}

/// A run of the guest disk in one state.
#[derive(Debug, Clone, Copy)]
struct Piece {
    off: u64,
    len: u64,
    state: State,
}

impl Piece {
    /// Append `next` to this run if it continues it.
    fn try_extend(&mut self, next: &Piece) -> bool {
        if self.off + self.len != next.off {
            return false;
        }
        let joins = match (self.state, next.state) {
            (State::Data { host: a }, State::Data { host: b }) => a + self.len == b,
            (State::Zero, State::Zero) | (State::Unallocated, State::Unallocated) => true,
            _ => false,
        };
        if joins {
            self.len += next.len;
        }
        joins
    }
}

/// An open QCOW2 image and its chain.
pub struct Qcow2 {
    path: PathBuf,
    header: Header,
    store: Store,
    /// The external data file, when the image has one.
    data: Option<(PathBuf, Store)>,
    /// Host offsets of the L2 tables (0: unallocated), checked at open.
    l1: Vec<u64>,
    backing: Option<Backing>,
    /// The backing chain below this image, top first.
    chain: Vec<(PathBuf, &'static str)>,
    cache: ClusterCache,
    warnings: Vec<String>,
}

impl std::fmt::Debug for Qcow2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2")
            .field("path", &self.path)
            .field("size", &self.header.size)
            .finish()
    }
}

impl Qcow2 {
    /// Open an image file and its backing chain.
    pub fn open(path: &Path) -> Result<Self> {
        let mut seen = Vec::new();
        Self::open_in_chain(path, &mut seen)
    }

    /// Parse an image held in memory. A backing file named in it is ignored
    /// (unallocated clusters read as zeros); an external data file is refused.
    /// Meant for fuzzing and tests.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        let store = Store::Memory(bytes);
        let header = Header::parse(store.bytes(), store.len())?;
        if header.has_data_file() {
            return Err(Error::unsupported(
                "an external data file on an in-memory qcow2 image",
            ));
        }
        Self::assemble(PathBuf::from("<memory>"), header, store, None, None)
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    fn open_in_chain(path: &Path, seen: &mut Vec<PathBuf>) -> Result<Self> {
        let canonical =
            std::fs::canonicalize(path).map_err(|e| Error::io(path.display().to_string(), e))?;
        if seen.contains(&canonical) {
            return Err(Error::corrupt(
                "qcow2 backing chain",
                Location::Byte(8),
                format!(
                    "cycle: {} is already in the chain above it",
                    canonical.display()
                ),
            ));
        }
        if seen.len() >= MAX_CHAIN_DEPTH {
            return Err(Error::corrupt(
                "qcow2 backing chain",
                Location::Byte(8),
                format!("the chain is deeper than {MAX_CHAIN_DEPTH} images"),
            ));
        }
        seen.push(canonical);

        let store = Store::map_file(path)?;
        let header = Header::parse(store.bytes(), store.len())?;
        let dir = path.parent().unwrap_or(Path::new(""));

        let data = match &header.data_file {
            Some(name) if header.has_data_file() => {
                let p = resolve(dir, name, "external data file")?;
                let s = Store::map_file(&p).map_err(|e| Error::in_file(&p, e))?;
                Some((p, s))
            }
            _ => None,
        };

        let backing = match &header.backing_file {
            Some(name) => {
                let p = resolve(dir, name, "backing file")?;
                let format = match header.backing_format.as_deref() {
                    Some(b"qcow2") => "qcow2",
                    Some(b"raw") => "raw",
                    Some(other) => {
                        return Err(Error::unsupported(format!(
                            "backing file format {:?} (only raw and qcow2)",
                            String::from_utf8_lossy(other)
                        )))
                    }
                    None => {
                        if probe_file(&p).map_err(|e| Error::in_file(&p, e))? {
                            "qcow2"
                        } else {
                            "raw"
                        }
                    }
                };
                let mut chain = vec![(p.clone(), format)];
                let disk: Box<dyn Disk> = if format == "qcow2" {
                    let q = Self::open_in_chain(&p, seen).map_err(|e| Error::in_file(&p, e))?;
                    chain.extend(q.chain.iter().cloned());
                    Box::new(q)
                } else {
                    Box::new(Raw::open(&p).map_err(|e| Error::in_file(&p, e))?)
                };
                Some(Backing {
                    chain,
                    path: p,
                    disk,
                })
            }
            None => None,
        };
        Self::assemble(path.to_path_buf(), header, store, data, backing)
    }

    fn assemble(
        path: PathBuf,
        header: Header,
        store: Store,
        data: Option<(PathBuf, Store)>,
        backing: Option<Backing>,
    ) -> Result<Self> {
        let l1 = read_l1(&header, store.bytes())?;
        let mut warnings = Vec::new();
        if header.dirty() {
            warnings.push(
                "the qcow2 dirty bit is set (the image was not closed cleanly); refcounts are not used for reading, so the data is read as the tables describe it".into(),
            );
        }
        let cache = ClusterCache::new(header.cluster_size(), CACHE_BYTES);
        let chain = backing
            .as_ref()
            .map(|b| b.chain.clone())
            .unwrap_or_default();
        Ok(Qcow2 {
            chain,
            path,
            header,
            store,
            data,
            l1,
            backing,
            cache,
            warnings,
        })
    }

    /// The file guest data clusters live in.
    fn data_store(&self) -> &Store {
        match &self.data {
            Some((_, s)) => s,
            None => &self.store,
        }
    }

    /// Walk `offset..end` (inside the disk) as runs of one state, merged where
    /// they continue each other. `f` returns `false` to stop early.
    fn walk(&self, offset: u64, end: u64, f: &mut dyn FnMut(Piece) -> Result<bool>) -> Result<()> {
        let h = &self.header;
        let cb = h.cluster_bits;
        let cs = h.cluster_size();
        let l2_bits = h.l2_bits();
        let span_bits = cb + l2_bits;
        let mut pending: Option<Piece> = None;
        let mut emit = |p: Piece| -> Result<bool> {
            if let Some(q) = pending.as_mut() {
                if q.try_extend(&p) {
                    return Ok(true);
                }
                let done = *q;
                pending = Some(p);
                return f(done);
            }
            pending = Some(p);
            Ok(true)
        };
        let mut pos = offset;
        while pos < end {
            let l1_index = pos >> span_bits;
            let l2_table = usize::try_from(l1_index)
                .ok()
                .and_then(|i| self.l1.get(i).copied())
                .unwrap_or(0);
            if l2_table == 0 {
                let next = ((l1_index + 1) << span_bits).min(end);
                if !emit(Piece {
                    off: pos,
                    len: next - pos,
                    state: State::Unallocated,
                })? {
                    return Ok(());
                }
                pos = next;
                continue;
            }
            let cluster_start = pos & !(cs - 1);
            let cluster_end = (cluster_start + cs).min(end);
            let l2_index = (pos >> cb) & ((1 << l2_bits) - 1);
            let entry_pos = l2_table + l2_index * h.l2_entry_size();
            let entry = header::be64(self.store.bytes(), entry_pos as usize);
            if h.extended_l2() && entry & L2_COMPRESSED == 0 {
                let bitmap = header::be64(self.store.bytes(), entry_pos as usize + 8);
                let sc = cs / 32;
                // Only allocated subclusters need to exist in the file: qemu
                // leaves the file ending inside a cluster whose tail is unused.
                let alloc = bitmap & 0xffff_ffff;
                let used = if alloc == 0 {
                    0
                } else {
                    (32 - u64::from(alloc.leading_zeros() - 32)) * sc
                };
                let host = self.standard_host(entry, entry_pos, cluster_start, used)?;
                if bitmap & 0xffff_ffff & (bitmap >> 32) != 0 {
                    return Err(Error::corrupt(
                        "qcow2 L2 table",
                        Location::Byte(entry_pos),
                        format!("subcluster bitmap {bitmap:#018x} marks a subcluster both allocated and zero"),
                    ));
                }
                if host.is_none() && bitmap & 0xffff_ffff != 0 {
                    return Err(Error::corrupt(
                        "qcow2 L2 table",
                        Location::Byte(entry_pos),
                        "subclusters allocated in an unallocated cluster",
                    ));
                }
                while pos < cluster_end {
                    let i = (pos - cluster_start) / sc;
                    let sc_end = (cluster_start + (i + 1) * sc).min(cluster_end);
                    let state = if bitmap >> i & 1 != 0 {
                        // `host` is Some: checked above.
                        State::Data {
                            host: host.unwrap_or(0) + (pos - cluster_start),
                        }
                    } else if bitmap >> (32 + i) & 1 != 0 {
                        State::Zero
                    } else {
                        State::Unallocated
                    };
                    if !emit(Piece {
                        off: pos,
                        len: sc_end - pos,
                        state,
                    })? {
                        return Ok(());
                    }
                    pos = sc_end;
                }
                continue;
            }
            let state = if entry & L2_COMPRESSED != 0 {
                self.compressed(entry, entry_pos, cluster_start)?
            } else if h.version >= 3 && !h.extended_l2() && entry & L2_ZERO != 0 {
                State::Zero
            } else {
                match self.standard_host(entry, entry_pos, cluster_start, cs)? {
                    Some(host) => State::Data {
                        host: host + (pos - cluster_start),
                    },
                    None => State::Unallocated,
                }
            };
            if !emit(Piece {
                off: pos,
                len: cluster_end - pos,
                state,
            })? {
                return Ok(());
            }
            pos = cluster_end;
        }
        if let Some(p) = pending {
            f(p)?;
        }
        Ok(())
    }

    /// The host offset of a standard cluster, or `None` when it is unallocated;
    /// checked for alignment, and its first `used` bytes against the data file's
    /// length.
    fn standard_host(
        &self,
        entry: u64,
        entry_pos: u64,
        cluster_start: u64,
        used: u64,
    ) -> Result<Option<u64>> {
        let h = &self.header;
        let host = entry & OFFSET_MASK;
        if host == 0 && !(self.data.is_some() && entry & L2_COPIED != 0) {
            return Ok(None);
        }
        let cs = h.cluster_size();
        if !host.is_multiple_of(cs) {
            return Err(Error::corrupt(
                "qcow2 L2 table",
                Location::Byte(entry_pos),
                format!("data cluster offset {host:#x} is not aligned to the cluster size"),
            ));
        }
        // Only the part of the cluster inside the virtual disk must exist.
        let needed = used.min(h.size - cluster_start);
        let file_len = self.data_store().len();
        if host + needed > file_len {
            return Err(Error::corrupt(
                "qcow2 L2 table",
                Location::Byte(entry_pos),
                format!(
                    "data cluster at {host:#x} passes the end of the {file_len}-byte {}",
                    if self.data.is_some() {
                        "data file"
                    } else {
                        "file"
                    }
                ),
            ));
        }
        Ok(Some(host))
    }

    /// Decode a compressed cluster descriptor and check its range.
    fn compressed(&self, entry: u64, entry_pos: u64, cluster_start: u64) -> Result<State> {
        let cb = self.header.cluster_bits;
        if self.data.is_some() {
            return Err(Error::corrupt(
                "qcow2 L2 table",
                Location::Byte(entry_pos),
                "compressed cluster in an image with an external data file",
            ));
        }
        let x = 62 - (cb - 8);
        let host = entry & ((1u64 << x) - 1);
        let sectors = ((entry >> x) & ((1u64 << (cb - 8)) - 1)) + 1;
        let len = sectors * 512 - (host & 511);
        let file_len = self.store.len();
        // The sector count rounds the stream up, so the last compressed cluster
        // of a file may claim up to 511 bytes past its end; more than that, or a
        // start past the end, is damage.
        if host >= file_len || host + len > file_len.next_multiple_of(512) {
            return Err(Error::corrupt(
                "qcow2 L2 table",
                Location::Byte(entry_pos),
                format!(
                    "compressed cluster at {host:#x} ({len} bytes) passes the end of the {file_len}-byte file"
                ),
            ));
        }
        Ok(State::Compressed {
            host,
            len: len.min(file_len - host),
            cluster: cluster_start,
        })
    }

    /// Inflate the cluster whose compressed bytes are at `host..host + len`.
    fn inflate_into(
        &self,
        host: u64,
        len: u64,
        out: &mut [u8],
        bulk: bool,
        span: Option<(u64, &[u8])>,
    ) -> Result<()> {
        let kind = self.header.compression_type;
        let fail =
            |detail| Error::corrupt("qcow2 compressed cluster", Location::Byte(host), detail);
        if let Some((lo, bytes)) = span {
            let input = usize::try_from(host.wrapping_sub(lo))
                .ok()
                .and_then(|s| bytes.get(s..s.checked_add(usize::try_from(len).ok()?)?));
            if let Some(input) = input {
                return compress::inflate(kind, input, out).map_err(fail);
            }
        }
        // `len` is at most two clusters (the sector count's width is bounded by
        // cluster_bits), so it fits in memory and in usize.
        let len = usize::try_from(len).map_err(|_| {
            Error::corrupt("qcow2 compressed cluster", Location::Byte(host), "too long")
        })?;
        self.store
            .with_range(host, len, bulk, |input| compress::inflate(kind, input, out))?
            .map_err(fail)
    }

    /// Read one piece. `span`, when given, holds the file's bytes from its start
    /// offset on, fetched ahead for the compressed clusters.
    fn read_piece(
        &self,
        p: &Piece,
        out: &mut [u8],
        bulk: bool,
        span: Option<(u64, &[u8])>,
    ) -> Result<()> {
        match p.state {
            State::Data { host } => self.data_store().read_exact_at(host, out, bulk),
            State::Zero => {
                out.fill(0);
                Ok(())
            }
            State::Unallocated => self.read_backing(p.off, out),
            State::Compressed { host, len, cluster } => {
                let cs = self.header.cluster_size();
                if p.off == cluster && out.len() as u64 == cs {
                    // A whole cluster: inflate straight into the caller's buffer,
                    // nothing is cached (a sequential pass never comes back).
                    return self.inflate_into(host, len, out, bulk, span);
                }
                let whole = match self.cache.get(host) {
                    Some(c) => c,
                    None => {
                        let mut v = vec![0u8; cs as usize];
                        self.inflate_into(host, len, &mut v, bulk, span)?;
                        let v: Arc<[u8]> = Arc::from(v);
                        self.cache.put(host, v.clone());
                        v
                    }
                };
                let start = (p.off - cluster) as usize;
                out.copy_from_slice(&whole[start..start + out.len()]);
                Ok(())
            }
        }
    }

    /// Read the host range holding every compressed cluster of `pieces` into
    /// `buf` when that range is compact (at most twice the guest bytes), and
    /// return its start.
    fn fetch_compressed_span(&self, pieces: &[Piece], buf: &mut Vec<u8>) -> Result<Option<u64>> {
        let (mut lo, mut hi) = (u64::MAX, 0u64);
        for p in pieces {
            if let State::Compressed { host, len, .. } = p.state {
                lo = lo.min(host);
                hi = hi.max(host + len);
            }
        }
        let guest: u64 = pieces.iter().map(|p| p.len).sum();
        if lo >= hi || hi - lo > 2 * guest || !matches!(self.store, Store::File { .. }) {
            return Ok(None);
        }
        // `hi - lo` is at most twice a read the caller already holds in memory.
        buf.resize((hi - lo) as usize, 0);
        self.store.read_exact_at(lo, buf, true)?;
        Ok(Some(lo))
    }

    fn read_backing(&self, off: u64, out: &mut [u8]) -> Result<()> {
        let Some(b) = &self.backing else {
            out.fill(0);
            return Ok(());
        };
        let blen = b.disk.len();
        let inside = blen.saturating_sub(off).min(out.len() as u64) as usize;
        let (head, tail) = out.split_at_mut(inside);
        if !head.is_empty() {
            b.disk
                .read_at(off, head)
                .map_err(|e| Error::in_file(&b.path, e))?;
        }
        tail.fill(0);
        Ok(())
    }

    /// The backing chain below this image, top first, as (path, format).
    pub fn chain(&self) -> &[(PathBuf, &'static str)] {
        &self.chain
    }
}

/// Read and check the active L1 table: every L2 table it names must be cluster
/// aligned and lie inside the file.
fn read_l1(h: &Header, bytes: &[u8]) -> Result<Vec<u64>> {
    let cs = h.cluster_size();
    let span = cs << h.l2_bits();
    let needed = h.size.div_ceil(span); // <= l1_size, checked by Header::parse
    let file_len = bytes.len() as u64;
    let mut l1 = Vec::with_capacity(needed as usize);
    for i in 0..needed {
        let pos = h.l1_table_offset + i * 8;
        let l2 = header::be64(bytes, pos as usize) & OFFSET_MASK;
        if l2 != 0 {
            if !l2.is_multiple_of(cs) {
                return Err(Error::corrupt(
                    "qcow2 L1 table",
                    Location::Byte(pos),
                    format!("L2 table offset {l2:#x} is not aligned to the cluster size"),
                ));
            }
            if l2.checked_add(cs).is_none_or(|e| e > file_len) {
                return Err(Error::corrupt(
                    "qcow2 L1 table",
                    Location::Byte(pos),
                    format!("L2 table at {l2:#x} passes the end of the {file_len}-byte file"),
                ));
            }
        }
        l1.push(l2);
    }
    Ok(l1)
}

/// Resolve a file name stored in an image against the image's folder.
fn resolve(dir: &Path, name: &[u8], what: &str) -> Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    if name.is_empty() || name.contains(&0) {
        return Err(Error::corrupt(
            "qcow2 header",
            Location::Byte(8),
            format!("{what} name is empty or holds a NUL byte"),
        ));
    }
    let s = String::from_utf8_lossy(name);
    if s.starts_with("json:") || s.contains("://") {
        return Err(Error::unsupported(format!(
            "{what} given as a protocol or JSON description ({s})"
        )));
    }
    let p = Path::new(std::ffi::OsStr::from_bytes(name));
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    })
}

impl Disk for Qcow2 {
    fn files(&self) -> Vec<(PathBuf, &'static str)> {
        let mut out = vec![(self.path.clone(), "image")];
        if let Some((p, _)) = &self.data {
            out.push((p.clone(), "external data file"));
        }
        if let Some(b) = &self.backing {
            // Everything the backing image reads is a backing file to this one.
            out.extend(b.disk.files().into_iter().map(|(p, _)| (p, "backing file")));
        }
        out
    }

    fn len(&self) -> u64 {
        self.header.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range("qcow2 image", self.len(), offset, buf.len() as u64)?;
        let end = offset + buf.len() as u64;
        let bulk = buf.len() >= BULK_READ;
        if !bulk {
            return self.walk(offset, end, &mut |p| {
                let start = (p.off - offset) as usize;
                self.read_piece(&p, &mut buf[start..start + p.len as usize], false, None)?;
                Ok(true)
            });
        }
        let mut pieces = Vec::new();
        self.walk(offset, end, &mut |p| {
            pieces.push(p);
            Ok(true)
        })?;
        // The compressed bytes of a bulk read usually lie together in the file
        // (qemu writes them in guest order): fetch them with one large read.
        // Parallel readers of one file defeat the kernel's readahead, so one
        // small read per cluster would mean one disk request per cluster on a
        // cold cache.
        thread_local! {
            static SPAN: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        // Taken out of the thread-local while in use: a backing file's read on
        // this thread finds it empty and uses its own.
        let mut span_buf = SPAN.with(|s| std::mem::take(&mut *s.borrow_mut()));
        let span = self.fetch_compressed_span(&pieces, &mut span_buf)?;
        let result = pieces.iter().try_for_each(|p| {
            let start = (p.off - offset) as usize;
            self.read_piece(
                p,
                &mut buf[start..start + p.len as usize],
                true,
                span.map(|lo| (lo, &span_buf[..])),
            )
        });
        SPAN.with(|s| *s.borrow_mut() = span_buf);
        result
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let end = offset.saturating_add(len).min(self.len());
        let mut out: Vec<Extent> = Vec::new();
        if offset >= end {
            return Ok(out);
        }
        let mut push = |e: Extent| {
            if e.len == 0 {
                return;
            }
            if let Some(last) = out.last_mut() {
                if last.alloc == e.alloc && last.end() == e.offset {
                    last.len += e.len;
                    return;
                }
            }
            out.push(e);
        };
        self.walk(offset, end, &mut |p| {
            let alloc = match p.state {
                State::Data { .. } | State::Compressed { .. } => Alloc::Data,
                State::Zero => Alloc::Zero,
                State::Unallocated => {
                    if let Some(b) = &self.backing {
                        let blen = b.disk.len();
                        let inside = blen.saturating_sub(p.off).min(p.len);
                        if inside > 0 {
                            for e in b
                                .disk
                                .map(p.off, inside)
                                .map_err(|e| Error::in_file(&b.path, e))?
                            {
                                push(e);
                            }
                        }
                        push(Extent {
                            offset: p.off + inside,
                            len: p.len - inside,
                            alloc: Alloc::Unallocated,
                        });
                        return Ok(true);
                    }
                    Alloc::Unallocated
                }
            };
            push(Extent {
                offset: p.off,
                len: p.len,
                alloc,
            });
            Ok(true)
        })?;
        Ok(out)
    }

    fn direct(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        if end > self.len() || len == 0 {
            return None;
        }
        let mut found: Option<Piece> = None;
        let mut whole = false;
        self.walk(offset, end, &mut |p| {
            whole = p.off == offset && p.len == len;
            found = Some(p);
            Ok(false)
        })
        .ok()?;
        let p = found.filter(|_| whole)?;
        match p.state {
            State::Data { host } => {
                let s = usize::try_from(host).ok()?;
                self.data_store()
                    .bytes()
                    .get(s..s.checked_add(usize::try_from(len).ok()?)?)
            }
            State::Unallocated => {
                let b = self.backing.as_ref()?;
                if end <= b.disk.len() {
                    b.disk.direct(offset, len)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    fn info(&self) -> DiskInfo {
        let h = &self.header;
        let mut details = vec![
            ("qcow2 version".to_string(), h.version.to_string()),
            ("cluster size".into(), h.cluster_size().to_string()),
            ("compression".into(), h.compression_type.name().into()),
            ("extended l2".into(), h.extended_l2().to_string()),
            ("snapshots".into(), h.nb_snapshots.to_string()),
        ];
        let mut allocated = self.store.allocated();
        if let Some((p, s)) = &self.data {
            details.push(("data file".into(), p.display().to_string()));
            if h.data_file_raw() {
                details.push(("data file raw".into(), "true".into()));
            }
            allocated += s.allocated();
        }
        let mut warnings = self.warnings.clone();
        if let Some(b) = &self.backing {
            let binfo = b.disk.info();
            allocated += binfo.allocated_size;
            let chain: Vec<String> = self
                .chain
                .iter()
                .map(|(p, f)| format!("{} ({f})", p.display()))
                .collect();
            details.push(("backing chain".into(), chain.join(" -> ")));
            for w in binfo.warnings {
                warnings.push(format!("{}: {w}", b.path.display()));
            }
        }
        DiskInfo {
            format: "qcow2".into(),
            virtual_size: h.size,
            allocated_size: allocated,
            details,
            warnings,
        }
    }
}
