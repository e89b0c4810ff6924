//! Read an XFS image's whole tree and print counts: the driver of the XFS
//! reader's benchmark (`benches/xfs_read.sh`) and a way to poke at images.
//!
//! Usage: xfs_tree_stats IMAGE

use std::process::ExitCode;
use std::time::Instant;

use imgsan::disk;
use imgsan::fs::xfs::read::{self, ReadOptions};
use imgsan::tree::Kind;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: xfs_tree_stats IMAGE");
        return ExitCode::from(2);
    };
    match run(&path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xfs_tree_stats: {e}");
            ExitCode::from(3)
        }
    }
}

fn run(path: &str) -> imgsan::Result<()> {
    let start = Instant::now();
    let d = disk::open(std::path::Path::new(path))?;
    let vol = read::open(d, &ReadOptions::default())?;
    let t = &vol.tree;
    let (mut files, mut dirs, mut other, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    for n in &t.nodes {
        match &n.kind {
            Kind::File(runs) => {
                files += 1;
                bytes += runs.iter().map(|r| r.len).sum::<u64>();
            }
            Kind::Dir(_) => dirs += 1,
            _ => other += 1,
        }
    }
    println!(
        "{} nodes: {files} files ({bytes} bytes of data), {dirs} directories, {other} others; \
         {} distinct xattr strings; read in {:.3} s",
        t.nodes.len(),
        t.strings.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
