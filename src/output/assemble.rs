//! Whole-disk assembly: turn "what happens to each volume" into one output plan for
//! the whole disk.
//!
//! Only bytes that can be accounted for are copied: the boot regions the caller
//! lists (sector 0, partition tables, GRUB's embedded core image:
//! [`crate::disk::partition::boot`]) and the volumes kept verbatim (BIOS boot, EFI
//! system, a partition the operator names), reading only the ranges the source's
//! allocation map says hold data. Rebuilt volumes contribute their own plans; swap
//! and emptied volumes a fresh header; a partition table whose disk changes size
//! is rewritten. Every other byte (gaps between partitions, the tail, sectors
//! before the first partition) is a hole in the output: nothing is copied
//! because it merely happens to be there.
//!
//! This module decides placement only; it neither builds filesystems nor writes.

use std::sync::Arc;

use crate::disk::partition::boot::BootRegion;
use crate::disk::partition::TableWrite;
use crate::disk::{Alloc, Disk};
use crate::error::{Error, Location, Result};
use crate::output::plan::Plan;

/// What becomes of one volume (a byte range of the source disk).
#[derive(Debug)]
pub enum Fill {
    /// Copied as it is (a boot-only partition, or one the operator keeps).
    Verbatim,
    /// Replaced by a rebuilt filesystem: its plan is relative to the volume's start.
    Rebuilt(Plan),
    /// Replaced by fresh bytes at its start (a swap header page); the rest is a hole.
    Fresh(Vec<u8>),
    /// Nothing is written: the volume reads as zeros (it held no data).
    Hole,
}

/// One volume's placement: its range in the source and its length in the output
/// (the same start in both; only the length may change).
#[derive(Debug)]
pub struct VolumeFill {
    pub start: u64,
    pub src_len: u64,
    pub out_len: u64,
    pub fill: Fill,
}

/// Everything the assembler needs.
pub struct Layout {
    pub source: Arc<dyn Disk>,
    /// The output disk's length.
    pub out_len: u64,
    pub volumes: Vec<VolumeFill>,
    /// Source ranges outside the volumes that are copied as they are.
    pub boot: Vec<BootRegion>,
    /// New partition-table bytes (when the table is rewritten). Source ranges they
    /// replace are not copied.
    pub table_writes: Vec<TableWrite>,
    /// Source ranges that must not be copied (the old table's structures when it is
    /// rewritten: the old backup GPT in the middle of a shrunk disk, say).
    pub blank: Vec<(u64, u64)>,
}

/// Subtract sorted, non-overlapping `holes` from `[start, end)`.
fn subtract(start: u64, end: u64, holes: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = start;
    for &(hs, he) in holes {
        if he <= pos || hs >= end {
            continue;
        }
        if hs > pos {
            out.push((pos, hs.min(end)));
        }
        pos = pos.max(he);
        if pos >= end {
            break;
        }
    }
    if pos < end {
        out.push((pos, end));
    }
    out
}

/// Sort and merge ranges.
fn merged(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Copy the data ranges of `src` in `[start, end)` to the same offsets, except
/// for the `exclude` ranges.
fn copy_data(
    plan: &mut Plan,
    src: &Arc<dyn Disk>,
    start: u64,
    end: u64,
    exclude: &[(u64, u64)],
) -> Result<()> {
    if start >= end {
        return Ok(());
    }
    for ext in src.map(start, end - start)? {
        if ext.alloc != Alloc::Data {
            continue;
        }
        for (s, e) in subtract(ext.offset.max(start), ext.end().min(end), exclude) {
            plan.copy(s, src.clone(), s, e - s);
        }
    }
    Ok(())
}

/// Assemble the output plan.
pub fn assemble(layout: Layout) -> Result<Plan> {
    let src = &layout.source;
    let copy_end = src.len().min(layout.out_len);
    let mut plan = Plan::new(layout.out_len);

    // Output ranges that something other than a verbatim copy fills.
    let mut exclude: Vec<(u64, u64)> = Vec::new();
    for v in &layout.volumes {
        let end = v
            .start
            .checked_add(v.src_len.max(v.out_len))
            .ok_or_else(|| {
                Error::corrupt(
                    "disk layout",
                    Location::Byte(v.start),
                    "volume range overflows",
                )
            })?;
        if let Fill::Verbatim = v.fill {
            if v.start + v.out_len > layout.out_len || v.out_len != v.src_len {
                return Err(Error::unsupported(format!(
                    "copying the volume at {:#x} verbatim into a disk of {} bytes (it would be cut)",
                    v.start, layout.out_len
                )));
            }
        }
        exclude.push((v.start, end));
    }
    for w in &layout.table_writes {
        exclude.push((w.offset, w.offset + w.bytes.len() as u64));
    }
    exclude.extend(layout.blank.iter().copied());
    let exclude = merged(exclude);

    // The accounted boot regions, minus whatever replaces them.
    for r in &layout.boot {
        copy_data(&mut plan, src, r.offset, r.end().min(copy_end), &exclude)?;
    }

    let not_tables = merged(
        layout
            .table_writes
            .iter()
            .map(|w| (w.offset, w.offset + w.bytes.len() as u64))
            .chain(layout.blank.iter().copied())
            .collect(),
    );
    for v in layout.volumes {
        match v.fill {
            Fill::Verbatim => copy_data(
                &mut plan,
                src,
                v.start,
                (v.start + v.src_len).min(copy_end),
                &not_tables,
            )?,
            Fill::Rebuilt(p) => {
                if p.len > v.out_len {
                    return Err(Error::corrupt(
                        "disk layout",
                        Location::Byte(v.start),
                        format!(
                            "rebuilt volume of {} bytes does not fit its {}-byte partition",
                            p.len, v.out_len
                        ),
                    ));
                }
                plan.writes.extend(p.shifted(v.start).writes);
            }
            Fill::Fresh(bytes) => {
                if bytes.len() as u64 > v.out_len {
                    return Err(Error::corrupt(
                        "disk layout",
                        Location::Byte(v.start),
                        "fresh header larger than its volume",
                    ));
                }
                plan.bytes(v.start, bytes);
            }
            Fill::Hole => {}
        }
    }
    for w in layout.table_writes {
        plan.bytes(w.offset, w.bytes);
    }
    plan.seal()?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;
    use crate::output::plan::Piece;

    #[test]
    fn subtract_ranges() {
        assert_eq!(
            subtract(0, 100, &[(10, 20), (50, 60)]),
            vec![(0, 10), (20, 50), (60, 100)]
        );
        assert_eq!(subtract(15, 55, &[(10, 20), (50, 60)]), vec![(20, 50)]);
        assert_eq!(subtract(0, 10, &[(0, 10)]), vec![]);
    }

    #[test]
    fn only_accounted_bytes_are_copied() {
        let src: Arc<dyn Disk> = Arc::new(MemDisk::new(vec![1u8; 1000]));
        let mut vp = Plan::new(200);
        vp.bytes(0, vec![9u8; 10]);
        let plan = assemble(Layout {
            source: src,
            out_len: 1000,
            volumes: vec![
                VolumeFill {
                    start: 100,
                    src_len: 200,
                    out_len: 200,
                    fill: Fill::Rebuilt(vp),
                },
                VolumeFill {
                    start: 500,
                    src_len: 100,
                    out_len: 100,
                    fill: Fill::Fresh(vec![7u8; 4]),
                },
                VolumeFill {
                    start: 700,
                    src_len: 100,
                    out_len: 100,
                    fill: Fill::Verbatim,
                },
            ],
            boot: vec![
                BootRegion {
                    offset: 0,
                    len: 50,
                    what: "mbr",
                },
                BootRegion {
                    offset: 980,
                    len: 20,
                    what: "backup table",
                },
            ],
            table_writes: vec![TableWrite {
                offset: 0,
                bytes: vec![5u8; 8],
                what: "mbr",
            }],
            blank: vec![(990, 1000)],
        })
        .unwrap();
        let spans: Vec<(u64, u64, bool)> = plan
            .writes
            .iter()
            .map(|w| (w.at, w.len, matches!(w.piece, Piece::Copy { .. })))
            .collect();
        assert_eq!(
            spans,
            vec![
                // The boot region around the new table bytes; the gaps at
                // 50..100, 300..500, 600..700 and 800..980 are holes, and so is the
                // blanked end.
                (0, 8, false),
                (8, 42, true),
                (100, 10, false),
                (500, 4, false),
                (700, 100, true),
                (980, 10, true)
            ]
        );
    }

    #[test]
    fn verbatim_volume_cannot_be_cut() {
        let src: Arc<dyn Disk> = Arc::new(MemDisk::new(vec![1u8; 1000]));
        let e = assemble(Layout {
            source: src,
            out_len: 750,
            volumes: vec![VolumeFill {
                start: 700,
                src_len: 100,
                out_len: 100,
                fill: Fill::Verbatim,
            }],
            boot: vec![],
            table_writes: vec![],
            blank: vec![],
        })
        .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Unsupported);
    }
}
