#![no_main]
//! Fast-commit replay over arbitrary area contents: the input is the fast-commit
//! area (1 KiB blocks), scanned as the kernel's scan pass does with the
//! transaction its first HEAD names, then every valid record decoded and applied
//! to a block map and an on-disk inode, as the reader applies them.
use imgsan::fs::ext4::journal::fast_commit::{decode, Scanner};
use libfuzzer_sys::fuzz_target;

const BS: usize = 1024;

fuzz_target!(|data: &[u8]| {
    if data.len() < BS || data.len() > 256 * BS {
        return;
    }
    let tid = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    let mut scan = Scanner::new(tid);
    for block in data.chunks_exact(BS) {
        if !scan.wants_more() {
            break;
        }
        scan.feed(block);
    }
    for inode_size in [128usize, 256] {
        let Ok(fast) = decode(&scan.records, inode_size, 4096, 1 << 20) else {
            continue;
        };
        let disk = vec![0u8; inode_size];
        for (&ino, _) in fast.ranges.iter().take(64) {
            let mut runs = vec![(0, 100, 8), (8, 500, 4), (100, 9000, 1000)];
            fast.apply_ranges(ino, &mut runs);
            // Sorted and not overlapping, whatever the records said.
            for w in runs.windows(2) {
                assert!(w[0].0 + w[0].2 <= w[1].0, "{runs:?}");
            }
        }
        for &ino in fast.inodes.keys().take(64) {
            let b = fast.patched_inode(ino, &disk).expect("a logged inode");
            assert_eq!(b.len(), inode_size);
        }
    }
});
