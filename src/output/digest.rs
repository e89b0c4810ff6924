//! The whole-output MD5 and SHA-512 that an image service stores (Glance keeps MD5 as
//! `checksum` and SHA-512 as `os_hash_value`), computed while the output is written.
//!
//! Both are sequential (Merkle-Damgard) hashes: unlike BLAKE3 they cannot be cut into
//! pieces hashed apart and combined, so every byte of the output, holes included as
//! zeros, must pass through one hasher in order. The writer produces segments out of
//! order on many threads; [`Digester`] takes them in any order, puts them back in order
//! and hashes them on two threads of its own (one per algorithm), so the writers never
//! wait for a hash except when they get more than [`WINDOW`] segments ahead of it.
//!
//! Must not: read or write the output (callers hand it the bytes), or allocate beyond
//! its window: memory is bounded by [`WINDOW`] segments whatever the output's size.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use md5::Md5;
use sha2::Sha512;

/// How many segments writers may run ahead of the hashers (and how many the hashers
/// hold at most): 16 segments of 4 MiB.
pub const WINDOW: u64 = 16;

/// The two digests of a whole output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digests {
    pub md5: [u8; 16],
    pub sha512: [u8; 64],
}

impl Digests {
    pub fn md5_hex(&self) -> String {
        hex(&self.md5)
    }

    pub fn sha512_hex(&self) -> String {
        hex(&self.sha512)
    }
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// One segment's bytes: data as written (gaps filled with zeros), or a run of zeros
/// (a segment no write touches).
pub enum Chunk {
    Data(Vec<u8>),
    Zeros(u64),
}

static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

fn feed(h: &mut impl md5::Digest, c: &Chunk) {
    match c {
        Chunk::Data(b) => h.update(b),
        Chunk::Zeros(n) => {
            let mut left = *n;
            while left > 0 {
                let k = left.min(ZEROS.len() as u64) as usize;
                h.update(&ZEROS[..k]);
                left -= k as u64;
            }
        }
    }
}

/// Where the hashers are: the next segment they wait for, and the early ones held.
struct Order {
    next: u64,
    held: BTreeMap<u64, Chunk>,
    /// Set when a hasher thread is gone (it panicked): submissions stop waiting.
    broken: bool,
}

/// Takes numbered segments from any thread, in any order, and hashes them in order.
pub struct Digester {
    order: Arc<(Mutex<Order>, Condvar)>,
    to_md5: Option<SyncSender<Arc<Chunk>>>,
    md5: Option<JoinHandle<[u8; 16]>>,
    sha: Option<JoinHandle<[u8; 64]>>,
}

fn hasher_thread<H, const N: usize>(
    name: &str,
    rx: Receiver<Arc<Chunk>>,
    mut next: Option<SyncSender<Arc<Chunk>>>,
) -> std::io::Result<JoinHandle<[u8; N]>>
where
    H: md5::Digest + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let mut h = H::new();
            for c in rx {
                feed(&mut h, &c);
                if let Some(tx) = &next {
                    if tx.send(c).is_err() {
                        next = None;
                    }
                }
            }
            drop(next);
            let mut out = [0u8; N];
            out.copy_from_slice(&h.finalize());
            out
        })
}

impl Digester {
    /// Starts the two hasher threads.
    pub fn start() -> std::io::Result<Digester> {
        let depth = WINDOW as usize;
        let (to_sha, sha_rx) = sync_channel::<Arc<Chunk>>(depth);
        let (to_md5, md5_rx) = sync_channel::<Arc<Chunk>>(depth);
        let sha = hasher_thread::<Sha512, 64>("imgsan-sha512", sha_rx, None)?;
        let md5 = hasher_thread::<Md5, 16>("imgsan-md5", md5_rx, Some(to_sha))?;
        Ok(Digester {
            order: Arc::new((
                Mutex::new(Order {
                    next: 0,
                    held: BTreeMap::new(),
                    broken: false,
                }),
                Condvar::new(),
            )),
            to_md5: Some(to_md5),
            md5: Some(md5),
            sha: Some(sha),
        })
    }

    /// Waits until segment `index` is within [`WINDOW`] of the hashers. A writer calls
    /// it before it builds the segment, so at most a window of segments is in memory.
    /// Writers must take segment numbers in increasing order (a shared counter): the
    /// lowest segment not yet submitted never waits, so this cannot deadlock.
    pub fn wait_turn(&self, index: u64) {
        let (m, cv) = &*self.order;
        let mut o = m.lock().unwrap_or_else(|e| e.into_inner());
        while !o.broken && index >= o.next + WINDOW {
            o = cv.wait(o).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Hands over segment `index`. Segments must be numbered 0, 1, 2, ... with no gap
    /// when all are in.
    pub fn submit(&self, index: u64, chunk: Chunk) {
        let (m, cv) = &*self.order;
        let mut o = m.lock().unwrap_or_else(|e| e.into_inner());
        if index < o.next || o.broken {
            return;
        }
        o.held.insert(index, chunk);
        // Pass on every segment now in order. Sending waits when the hashers' queue
        // is full; the lock is held meanwhile, which keeps the order.
        while let Some(c) = {
            let n = o.next;
            o.held.remove(&n)
        } {
            let sent = self
                .to_md5
                .as_ref()
                .is_some_and(|tx| tx.send(Arc::new(c)).is_ok());
            if !sent {
                o.broken = true;
                o.held.clear();
                break;
            }
            o.next += 1;
        }
        drop(o);
        cv.notify_all();
    }

    /// Gives up: waiting writers go on, later submissions are dropped, and
    /// [`Digester::finish`] gives no digests.
    pub fn abandon(&self) {
        let (m, cv) = &*self.order;
        let mut o = m.lock().unwrap_or_else(|e| e.into_inner());
        o.broken = true;
        o.held.clear();
        drop(o);
        cv.notify_all();
    }

    /// Segments hashed or queued so far.
    pub fn submitted(&self) -> u64 {
        let (m, _) = &*self.order;
        m.lock().unwrap_or_else(|e| e.into_inner()).next
    }

    /// Waits for the hashers and gives the digests; `None` if a hasher thread died or
    /// segments are missing.
    pub fn finish(mut self, segments: u64) -> Option<Digests> {
        let complete = {
            let (m, _) = &*self.order;
            let o = m.lock().unwrap_or_else(|e| e.into_inner());
            !o.broken && o.next == segments && o.held.is_empty()
        };
        drop(self.to_md5.take());
        let md5 = self.md5.take()?.join().ok()?;
        let sha512 = self.sha.take()?.join().ok()?;
        complete.then_some(Digests { md5, sha512 })
    }
}

impl Drop for Digester {
    fn drop(&mut self) {
        // An abandoned run: let the threads end.
        drop(self.to_md5.take());
        if let Some(h) = self.md5.take() {
            let _ = h.join();
        }
        if let Some(h) = self.sha.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest as _;

    #[test]
    fn out_of_order_segments_hash_as_the_whole_input() {
        let mut whole = Vec::new();
        let d = Digester::start().unwrap();
        let mut chunks: Vec<(u64, Chunk)> = Vec::new();
        for i in 0..40u64 {
            if i % 3 == 0 {
                whole.extend(std::iter::repeat_n(0u8, 5000));
                chunks.push((i, Chunk::Zeros(5000)));
            } else {
                let b: Vec<u8> = (0..7000u32).map(|j| (j as u64 * 31 + i) as u8).collect();
                whole.extend_from_slice(&b);
                chunks.push((i, Chunk::Data(b)));
            }
        }
        // Submit within the window but shuffled: pairs swapped.
        let mut it = chunks.into_iter();
        while let Some(a) = it.next() {
            match it.next() {
                Some(b) => {
                    d.wait_turn(b.0);
                    d.submit(b.0, b.1);
                    d.submit(a.0, a.1);
                }
                None => d.submit(a.0, a.1),
            }
        }
        let got = d.finish(40).unwrap();
        assert_eq!(got.md5.as_slice(), Md5::digest(&whole).as_slice());
        assert_eq!(got.sha512.as_slice(), Sha512::digest(&whole).as_slice());
        assert_eq!(got.md5_hex().len(), 32);
    }

    #[test]
    fn a_missing_segment_gives_no_digest() {
        let d = Digester::start().unwrap();
        d.submit(0, Chunk::Zeros(10));
        d.submit(2, Chunk::Zeros(10));
        assert!(d.finish(3).is_none());
    }
}
