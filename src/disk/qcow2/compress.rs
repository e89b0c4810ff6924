//! Compressed QCOW2 clusters: inflating one cluster (raw deflate or zstd) and a
//! small bounded cache of inflated clusters for random small reads. It knows
//! nothing of tables; callers hand it the compressed bytes and the cluster size.
//!
//! libdeflate is used for deflate: measured on qemu-compressed clusters it
//! inflated faster than zlib-ng, zlib-rs and the system zlib (see the module's
//! history for figures). Decompressor state is per thread, so parallel callers
//! never contend.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use super::header::Compression;

thread_local! {
    static DEFLATE: RefCell<libdeflater::Decompressor> =
        RefCell::new(libdeflater::Decompressor::new());
    static ZSTD: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Inflate `input` into `out`, which must be filled exactly. `input` may run past
/// the end of the compressed stream (the L2 entry counts whole sectors); the
/// trailing bytes are ignored. Returns a short description of the failure.
pub fn inflate(kind: Compression, input: &[u8], out: &mut [u8]) -> Result<(), String> {
    match kind {
        Compression::Deflate => DEFLATE.with(|d| {
            let mut d = d.borrow_mut();
            // libdeflate stops at the end of the final block and ignores what
            // follows, which is what the sector padding needs.
            match d.deflate_decompress(input, out) {
                Ok(n) if n == out.len() => Ok(()),
                Ok(n) => Err(format!(
                    "deflate stream gives {n} bytes, the cluster holds {}",
                    out.len()
                )),
                Err(e) => Err(format!("deflate stream does not inflate: {e:?}")),
            }
        }),
        Compression::Zstd => ZSTD.with(|z| {
            let mut z = z.borrow_mut();
            if z.is_none() {
                *z = Some(
                    zstd::bulk::Decompressor::new()
                        .map_err(|e| format!("cannot create a zstd context: {e}"))?,
                );
            }
            let Some(d) = z.as_mut() else {
                return Err("no zstd context".into());
            };
            // The frame is followed by sector padding (or the next cluster's
            // bytes); cut it to the first frame so the padding is not taken for
            // a second frame.
            let frame = zstd::zstd_safe::find_frame_compressed_size(input)
                .map_err(|e| format!("zstd frame: {}", zstd::zstd_safe::get_error_name(e)))?;
            let frame = input
                .get(..frame)
                .ok_or("zstd frame longer than its range")?;
            match d.decompress_to_buffer(frame, out) {
                Ok(n) if n == out.len() => Ok(()),
                Ok(n) => Err(format!(
                    "zstd frame gives {n} bytes, the cluster holds {}",
                    out.len()
                )),
                Err(e) => Err(format!("zstd frame does not decompress: {e}")),
            }
        }),
    }
}

/// A bounded cache of inflated clusters, keyed by the compressed data's host
/// offset. Sharded so parallel readers rarely meet on a lock; each shard keeps its
/// few most recent clusters.
/// One shard: (host offset, inflated cluster), least recently used first.
type Shard = Mutex<Vec<(u64, Arc<[u8]>)>>;

pub struct ClusterCache {
    shards: Vec<Shard>,
    per_shard: usize,
}

const SHARDS: usize = 8;

impl ClusterCache {
    /// A cache holding at most about `budget` bytes of `cluster_size` clusters
    /// (at least one per shard).
    pub fn new(cluster_size: u64, budget: u64) -> Self {
        let total = (budget / cluster_size.max(1)).max(SHARDS as u64) as usize;
        let per_shard = total.div_ceil(SHARDS).clamp(1, 64);
        ClusterCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
            per_shard,
        }
    }

    fn shard(&self, key: u64) -> &Shard {
        // Fibonacci hashing spreads neighbouring offsets over the shards.
        let h = key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 61;
        &self.shards[(h as usize) % SHARDS]
    }

    pub fn get(&self, key: u64) -> Option<Arc<[u8]>> {
        let mut s = self.shard(key).lock().ok()?;
        let i = s.iter().position(|(k, _)| *k == key)?;
        // Move to the back: the back is the most recently used.
        let e = s.remove(i);
        let v = e.1.clone();
        s.push(e);
        Some(v)
    }

    pub fn put(&self, key: u64, value: Arc<[u8]>) {
        if let Ok(mut s) = self.shard(key).lock() {
            if s.iter().any(|(k, _)| *k == key) {
                return;
            }
            if s.len() >= self.per_shard {
                s.remove(0);
            }
            s.push((key, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deflate_ignores_trailing_padding_and_checks_length() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
        let mut buf = vec![0u8; c.deflate_compress_bound(data.len())];
        let n = c.deflate_compress(&data, &mut buf).unwrap();
        buf.truncate(n);
        buf.extend_from_slice(&[0u8; 300]); // sector padding
        let mut out = vec![0u8; 4096];
        inflate(Compression::Deflate, &buf, &mut out).unwrap();
        assert_eq!(out, data);
        let mut big = vec![0u8; 8192];
        assert!(inflate(Compression::Deflate, &buf, &mut big).is_err());
        assert!(inflate(Compression::Deflate, &[0xff; 64], &mut out).is_err());
    }

    #[test]
    fn zstd_ignores_trailing_padding() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i / 7) as u8).collect();
        let mut buf = zstd::bulk::compress(&data, 3).unwrap();
        buf.extend_from_slice(&[0u8; 511]);
        let mut out = vec![0u8; 65536];
        inflate(Compression::Zstd, &buf, &mut out).unwrap();
        assert_eq!(out, data);
        assert!(inflate(Compression::Zstd, &buf[..10], &mut out).is_err());
    }

    #[test]
    fn cache_is_bounded() {
        let c = ClusterCache::new(65536, 1 << 20);
        for k in 0..1000u64 {
            c.put(k * 65536, Arc::from(vec![k as u8; 4]));
        }
        let held: usize = c.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(held <= SHARDS * c.per_shard);
        assert_eq!(c.get(999 * 65536).unwrap()[0], (999 % 256) as u8);
    }
}
