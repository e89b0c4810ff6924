#![no_main]
//! Partition tables (MBR, EBR chains, GPT with its backup, at 512 and 4096-byte
//! sectors) and the filesystem probe, fed arbitrary bytes as a disk. Beyond "no
//! panic", it checks what callers rely on: every volume lies inside the disk, and
//! a table rewritten for the same disk (or with its last partition and the disk one
//! sector shorter) reads back as what was asked for.

use std::sync::Arc;

use imgsan::disk::partition::{self, ReadOptions, Table, TableWrite};
use imgsan::disk::{probe, Disk, MemDisk, Slice};
use libfuzzer_sys::fuzz_target;

fn apply(base: &[u8], size: u64, writes: &[TableWrite]) -> Vec<u8> {
    let mut out = base[..base.len().min(size as usize)].to_vec();
    out.resize(size as usize, 0);
    for w in writes {
        let end = w.offset as usize + w.bytes.len();
        assert!(
            end as u64 <= size,
            "{} at {} passes the new end",
            w.what,
            w.offset
        );
        out[w.offset as usize..end].copy_from_slice(&w.bytes);
    }
    out
}

fn check_round_trip(data: &[u8], t: &Table, opts: &ReadOptions) {
    let ss = u64::from(t.sector_size);
    let size = t.disk_size - t.disk_size % ss;
    if let Ok(w) = t.rewrite(size, &[]) {
        let b = apply(data, size, &w);
        let again = partition::read_with(&MemDisk::new(b), opts)
            .unwrap_or_else(|e| panic!("rewritten table does not read back: {e}"));
        assert_eq!(again.partitions, t.partitions);
        assert_eq!(again.scheme, t.scheme);
    }
    // The last partition one sector shorter, on a disk one sector shorter.
    let Some(last) = t
        .partitions
        .iter()
        .filter(|p| p.is_volume())
        .max_by_key(|p| p.end())
    else {
        return;
    };
    if last.len <= ss || size < ss {
        return;
    }
    let new_len = last.len - ss;
    if let Ok(w) = t.rewrite(size - ss, &[(last.index, new_len)]) {
        let b = apply(data, size - ss, &w);
        let again = partition::read_with(&MemDisk::new(b), opts)
            .unwrap_or_else(|e| panic!("shrunk table does not read back: {e}"));
        let p = again
            .partition(last.index)
            .expect("the resized partition is still there");
        assert_eq!((p.start, p.len), (last.start, new_len));
    }
}

fuzz_target!(|data: &[u8]| {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::new(data.to_vec()));
    let _ = probe::probe(disk.as_ref());
    for sector_size in [None, Some(4096)] {
        let opts = ReadOptions { sector_size };
        let Ok(t) = partition::read_with(disk.as_ref(), &opts) else {
            continue;
        };
        for v in t.volumes() {
            let s = Slice::new(disk.clone(), v.start, v.len)
                .unwrap_or_else(|e| panic!("volume outside the disk: {e}"));
            let _ = probe::probe(&s);
        }
        for r in t.regions() {
            let _ = r.offset.checked_add(r.len).expect("region end overflows");
        }
        check_round_trip(data, &t, &opts);
    }
});
