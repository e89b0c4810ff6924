//! Read an ext4 image's whole tree and print counts: a small driver for the
//! reader's benchmark (`benches/ext4_read.sh`) and for poking at images.
//!
//! Usage: ext4_tree_stats IMAGE [--offset BYTES] [--read]
//! `--read` also reads every regular file's bytes through the tree (and hashes
//! them), which the metadata-only benchmark leaves out.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use imgsan::disk::{self, Disk, Slice};
use imgsan::fs::ext4::read::{self, ReadOptions};
use imgsan::tree::Kind;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: ext4_tree_stats IMAGE [--offset BYTES] [--read]");
        return ExitCode::from(2);
    };
    let mut offset = 0u64;
    let mut read_data = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--offset" => offset = args.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            "--read" => read_data = true,
            other => {
                eprintln!("unknown argument {other}");
                return ExitCode::from(2);
            }
        }
    }
    match run(&path, offset, read_data) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ext4_tree_stats: {e}");
            ExitCode::from(3)
        }
    }
}

fn run(path: &str, offset: u64, read_data: bool) -> imgsan::Result<()> {
    let start = Instant::now();
    let d = disk::open(std::path::Path::new(path))?;
    let vol: Arc<dyn Disk> = if offset == 0 {
        d
    } else {
        let len = d.len() - offset.min(d.len());
        Arc::new(Slice::new(d, offset, len)?)
    };
    let v = read::open(vol, &ReadOptions::default())?;
    let t = &v.tree;
    let mut counts = [0u64; 7];
    let mut seen = vec![false; t.nodes.len()];
    seen[t.root as usize] = true;
    counts[1] += 1;
    let mut entries = 0u64;
    let mut files = Vec::new();
    t.walk(|_, id, _| {
        for e in t.entries(id) {
            entries += 1;
            if !std::mem::replace(&mut seen[e.node as usize], true) {
                let k = &t.node(e.node).kind;
                let i = match k {
                    Kind::File(_) => {
                        files.push(e.node);
                        0
                    }
                    Kind::Dir(_) => 1,
                    Kind::Symlink(_) => 2,
                    Kind::CharDev(_) => 3,
                    Kind::BlockDev(_) => 4,
                    Kind::Fifo => 5,
                    Kind::Socket => 6,
                };
                counts[i] += 1;
            }
        }
    });
    let elapsed = start.elapsed();
    println!("inodes:      {}", v.info.reachable_inodes);
    println!("entries:     {entries}");
    println!("files:       {}", counts[0]);
    println!("directories: {}", counts[1]);
    println!("symlinks:    {}", counts[2]);
    println!("devices:     {}", counts[3] + counts[4]);
    println!("fifos:       {}", counts[5]);
    println!("sockets:     {}", counts[6]);
    println!("data bytes:  {}", t.data_bytes());
    println!("xattr strings: {}", t.strings.len());
    println!("orphans:     {}", v.info.orphans);
    println!("read time:   {:.3} s", elapsed.as_secs_f64());
    if read_data {
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        for id in files {
            let size = t.node(id).size;
            let mut at = 0;
            while at < size {
                let n = (size - at).min(buf.len() as u64) as usize;
                t.read_file(id, at, &mut buf[..n])?;
                h.update(&buf[..n]);
                at += n as u64;
            }
        }
        println!("data blake3: {}", h.finalize());
        println!("total time:  {:.3} s", start.elapsed().as_secs_f64());
    }
    for w in &v.info.warnings {
        println!("warning: {w}");
    }
    Ok(())
}
