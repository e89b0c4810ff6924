//! `imgsan sanitize` end to end, through the binary, on whole disks that look like
//! used instances (tests/common/guest.rs builds the guest, tests/common/disk.rs packs
//! it with mke2fs, sgdisk/sfdisk, mkfs.vfat and mkswap, and plants secrets in files,
//! in free blocks and in swap).
//!
//! Oracles imgsan shares no code with: a byte scan of the whole output for every
//! planted marker; the fixture's keep list hashed on the host against the manifest;
//! `e2fsck -fn` on every output ext4 filesystem; `sgdisk -v` / `sfdisk --verify`;
//! `blkid` for identities; `b3sum`-equivalent hashing of the files by the test; the
//! Linux kernel through libguestfs (one appliance start) mounting the outputs
//! read-only; Python's jsonschema for the JSON report.

#[path = "common/disk.rs"]
mod disk;
#[path = "common/guest.rs"]
mod guest;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use guest::{Distro, GuestOptions, GuestTree, PartitionTable, Role};

/// Name, description and date that pass the policy, so only the guest decides.
const REQUEST: [&str; 6] = [
    "--name",
    "Workshop-Genomics-v2",
    "--description",
    "Ubuntu with samtools, bcftools and htslib for the spring genomics workshop",
    "--today",
    "2024-06-01",
];

fn imgsan(args: &[&str]) -> Output {
    let mut a: Vec<&str> = args.to_vec();
    if args.first() == Some(&"sanitize") {
        a.extend(REQUEST);
    }
    Command::new(env!("CARGO_BIN_EXE_imgsan"))
        .args(&a)
        .env("CI", "1")
        .output()
        .expect("imgsan runs")
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn tool(cmd: &mut Command) -> (bool, String) {
    let o = cmd.output().expect("tool runs");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    g: GuestTree,
    disk: disk::GuestDisk,
}

fn fixture(opts: GuestOptions) -> Fixture {
    fixture_with(opts, &disk::DiskOptions::default())
}

fn fixture_with(opts: GuestOptions, dopts: &disk::DiskOptions) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    let g = guest::build(&tree, &opts);
    let img = dir.path().join("in.raw");
    let disk = disk::pack(&g, &img, dopts);
    // The host tree then shows what the image's filesystems hold.
    for p in &g.delete_after_pack {
        let hp = g.host_path(p);
        if fs::symlink_metadata(&hp).is_ok() {
            if hp.is_dir() {
                fs::remove_dir_all(&hp).unwrap();
            } else {
                fs::remove_file(&hp).unwrap();
            }
        }
    }
    Fixture {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        g,
        disk,
    }
}

/// Parses a manifest: path -> (blake3, mode, uid, gid, size).
fn read_manifest(p: &Path) -> BTreeMap<String, (String, u32, u32, u32, u64)> {
    let mut m = BTreeMap::new();
    for line in fs::read_to_string(p).unwrap().lines() {
        if line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.splitn(6, '\t').collect();
        assert_eq!(f.len(), 6, "manifest line {line:?}");
        m.insert(
            f[5].to_string(),
            (
                f[0].to_string(),
                u32::from_str_radix(f[1], 8).unwrap(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
            ),
        );
    }
    m
}

/// Every kept regular file of the fixture is in the manifest with the host file's
/// content hash, permissions, owner and size.
fn kept_files_identical(f: &Fixture, manifest: &Path) {
    let m = read_manifest(manifest);
    let mut checked = 0;
    for k in &f.g.keep {
        if k.starts_with("/boot/efi") {
            continue; // vfat, copied verbatim: checked with the verbatim regions
        }
        let hp = f.g.host_path(k);
        let md = fs::symlink_metadata(&hp).unwrap();
        if !md.is_file() {
            continue;
        }
        let (h, mode, uid, gid, size) = m
            .get(k)
            .unwrap_or_else(|| panic!("kept file {k} is not in the manifest"));
        assert_eq!(*h, guest::blake3_of(&hp), "{k}: content");
        assert_eq!(*mode, md.mode() & 0o7777, "{k}: mode");
        assert_eq!((*uid, *gid), (md.uid(), md.gid()), "{k}: owner");
        assert_eq!(*size, md.len(), "{k}: size");
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} kept files checked");
    // Nothing under the emptied directories survives, whatever its name.
    for dir in ["/home/", "/tmp/", "/root/", "/mnt/"] {
        let left: Vec<&String> = m.keys().filter(|p| p.starts_with(dir)).collect();
        assert!(left.is_empty(), "files left under {dir}: {left:?}");
    }
}

fn no_marker_left(f: &Fixture, out: &Path) {
    let mut markers = f.g.markers.clone();
    markers.extend(f.disk.markers.clone());
    assert!(markers.len() > 40);
    let left: Vec<String> = disk::markers_present(out, &markers)
        .iter()
        .map(|m| format!("{} ({}: {})", m.text, m.place, m.what))
        .collect();
    assert!(left.is_empty(), "secrets survived: {left:#?}");
}

/// e2fsck -fn on every ext4 partition of the output, which start where the
/// source's did.
fn fsck_clean(f: &Fixture, out: &Path) {
    for p in f
        .disk
        .parts
        .iter()
        .filter(|p| matches!(p.role, Role::Root | Role::Boot))
    {
        let dev = format!("{}?offset={}", out.display(), p.start);
        let (ok, o) = tool(Command::new("e2fsck").args(["-fn", &dev]));
        assert!(ok, "e2fsck -fn {:?}: {o}", p.role);
    }
}

fn table_verifies(f: &Fixture, out: &Path) {
    match f.g.options.table {
        PartitionTable::Gpt => {
            let (ok, o) = tool(Command::new("sgdisk").arg("-v").arg(out));
            assert!(
                ok && o.contains("No problems found"),
                "sgdisk -v {}: {o}",
                out.display()
            );
        }
        PartitionTable::Mbr => {
            let (ok, o) = tool(Command::new("sfdisk").arg("--verify").arg(out));
            assert!(ok, "sfdisk --verify {}: {o}", out.display());
        }
    }
}

fn blkid(img: &Path, offset: u64) -> BTreeMap<String, String> {
    let (_, o) = tool(
        Command::new("blkid")
            .args(["-p", "-o", "export", "-O", &offset.to_string()])
            .arg(img),
    );
    o.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn identities_kept(f: &Fixture, out: &Path) {
    for p in &f.disk.parts {
        let want = blkid(&f.disk.path, p.start);
        let got = blkid(out, p.start);
        for k in ["TYPE", "UUID", "LABEL"] {
            assert_eq!(got.get(k), want.get(k), "{:?}: {k}", p.role);
        }
    }
}

fn schema_valid(report: &Path) {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/report.schema.json");
    let (ok, o) = tool(Command::new("python3").args([
        "-c",
        "import json,sys,jsonschema; jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2])))",
        &report.display().to_string(),
        &schema.display().to_string(),
    ]));
    assert!(ok, "report does not follow the schema: {o}");
}

#[test]
fn used_ubuntu_disk_is_cleaned_and_its_kept_files_survive() {
    // No swap: the root is the last partition, so --shrink can shrink it (swap
    // re-creation is checked on the MBR disk below).
    let mut opts = GuestOptions::with_every_problem(Distro::Ubuntu2204);
    opts.swap = false;
    // A root of three 128 MiB block groups holding a few MiB: room to shrink.
    let dopts = disk::DiskOptions {
        root_mib: Some(384),
        ..Default::default()
    };
    let f = fixture_with(opts, &dopts);
    let qcow = f.dir.join("in.qcow2");
    disk::to_qcow2(&f.disk.path, &qcow, true);
    let in_hash = disk::blake3_file(&qcow);
    let raw_hash = disk::blake3_file(&f.disk.path);
    let out = f.dir.join("out.raw");
    let manifest = f.dir.join("out.manifest");
    let report = f.dir.join("report.json");
    let s = |p: &Path| p.display().to_string();

    // Licensed software blocks: nothing is written without --force.
    let o = imgsan(&["sanitize", &s(&qcow), "-o", &s(&out)]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(!out.exists());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("nothing written") && err.contains("software.licensed"),
        "{err}"
    );

    let o = imgsan(&[
        "sanitize",
        &s(&qcow),
        "-o",
        &s(&out),
        "--force",
        "--manifest",
        &s(&manifest),
        "--report",
        &s(&report),
        "--format",
        "json",
    ]);
    assert_eq!(
        code(&o),
        1,
        "forced, still reports the violations: {}",
        text(&o)
    );
    assert!(out.exists(), "{}", text(&o));
    let names: Vec<String> = fs::read_dir(&f.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("imgsan-tmp")),
        "temporary files left: {names:?}"
    );

    no_marker_left(&f, &out);
    kept_files_identical(&f, &manifest);
    fsck_clean(&f, &out);
    table_verifies(&f, &out);
    identities_kept(&f, &out);
    for r in &f.disk.verbatim {
        assert_eq!(
            disk::blake3_range(&out, r.offset, r.len),
            r.blake3,
            "{} is copied verbatim",
            r.what
        );
    }

    // The report: schema, hashes, counts.
    schema_valid(&report);
    let j: serde_json::Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(j["mode"], "sanitize");
    assert_eq!(j["image"]["blake3"], in_hash.as_str());
    assert_eq!(j["output"]["blake3"], disk::blake3_file(&out).as_str());
    assert_eq!(j["output"]["size_bytes"], fs::metadata(&out).unwrap().len());
    assert_eq!(j["output"]["forced"], true);
    let totals = &j["sanitize"]["totals"];
    assert!(totals["files_deleted"].as_u64().unwrap() > 10, "{totals}");
    assert!(totals["bytes_freed"].as_u64().unwrap() > 0);
    assert!(
        totals["files_overwritten"].as_u64().unwrap() + totals["files_truncated"].as_u64().unwrap()
            > 5
    );
    let fstab = j["sanitize"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["transform"] == "fstab")
        .unwrap();
    assert!(
        fstab["notes"].to_string().contains("nfs") || fstab.to_string().contains("nfs"),
        "{fstab}"
    );
    // The re-check of the cleaned files: every finding a rule claimed is gone from
    // it, no claim failed, and its errors are exactly what blocks.
    let recheck = &j["recheck"];
    assert_eq!(recheck["not_fixed"], serde_json::json!([]), "{recheck}");
    let again = recheck["findings"].as_array().unwrap();
    let same = |a: &serde_json::Value, b: &serde_json::Value| {
        a["check_id"] == b["check_id"] && a["message"] == b["message"]
    };
    let claimed: Vec<&serde_json::Value> = j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| !f["fixed_by_sanitize"].is_null())
        .collect();
    assert!(claimed.len() >= 3, "{}", j["findings"]);
    for c in &claimed {
        assert!(!again.iter().any(|g| same(c, g)), "{c} is still there");
    }
    let errors = again.iter().filter(|g| g["severity"] == "error").count();
    assert!(errors > 0, "the licensed software stays: {recheck}");
    assert_eq!(j["summary"]["blocking"], errors as u64);

    // --shrink: smaller, same checks.
    let small = f.dir.join("small.raw");
    let o = imgsan(&[
        "sanitize",
        &s(&qcow),
        "-o",
        &s(&small),
        "--force",
        "--shrink",
        "--margin",
        "4M",
    ]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    let (big, little) = (
        fs::metadata(&out).unwrap().len(),
        fs::metadata(&small).unwrap().len(),
    );
    assert!(little < big, "--shrink: {little} >= {big}: {}", text(&o));
    no_marker_left(&f, &small);
    fsck_clean(&f, &small);
    table_verifies(&f, &small);

    // The kernel mounts both outputs read-only and reads a kept file.
    let root_n = f.disk.part(Role::Root).number;
    let kept = "/etc/ssh/sshd_config";
    let want = fs::read_to_string(f.g.host_path(kept)).unwrap();
    let cmds = [
        format!("mount-ro /dev/sda{root_n} /"),
        "cat /etc/os-release".to_string(),
        format!("cat {kept}"),
        "ls /home".to_string(),
        "umount /".to_string(),
        format!("mount-ro /dev/sdb{root_n} /"),
        "cat /etc/os-release".to_string(),
        format!("cat {kept}"),
        "umount /".to_string(),
    ];
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let outs = disk::guestfish_session(&[(&out, "raw"), (&small, "raw")], false, &cmds);
    let os_release = fs::read_to_string(f.g.host_path("/etc/os-release")).unwrap();
    assert_eq!(outs[1].trim_end(), os_release.trim_end());
    assert_eq!(outs[2].trim_end(), want.trim_end());
    assert_eq!(outs[3].trim(), "", "/home is empty");
    assert_eq!(outs[6].trim_end(), os_release.trim_end());
    assert_eq!(outs[7].trim_end(), want.trim_end());

    // The input was only read.
    assert_eq!(disk::blake3_file(&qcow), in_hash);
    assert_eq!(disk::blake3_file(&f.disk.path), raw_hash);
}

#[test]
fn mbr_centos_disk_dry_run_stream_and_clean_exit() {
    let mut opts = GuestOptions::new(Distro::CentOS7);
    opts.table = PartitionTable::Mbr;
    opts.efi = false;
    let f = fixture(opts);
    let input = f.disk.path.clone();
    let in_hash = disk::blake3_file(&input);
    let s = |p: &Path| p.display().to_string();

    // A dry run writes nothing and prints the plan and the report.
    let o = imgsan(&["sanitize", &s(&input), "--dry-run"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let out_text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "Sanitize rules",
        "dry run",
        "rebuilt",
        "home: ",
        "swap re-created",
        "PASSED",
    ] {
        assert!(
            out_text.contains(want),
            "dry run output lacks {want:?}:\n{out_text}"
        );
    }
    assert_eq!(
        fs::read_dir(&f.dir).unwrap().count(),
        2,
        "tree and in.raw only"
    );

    let out = f.dir.join("out.raw");
    let report = f.dir.join("r.json");
    let o = imgsan(&[
        "sanitize",
        &s(&input),
        "-o",
        &s(&out),
        "--report",
        &s(&report),
        "--format",
        "json",
    ]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    no_marker_left(&f, &out);
    fsck_clean(&f, &out);
    table_verifies(&f, &out);
    identities_kept(&f, &out);
    let j: serde_json::Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
    assert!(
        !j["recheck"]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["severity"] == "error"),
        "{}",
        j["recheck"]
    );
    let file_hash = disk::blake3_file(&out);
    assert_eq!(j["output"]["blake3"], file_hash.as_str());

    // Streamed to standard output: the same bytes, the report on standard error.
    let o = Command::new(env!("CARGO_BIN_EXE_imgsan"))
        .args(["sanitize", &s(&input), "-o", "-"])
        .args(REQUEST)
        .env("CI", "1")
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(blake3::hash(&o.stdout).to_hex().to_string(), file_hash);
    assert!(String::from_utf8_lossy(&o.stderr).contains(&file_hash));

    // Deterministic: a second run gives the same image.
    let again = f.dir.join("again.raw");
    let o = imgsan(&["sanitize", &s(&input), "-o", &s(&again)]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(disk::blake3_file(&again), file_hash);
    assert_eq!(disk::blake3_file(&input), in_hash);
}

#[test]
fn bad_input_gives_the_documented_exit_codes_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.display().to_string();
    let out = dir.path().join("out.raw");

    // Unreadable image: a QCOW2 header with an unknown version.
    let bad = dir.path().join("bad.qcow2");
    let mut h = vec![0u8; 4096];
    h[..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&9u32.to_be_bytes());
    fs::write(&bad, &h).unwrap();
    let before = disk::blake3_file(&bad);
    let o = imgsan(&["sanitize", &s(&bad), "-o", &s(&out)]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(!out.exists());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    assert_eq!(disk::blake3_file(&bad), before);

    // A rules-file error: file:line:column, exit 2.
    let rules = dir.path().join("rules");
    fs::create_dir(&rules).unwrap();
    fs::write(
        rules.join("sanitize.yaml"),
        "kind: sanitize\nrules:\n  - id: x\n    action: explode\n",
    )
    .unwrap();
    let o = imgsan(&["sanitize", &s(&bad), "-o", &s(&out), "--rules", &s(&rules)]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("sanitize.yaml:4:"), "{err}");
    assert!(!out.exists());

    // An unknown rule id for --disable is a usage error.
    let f = fixture(GuestOptions::new(Distro::Ubuntu2004));
    let o = imgsan(&[
        "sanitize",
        &s(&f.disk.path),
        "-o",
        &s(&out),
        "--disable",
        "no-such-rule",
    ]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(!out.exists());

    // A full disk during the write: exit 4, the temporary file removed. The disk
    // holds half the data the output needs.
    let report = dir.path().join("r.json");
    let o = imgsan(&[
        "sanitize",
        &s(&f.disk.path),
        "-o",
        &s(&out),
        "--report",
        &s(&report),
        "--format",
        "json",
    ]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let j: serde_json::Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
    let half_kib = j["output"]["data_bytes"].as_u64().unwrap() / 2048;
    assert!(half_kib > 64, "{half_kib}");
    let full = dir.path().join("full");
    fs::create_dir(&full).unwrap();
    let size = format!("size={half_kib}k");
    let (ok, o) = tool(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "imgsan-test"])
            .arg(&full),
    );
    assert!(ok, "mount tmpfs: {o}");
    let target = full.join("out.raw");
    let res = imgsan(&["sanitize", &s(&f.disk.path), "-o", &s(&target)]);
    let left: Vec<_> = fs::read_dir(&full)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let _ = Command::new("umount").arg(&full).status();
    assert_eq!(code(&res), 4, "{}", text(&res));
    assert!(left.is_empty(), "left on the full disk: {left:?}");
    assert!(
        String::from_utf8_lossy(&res.stderr).contains("out.raw")
            || String::from_utf8_lossy(&res.stderr).contains("imgsan-tmp")
    );
}
