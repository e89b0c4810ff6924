//! Nothing outside what imgsan accounts for reaches a sanitized image, and rules
//! never reach outside their own paths. Through the binary, on small disks built
//! at test time with mke2fs -d, debugfs, mkswap, sgdisk, sfdisk and grub-mkimage:
//!
//! - a marker disk (GPT: root, swap, /home on its own volume, a data volume the
//!   guest never mounts; markers in the gap between partitions, past the last
//!   one, in sectors 34-2047, in the slack of the GPT header sector, in swap, in a
//!   file the /home mount covers, in deleted files of each filesystem): after
//!   `sanitize --force`, no marker in any byte of the output, RAW and QCOW2 input;
//! - an MBR disk with a real GRUB core image in the post-MBR gap: it survives
//!   byte-identical, the junk after it does not;
//! - a partition of junk: refused (exit 3, naming it) unless --keep-partition;
//!   an all-zero partition is a hole; repack of a disk with nothing to rebuild
//!   exits 3;
//! - a guest whose /tmp, /var/log and /home are symlinks to other directories:
//!   those directories are byte-identical in the output, with warnings.
//!
//! Oracles: a byte scan of the output (holes skipped), debugfs and blkid on the
//! extracted output partitions, the report's JSON. Run time: about 30 s (dev build).

#[path = "common/disk.rs"]
mod disk;
#[path = "common/guest.rs"]
mod guest;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use guest::{det_bytes, run};

const BIN: &str = env!("CARGO_BIN_EXE_imgsan");
const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;

const ROOT_UUID: &str = "6b1f0c2e-4d3a-4e5f-9a8b-7c6d5e4f3a21";
const HOME_UUID: &str = "0e9d8c7b-6a5f-4e3d-8c2b-1a0f9e8d7c6b";
const DATA_UUID: &str = "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f";
const SWAP_UUID: &str = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a";
const SEED: &str = "2d3c4b5a-6978-4a1b-9c2d-3e4f5a6b7c8d";

/// Every place a secret is planted on the marker disk.
const MARKERS: [&str; 12] = [
    "LEAKMARK-GAP-between-partitions",
    "LEAKMARK-TAIL-after-last-partition",
    "LEAKMARK-PREGAP-sector-34-to-2047",
    "LEAKMARK-HEADER-slack-of-lba1",
    "LEAKMARK-SWAP-paged-out",
    "LEAKMARK-UNDER-home-mount",
    "LEAKMARK-DELETED-root",
    "LEAKMARK-DELETED-home",
    "LEAKMARK-HOME-alice",
    "LEAKMARK-DATA-unmounted-volume",
    "LEAKMARK-TMP-file",
    "LEAKMARK-UNMOUNTED-deleted",
];

fn imgsan(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .args([
            "--name",
            "Leak-Test",
            "--description",
            "A small Debian guest for the leak tests of imgsan",
        ])
        .env("CI", "1")
        .output()
        .expect("imgsan runs")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

fn read_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let mut f = fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut v = vec![0u8; len as usize];
    f.read_exact(&mut v).unwrap();
    v
}

/// Copies a byte range of an image into its own file (for debugfs and blkid).
fn extract(src: &Path, offset: u64, len: u64, out: &Path) {
    fs::write(out, read_range(src, offset, len)).unwrap();
}

/// A file of `len` bytes: the marker repeated (so it fills whole blocks, never
/// inline data).
fn marker_file(path: &Path, marker: &str, len: usize) {
    let line = format!("{marker}\n");
    let body: Vec<u8> = line.bytes().cycle().take(len).collect();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, body).unwrap();
}

fn mkfs(img: &Path, dir: &Path, mib: u64, uuid: &str, label: &str) {
    disk::make_ext4(img, dir, mib, "^metadata_csum_seed", uuid, label, SEED);
}

/// `debugfs -w -R "rm PATH"`: the file's blocks are freed, its bytes stay.
fn debugfs_rm(img: &Path, path: &str) {
    run(Command::new("debugfs")
        .arg("-w")
        .arg("-R")
        .arg(format!("rm {path}"))
        .arg(img));
}

fn debugfs_cat(img: &Path, path: &str) -> Vec<u8> {
    let o = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(img)
        .output()
        .unwrap();
    o.stdout
}

fn debugfs_stat(img: &Path, path: &str) -> String {
    run(Command::new("debugfs")
        .arg("-R")
        .arg(format!("stat {path}"))
        .arg(img))
}

/// A minimal Debian root: enough for imgsan to find the guest and its mounts.
fn debian_root(dir: &Path, fstab: &str) {
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(
        dir.join("etc/os-release"),
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n",
    )
    .unwrap();
    fs::write(dir.join("etc/debian_version"), "12.5\n").unwrap();
    fs::write(dir.join("etc/fstab"), fstab).unwrap();
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice:/home/alice:/bin/bash\n",
    )
    .unwrap();
    fs::write(dir.join("etc/group"), "root:x:0:\nalice:x:1000:\n").unwrap();
    fs::write(
        dir.join("etc/shadow"),
        "root:*:19000:0:99999:7:::\nalice:!:19000:0:99999:7:::\n",
    )
    .unwrap();
    for d in ["root", "usr/bin", "var/lib", "opt"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
}

/// One partition of a disk to build: its number, start and size in MiB, GPT
/// type code, and the image to copy in (or bytes to write).
struct Part {
    start_mib: u64,
    mib: u64,
    code: &'static str,
    content: Content,
}

enum Content {
    Image(PathBuf),
    Bytes(Vec<u8>),
    Zeros,
}

fn gpt_disk(out: &Path, disk_mib: u64, parts: &[Part]) {
    let _ = fs::remove_file(out);
    fs::File::create(out)
        .unwrap()
        .set_len(disk_mib * MIB)
        .unwrap();
    let mut c = Command::new("sgdisk");
    c.arg("-o");
    for (i, p) in parts.iter().enumerate() {
        let n = i + 1;
        let s = p.start_mib * MIB / SECTOR;
        let e = (p.start_mib + p.mib) * MIB / SECTOR - 1;
        c.arg(format!("--new={n}:{s}:{e}"))
            .arg(format!("--typecode={n}:{}", p.code));
    }
    run(c.arg(out));
    fill(out, parts);
}

fn fill(out: &Path, parts: &[Part]) {
    for p in parts {
        match &p.content {
            Content::Image(img) => disk::copy_into(out, p.start_mib * MIB, img),
            Content::Bytes(b) => write_at(out, p.start_mib * MIB, b),
            Content::Zeros => {}
        }
    }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// The volume outcomes of a report, as (name, action).
fn actions(report: &serde_json::Value) -> Vec<(String, String)> {
    report["output"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn warnings(report: &serde_json::Value) -> Vec<String> {
    report["sanitize"]["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

/// The marker disk: see the module comment. Returns its path.
fn marker_disk(w: &Path) -> PathBuf {
    let fstab = format!(
        "UUID={ROOT_UUID} / ext4 defaults 0 1\nUUID={HOME_UUID} /home ext4 defaults 0 2\nUUID={SWAP_UUID} none swap sw 0 0\n"
    );
    let root = w.join("root");
    debian_root(&root, &fstab);
    // Under the /home mount point, in the root filesystem: the guest never sees it.
    marker_file(&root.join("home/old-home.txt"), MARKERS[5], 20_000);
    marker_file(&root.join("deleted.bin"), MARKERS[6], 40_000);
    marker_file(&root.join("tmp/session.txt"), MARKERS[10], 10_000);
    // A hard link from a kept directory into an emptied one: documented to stay.
    fs::write(
        root.join("opt/shared.txt"),
        "shared between /opt and /tmp\n",
    )
    .unwrap();
    fs::hard_link(root.join("opt/shared.txt"), root.join("tmp/shared.txt")).unwrap();
    let root_img = w.join("root.img");
    mkfs(&root_img, &root, 48, ROOT_UUID, "root");
    debugfs_rm(&root_img, "/deleted.bin");

    let home = w.join("home");
    marker_file(&home.join("alice/notes.txt"), MARKERS[8], 30_000);
    marker_file(&home.join("alice/gone.bin"), MARKERS[7], 30_000);
    let home_img = w.join("home.img");
    mkfs(&home_img, &home, 16, HOME_UUID, "home");
    debugfs_rm(&home_img, "/alice/gone.bin");

    let data = w.join("data");
    marker_file(&data.join("results/secret.csv"), MARKERS[9], 50_000);
    marker_file(&data.join("scratch.bin"), MARKERS[11], 30_000);
    let data_img = w.join("data.img");
    mkfs(&data_img, &data, 16, DATA_UUID, "data");
    debugfs_rm(&data_img, "/scratch.bin");

    let swap_img = w.join("swap.img");
    disk::make_swap(&swap_img, 8, SWAP_UUID, "swap0");
    write_at(&swap_img, 3 * 4096, MARKERS[4].as_bytes());

    let out = w.join("markers.raw");
    gpt_disk(
        &out,
        94,
        &[
            Part {
                start_mib: 1,
                mib: 48,
                code: "8300",
                content: Content::Image(root_img),
            },
            Part {
                start_mib: 50,
                mib: 8,
                code: "8200",
                content: Content::Image(swap_img),
            },
            Part {
                start_mib: 58,
                mib: 16,
                code: "8302",
                content: Content::Image(home_img),
            },
            Part {
                start_mib: 74,
                mib: 16,
                code: "8300",
                content: Content::Image(data_img),
            },
        ],
    );
    write_at(&out, 49 * MIB + 4096, MARKERS[0].as_bytes());
    write_at(&out, 91 * MIB, MARKERS[1].as_bytes());
    write_at(&out, 34 * SECTOR + 100, MARKERS[2].as_bytes());
    write_at(&out, 1500 * SECTOR, MARKERS[2].as_bytes());
    write_at(&out, SECTOR + 200, MARKERS[3].as_bytes());
    out
}

fn assert_no_markers(img: &Path, what: &str) {
    let found = disk::scan(img, &MARKERS);
    let left: Vec<(&str, &Vec<u64>)> = MARKERS
        .iter()
        .copied()
        .zip(found.iter())
        .filter(|(_, h)| !h.is_empty())
        .collect();
    assert!(left.is_empty(), "{what}: markers survived: {left:?}");
}

#[test]
fn marker_disk_leaves_nothing_raw_and_qcow2() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let src = marker_disk(w);
    // Every marker is really in the input (the scan would find them).
    let found = disk::scan(&src, &MARKERS);
    for (m, hits) in MARKERS.iter().zip(&found) {
        assert!(!hits.is_empty(), "{m} was not planted");
    }
    let qcow = w.join("markers.qcow2");
    disk::to_qcow2(&src, &qcow, false);

    for input in [&src, &qcow] {
        let out = w.join("out.raw");
        let report = w.join("report.json");
        let o = imgsan(&[
            "sanitize",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--force",
            "--format",
            "json",
            "--report",
            report.to_str().unwrap(),
        ]);
        assert!(matches!(o.status.code(), Some(0 | 1)), "{}", text(&o));
        assert!(out.exists(), "{}", text(&o));
        assert_no_markers(&out, &input.display().to_string());

        let r = json(&report);
        assert_eq!(
            actions(&r),
            [
                ("partition 1".to_string(), "rebuilt".to_string()),
                ("partition 2".to_string(), "swap re-created".to_string()),
                ("partition 3".to_string(), "rebuilt".to_string()),
                ("partition 4".to_string(), "emptied".to_string()),
            ]
        );
        let unmounted: Vec<&serde_json::Value> = r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["check_id"] == "volumes.unmounted")
            .collect();
        assert_eq!(unmounted.len(), 1, "{r:#}");
        let msg = unmounted[0]["message"].as_str().unwrap();
        assert!(
            msg.contains("partition 4") && msg.contains("16.0 MiB") && msg.contains("results"),
            "{msg}"
        );
        let warns = warnings(&r);
        assert!(
            warns
                .iter()
                .any(|w| w.contains("/tmp/shared.txt") && w.contains("/opt/shared.txt")),
            "hard link warning: {warns:?}"
        );

        // The emptied data volume keeps its identity; the shared file its data.
        let data_out = w.join("data.out");
        extract(&out, 74 * MIB, 16 * MIB, &data_out);
        let blkid = run(Command::new("blkid")
            .args(["-p", "-o", "export"])
            .arg(&data_out));
        assert!(blkid.contains(&format!("UUID={DATA_UUID}")), "{blkid}");
        assert!(blkid.contains("LABEL=data"), "{blkid}");
        let root_out = w.join("root.out");
        extract(&out, MIB, 48 * MIB, &root_out);
        assert_eq!(
            debugfs_cat(&root_out, "/opt/shared.txt"),
            b"shared between /opt and /tmp\n"
        );
        let ls = run(Command::new("debugfs")
            .arg("-R")
            .arg("ls -l /home")
            .arg(&root_out));
        assert!(!ls.contains("old-home.txt"), "{ls}");
        fs::remove_file(&out).unwrap();
    }

    // With the home rule off, the covered file is kept: the manifest names it by
    // its volume, not by a guest path it does not have.
    let out = w.join("out.raw");
    let manifest = w.join("m.txt");
    let o = imgsan(&[
        "sanitize",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--force",
        "--disable",
        "home",
        "--keep-unmounted",
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", text(&o));
    let m = fs::read_to_string(&manifest).unwrap();
    assert!(
        m.lines()
            .any(|l| l.ends_with("\tpartition 1:/home/old-home.txt")),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l.ends_with("\tpartition 4:/results/secret.csv")),
        "{m}"
    );
    assert!(
        !m.lines().any(|l| l.ends_with("\t/home/old-home.txt")),
        "{m}"
    );
}

#[test]
fn grub_core_survives_and_the_junk_after_it_does_not() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let root = w.join("root");
    debian_root(&root, &format!("UUID={ROOT_UUID} / ext4 defaults 0 1\n"));
    let root_img = w.join("root.img");
    mkfs(&root_img, &root, 40, ROOT_UUID, "root");
    let src = w.join("mbr.raw");
    fs::File::create(&src).unwrap().set_len(42 * MIB).unwrap();
    let mut child = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&src)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nlabel-id: 0x1234abcd\nunit: sectors\n\nstart=2048, size=81920, type=83, bootable\n")
        .unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    disk::copy_into(&src, MIB, &root_img);
    // GRUB's boot.img code in the MBR (its first 440 bytes), its core image in
    // sector 1 on, then junk.
    let boot = fs::read("/usr/lib/grub/i386-pc/boot.img").unwrap();
    write_at(&src, 0, &boot[..440]);
    let core = disk::grub_core_image();
    write_at(&src, SECTOR, &core);
    let after = SECTOR + core.len() as u64;
    let junk_marker = "LEAKMARK-JUNK-after-grub-core";
    write_at(&src, after + 512, junk_marker.as_bytes());
    write_at(&src, MIB - 4096, &det_bytes("no_leaks/gap-junk", 2048));

    let out = w.join("out.raw");
    let o = imgsan(&[
        "sanitize",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--force",
    ]);
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", text(&o));
    assert_eq!(
        read_range(&out, 0, 512),
        read_range(&src, 0, 512),
        "sector 0"
    );
    assert!(
        read_range(&out, SECTOR, core.len() as u64) == core,
        "GRUB's core image changed"
    );
    assert!(
        read_range(&out, after, MIB - after).iter().all(|&b| b == 0),
        "junk after GRUB's core image survived"
    );
    assert!(disk::scan(&out, &[junk_marker])[0].is_empty());
}

#[test]
fn unknown_partitions_are_refused_unless_kept_and_repack_needs_something_to_rebuild() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let root = w.join("root");
    debian_root(&root, &format!("UUID={ROOT_UUID} / ext4 defaults 0 1\n"));
    let root_img = w.join("root.img");
    mkfs(&root_img, &root, 40, ROOT_UUID, "root");
    let junk = det_bytes("no_leaks/junk-partition", 4 * MIB as usize);
    let src = w.join("junk.raw");
    gpt_disk(
        &src,
        52,
        &[
            Part {
                start_mib: 1,
                mib: 40,
                code: "8300",
                content: Content::Image(root_img),
            },
            Part {
                start_mib: 41,
                mib: 4,
                code: "8300",
                content: Content::Bytes(junk.clone()),
            },
            Part {
                start_mib: 45,
                mib: 4,
                code: "0700",
                content: Content::Zeros,
            },
        ],
    );
    let before = disk::blake3_file(&src);
    let out = w.join("out.raw");
    let o = imgsan(&[
        "sanitize",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("partition 2")
            && err.contains("Linux filesystem")
            && err.contains("4.0 MiB")
            && err.contains("--keep-partition"),
        "{err}"
    );
    assert!(!out.exists());

    let report = w.join("r.json");
    let o = imgsan(&[
        "sanitize",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--force",
        "--keep-partition",
        "2",
        "--format",
        "json",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", text(&o));
    assert!(
        read_range(&out, 41 * MIB, 4 * MIB) == junk,
        "kept partition"
    );
    let r = json(&report);
    assert_eq!(r["output"]["kept_partitions"], serde_json::json!([2]));
    let a = actions(&r);
    assert_eq!(a[1], ("partition 2".into(), "verbatim".into()));
    assert_eq!(a[2], ("partition 3".into(), "hole".into()));
    let notes = r["output"]["volumes"][1]["note"].as_str().unwrap();
    assert!(notes.contains("--keep-partition 2"), "{notes}");

    // A number the disk does not have is a usage error.
    let o = imgsan(&[
        "sanitize",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--force",
        "--keep-partition",
        "9",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // repack copies the junk partition and says so; with nothing to rebuild it
    // refuses.
    let o = Command::new(BIN)
        .args(["repack", src.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("copied verbatim"),
        "{}",
        text(&o)
    );
    let swap_img = w.join("swap.img");
    disk::make_swap(&swap_img, 8, SWAP_UUID, "swap0");
    let nothing = w.join("nothing.raw");
    gpt_disk(
        &nothing,
        16,
        &[
            Part {
                start_mib: 1,
                mib: 8,
                code: "8200",
                content: Content::Image(swap_img),
            },
            Part {
                start_mib: 9,
                mib: 4,
                code: "8300",
                content: Content::Bytes(junk),
            },
        ],
    );
    let out2 = w.join("out2.raw");
    let o = Command::new(BIN)
        .args([
            "repack",
            nothing.to_str().unwrap(),
            "-o",
            out2.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nothing to rebuild"),
        "{}",
        text(&o)
    );
    assert!(!out2.exists());
    assert_eq!(disk::blake3_file(&src), before, "the input changed");
}

#[test]
fn symlinked_rule_targets_are_kept_with_warnings() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let root = w.join("root");
    debian_root(&root, &format!("UUID={ROOT_UUID} / ext4 defaults 0 1\n"));
    let files: [(&str, &[u8]); 4] = [
        ("opt/app/b.txt", b"application data, not a temporary file\n"),
        ("etc/keepdir/d.log", b"not a log of this guest's /var/log\n"),
        (
            "etc/keepdir/old.log.1",
            b"looks rotated, but it is not under /var/log\n",
        ),
        ("usr/share/keep/e.txt", b"system files, not user homes\n"),
    ];
    for (p, body) in files {
        fs::create_dir_all(root.join(p).parent().unwrap()).unwrap();
        fs::write(root.join(p), body).unwrap();
    }
    fs::create_dir_all(root.join("var")).unwrap();
    std::os::unix::fs::symlink("/opt/app", root.join("tmp")).unwrap();
    std::os::unix::fs::symlink("/etc/keepdir", root.join("var/log")).unwrap();
    std::os::unix::fs::symlink("usr/share/keep", root.join("home")).unwrap();
    let root_img = w.join("root.img");
    mkfs(&root_img, &root, 40, ROOT_UUID, "root");
    let src = w.join("links.raw");
    gpt_disk(
        &src,
        42,
        &[Part {
            start_mib: 1,
            mib: 40,
            code: "8300",
            content: Content::Image(root_img),
        }],
    );
    let out = w.join("out.raw");
    let report = w.join("r.json");
    let o = imgsan(&[
        "sanitize",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--force",
        "--format",
        "json",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", text(&o));
    let root_out = w.join("root.out");
    extract(&out, MIB, 40 * MIB, &root_out);
    for (p, body) in files {
        assert_eq!(debugfs_cat(&root_out, &format!("/{p}")), body, "/{p}");
    }
    for (link, to) in [
        ("/tmp", "/opt/app"),
        ("/var/log", "/etc/keepdir"),
        ("/home", "usr/share/keep"),
    ] {
        let st = debugfs_stat(&root_out, link);
        assert!(
            st.contains("Type: symlink") && st.contains(to),
            "{link}: {st}"
        );
    }
    let warns = warnings(&json(&report));
    for (link, to) in [
        ("/tmp", "/opt/app"),
        ("/var/log", "/etc/keepdir"),
        ("/home", "usr/share/keep"),
    ] {
        assert!(
            warns.iter().any(|w| w.contains(link) && w.contains(to)),
            "no warning for {link}: {warns:?}"
        );
    }
}
