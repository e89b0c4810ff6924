//! Build an ext4 image from a host directory with the geometry of a source image,
//! for `benches/ext4_build.sh` and manual experiments (until `imgsan repack` reads
//! real filesystems):
//!
//! ```text
//! cargo run --release --example ext4_build -- SOURCE.img HOST_DIR OUT.img \
//!     [--shrink] [--size BYTES] [--spread] [--reference-writer] [--stats] [--sync]
//! ```
//!
//! The source image is only read for its superblock; file data comes from
//! HOST_DIR.

#[path = "../tests/support/hostdir.rs"]
mod hostdir;

use std::path::PathBuf;
use std::time::Instant;

use imgsan::fs::ext4::build::{self, BuildOptions, Placement, TargetSize};
use imgsan::fs::ext4::superblock::Superblock;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    if pos.len() < 3 {
        anyhow::bail!("usage: ext4_build SOURCE.img HOST_DIR OUT.img [--shrink] [--size BYTES] [--spread] [--reference-writer] [--stats]");
    }
    let (src, dir, out) = (
        PathBuf::from(pos[0]),
        PathBuf::from(pos[1]),
        PathBuf::from(pos[2]),
    );
    let flag = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse::<u64>())
    };
    let f = std::fs::File::open(&src)?;
    let mut raw = [0u8; 1024];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut raw, 1024)?;
    let sb = Superblock::parse(&raw, f.metadata()?.len())?;

    let t0 = Instant::now();
    let tree = hostdir::tree_from_dir(&dir);
    let t1 = Instant::now();
    let mut opts = BuildOptions::default();
    if flag("--shrink") {
        opts.size = TargetSize::Shrink { margin: None };
    }
    if let Some(v) = value("--size") {
        opts.size = TargetSize::Bytes(v?);
    }
    if flag("--spread") {
        opts.placement = Placement::Spread;
    }
    let built = build::build(&tree, &sb, &opts)?;
    let t2 = Instant::now();
    let _ = std::fs::remove_file(&out);
    let file = std::fs::File::create(&out)?;
    file.set_len(built.plan.len)?;
    if flag("--reference-writer") {
        built.plan.write_to(&file, 0)?;
    } else {
        built.plan.write_parallel(&file, 0)?;
    }
    if flag("--sync") {
        file.sync_data()?;
    }
    let t3 = Instant::now();
    if flag("--stats") {
        eprintln!("{}", serde_json::to_string_pretty(&built.stats)?);
        eprintln!(
            "tree {:.2}s, build {:.2}s, write {:.2}s, {} writes",
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
            built.plan.writes.len()
        );
    }
    Ok(())
}
