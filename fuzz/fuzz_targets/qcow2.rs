#![no_main]
//! Feeds arbitrary bytes to the QCOW2 reader as an in-memory image: header,
//! extensions, L1/L2 tables, compressed and subcluster data. Whatever parses is
//! mapped and read in bounded pieces, at most the first 64 MiB of the virtual disk
//! so a run stays fast. Any panic, hang or unbounded allocation is a bug.
use imgsan::disk::qcow2::Qcow2;
use imgsan::disk::Disk;
use libfuzzer_sys::fuzz_target;

const WALK: u64 = 64 << 20;
const PIECE: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(q) = Qcow2::from_bytes(data.to_vec()) else {
        return;
    };
    let _ = q.info();
    let cap = q.len().min(WALK);
    let mut buf = vec![0u8; PIECE as usize];
    let mut off = 0;
    while off < cap {
        let n = (cap - off).min(PIECE);
        if let Ok(map) = q.map(off, n) {
            // The map covers the range exactly, in order.
            let mut pos = off;
            for e in &map {
                assert_eq!(e.offset, pos);
                pos = e.end();
            }
            assert_eq!(pos, off + n);
        }
        let _ = q.read_at(off, &mut buf[..n as usize]);
        let _ = q.direct(off, n);
        // An unaligned small read goes through the partial-cluster paths.
        let mut small = [0u8; 700];
        if off + 1000 <= q.len() {
            let _ = q.read_at(off + 300, &mut small);
        }
        off += n;
    }
});
