//! QCOW2 reading and `imgsan convert`, checked against qemu-img and qemu-io.
//!
//! Every image is made here, in a temporary folder, by qemu-img and qemu-io. For
//! each one, `imgsan convert` must give the same bytes as `qemu-img convert -O raw`
//! and occupy no more blocks, and the reader's allocation map must agree with
//! `qemu-img map` about which ranges hold data.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use imgsan::disk::qcow2::Qcow2;
use imgsan::disk::{Alloc, Disk};

const MIB: u64 = 1 << 20;

fn run(cmd: &str, args: &[&str]) -> Output {
    run_in(Path::new("."), cmd, args)
}

/// Run a tool in a folder: qemu resolves a relative external data file name
/// against its current folder, so image tools run where the image is.
fn run_in(dir: &Path, cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Run qemu-io commands on an image of the given format.
fn qemu_io(img: &Path, fmt: &str, cmds: &[String]) {
    let mut args = vec!["-f".to_string(), fmt.to_string()];
    for c in cmds {
        args.push("-c".into());
        args.push(c.clone());
    }
    args.push(p(img).to_string());
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    run_in(img.parent().unwrap(), "qemu-io", &args);
}

fn create(img: &Path, opts: &str, size: u64) {
    let size = size.to_string();
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend([p(img), size.as_str()]);
    run("qemu-img", &args);
}

/// Writes that exercise aligned and unaligned offsets, zero writes, discards and
/// explicitly written zeros, all inside a 24 MiB disk.
fn pattern_writes() -> Vec<String> {
    [
        "write -P 0x11 0 64k",
        "write -P 0x22 1m 3k",
        "write -P 0x33 2096640 5000", // crosses the 2 MiB boundary, unaligned
        "write -P 0x44 5m 1m",
        "write -z 5505024 131072", // zeros inside the 0x44 run
        "discard 6029312 65536",
        "write -P 0x00 8m 64k", // data that is all zeros
        "write -P 0x55 9437183 777",
        "write -P 0x66 12m 2m",
        "write -z 20m 1m",
        "write -P 0x77 25164800 512", // the last sector
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

const SIZE: u64 = 24 * MIB;

/// Data ranges as half-open intervals, merged.
fn merge(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in v {
        if s == e {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.1 >= s => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn qemu_data_ranges(img: &Path) -> Vec<(u64, u64)> {
    let out = run_in(
        img.parent().unwrap(),
        "qemu-img",
        &["map", "--output=json", p(img)],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    merge(
        v.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["data"].as_bool().unwrap())
            .map(|e| {
                let s = e["start"].as_u64().unwrap();
                (s, s + e["length"].as_u64().unwrap())
            })
            .collect(),
    )
}

fn our_data_ranges(d: &dyn Disk) -> Vec<(u64, u64)> {
    let m = d.map(0, d.len()).unwrap();
    // The map must cover the disk exactly, in order.
    let mut pos = 0;
    for e in &m {
        assert_eq!(e.offset, pos, "map has a gap or overlap: {m:?}");
        pos = e.end();
    }
    assert_eq!(pos, d.len());
    merge(
        m.iter()
            .filter(|e| e.alloc == Alloc::Data)
            .map(|e| (e.offset, e.end()))
            .collect(),
    )
}

fn imgsan() -> Command {
    Command::new(env!("CARGO_BIN_EXE_imgsan"))
}

/// The whole check for one image: map agreement, byte equality, sparseness.
fn check(img: &Path) {
    let dir = img.parent().unwrap();
    let name = img.file_name().unwrap().to_str().unwrap();
    let ours = dir.join(format!("{name}.imgsan.raw"));
    let theirs = dir.join(format!("{name}.qemu.raw"));

    let q = Qcow2::open(img).unwrap();
    assert_eq!(
        our_data_ranges(&q),
        qemu_data_ranges(img),
        "map of {name} disagrees with qemu-img map"
    );

    let out = imgsan()
        .args(["convert", "-q", p(img), "-o", p(&ours)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "imgsan convert {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    run_in(
        dir,
        "qemu-img",
        &["convert", "-O", "raw", p(img), p(&theirs)],
    );
    // qemu-img does not sync its output, imgsan does; count both after a sync so
    // the filesystem has placed both files' extent trees.
    std::fs::File::open(&theirs).unwrap().sync_all().unwrap();
    let cmp = Command::new("cmp")
        .args([p(&ours), p(&theirs)])
        .output()
        .unwrap();
    assert!(
        cmp.status.success(),
        "{name}: imgsan and qemu-img differ: {}",
        String::from_utf8_lossy(&cmp.stdout)
    );
    let (a, b) = (
        std::fs::metadata(&ours).unwrap(),
        std::fs::metadata(&theirs).unwrap(),
    );
    assert_eq!(a.len(), b.len());
    assert!(
        a.blocks() <= b.blocks(),
        "{name}: imgsan output uses {} blocks, qemu-img's {}",
        a.blocks(),
        b.blocks()
    );

    // read_at at unaligned places agrees with the reference too.
    let reference = std::fs::read(&theirs).unwrap();
    for &(off, len) in &[
        (0u64, 1usize),
        (1048575, 4099),
        (2096000, 70000),
        (SIZE - 700, 700),
    ] {
        if off + len as u64 > q.len() {
            continue;
        }
        let mut buf = vec![0u8; len];
        q.read_at(off, &mut buf).unwrap();
        assert_eq!(
            buf,
            reference[off as usize..off as usize + len],
            "{name} at {off}"
        );
    }
    // Leave the folder small for the next image.
    std::fs::remove_file(&ours).unwrap();
    std::fs::remove_file(&theirs).unwrap();
}

fn patterned(dir: &Path, name: &str, opts: &str) -> PathBuf {
    let img = dir.join(name);
    create(&img, opts, SIZE);
    qemu_io(&img, "qcow2", &pattern_writes());
    img
}

#[test]
fn version3_cluster_sizes() {
    let dir = tempfile::tempdir().unwrap();
    for cs in ["512", "4k", "64k", "2M"] {
        let img = patterned(
            dir.path(),
            &format!("v3-{cs}.qcow2"),
            &format!("cluster_size={cs}"),
        );
        check(&img);
        assert_eq!(
            Qcow2::open(&img).unwrap().header().cluster_size(),
            match cs {
                "512" => 512,
                "4k" => 4096,
                "64k" => 65536,
                _ => 2 * MIB,
            }
        );
    }
}

#[test]
fn version2() {
    let dir = tempfile::tempdir().unwrap();
    for cs in ["512", "64k"] {
        let img = patterned(
            dir.path(),
            &format!("v2-{cs}.qcow2"),
            &format!("compat=0.10,cluster_size={cs}"),
        );
        assert_eq!(Qcow2::open(&img).unwrap().header().version, 2);
        check(&img);
    }
}

/// A raw file holding the pattern, for making compressed images from.
fn pattern_raw(dir: &Path, size: u64) -> PathBuf {
    let raw = dir.join("src.raw");
    std::fs::File::create(&raw).unwrap().set_len(size).unwrap();
    let mut w = pattern_writes();
    // Mix in text-like bytes that compress well but not to nothing.
    for i in 0..64u64 {
        w.push(format!("write -P {} {} 4k", 0x20 + i, 16 * MIB + i * 8192));
    }
    qemu_io(&raw, "raw", &w);
    raw
}

#[test]
fn compressed_zlib_and_zstd() {
    let dir = tempfile::tempdir().unwrap();
    let raw = pattern_raw(dir.path(), SIZE);
    for (name, opts) in [
        ("zlib-64k.qcow2", "cluster_size=64k"),
        ("zlib-4k.qcow2", "cluster_size=4k"),
        ("zlib-2M.qcow2", "cluster_size=2M"),
        ("zstd-64k.qcow2", "compression_type=zstd"),
        ("zstd-512.qcow2", "compression_type=zstd,cluster_size=512"),
        ("zlib-v2.qcow2", "compat=0.10"),
    ] {
        let img = dir.path().join(name);
        run(
            "qemu-img",
            &[
                "convert",
                "-c",
                "-f",
                "raw",
                "-O",
                "qcow2",
                "-o",
                opts,
                p(&raw),
                p(&img),
            ],
        );
        check(&img);
        let q = Qcow2::open(&img).unwrap();
        let want = if name.starts_with("zstd") {
            "zstd"
        } else {
            "zlib"
        };
        assert!(
            q.info()
                .details
                .iter()
                .any(|(k, v)| k == "compression" && v == want),
            "{name}: {:?}",
            q.info().details
        );
    }
}

#[test]
fn compressed_then_overwritten_and_unaligned_size() {
    // A disk whose size is not a multiple of the cluster size, compressed, then
    // partly overwritten (mixing compressed and plain clusters).
    let dir = tempfile::tempdir().unwrap();
    let size = SIZE + 1536;
    let raw = pattern_raw(dir.path(), size);
    qemu_io(&raw, "raw", &[format!("write -P 0x99 {} 1536", SIZE)]);
    let img = dir.path().join("mixed.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-f",
            "raw",
            "-O",
            "qcow2",
            p(&raw),
            p(&img),
        ],
    );
    qemu_io(
        &img,
        "qcow2",
        &["write -P 0xab 100000 3000".into(), "write -z 16m 8k".into()],
    );
    check(&img);
}

#[test]
fn extended_l2() {
    let dir = tempfile::tempdir().unwrap();
    for cs in ["64k", "2M", "16k"] {
        let img = patterned(
            dir.path(),
            &format!("xl2-{cs}.qcow2"),
            &format!("extended_l2=on,cluster_size={cs}"),
        );
        // Subcluster-sized writes and zeroes inside one cluster.
        qemu_io(
            &img,
            "qcow2",
            &[
                "write -P 0x81 17m 2k".into(),
                "write -z 17m+4k 2k".replace("17m+4k", "17829888"),
                "write -P 0x82 17833984 1k".into(),
            ],
        );
        check(&img);
        assert!(Qcow2::open(&img).unwrap().header().extended_l2());
    }
}

#[test]
fn backing_chain_of_three_in_different_folders() {
    let root = tempfile::tempdir().unwrap();
    for d in ["a", "b", "c", "d"] {
        std::fs::create_dir(root.path().join(d)).unwrap();
    }
    // a/base.raw <- b/mid.qcow2 (relative name) <- c/top.qcow2 (absolute name).
    // The base is shorter than the images above it.
    let base = root.path().join("a/base.raw");
    std::fs::File::create(&base)
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    qemu_io(
        &base,
        "raw",
        &[
            "write -P 0xa1 0 3m".into(),
            "write -P 0xa2 7m 100k".into(),
            "write -P 0xa3 15m 1m".into(),
        ],
    );
    let mid = root.path().join("b/mid.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "../a/base.raw",
            "-F",
            "raw",
            p(&mid),
            "20M",
        ],
    );
    qemu_io(
        &mid,
        "qcow2",
        &[
            "write -P 0xb1 1m 64k".into(),
            "write -z 7m 64k".into(),
            "write -P 0xb2 17m 4k".into(),
        ],
    );
    let top = root.path().join("c/top.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            p(&mid),
            "-F",
            "qcow2",
            p(&top),
            &SIZE.to_string(),
        ],
    );
    qemu_io(
        &top,
        "qcow2",
        &[
            "write -P 0xc1 2m 5000".into(),
            "write -z 15m+512k 64k".replace("15m+512k", "16252928"),
            "write -P 0xc2 22m 1m".into(),
        ],
    );
    check(&top);
    let q = Qcow2::open(&top).unwrap();
    let chain: Vec<_> = q.chain().iter().map(|(_, f)| *f).collect();
    assert_eq!(chain, ["qcow2", "raw"]);
    let info = q.info();
    assert!(info
        .details
        .iter()
        .any(|(k, v)| k == "backing chain" && v.contains("base.raw (raw)")));
    // The chain's allocation is counted.
    let own = std::fs::metadata(&top).unwrap().blocks() * 512;
    assert!(info.allocated_size > own);

    // A qcow2 base found by probing (no backing format extension), via a copy of
    // the chain with the format dropped from the top image.
    let base2 = root.path().join("d/base2.qcow2");
    create(&base2, "", 8 * MIB);
    qemu_io(&base2, "qcow2", &["write -P 0xd1 1m 1m".into()]);
    let top2 = root.path().join("c/top2.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "../d/base2.qcow2",
            "-F",
            "qcow2",
            p(&top2),
            "12M",
        ],
    );
    qemu_io(&top2, "qcow2", &["write -P 0xd2 1536k 8k".into()]);
    // qemu-img will not drop the format any more; turn the extension into an
    // unknown one (which readers ignore) by rewriting its type.
    let mut bytes = std::fs::read(&top2).unwrap();
    let at = bytes[..65536]
        .windows(4)
        .position(|w| w == [0xe2, 0x79, 0x2a, 0xca])
        .unwrap();
    bytes[at..at + 4].copy_from_slice(&[0x0b, 0xad, 0xf0, 0x0d]);
    std::fs::write(&top2, bytes).unwrap();
    assert!(Qcow2::open(&top2)
        .unwrap()
        .header()
        .backing_format
        .is_none());
    check(&top2);
}

#[test]
fn external_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let abs = dir.path().join("abs.data");
    let abs_opt = format!("data_file={}", abs.display());
    for (name, opts) in [
        ("ext.qcow2", "data_file=ext.data"),
        ("extraw.qcow2", "data_file=extraw.data,data_file_raw=on"),
        ("extabs.qcow2", abs_opt.as_str()),
    ] {
        let img = dir.path().join(name);
        // qemu-img resolves the data file name against the current folder at
        // creation; run it from the image's folder so the stored name is relative.
        let out = Command::new("qemu-img")
            .current_dir(dir.path())
            .args([
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                opts,
                name,
                &SIZE.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        qemu_io(&img, "qcow2", &pattern_writes());
        check(&img);
        let q = Qcow2::open(&img).unwrap();
        assert!(q.header().has_data_file());
        assert!(q.info().details.iter().any(|(k, _)| k == "data file"));
    }
}

#[test]
fn internal_snapshot_reads_the_active_state() {
    let dir = tempfile::tempdir().unwrap();
    let img = patterned(dir.path(), "snap.qcow2", "");
    run("qemu-img", &["snapshot", "-c", "first", p(&img)]);
    qemu_io(
        &img,
        "qcow2",
        &[
            "write -P 0xee 0 32k".into(),
            "write -z 12m 512k".into(),
            "discard 5m 64k".into(),
            "write -P 0xef 18m 3m".into(),
        ],
    );
    check(&img);
    let q = Qcow2::open(&img).unwrap();
    assert_eq!(q.header().nb_snapshots, 1);
    let mut b = [0u8; 2];
    q.read_at(32767, &mut b).unwrap();
    assert_eq!(b, [0xee, 0x11]);
}

#[test]
fn dirty_image_reads_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let img = patterned(dir.path(), "dirty.qcow2", "lazy_refcounts=on");
    // qemu-io's abort leaves the dirty bit of a lazy-refcount image set.
    let _ = Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            "write -P 0x5a 3m 64k",
            "-c",
            "abort",
            p(&img),
        ])
        .output()
        .unwrap();
    let q = Qcow2::open(&img).unwrap();
    assert!(
        q.header().dirty(),
        "qemu-io abort did not leave the dirty bit"
    );
    assert!(q.info().warnings.iter().any(|w| w.contains("dirty")));
    check(&img);
}

#[test]
fn stdout_stream_equals_file_output() {
    let dir = tempfile::tempdir().unwrap();
    let raw = pattern_raw(dir.path(), SIZE);
    let img = dir.path().join("s.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-f",
            "raw",
            "-O",
            "qcow2",
            p(&raw),
            p(&img),
        ],
    );
    let file_out = dir.path().join("s.raw");
    let st = imgsan()
        .args(["convert", "-q", p(&img), "-o", p(&file_out)])
        .status()
        .unwrap();
    assert!(st.success());
    let streamed = imgsan()
        .args(["--threads", "2", "convert", p(&img), "-o", "-"])
        .output()
        .unwrap();
    assert!(streamed.status.success());
    assert_eq!(streamed.stdout.len() as u64, SIZE);
    assert!(streamed.stdout == std::fs::read(&file_out).unwrap());
    assert!(streamed.stdout == std::fs::read(&raw).unwrap());
}

#[test]
fn raw_input_converts_too() {
    let dir = tempfile::tempdir().unwrap();
    let raw = pattern_raw(dir.path(), SIZE);
    let out = dir.path().join("copy.raw");
    let st = imgsan()
        .args(["convert", "-q", p(&raw), "-o", p(&out)])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&raw).unwrap());
    assert!(std::fs::metadata(&out).unwrap().blocks() <= std::fs::metadata(&raw).unwrap().blocks());
}
