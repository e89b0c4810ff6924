//! The builder's block allocator: the set of used blocks of the filesystem being
//! built, kept as merged ranges (not a bitmap, so memory stays proportional to the
//! number of allocations, not to the volume size), with first-fit searches.
//!
//! It knows nothing of what the blocks hold. Every allocation the builder makes
//! goes through here, so the bitmaps and free counts written at the end are derived
//! from one source of truth and cannot disagree with the layout.

use std::collections::BTreeMap;

use crate::error::{Error, Location, Result};

/// Used blocks: `start -> end` (exclusive), non-overlapping, non-adjacent.
#[derive(Debug, Clone)]
pub struct Alloc {
    used: BTreeMap<u64, u64>,
    /// Blocks below this are never handed out (block 0 of a 1 KiB-block
    /// filesystem belongs to no group).
    first: u64,
    /// The filesystem's block count: nothing at or past it exists.
    end: u64,
}

impl Alloc {
    pub fn new(first: u64, end: u64) -> Self {
        Alloc {
            used: BTreeMap::new(),
            first,
            end,
        }
    }

    pub fn end(&self) -> u64 {
        self.end
    }

    /// The used range containing `b`, if any.
    fn containing(&self, b: u64) -> Option<(u64, u64)> {
        self.used
            .range(..=b)
            .next_back()
            .filter(|(_, &e)| e > b)
            .map(|(&s, &e)| (s, e))
    }

    /// The first used range starting after `b`.
    fn next_after(&self, b: u64) -> Option<(u64, u64)> {
        self.used.range(b + 1..).next().map(|(&s, &e)| (s, e))
    }

    /// Mark `start..start + len` used. Overlapping an existing allocation is a
    /// builder bug, reported as such.
    pub fn reserve(&mut self, start: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.end && start >= self.first)
            .ok_or_else(|| bug(start, "allocation outside the filesystem"))?;
        if self.containing(start).is_some() || self.next_after(start).is_some_and(|(s, _)| s < end)
        {
            return Err(bug(start, "allocation overlaps a used block"));
        }
        let mut new_start = start;
        let mut new_end = end;
        if let Some((&ps, &pe)) = self.used.range(..start).next_back() {
            if pe == start {
                new_start = ps;
                self.used.remove(&ps);
            }
        }
        if let Some(&ne) = self.used.get(&end) {
            new_end = ne;
            self.used.remove(&end);
        }
        self.used.insert(new_start, new_end);
        Ok(())
    }

    pub fn is_free(&self, start: u64, len: u64) -> bool {
        let Some(end) = start.checked_add(len) else {
            return false;
        };
        start >= self.first
            && end <= self.end
            && self.containing(start).is_none()
            && self.next_after(start).is_none_or(|(s, _)| s >= end)
    }

    /// libext2fs's `ext2fs_get_free_blocks2` with `finish > start`: the first
    /// block `b` in `start..finish` such that `b..b + num` is free (the run may pass
    /// `finish`, not the end of the filesystem).
    pub fn find(&self, start: u64, finish: u64, num: u64) -> Option<u64> {
        let mut b = start.max(self.first);
        while b < finish {
            if b.checked_add(num)? > self.end {
                return None;
            }
            if let Some((_, e)) = self.containing(b) {
                b = e;
                continue;
            }
            match self.next_after(b) {
                Some((s, e)) if s < b + num => b = e,
                _ => return Some(b),
            }
        }
        None
    }

    /// The first free block at or after `goal`, and how many free blocks follow it
    /// (itself included).
    pub fn next_free(&self, goal: u64) -> Option<(u64, u64)> {
        let mut b = goal.max(self.first);
        if let Some((_, e)) = self.containing(b) {
            b = e;
        }
        if b >= self.end {
            return None;
        }
        let limit = self.next_after(b).map_or(self.end, |(s, _)| s);
        Some((b, limit - b))
    }

    /// Allocate up to `want` contiguous blocks at the first free block at or after
    /// `goal`, wrapping to the start of the filesystem when nothing is free past
    /// it. Returns `(start, len)` with `1 <= len <= want`, or `None` when the
    /// filesystem is full.
    pub fn alloc(&mut self, goal: u64, want: u64) -> Option<(u64, u64)> {
        let (s, avail) = self
            .next_free(goal)
            .or_else(|| self.next_free(self.first))?;
        let len = avail.min(want);
        self.reserve(s, len).ok()?;
        Some((s, len))
    }

    /// Number of used blocks in `start..end`.
    pub fn used_in(&self, start: u64, end: u64) -> u64 {
        self.ranges_in(start, end).map(|(s, e)| e - s).sum()
    }

    /// Used ranges clipped to `start..end`, in order.
    pub fn ranges_in(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let first = self
            .used
            .range(..=start)
            .next_back()
            .filter(|(_, &e)| e > start)
            .map(|(&s, _)| s)
            .unwrap_or(start);
        self.used
            .range(first..end)
            .map(move |(&s, &e)| (s.max(start), e.min(end)))
            .filter(|(s, e)| s < e)
    }

    /// Total used blocks.
    pub fn used_total(&self) -> u64 {
        self.used.iter().map(|(s, e)| e - s).sum()
    }
}

fn bug(block: u64, what: &str) -> Error {
    Error::corrupt(
        "ext4 builder layout (internal error)",
        Location::Block(block),
        what,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_searches_skip_used_blocks() {
        let mut a = Alloc::new(1, 100);
        a.reserve(10, 5).unwrap();
        a.reserve(15, 5).unwrap();
        a.reserve(30, 1).unwrap();
        assert_eq!(
            a.ranges_in(0, 100).collect::<Vec<_>>(),
            vec![(10, 20), (30, 31)]
        );
        assert!(a.reserve(19, 2).is_err());
        assert!(a.reserve(0, 1).is_err());
        assert_eq!(a.find(8, 50, 5), Some(20));
        assert_eq!(a.find(8, 50, 11), Some(31));
        assert_eq!(a.find(1, 5, 3), Some(1));
        assert_eq!(a.find(95, 99, 10), None);
        assert_eq!(a.next_free(12), Some((20, 10)));
        assert_eq!(a.alloc(25, 100), Some((25, 5)));
        assert_eq!(a.alloc(25, 3), Some((31, 3)));
        assert_eq!(a.used_in(0, 100), 10 + 1 + 5 + 3);
        assert_eq!(a.used_in(12, 26), 8 + 1);
        // Fill everything past 34, then allocation wraps to the start.
        a.reserve(34, 66).unwrap();
        assert_eq!(a.alloc(50, 4), Some((1, 4)));
        assert!(a.is_free(5, 5));
        assert!(!a.is_free(5, 6));
    }
}
