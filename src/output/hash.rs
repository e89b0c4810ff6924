//! BLAKE3 hashes computed while a plan is being written, in parallel and in one
//! pass: of the whole output, and of every file whose data the plan copies.
//!
//! BLAKE3 is a tree hash. A run of input that starts at a multiple of
//! [`SEGMENT`] (a power of two of 1 KiB chunks) and is at most that long is a
//! complete subtree, whose chaining value can be computed on its own, in any
//! order, on any thread; [`combine`] then folds the values of consecutive
//! segments into the root hash exactly as a sequential hasher would. The writer
//! cuts its work at segment boundaries (of the output, and of each file's logical
//! bytes), so every segment is hashed by the job that has its bytes in hand.
//!
//! Must not: read anything (callers feed bytes), or decide what is hashed.

use blake3::hazmat::{left_subtree_len, merge_subtrees_non_root, merge_subtrees_root};
use blake3::hazmat::{ChainingValue, HasherExt, Mode};

/// Work unit and subtree size: 4 MiB, 4096 BLAKE3 chunks.
pub const SEGMENT: u64 = 4 << 20;

static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// Hashes one segment of an input `total` bytes long: segment `index` covers
/// `[index * SEGMENT, min((index + 1) * SEGMENT, total))`. Bytes are fed in
/// order; gaps are zeros.
pub struct SegmentHasher {
    hasher: blake3::Hasher,
    /// The input offset the next byte has.
    pos: u64,
    end: u64,
    whole: bool,
}

/// A finished segment: the whole input's hash when the input is one segment,
/// else the segment's chaining value.
#[derive(Debug, Clone, Copy)]
pub enum Part {
    Whole(blake3::Hash),
    Subtree(ChainingValue),
}

impl SegmentHasher {
    pub fn new(index: u64, total: u64) -> Self {
        let start = index * SEGMENT;
        let mut hasher = blake3::Hasher::new();
        let whole = total <= SEGMENT;
        if !whole {
            hasher.set_input_offset(start);
        }
        SegmentHasher {
            hasher,
            pos: start,
            end: (start + SEGMENT).min(total),
            whole,
        }
    }

    /// Feed `bytes` found at input offset `at` (not behind what was fed; the gap
    /// before it is zeros). Bytes past the segment's end are ignored.
    pub fn feed(&mut self, at: u64, bytes: &[u8]) {
        self.zeros_to(at.min(self.end));
        if at < self.pos || at >= self.end {
            return;
        }
        let n = (self.end - at).min(bytes.len() as u64) as usize;
        self.hasher.update(&bytes[..n]);
        self.pos = at + n as u64;
    }

    fn zeros_to(&mut self, to: u64) {
        while self.pos < to {
            let n = (to - self.pos).min(ZEROS.len() as u64) as usize;
            self.hasher.update(&ZEROS[..n]);
            self.pos += n as u64;
        }
    }

    /// Pad the rest of the segment with zeros and finish it.
    pub fn finish(mut self) -> Part {
        self.zeros_to(self.end);
        if self.whole {
            Part::Whole(self.hasher.finalize())
        } else {
            Part::Subtree(self.hasher.finalize_non_root())
        }
    }
}

/// The number of segments an input of `total` bytes has (at least one).
pub fn segments(total: u64) -> u64 {
    total.div_ceil(SEGMENT).max(1)
}

/// The root hash of an input of `total` bytes from its segments' parts, in
/// order. `None` when the parts do not fit the length (a caller bug).
pub fn combine(parts: &[Part], total: u64) -> Option<blake3::Hash> {
    if parts.len() as u64 != segments(total) {
        return None;
    }
    if let [Part::Whole(h)] = parts {
        return Some(*h);
    }
    let cvs: Option<Vec<ChainingValue>> = parts
        .iter()
        .map(|p| match p {
            Part::Subtree(cv) => Some(*cv),
            Part::Whole(_) => None,
        })
        .collect();
    let cvs = cvs?;
    let (l, r) = split(&cvs, total);
    Some(merge_subtrees_root(&l, &r, Mode::Hash))
}

/// The chaining values of the left and right subtrees of `cvs`' span.
fn split(cvs: &[ChainingValue], total: u64) -> (ChainingValue, ChainingValue) {
    let left_len = left_subtree_len(total);
    let left_n = (left_len / SEGMENT) as usize;
    (
        node(&cvs[..left_n], left_len),
        node(&cvs[left_n..], total - left_len),
    )
}

fn node(cvs: &[ChainingValue], len: u64) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let (l, r) = split(cvs, len);
    merge_subtrees_non_root(&l, &r, Mode::Hash)
}

/// The most hole bytes a file's hash may cost: hashing zeros has no shortcut
/// (each chunk's position enters its hash), and a hostile or merely huge sparse
/// file (i_size up to 16 TiB) would otherwise take hours. About 10 s of hashing.
pub const MAX_HASHED_HOLES: u64 = 64 << 30;

/// The hash of `total` zero bytes at no memory cost (sparse files); `None`
/// past [`MAX_HASHED_HOLES`].
pub fn zeros(total: u64) -> Option<blake3::Hash> {
    if total > MAX_HASHED_HOLES {
        return None;
    }
    let n = segments(total);
    let parts: Vec<Part> = (0..n)
        .map(|i| SegmentHasher::new(i, total).finish())
        .collect();
    combine(&parts, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_segments(data: &[u8], pieces: usize) -> blake3::Hash {
        let total = data.len() as u64;
        let parts: Vec<Part> = (0..segments(total))
            .map(|i| {
                let mut h = SegmentHasher::new(i, total);
                let s = (i * SEGMENT) as usize;
                let e = (s + SEGMENT as usize).min(data.len());
                // Feed in a few pieces, skipping zero runs to exercise the gaps.
                let step = ((e - s) / pieces.max(1)).max(1);
                let mut at = s;
                while at < e {
                    let t = (at + step).min(e);
                    if data[at..t].iter().any(|&b| b != 0) {
                        h.feed(at as u64, &data[at..t]);
                    }
                    at = t;
                }
                h.finish()
            })
            .collect();
        combine(&parts, total).unwrap()
    }

    #[test]
    fn segment_hashes_combine_to_the_sequential_hash() {
        let seg = SEGMENT as usize;
        for len in [
            0,
            1,
            1024,
            seg - 1,
            seg,
            seg + 1,
            2 * seg,
            3 * seg + 5,
            4 * seg,
            5 * seg + 4097,
        ] {
            let data: Vec<u8> = (0..len)
                .map(|i| {
                    if (i / 5000) % 3 == 0 {
                        0
                    } else {
                        (i % 251) as u8
                    }
                })
                .collect();
            assert_eq!(by_segments(&data, 7), blake3::hash(&data), "len {len}");
        }
    }

    #[test]
    fn zeros_hash_like_a_zero_buffer() {
        for len in [0u64, 10, SEGMENT, SEGMENT * 2 + 3] {
            assert_eq!(zeros(len), Some(blake3::hash(&vec![0u8; len as usize])));
        }
        assert_eq!(zeros(MAX_HASHED_HOLES + 1), None);
        {}
    }

    #[test]
    fn mismatched_parts_are_refused() {
        let p = SegmentHasher::new(0, 10).finish();
        assert!(combine(&[p, p], 10).is_none());
    }
}
