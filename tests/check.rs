//! `imgsan check` end to end: guests that look like used Ubuntu 16.04 to 24.04,
//! Debian 12, CentOS 7 (its real rpmdb) and Rocky 9 instances (tests/common/guest.rs),
//! packed into disk images with mke2fs -d, sgdisk/sfdisk and mkswap
//! (tests/common/disk.rs), or into bare ext3/ext4 filesystems; one with a dirty
//! journal written by debugfs, one with a hibernation signature in its swap.
//!
//! For every check id, one case triggers it and one does not (the table in
//! [`every_check_triggers_and_passes`], checked for coverage at the end). Every
//! report is rendered as JSON and validated against rules/report.schema.json by
//! Python's jsonschema, and as JUnit read back by Python's junitparser (both
//! installed by .ci/setup.sh). Exit codes are checked through the binary.
//!
//! The guest is reached in one of two ways, chosen by [`THROUGH_IMAGES`]: through
//! the binary on the packed image (the ext4 reader reads it), or through the
//! library on trees made from the fixtures' host directories
//! (tests/common/hosttree.rs), for builds without the ext4 reader.

#[path = "common/disk.rs"]
mod disk;
#[path = "common/guest.rs"]
mod guest;
#[path = "common/hosttree.rs"]
mod hosttree;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use guest::{AtmoScripts, Distro, GuestOptions, GuestTree, Mongod, PartitionTable, Role, RootRef};
use imgsan::check::{self, CheckOptions, FsState, Inputs, LoadedVolume};
use imgsan::guest::VolumeId;
use imgsan::output::report::{render_json, render_junit};
use imgsan::policy::ids::CHECKS;
use imgsan::rules::Date;

/// Whether the cases run through the binary on the packed images (needs the ext4
/// reader) or through the library on host-directory trees.
const THROUGH_IMAGES: bool = true;

const BIN: &str = env!("CARGO_BIN_EXE_imgsan");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---- fixtures -------------------------------------------------------------------

/// How the image holds the guest.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Layout {
    /// A partitioned disk made by `disk::pack`.
    Disk,
    /// A bare filesystem of this type (no partition table), made by mke2fs -d.
    Bare(&'static str),
}

struct Fixture {
    name: &'static str,
    guest: GuestTree,
    image: PathBuf,
    layout: Layout,
    /// The swap partition carries the kernel's hibernation signature.
    hibernated: bool,
    /// The root filesystem's journal needs recovery (and holds
    /// [`JOURNAL_ONLY_FILE`]).
    live: bool,
    _dir: tempfile::TempDir,
}

/// A file that exists only in the dirty journal of the live fixture: an open
/// redis. The check sees it only if the journal is replayed.
const JOURNAL_ONLY_FILE: &str = "/etc/redis/redis.conf";
const JOURNAL_ONLY_TEXT: &str = "bind 0.0.0.0\nprotected-mode no\nport 6379\n";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Removes a guest path from the host tree (file, symlink or directory).
fn remove(t: &GuestTree, guest_path: &str) {
    let p = t.host_path(guest_path);
    let md = fs::symlink_metadata(&p)
        .unwrap_or_else(|e| panic!("{}: {guest_path} is not in the fixture: {e}", p.display()));
    if md.is_dir() {
        fs::remove_dir_all(&p).unwrap();
    } else {
        fs::remove_file(&p).unwrap();
    }
}

fn write(t: &GuestTree, guest_path: &str, text: &str) {
    let p = t.host_path(guest_path);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, text).unwrap();
}

fn file_size_mib(dir: &Path) -> u64 {
    disk::tree_bytes(dir) / disk::MIB + 24
}

/// A bare ext3 or ext4 filesystem of the guest's root, with the identity its
/// fstab names.
fn make_bare(t: &GuestTree, fs_type: &str, img: &Path) {
    let ids = &t.ids;
    let mut cmd = Command::new("mke2fs");
    cmd.args(["-q", "-F", "-t", fs_type, "-b", "4096", "-I", "256"]);
    if fs_type == "ext4" {
        cmd.args(["-O", t.options.distro.mke2fs_features()]);
    }
    cmd.args(["-U", &ids.root_uuid, "-L", &ids.root_label])
        .arg("-E")
        .arg(format!("hash_seed={},root_owner=0:0", ids.hash_seed))
        .arg("-d")
        .arg(&t.root)
        .arg(img)
        .arg(format!("{}M", file_size_mib(&t.root)))
        .env("E2FSPROGS_FAKE_TIME", guest::CAPTURE_TIME.to_string());
    run(&mut cmd);
}

/// Writes `text` into the filesystem image as `guest_path`, but only through
/// its journal: a copy gets the file with debugfs, and the blocks that changed
/// are written as one committed transaction into the original's journal
/// (debugfs `jo`/`jw`/`jc`), which leaves needs_recovery set, as a crash or a
/// live snapshot does.
fn write_through_journal(img: &Path, guest_path: &str, text: &str) {
    let dir = img.parent().unwrap();
    let after = dir.join("after.img");
    fs::copy(img, &after).unwrap();
    let src = dir.join("journal-file.txt");
    fs::write(&src, text).unwrap();
    let parent = Path::new(guest_path).parent().unwrap().to_str().unwrap();
    let script = format!("mkdir {parent}\nwrite {} {guest_path}\n", src.display());
    fs::write(dir.join("add.cmd"), script).unwrap();
    run(Command::new("debugfs")
        .args(["-w", "-f"])
        .arg(dir.join("add.cmd"))
        .arg(&after));
    let (a, b) = (fs::read(img).unwrap(), fs::read(&after).unwrap());
    let changed: Vec<(usize, &[u8])> = a
        .chunks(4096)
        .zip(b.chunks(4096))
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, (_, y))| (i, y))
        .collect();
    assert!(!changed.is_empty(), "debugfs changed nothing");
    let data = dir.join("txn.bin");
    fs::write(
        &data,
        changed
            .iter()
            .flat_map(|(_, y)| y.to_vec())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let blocks: Vec<String> = changed.iter().map(|(i, _)| i.to_string()).collect();
    let script = format!("jo\njw -b {} {}\njc\n", blocks.join(","), data.display());
    fs::write(dir.join("journal.cmd"), script).unwrap();
    run(Command::new("debugfs")
        .args(["-w", "-f"])
        .arg(dir.join("journal.cmd"))
        .arg(img));
    let dump = run(Command::new("dumpe2fs").arg("-h").arg(img));
    assert!(dump.contains("needs_recovery"), "{dump}");
    fs::remove_file(&after).unwrap();
}

/// Writes the kernel's hibernation signature (`S1SUSPEND`, kernel/power/swap.c)
/// over the swap signature of the disk's swap partition.
fn hibernate(d: &disk::GuestDisk) {
    use std::io::{Seek, SeekFrom, Write};
    let swap = d.part(Role::Swap);
    let mut f = fs::OpenOptions::new().write(true).open(&d.path).unwrap();
    f.seek(SeekFrom::Start(swap.start + 4096 - 10)).unwrap();
    f.write_all(b"S1SUSPEND\0").unwrap();
}

struct Spec {
    name: &'static str,
    options: GuestOptions,
    layout: Layout,
    hibernated: bool,
    live: bool,
    /// Edits of the host tree before the image is made.
    edit: fn(&GuestTree),
}

fn build(spec: Spec) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let t0 = std::time::Instant::now();
    let tree_dir = dir.path().join("tree");
    fs::create_dir(&tree_dir).unwrap();
    let g = guest::build(&tree_dir, &spec.options);
    (spec.edit)(&g);
    let image = dir.path().join(format!("{}.img", spec.name));
    match spec.layout {
        Layout::Disk => {
            let d = disk::pack(&g, &image, &disk::DiskOptions::default());
            if spec.hibernated {
                hibernate(&d);
            }
        }
        Layout::Bare(fs_type) => {
            for p in &g.delete_after_pack {
                remove(&g, p);
            }
            make_bare(&g, fs_type, &image);
            if spec.live {
                write_through_journal(&image, JOURNAL_ONLY_FILE, JOURNAL_ONLY_TEXT);
            }
        }
    }
    // The host tree shows what the image's filesystems hold.
    for p in &g.delete_after_pack {
        if fs::symlink_metadata(g.host_path(p)).is_ok() {
            remove(&g, p);
        }
    }
    if spec.live {
        write(&g, JOURNAL_ONLY_FILE, JOURNAL_ONLY_TEXT);
    }
    eprintln!("{}: built in {:?}", spec.name, t0.elapsed());
    Fixture {
        name: spec.name,
        guest: g,
        image,
        layout: spec.layout,
        hibernated: spec.hibernated,
        live: spec.live,
        _dir: dir,
    }
}

fn quiet(mut o: GuestOptions) -> GuestOptions {
    o.home_software = false;
    o.mongod = Some(Mongod::Secured);
    o
}

fn fixtures() -> BTreeMap<&'static str, Fixture> {
    let none: fn(&GuestTree) = |_| {};
    let specs = vec![
        // A well-kept image: nothing to report with a good name.
        Spec {
            name: "u20-clean",
            options: quiet(GuestOptions::new(Distro::Ubuntu2004)),
            layout: Layout::Disk,
            hibernated: false,
            live: false,
            edit: none,
        },
        // Everything a used instance gets wrong, and suspended to swap.
        Spec {
            name: "u22-problems",
            options: GuestOptions::with_every_problem(Distro::Ubuntu2204),
            layout: Layout::Disk,
            hibernated: true,
            live: false,
            edit: none,
        },
        // Past its end of life, on MBR with a /dev/vda1 fstab, the scripts
        // folder 0700 with a directory in it, and no sshd binary.
        Spec {
            name: "u16-old",
            options: GuestOptions {
                table: PartitionTable::Mbr,
                efi: false,
                root_ref: RootRef::Device,
                atmo_scripts: Some(AtmoScripts::BadFolder),
                ..quiet(GuestOptions::new(Distro::Ubuntu1604))
            },
            layout: Layout::Disk,
            hibernated: false,
            live: false,
            edit: |g| {
                fs::create_dir(g.host_path("/etc/atmo/post-scripts.d/old")).unwrap();
                remove(g, "/usr/sbin/sshd");
            },
        },
        // CentOS 7 with the real rpmdb, separate /boot, MBR; no python at all.
        Spec {
            name: "c7-nopython",
            options: GuestOptions {
                table: PartitionTable::Mbr,
                separate_boot: true,
                ..quiet(GuestOptions::new(Distro::CentOS7))
            },
            layout: Layout::Disk,
            hibernated: false,
            live: false,
            edit: |g| {
                for p in ["/usr/bin/python", "/usr/bin/python2", "/usr/bin/python2.7"] {
                    remove(g, p);
                }
            },
        },
        // Rocky 9 (rpmdb.sqlite), separate /boot; sshd_config deleted. Its /boot
        // volume is left out of fstab and holds no boot loader or kernel: a leftover
        // data volume, for volumes.unmounted.
        Spec {
            name: "r9-nosshdconfig",
            options: GuestOptions {
                separate_boot: true,
                ..quiet(GuestOptions::new(Distro::Rocky9))
            },
            layout: Layout::Disk,
            hibernated: false,
            live: false,
            edit: |g| {
                remove(g, "/etc/ssh/sshd_config");
                let fstab = g.host_path("/etc/fstab");
                let kept: String = fs::read_to_string(&fstab)
                    .unwrap()
                    .lines()
                    .filter(|l| l.split_whitespace().nth(1) != Some("/boot"))
                    .map(|l| format!("{l}\n"))
                    .collect();
                fs::write(&fstab, kept).unwrap();
                let boot = g.boot.as_ref().expect("a separate /boot");
                for e in fs::read_dir(boot).unwrap() {
                    let e = e.unwrap();
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with("grub")
                        || name.starts_with("vmlinuz")
                        || matches!(name.as_str(), "loader" | "efi" | "EFI")
                    {
                        let p = e.path();
                        if p.is_dir() {
                            fs::remove_dir_all(&p).unwrap();
                        } else {
                            fs::remove_file(&p).unwrap();
                        }
                    }
                }
            },
        },
        // Debian is not an accepted family.
        Spec {
            name: "d12",
            options: GuestOptions {
                root_ref: RootRef::PartUuid,
                ..quiet(GuestOptions::new(Distro::Debian12))
            },
            layout: Layout::Disk,
            hibernated: false,
            live: false,
            edit: none,
        },
        // A bare ext3 filesystem named by LABEL in fstab.
        Spec {
            name: "u18-ext3",
            options: GuestOptions {
                efi: false,
                swap: false,
                root_ref: RootRef::Label,
                ..quiet(GuestOptions::new(Distro::Ubuntu1804))
            },
            layout: Layout::Bare("ext3"),
            hibernated: false,
            live: false,
            edit: none,
        },
        // A bare ext4 filesystem captured live (dirty journal holding an open
        // redis configuration), whose os-release lost its version.
        Spec {
            name: "u24-live",
            options: GuestOptions {
                efi: false,
                swap: false,
                ..quiet(GuestOptions::new(Distro::Ubuntu2404))
            },
            layout: Layout::Bare("ext4"),
            hibernated: false,
            live: true,
            edit: |g| {
                let p = g.host_path("/etc/os-release");
                let target = fs::read_link(&p).ok();
                let real = match target {
                    Some(t) => g.host_path(&format!("/etc/{}", t.display())),
                    None => p.clone(),
                };
                let text = fs::read_to_string(&real).unwrap();
                let kept: String = text
                    .lines()
                    .filter(|l| !l.starts_with("VERSION"))
                    .map(|l| format!("{l}\n"))
                    .collect();
                fs::write(&real, kept).unwrap();
                for p in ["/etc/lsb-release", "/etc/debian_version"] {
                    if fs::symlink_metadata(g.host_path(p)).is_ok() {
                        remove(g, p);
                    }
                }
            },
        },
    ];
    specs.into_iter().map(|s| (s.name, build(s))).collect()
}

// ---- running a check ---------------------------------------------------------------

/// What a case asks `imgsan check`.
#[derive(Clone, Default)]
struct Ask {
    name: Option<String>,
    description: Option<String>,
    request: Option<PathBuf>,
    featured: Option<PathBuf>,
    existing: Option<PathBuf>,
    today: Option<&'static str>,
    rules: Option<PathBuf>,
}

const GOOD_NAME: &str = "Genomics-Workbench-v2";
const GOOD_DESCRIPTION: &str =
    "Samtools, bcftools and a conda environment for variant calling, for the spring workshop";

impl Ask {
    fn good() -> Ask {
        Ask {
            name: Some(GOOD_NAME.into()),
            description: Some(GOOD_DESCRIPTION.into()),
            today: Some("2024-06-01"),
            ..Ask::default()
        }
    }

    fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        let mut push = |k: &str, v: String| {
            a.push(k.to_string());
            a.push(v);
        };
        if let Some(v) = &self.name {
            push("--name", v.clone());
        }
        if let Some(v) = &self.description {
            push("--description", v.clone());
        }
        if let Some(v) = &self.request {
            push("--request", v.display().to_string());
        }
        if let Some(v) = &self.featured {
            push("--featured-names", v.display().to_string());
        }
        if let Some(v) = &self.existing {
            push("--existing-names", v.display().to_string());
        }
        if let Some(v) = &self.today {
            push("--today", v.to_string());
        }
        if let Some(v) = &self.rules {
            push("--rules", v.display().to_string());
        }
        a
    }

    fn options(&self) -> CheckOptions {
        CheckOptions {
            name: self.name.clone(),
            description: self.description.clone(),
            request: self.request.clone(),
            featured_names: self.featured.clone(),
            existing_names: self.existing.clone(),
            today: self.today.map(|d| Date::parse(d).unwrap()),
            rules_dir: self.rules.clone(),
        }
    }
}

/// A check's outcome: the JSON report, the JUnit report and the exit code.
struct Outcome {
    json: serde_json::Value,
    json_text: String,
    junit: String,
    exit: i32,
}

impl Outcome {
    fn ids(&self) -> BTreeSet<String> {
        self.json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["check_id"].as_str().unwrap().to_string())
            .collect()
    }

    fn ran(&self) -> BTreeSet<String> {
        self.json["checks_run"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect()
    }

    fn findings(&self, id: &str) -> Vec<&serde_json::Value> {
        self.json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["check_id"] == id)
            .collect()
    }
}

fn imgsan(args: &[String]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the binary with `--format json` and `--format junit`.
fn through_binary(fx: &Fixture, ask: &Ask) -> Outcome {
    let mut base = vec!["check".to_string(), fx.image.display().to_string()];
    base.extend(ask.args());
    let mut json_args = base.clone();
    json_args.extend(["--format".into(), "json".into()]);
    let (exit, json_text, err) = imgsan(&json_args);
    assert!(exit == 0 || exit == 1, "{}: exit {exit}: {err}", fx.name);
    let mut junit_args = base;
    junit_args.extend(["--format".into(), "junit".into()]);
    let (exit2, junit, err2) = imgsan(&junit_args);
    assert_eq!(exit, exit2, "{}: {err2}", fx.name);
    Outcome {
        json: serde_json::from_str(&json_text).unwrap(),
        json_text,
        junit,
        exit,
    }
}

/// The fixture's volumes as the image layer would describe them, with trees
/// read from the host directories.
fn host_volumes(fx: &Fixture) -> Vec<LoadedVolume> {
    let g = &fx.guest;
    let state = |live: bool| FsState {
        superblock_state: "clean".into(),
        journal: "internal".into(),
        needs_recovery: live,
        replayed: live,
        transactions_replayed: u64::from(live),
        blocks_replayed: if live { 4 } else { 0 },
        notes: Vec::new(),
    };
    if let Layout::Bare(fs_type) = fx.layout {
        return vec![LoadedVolume {
            name: "the whole disk".into(),
            id: VolumeId {
                fs_type: Some(fs_type.into()),
                uuid: Some(g.ids.root_uuid.clone()),
                label: Some(g.ids.root_label.clone()),
                ..VolumeId::default()
            },
            size: fs::metadata(&fx.image).unwrap().len(),
            partition_type: None,
            efi_partition: false,
            hibernated: false,
            tree: Some(hosttree::from_dir(&g.root)),
            state: Some(state(fx.live)),
            error: None,
            fs: None,
        }];
    }
    let mbr = g.options.table == PartitionTable::Mbr;
    g.partitions
        .iter()
        .map(|p| {
            let i = &g.ids;
            let (fs_type, uuid, label, tree) = match p.role {
                Role::Root => (
                    "ext4",
                    Some(i.root_uuid.clone()),
                    Some(i.root_label.clone()),
                    Some(hosttree::from_dir(&g.root)),
                ),
                Role::Boot => (
                    "ext4",
                    Some(i.boot_uuid.clone()),
                    Some(i.boot_label.clone()),
                    g.boot.as_deref().map(hosttree::from_dir),
                ),
                Role::Efi => (
                    "vfat",
                    Some(i.efi_volid.clone()),
                    Some(i.efi_label.clone()),
                    None,
                ),
                Role::Swap => (
                    if fx.hibernated { "swsuspend" } else { "swap" },
                    Some(i.swap_uuid.clone()),
                    Some(i.swap_label.clone()),
                    None,
                ),
                Role::BiosBoot => ("unknown", None, None, None),
            };
            LoadedVolume {
                name: format!("partition {}", p.number),
                id: VolumeId {
                    partition: Some(p.number),
                    partuuid: Some(p.partuuid.clone()),
                    partlabel: (!mbr).then(|| p.name.clone()),
                    fs_type: Some(fs_type.into()),
                    uuid,
                    label,
                    ..Default::default()
                },
                size: 0,
                partition_type: None,
                efi_partition: p.role == Role::Efi,
                hibernated: p.role == Role::Swap && fx.hibernated,
                state: tree.as_ref().map(|_| state(false)),
                tree,
                error: None,
                fs: None,
            }
        })
        .collect()
}

fn through_library(fx: &Fixture, ask: &Ask, volumes: &[LoadedVolume]) -> Outcome {
    let inputs = Inputs::load(&ask.options()).unwrap();
    let info = imgsan::policy::ImageInfo {
        path: Some(fx.image.display().to_string()),
        format: Some("raw".into()),
        ..Default::default()
    };
    let r = check::report(volumes, &inputs, info);
    let json_text = render_json(&r);
    Outcome {
        json: serde_json::from_str(&json_text).unwrap(),
        json_text,
        junit: render_junit(&r),
        exit: i32::from(imgsan::policy::exit_code(&r)),
    }
}

// ---- independent readers of the reports ----------------------------------------------

const VALIDATE: &str = r#"
import json, sys, jsonschema
from junitparser import JUnitXml
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
out = {}
for name in sys.argv[2:]:
    doc = json.load(open(name + ".json"))
    errors = sorted(e.message + " at " + "/".join(map(str, e.absolute_path)) for e in v.iter_errors(doc))
    cases = []
    for suite in JUnitXml.fromfile(name + ".xml"):
        for case in suite:
            cases.append({"name": case.name, "failed": any(type(r).__name__ == "Failure" for r in case.result)})
    out[name] = {"errors": errors, "cases": cases}
print(json.dumps(out))
"#;

/// Validates every case's JSON against the schema and reads its JUnit back;
/// checks that JUnit has one testcase per check run, failing exactly where a
/// blocking finding is.
fn validate_reports(dir: &Path, outcomes: &[(String, &Outcome)]) {
    let mut args: Vec<String> = vec![repo()
        .join("rules/report.schema.json")
        .display()
        .to_string()];
    for (i, (_, o)) in outcomes.iter().enumerate() {
        let base = dir.join(format!("case{i}"));
        fs::write(base.with_extension("json"), &o.json_text).unwrap();
        fs::write(base.with_extension("xml"), &o.junit).unwrap();
        args.push(base.display().to_string());
    }
    let out = Command::new("python3")
        .arg("-c")
        .arg(VALIDATE)
        .args(&args)
        .output()
        .expect("python3 (with jsonschema and junitparser, .ci/setup.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (i, (label, o)) in outcomes.iter().enumerate() {
        let r = &v[dir.join(format!("case{i}")).display().to_string()];
        assert_eq!(r["errors"], serde_json::json!([]), "{label}: schema errors");
        let cases: BTreeMap<String, bool> = r["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["failed"].as_bool().unwrap(),
                )
            })
            .collect();
        let ran = o.ran();
        assert_eq!(
            cases.keys().cloned().collect::<BTreeSet<_>>(),
            ran,
            "{label}: one testcase per check that ran"
        );
        for (id, failed) in &cases {
            let blocking = o.findings(id).iter().any(|f| f["severity"] == "error");
            assert_eq!(*failed, blocking, "{label}: JUnit failure of {id}");
        }
    }
}

// ---- the table ---------------------------------------------------------------------

struct Case {
    label: &'static str,
    fixture: &'static str,
    ask: Ask,
    triggers: &'static [&'static str],
    passes: &'static [&'static str],
    /// Extra assertions on the outcome.
    also: fn(&Fixture, &Outcome),
}

fn no_more(_: &Fixture, _: &Outcome) {}

/// Regular files under a host directory whose size is one of `sizes`.
fn files_with_sizes(dir: &Path, sizes: &BTreeSet<u64>) -> u64 {
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = fs::symlink_metadata(e.path()).unwrap();
        if md.is_dir() {
            n += files_with_sizes(&e.path(), sizes);
        } else if md.is_file() && sizes.contains(&md.len()) {
            n += 1;
        }
    }
    n
}

fn text_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

/// A rules directory with the built-in file `file` edited by `edit`.
fn rules_dir(dir: &Path, name: &str, file: &str, edit: impl Fn(&str) -> String) -> PathBuf {
    let d = dir.join(name);
    fs::create_dir_all(&d).unwrap();
    let kind = imgsan::rules::Kind::ALL
        .into_iter()
        .find(|k| k.file_name() == file)
        .unwrap();
    let text = imgsan::rules::embedded_text(kind);
    let edited = edit(text);
    assert_ne!(edited, text, "the edit of {file} changed nothing");
    fs::write(d.join(file), edited).unwrap();
    d
}

#[test]
fn every_check_triggers_and_passes() {
    let fixtures = fixtures();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    let featured_file = text_file(w, "featured.txt", "# ours\nLab Base Image\n\n");
    let existing_file = text_file(w, "existing.txt", "genomics-workbench\nother image\n");
    let allow_request = text_file(
        w,
        "request.yaml",
        &format!(
            "version: 1\nkind: request\nname: {GOOD_NAME}\ndescription: {GOOD_DESCRIPTION}\nallowlist: [matlab]\n"
        ),
    );
    let strict_fs = rules_dir(w, "strict-fs", "policy.yaml", |t| {
        t.replace("allowed: [ext4, xfs]", "allowed: [xfs]")
            .replace("flagged: [ext2, ext3]", "flagged: []")
    });
    let no_focal = rules_dir(w, "no-focal", "eol.yaml", |t| {
        let start = t
            .find("  - family: ubuntu\n    version: \"20.04\"")
            .unwrap();
        let end = start + 1 + t[start + 1..].find("  - family:").unwrap();
        format!("{}{}", &t[..start], &t[end..])
    });

    // The planted licensed files as known binaries of a denylist entry.
    let known = &fixtures["u22-problems"].guest.licensed;
    assert!(!known.is_empty());
    let hashed = rules_dir(w, "hashed", "denylist.yaml", |t| {
        let mut entry = String::from(
            "entries:\n  - id: fixture-binaries\n    product: Fixture binaries\n    category: licensed\n    hashes:\n",
        );
        for l in known {
            entry += &format!("      - {{size: {}, blake3: \"{}\"}}\n", l.size, l.blake3);
        }
        entry += "    reason: Planted by the test fixtures.\n";
        t.replacen("entries:\n", &entry, 1)
    });

    let ask = Ask::good;
    let with = |f: fn(&mut Ask)| {
        let mut a = Ask::good();
        f(&mut a);
        a
    };
    let cases: Vec<Case> = vec![
        Case {
            label: "clean image, good name",
            fixture: "u20-clean",
            ask: ask(),
            triggers: &[],
            passes: &[
                "os.unknown",
                "os.unsupported",
                "os.not-recommended",
                "os.eol",
                "os.eol-soon",
                "os.eol-unknown",
                "fs.unsupported",
                "fs.legacy",
                "volumes.detached",
                "volumes.network-mount",
                "name.missing",
                "name.forbidden-char",
                "name.too-long",
                "name.featured",
                "name.existing",
                "description.missing",
                "description.too-short",
                "description.same-as-name",
                "software.licensed",
                "software.cloud-unsuitable",
                "software.license-file",
                "software.allowlisted",
                "software.in-home",
                "post-scripts.first-line",
                "post-scripts.mode",
                "post-scripts.dir-mode",
                "post-scripts.not-regular",
                "access.sshd-missing",
                "access.sshd-config-missing",
                "access.python-missing",
                "network.open-daemon",
                "state.hibernated",
                "state.captured-live",
            ],
            also: |_, o| {
                assert_eq!(o.exit, 0);
                assert_eq!(o.json["findings"], serde_json::json!([]));
                let f = &o.json["facts"];
                assert_eq!(f["os"]["id"], "ubuntu");
                assert_eq!(f["os"]["version"], "20.04");
                assert_eq!(f["packages"]["manager"], "dpkg");
                assert!(f["cloud"]["packages"]["cloud_init"]["version"].is_string());
            },
        },
        Case {
            label: "no name, no description",
            fixture: "u20-clean",
            ask: with(|a| {
                a.name = None;
                a.description = None;
            }),
            triggers: &["name.missing", "description.missing"],
            passes: &["name.forbidden-char", "description.too-short"],
            also: |_, o| assert_eq!(o.exit, 1),
        },
        Case {
            label: "a period in the name",
            fixture: "u20-clean",
            ask: with(|a| a.name = Some("Genomics.Workbench".into())),
            triggers: &["name.forbidden-char"],
            passes: &["name.too-long", "name.missing"],
            also: no_more,
        },
        Case {
            label: "a 31-character name",
            fixture: "u20-clean",
            ask: with(|a| a.name = Some("Genomics-Workbench-for-Workshop".into())),
            triggers: &["name.too-long"],
            passes: &["name.forbidden-char"],
            also: |_, o| {
                assert!(o.findings("name.too-long")[0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("31 characters"))
            },
        },
        Case {
            label: "a featured image's name, spelled differently",
            fixture: "u20-clean",
            ask: with(|a| a.name = Some("ubuntu 20 04 devel-and-docker".into())),
            triggers: &["name.featured"],
            passes: &["name.too-long", "name.existing"],
            also: no_more,
        },
        Case {
            label: "a name from --featured-names",
            fixture: "u20-clean",
            ask: {
                let mut a = ask();
                a.name = Some("lab_base_image".into());
                a.featured = Some(featured_file.clone());
                a
            },
            triggers: &["name.featured"],
            passes: &[],
            also: no_more,
        },
        Case {
            label: "a name from --existing-names is a warning",
            fixture: "u20-clean",
            ask: {
                let mut a = ask();
                a.name = Some("Genomics_Workbench".into());
                a.existing = Some(existing_file.clone());
                a
            },
            triggers: &["name.existing"],
            passes: &["name.featured"],
            also: |_, o| assert_eq!(o.exit, 0, "a warning does not fail the check"),
        },
        Case {
            label: "a short description",
            fixture: "u20-clean",
            ask: with(|a| a.description = Some("my image".into())),
            triggers: &["description.too-short"],
            passes: &["description.same-as-name", "description.missing"],
            also: no_more,
        },
        Case {
            label: "a description past the 255-character property limit",
            fixture: "u20-clean",
            ask: with(|a| {
                a.description = Some(format!(
                    "Ubuntu 20.04 for the lab: {}",
                    "samtools ".repeat(32)
                ))
            }),
            triggers: &["description.too-long"],
            passes: &["description.near-limit", "description.too-short"],
            also: no_more,
        },
        Case {
            label: "a description close to the limit is a warning",
            fixture: "u20-clean",
            ask: with(|a| {
                a.description = Some(format!(
                    "Ubuntu 20.04 for the lab: {}",
                    "samtools ".repeat(24)
                ))
            }),
            triggers: &["description.near-limit"],
            passes: &["description.too-long"],
            also: no_more,
        },
        Case {
            label: "the description repeats the name",
            fixture: "u20-clean",
            ask: with(|a| {
                a.name = Some("Genomics Workbench Two".into());
                a.description = Some("genomics-workbench-two".into());
            }),
            triggers: &["description.same-as-name"],
            passes: &["description.too-short"],
            also: no_more,
        },
        Case {
            label: "a policy that accepts only XFS",
            fixture: "u20-clean",
            ask: {
                let mut a = ask();
                a.rules = Some(strict_fs.clone());
                a
            },
            triggers: &["fs.unsupported"],
            passes: &["fs.legacy"],
            also: |_, o| {
                assert!(o.findings("fs.unsupported")[0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("/ (partition"))
            },
        },
        Case {
            label: "an end-of-life table without 20.04",
            fixture: "u20-clean",
            ask: {
                let mut a = ask();
                a.rules = Some(no_focal.clone());
                a
            },
            triggers: &["os.eol-unknown"],
            passes: &["os.eol", "os.eol-soon"],
            also: no_more,
        },
        Case {
            label: "every problem of a used instance",
            fixture: "u22-problems",
            ask: ask(),
            triggers: &[
                "os.not-recommended",
                "volumes.detached",
                "volumes.network-mount",
                "software.licensed",
                "software.cloud-unsuitable",
                "software.license-file",
                "software.in-home",
                "post-scripts.first-line",
                "post-scripts.mode",
                "network.open-daemon",
                "state.hibernated",
            ],
            passes: &[
                "os.eol",
                "software.allowlisted",
                "post-scripts.dir-mode",
                "post-scripts.not-regular",
                "access.sshd-missing",
                "access.python-missing",
                "state.captured-live",
                "fs.legacy",
                "fs.unsupported",
            ],
            also: |fx, o| {
                assert_eq!(o.exit, 1);
                // Every fstab line the fixture says must fail, and only those.
                let bad: BTreeSet<String> = fx
                    .guest
                    .fstab
                    .iter()
                    .filter(|l| l.policy_error)
                    .map(|l| l.line.clone())
                    .collect();
                let mut flagged = BTreeSet::new();
                for id in ["volumes.detached", "volumes.network-mount"] {
                    for f in o.findings(id) {
                        let ev = f["evidence"][0].as_str().unwrap();
                        let line = ev.splitn(3, ':').nth(2).unwrap().trim_start();
                        flagged.insert(line.to_string());
                        assert_eq!(f["fixed_by_sanitize"], "fstab", "{ev}");
                    }
                }
                assert_eq!(flagged, bad);
                let home = &o.findings("software.in-home")[0];
                assert_eq!(home["fixed_by_sanitize"], "home");
                let ev = home["evidence"].to_string();
                assert!(ev.contains("/venv") && ev.contains("/bin"), "{ev}");
                let scripts: Vec<String> = o
                    .findings("post-scripts.first-line")
                    .iter()
                    .map(|f| f["evidence"][0].as_str().unwrap().to_string())
                    .collect();
                assert_eq!(scripts.len(), 3, "{scripts:?}");
                assert!(o
                    .findings("post-scripts.first-line")
                    .iter()
                    .any(|f| f["message"]
                        .as_str()
                        .unwrap()
                        .contains("Windows line endings")));
                let facts = &o.json["facts"];
                let swap = facts["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["hibernated"] == true)
                    .expect("the hibernated swap in the facts");
                assert_eq!(swap["fs_type"], "swsuspend");
                let humans: Vec<&str> = facts["users"]["accounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|a| a["human"] == true)
                    .map(|a| a["name"].as_str().unwrap())
                    .collect();
                let want: Vec<&str> = fx
                    .guest
                    .human_users
                    .iter()
                    .map(|u| u.name.as_str())
                    .collect();
                assert_eq!(humans, want);
            },
        },
        Case {
            label: "known binaries by blake3",
            fixture: "u22-problems",
            ask: {
                let mut a = ask();
                a.rules = Some(hashed.clone());
                a
            },
            triggers: &["software.licensed"],
            passes: &[],
            also: |fx, o| {
                let f = o
                    .findings("software.licensed")
                    .into_iter()
                    .find(|f| f["message"].as_str().unwrap().contains("Fixture binaries"))
                    .expect("the hashed entry matched");
                let ev = f["evidence"].to_string();
                for l in &fx.guest.licensed {
                    assert!(
                        ev.contains(&format!("{} (blake3", l.path)),
                        "{} ({}) not identified: {ev}",
                        l.path,
                        l.what
                    );
                }
                let sizes: BTreeSet<u64> = fx.guest.licensed.iter().map(|l| l.size).collect();
                assert_eq!(
                    o.json["facts"]["denylist"]["files_hashed"]
                        .as_u64()
                        .unwrap(),
                    files_with_sizes(&fx.guest.root, &sizes),
                    "exactly the files whose size matches are hashed"
                );
            },
        },
        Case {
            label: "the request allowlists MATLAB",
            fixture: "u22-problems",
            ask: Ask {
                request: Some(allow_request.clone()),
                today: Some("2024-06-01"),
                ..Ask::default()
            },
            triggers: &["software.allowlisted", "software.licensed"],
            passes: &["name.missing", "description.missing"],
            also: |_, o| {
                let allowed = o.findings("software.allowlisted");
                assert_eq!(allowed.len(), 1);
                assert_eq!(allowed[0]["severity"], "info");
                assert!(allowed[0]["message"].as_str().unwrap().contains("MATLAB"));
                assert!(o
                    .findings("software.licensed")
                    .iter()
                    .all(|f| !f["message"].as_str().unwrap().contains("MATLAB")));
                assert_eq!(o.json["image"]["name"], GOOD_NAME, "name from the request");
            },
        },
        Case {
            label: "Ubuntu 16.04 in 2024",
            fixture: "u16-old",
            ask: ask(),
            triggers: &[
                "os.eol",
                "post-scripts.dir-mode",
                "post-scripts.not-regular",
                "access.sshd-missing",
            ],
            passes: &[
                "os.unsupported",
                "os.eol-soon",
                "access.sshd-config-missing",
                "post-scripts.first-line",
                "post-scripts.mode",
                "volumes.detached",
            ],
            also: |_, o| {
                let m = o.findings("os.eol")[0]["message"]
                    .as_str()
                    .unwrap()
                    .to_string();
                assert!(m.contains("2021-04-30"), "{m}");
            },
        },
        Case {
            label: "CentOS 7 a month before its end",
            fixture: "c7-nopython",
            ask: ask(),
            triggers: &["os.eol-soon", "access.python-missing"],
            passes: &[
                "os.eol",
                "os.unknown",
                "access.sshd-missing",
                "volumes.detached",
                "volumes.unmounted",
            ],
            also: |_, o| {
                let f = &o.json["facts"];
                assert_eq!(f["os"]["version"], "7.4", "from centos-release");
                assert_eq!(f["packages"]["manager"], "rpm");
                assert_eq!(f["packages"]["backend"], "berkeley_db");
                let rpms = f["packages"]["rpm"].as_array().unwrap();
                assert!(rpms
                    .iter()
                    .any(|p| p["name"] == "centos-release" && p["vendor"] == "CentOS"));
                assert!(f["mounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["entry"]["mount_point"] == "/boot" && m["mounted"] == true));
            },
        },
        Case {
            label: "CentOS 7 after its end",
            fixture: "c7-nopython",
            ask: Ask {
                today: Some("2024-07-01"),
                ..ask()
            },
            triggers: &["os.eol"],
            passes: &["os.eol-soon"],
            also: no_more,
        },
        Case {
            label: "Rocky 9 without sshd_config",
            fixture: "r9-nosshdconfig",
            ask: ask(),
            triggers: &["access.sshd-config-missing", "volumes.unmounted"],
            passes: &[
                "access.sshd-missing",
                "access.python-missing",
                "os.unsupported",
                "os.eol",
            ],
            also: |_, o| {
                let f = &o.json["facts"];
                assert_eq!(f["os"]["id"], "rocky");
                assert_eq!(f["packages"]["backend"], "sqlite");
                assert!(f["packages"]["installed"].as_u64().unwrap() > 0);
            },
        },
        Case {
            label: "Debian is not accepted",
            fixture: "d12",
            ask: ask(),
            triggers: &["os.unsupported"],
            passes: &["os.unknown", "access.sshd-missing"],
            also: no_more,
        },
        Case {
            label: "an ext3 root, while 18.04 was supported",
            fixture: "u18-ext3",
            ask: Ask {
                today: Some("2022-06-01"),
                ..ask()
            },
            triggers: &["fs.legacy"],
            passes: &["fs.unsupported", "volumes.detached", "os.eol"],
            also: |_, o| assert_eq!(o.exit, 0, "ext3 is a warning"),
        },
        Case {
            label: "captured live, no OS version",
            fixture: "u24-live",
            ask: ask(),
            triggers: &["os.unknown", "state.captured-live", "network.open-daemon"],
            passes: &["state.hibernated", "volumes.detached", "fs.legacy"],
            also: |_, o| {
                // The open redis exists only in the journal.
                let d = &o.findings("network.open-daemon")[0];
                assert!(d["evidence"][0] == JOURNAL_ONLY_FILE, "{d}");
            },
        },
    ];

    let volumes: BTreeMap<&str, Vec<LoadedVolume>> = if THROUGH_IMAGES {
        BTreeMap::new()
    } else {
        fixtures
            .iter()
            .map(|(k, fx)| (*k, host_volumes(fx)))
            .collect()
    };
    let mut outcomes: Vec<(String, Outcome)> = Vec::new();
    let mut triggered: BTreeSet<&str> = BTreeSet::new();
    let mut passed: BTreeSet<&str> = BTreeSet::new();
    for c in &cases {
        let fx = &fixtures[c.fixture];
        let o = if THROUGH_IMAGES {
            through_binary(fx, &c.ask)
        } else {
            through_library(fx, &c.ask, &volumes[c.fixture])
        };
        let ids = o.ids();
        let ran = o.ran();
        let label = format!("{} ({})", c.label, c.fixture);
        for t in c.triggers {
            assert!(
                ids.contains(*t),
                "{label}: {t} did not trigger; findings: {ids:?}"
            );
            triggered.insert(t);
        }
        for p in c.passes {
            assert!(ran.contains(*p), "{label}: {p} did not run");
            assert!(
                !ids.contains(*p),
                "{label}: {p} triggered: {:?}",
                o.findings(p)
            );
            passed.insert(p);
        }
        let blocking = o.json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["severity"] == "error");
        assert_eq!(o.exit, i32::from(blocking), "{label}: exit code");
        (c.also)(fx, &o);
        outcomes.push((label, o));
    }
    let refs: Vec<(String, &Outcome)> = outcomes.iter().map(|(l, o)| (l.clone(), o)).collect();
    validate_reports(w, &refs);

    for c in CHECKS {
        assert!(triggered.contains(c.id), "no case triggers {}", c.id);
        assert!(passed.contains(c.id), "no case shows {} passing", c.id);
    }
}

// ---- the command line -------------------------------------------------------------

fn zeros_image(dir: &Path) -> PathBuf {
    let p = dir.join("zeros.raw");
    let f = fs::File::create(&p).unwrap();
    f.set_len(4 << 20).unwrap();
    p
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn exit_codes_and_report_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let zeros = zeros_image(d);
    let z = zeros.display().to_string();

    // No guest at all: the OS is unknown, an error.
    let (code, out, err) = imgsan(&s(&[
        "check",
        &z,
        "--name",
        GOOD_NAME,
        "--description",
        GOOD_DESCRIPTION,
        "--today",
        "2024-06-01",
    ]));
    assert_eq!(code, 1, "{err}");
    assert!(out.contains("[os.unknown]"), "{out}");
    assert!(
        !out.contains('\x1b'),
        "no colour when stdout is not a terminal"
    );

    // -o writes the report there and nothing to stdout.
    let report = d.join("report.json");
    let (code, out, _) = imgsan(&s(&[
        "check",
        &z,
        "--format",
        "json",
        "-o",
        &report.display().to_string(),
    ]));
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["schema_version"], 1);
    assert_eq!(json["image"]["path"], z.as_str());
    assert!(json["facts"]["volumes"].is_array());

    // The report cannot be written: 4, and nothing left under the name.
    let missing_dir = d.join("no/such/dir/report.xml");
    let (code, _, err) = imgsan(&s(&[
        "check",
        &z,
        "--format",
        "junit",
        "-o",
        &missing_dir.display().to_string(),
    ]));
    assert_eq!(code, 4, "{err}");
    assert!(!missing_dir.exists());

    // The image cannot be read: 3.
    let (code, _, err) = imgsan(&s(&["check", &d.join("absent.raw").display().to_string()]));
    assert_eq!(code, 3, "{err}");
    let bad_qcow2 = d.join("bad.qcow2");
    let mut b = b"QFI\xfb\x00\x00\x00\x09".to_vec();
    b.resize(512, 0xff);
    fs::write(&bad_qcow2, b).unwrap();
    let (code, _, err) = imgsan(&s(&["check", &bad_qcow2.display().to_string()]));
    assert_eq!(code, 3, "{err}");

    // Usage and rules errors: 2, with file:line:column.
    let (code, _, err) = imgsan(&s(&["check", &z, "--today", "2024-13-01"]));
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = imgsan(&s(&["check", &z, "--format", "yaml"]));
    assert_eq!(code, 2, "{err}");
    let rules = rules_dir(d, "broken", "policy.yaml", |t| {
        t.replacen("max_length: 30", "max_lenght: 30", 1)
    });
    let (code, _, err) = imgsan(&s(&["check", &z, "--rules", &rules.display().to_string()]));
    assert_eq!(code, 2, "{err}");
    let policy = rules.join("policy.yaml").display().to_string();
    let line = fs::read_to_string(rules.join("policy.yaml"))
        .unwrap()
        .lines()
        .position(|l| l.contains("max_lenght"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("{policy}:{line}:")) && err.contains("unknown field `max_lenght`"),
        "{err}"
    );
    let request = text_file(
        d,
        "request.yaml",
        "version: 1\nkind: request\nname: x\nvisibility: everyone\n",
    );
    let (code, _, err) = imgsan(&s(&[
        "check",
        &z,
        "--request",
        &request.display().to_string(),
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{}:4:", request.display())), "{err}");
    let (code, _, err) = imgsan(&s(&[
        "check",
        &z,
        "--existing-names",
        &d.join("nope.txt").display().to_string(),
    ]));
    assert_eq!(code, 2, "{err}");
}

#[test]
fn rules_check_and_show() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for kind in [
        "policy",
        "eol",
        "denylist",
        "featured-names",
        "sanitize",
        "request",
    ] {
        let (code, out, err) = imgsan(&s(&["rules", "show", kind]));
        assert_eq!(code, 0, "{err}");
        let k = imgsan::rules::Kind::from_name(kind).unwrap();
        assert_eq!(out, imgsan::rules::embedded_text(k));
        let file = d.join(if kind == "request" {
            "request.yaml".to_string()
        } else {
            k.file_name().to_string()
        });
        fs::write(&file, &out).unwrap();
        let (code, out, err) = imgsan(&s(&["rules", "check", &file.display().to_string()]));
        assert_eq!(code, 0, "{kind}: {err}");
        assert!(out.contains(&format!("valid {kind} file")), "{out}");
    }
    let (code, all, _) = imgsan(&s(&["rules", "show"]));
    assert_eq!(code, 0);
    assert!(all.contains("--- # rules/policy.yaml") && all.contains("--- # rules/sanitize.yaml"));

    // Wrong types and unknown keys, each at its line and column.
    let bad = d.join("policy.yaml");
    let text = imgsan::rules::embedded_text(imgsan::rules::Kind::Policy).replacen(
        "warn_days: 180",
        "warn_days: soon",
        1,
    );
    fs::write(&bad, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("warn_days: soon"))
        .unwrap()
        + 1;
    let (code, _, err) = imgsan(&s(&["rules", "check", &bad.display().to_string()]));
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!("{}:{line}:16:", bad.display())),
        "{err}"
    );
    let (code, _, _) = imgsan(&s(&["rules", "show", "nonsense"]));
    assert_eq!(code, 2);

    // With --rules, the effective rules (the directory's file wins).
    let rd = rules_dir(d, "ours", "policy.yaml", |t| {
        t.replacen("max_length: 30", "max_length: 24", 1)
    });
    let (code, out, err) = imgsan(&s(&[
        "rules",
        "show",
        "policy",
        "--rules",
        &rd.display().to_string(),
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("max_length: 24"), "{out}");
}

#[test]
fn help_teaches_with_examples() {
    for cmd in [
        &["check", "--help"][..],
        &["inspect", "--help"],
        &["rules", "check", "--help"],
        &["rules", "show", "--help"],
        &["--help"],
    ] {
        let (code, out, _) = imgsan(&s(cmd));
        assert_eq!(code, 0);
        assert!(out.contains("Examples:"), "{cmd:?}: {out}");
    }
    let (_, out, _) = imgsan(&s(&["check", "--help"]));
    for flag in [
        "--name",
        "--description",
        "--request",
        "--featured-names",
        "--existing-names",
        "--today",
        "--rules",
        "--format",
        "--output",
    ] {
        assert!(out.contains(flag), "{flag}");
    }
}

#[test]
fn inspect_keeps_the_disk_summary_and_adds_facts() {
    let dir = tempfile::tempdir().unwrap();
    let zeros = zeros_image(dir.path());
    let (code, out, err) = imgsan(&s(&["inspect", "--json", &zeros.display().to_string()]));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for key in [
        "image",
        "format",
        "virtual_size",
        "partition_table",
        "volumes",
        "facts",
    ] {
        assert!(v.get(key).is_some(), "{key} missing: {out}");
    }
    assert_eq!(v["facts"]["root_volume"], serde_json::Value::Null);
    let (code, out, _) = imgsan(&s(&["inspect", &zeros.display().to_string()]));
    assert_eq!(code, 0);
    assert!(
        out.contains("partition table:") && out.contains("guest: no volume holds an OS"),
        "{out}"
    );
}
