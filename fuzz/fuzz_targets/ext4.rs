#![no_main]
//! The ext4 reader on arbitrary bytes taken as a whole volume: open (with and
//! without checksum verification, so that mutations get past the checksums),
//! walk the whole tree, resolve every path and read every file. Any panic, hang
//! or runaway allocation is a bug. Seed the corpus with `fuzz/seed-ext4.sh`.

use std::sync::Arc;

use imgsan::disk::{Disk, MemDisk};
use imgsan::fs::ext4::read::{self, ReadOptions};
use imgsan::tree::Kind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::new(data.to_vec()));
    for verify_checksums in [true, false] {
        let opts = ReadOptions {
            verify_checksums,
            ..Default::default()
        };
        let Ok(v) = read::open(disk.clone(), &opts) else {
            continue;
        };
        let t = &v.tree;
        let _ = serde_json::to_string(&v.info);
        let mut buf = Vec::new();
        for (path, id) in t.paths() {
            let _ = t.resolve(&path, true);
            let n = t.node(id);
            if let Kind::File(_) = n.kind {
                // Sizes may be huge and sparse: read a bounded prefix and the
                // last bytes.
                let len = n.size.min(1 << 16) as usize;
                buf.resize(len, 0);
                let _ = t.read_file(id, 0, &mut buf);
                let _ = t.read_file(id, n.size - len as u64, &mut buf);
            }
        }
    }
});
