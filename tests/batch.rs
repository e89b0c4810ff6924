//! `imgsan batch` end to end, through the binary: a five-entry batch (a clean
//! image, a forced one with findings, a blocked one, a truncated qcow2 and a
//! missing file), resuming, a kill mid-batch, `--index` runs then `--summary`,
//! and a real single-node Slurm cluster running the `--emit slurm` script.
//!
//! Oracles imgsan shares no code with: `e2fsck -fn` and `sgdisk -v` on every
//! written image, a byte scan for the fixtures' planted secrets, the fixture's
//! kept files hashed on the host against the manifest, Python's XML parser for
//! the JUnit summary, Slurm itself, and kubernetes-validate (the Kubernetes
//! API's published schemas) for `--emit k8s`.
//!
//! Time: about a minute for the local test and as much for the Slurm one, in
//! a dev build on an idle 2-core machine.

#[path = "common/disk.rs"]
mod disk;
#[path = "common/guest.rs"]
mod guest;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use guest::{Distro, GuestOptions, GuestTree, PartitionTable};
use serde_json::Value;

const DESCRIPTION: &str =
    "Ubuntu with samtools, bcftools and htslib for the spring genomics workshop";

fn imgsan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgsan"))
        .args(args)
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

fn s(p: &Path) -> String {
    p.display().to_string()
}

struct Image {
    g: GuestTree,
    disk: disk::GuestDisk,
}

fn build(dir: &Path, name: &str, opts: GuestOptions) -> Image {
    let tree = dir.join(format!("{name}-tree"));
    fs::create_dir(&tree).unwrap();
    let g = guest::build(&tree, &opts);
    let disk = disk::pack(&g, &dir.join(format!("{name}.raw")), &Default::default());
    for p in &g.delete_after_pack {
        let hp = g.host_path(p);
        if hp.is_dir() {
            let _ = fs::remove_dir_all(&hp);
        } else {
            let _ = fs::remove_file(&hp);
        }
    }
    Image { g, disk }
}

/// The images and the manifest naming them.
struct Batch {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    manifest: PathBuf,
    clean: Image,
    problems: Image,
}

const NAMES: [&str; 5] = [
    "Workshop-Genomics-v2",
    "Workshop-Everything-v1",
    "Workshop-Blocked-v1",
    "Workshop-Truncated-v1",
    "Workshop-Missing-v1",
];

fn batch() -> Batch {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    let images = dir.join("images");
    fs::create_dir(&images).unwrap();
    let mut o = GuestOptions::new(Distro::CentOS7);
    o.table = PartitionTable::Mbr;
    o.efi = false;
    let clean = build(&images, "clean", o);
    let mut o = GuestOptions::with_every_problem(Distro::Ubuntu2204);
    o.swap = false;
    let problems = build(&images, "problems", o);
    // A qcow2 cut in the middle of its clusters.
    let q = images.join("truncated.qcow2");
    disk::to_qcow2(&clean.disk.path, &q, false);
    let len = fs::metadata(&q).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&q)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let manifest = dir.join("batch.yaml");
    fs::write(
        &manifest,
        format!(
            "version: 1\nkind: batch\ntoday: 2024-06-01\ndefaults:\n  description: {DESCRIPTION}\n  manifest: true\nimages:\n  - image: images/clean.raw\n    name: {}\n  - image: images/problems.raw\n    name: {}\n    force: true\n  - image: images/problems.raw\n    name: {}\n  - image: images/truncated.qcow2\n    name: {}\n  - image: images/missing.qcow2\n    name: {}\n",
            NAMES[0], NAMES[1], NAMES[2], NAMES[3], NAMES[4]
        ),
    )
    .unwrap();
    Batch {
        _dir: d,
        dir,
        manifest,
        clean,
        problems,
    }
}

const STATUSES: [(&str, u64); 5] = [
    ("clean", 0),
    ("written", 1),
    ("blocked", 1),
    ("failed", 3),
    ("failed", 3),
];

fn summary(out: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

/// (name, status, exit code, blocking, output hash) per image.
fn outcome(j: &Value) -> Vec<(String, String, Value, Value, Value)> {
    j["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["status"].as_str().unwrap().to_string(),
                i["exit_code"].clone(),
                i["blocking"].clone(),
                i["output"]["blake3"].clone(),
            )
        })
        .collect()
}

fn statuses_are_the_expected(j: &Value) {
    let got: Vec<(String, String, Value)> = outcome(j)
        .into_iter()
        .map(|(n, s, c, _, _)| (n, s, c))
        .collect();
    let want: Vec<(String, String, Value)> = NAMES
        .iter()
        .zip(STATUSES)
        .map(|(n, (s, c))| (n.to_string(), s.to_string(), Value::from(c)))
        .collect();
    assert_eq!(got, want, "{j:#}");
    assert_eq!(j["exit_code"], 3);
}

/// What `sanitize`'s tests check of a written image, here on a batch output.
fn output_passes(img: &Image, raw: &Path, manifest: &Path) {
    let mut markers = img.g.markers.clone();
    markers.extend(img.disk.markers.clone());
    let left: Vec<String> = disk::markers_present(raw, &markers)
        .iter()
        .map(|m| format!("{} ({})", m.text, m.place))
        .collect();
    assert!(
        left.is_empty(),
        "{}: secrets survived: {left:?}",
        raw.display()
    );
    for p in img
        .disk
        .parts
        .iter()
        .filter(|p| matches!(p.role, guest::Role::Root | guest::Role::Boot))
    {
        let o = Command::new("e2fsck")
            .args(["-fn", &format!("{}?offset={}", raw.display(), p.start)])
            .output()
            .unwrap();
        assert!(o.status.success(), "e2fsck {}: {}", raw.display(), text(&o));
    }
    let o = match img.g.options.table {
        PartitionTable::Gpt => Command::new("sgdisk").arg("-v").arg(raw).output(),
        PartitionTable::Mbr => Command::new("sfdisk").arg("--verify").arg(raw).output(),
    }
    .unwrap();
    assert!(o.status.success(), "partition table: {}", text(&o));
    // Every kept regular file, by the manifest, is the host file.
    let m = fs::read_to_string(manifest).unwrap();
    let mut checked = 0;
    for k in &img.g.keep {
        let hp = img.g.host_path(k);
        let Ok(md) = fs::symlink_metadata(&hp) else {
            continue;
        };
        if !md.is_file() || k.starts_with("/boot/efi") {
            continue;
        }
        let line = m
            .lines()
            .find(|l| l.ends_with(&format!("\t{k}")))
            .unwrap_or_else(|| panic!("{k} is not in {}", manifest.display()));
        assert!(
            line.starts_with(&guest::blake3_of(&hp)),
            "{k}: content differs: {line}"
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} kept files checked");
    assert!(
        !m.lines().any(|l| l.contains("\t/home/")),
        "files under /home"
    );
}

fn junit_suites(out: &Path) -> usize {
    let o = Command::new("python3")
        .args([
            "-c",
            "import sys,xml.etree.ElementTree as E; r=E.parse(sys.argv[1]).getroot(); print(len(r.findall('testsuite')))",
            &s(&out.join("summary.xml")),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn no_temporary_files(dir: &Path) {
    let left: Vec<String> = names_in(dir)
        .into_iter()
        .filter(|n| n.contains("imgsan-") && n != ".imgsan-batch.lock")
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[test]
fn five_entries_resume_kill_and_index() {
    let b = batch();
    let out = b.dir.join("out");
    let m = s(&b.manifest);
    let in_hash = disk::blake3_file(&b.problems.disk.path);

    // The manifest validates; a broken one is reported at its line and column.
    let o = imgsan(&["rules", "check", &m]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let bad = b.dir.join("bad.yaml");
    fs::write(
        &bad,
        "kind: batch\nimages:\n  - image: a.raw\n    name: A\n    disable: [no-such]\n",
    )
    .unwrap();
    let o = imgsan(&["rules", "check", &s(&bad)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("bad.yaml:5:15:"),
        "{}",
        text(&o)
    );

    // The whole batch.
    let o = imgsan(&["batch", &m, "-o", &s(&out), "--jobs", "2"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let first = summary(&out);
    statuses_are_the_expected(&first);
    assert_eq!(junit_suites(&out), 5);
    let table = String::from_utf8_lossy(&o.stdout);
    for n in NAMES {
        assert!(table.contains(n), "{table}");
    }
    let err = String::from_utf8_lossy(&o.stderr);
    for n in NAMES {
        assert!(err.contains(&format!("{n}: ")), "no line for {n}: {err}");
    }
    let files = |n: &str| {
        (
            out.join(format!("{n}.raw")),
            out.join(format!("{n}.report.json")),
            out.join(format!("{n}.manifest")),
        )
    };
    for (i, img) in [(0, &b.clean), (1, &b.problems)] {
        let (raw, report, manifest) = files(NAMES[i]);
        output_passes(img, &raw, &manifest);
        let j: Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
        assert_eq!(j["output"]["blake3"], disk::blake3_file(&raw).as_str());
        assert_eq!(
            first["images"][i]["output"]["blake3"],
            j["output"]["blake3"]
        );
        assert_eq!(
            first["images"][i]["output"]["size_bytes"],
            fs::metadata(&raw).unwrap().len()
        );
    }
    let blocking = first["images"][2]["blocking"].to_string();
    assert!(blocking.contains("software.licensed"), "{blocking}");
    let (raw, report, manifest) = files(NAMES[2]);
    assert!(report.is_file() && !raw.exists() && !manifest.exists());
    for n in &NAMES[3..] {
        let (raw, report, _) = files(n);
        assert!(!raw.exists() && !report.exists());
    }
    assert!(first["images"][4]["error"]
        .as_str()
        .unwrap()
        .contains("missing.qcow2"));
    no_temporary_files(&out);

    // A second run redoes nothing: the same files, untouched.
    let stamp = |dir: &Path| -> Vec<(String, i64, i64)> {
        names_in(dir)
            .into_iter()
            .filter(|n| {
                n.starts_with("Workshop-")
                    && !n.starts_with("Workshop-Truncated")
                    && !n.starts_with("Workshop-Missing")
            })
            .map(|n| {
                let md = fs::metadata(dir.join(&n)).unwrap();
                (n, md.mtime(), md.mtime_nsec())
            })
            .collect()
    };
    let before = stamp(&out);
    // Two written entries (image, manifest, report, result) and the blocked one
    // (report, result).
    assert_eq!(before.len(), 2 * 4 + 2, "{before:?}");
    let o = imgsan(&["batch", &m, "-o", &s(&out)]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for (n, st) in NAMES.iter().zip(["clean", "written", "blocked"]) {
        assert!(
            err.contains(&format!("{n}: up to date ({st})")),
            "{n} is not up to date: {err}"
        );
    }
    assert_eq!(stamp(&out), before);
    assert_eq!(outcome(&summary(&out)), outcome(&first));

    // Killed mid-batch, then run again: complete, and nothing half-written.
    let killed = b.dir.join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgsan"))
        .args(["batch", &m, "-o", &s(&killed), "--jobs", "1"])
        .env("CI", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let first_result = killed.join(format!("{}.result.json", NAMES[0]));
    while !first_result.exists() {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    for n in NAMES {
        if !killed.join(format!("{n}.result.json")).exists() {
            let (raw, report, manifest) = files(n);
            for f in [raw, report, manifest] {
                let f = killed.join(f.file_name().unwrap());
                assert!(!f.exists(), "killed entry left {}", f.display());
            }
        }
    }
    let o = imgsan(&["batch", &m, "-o", &s(&killed), "--jobs", "1"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(outcome(&summary(&killed)), outcome(&first));
    no_temporary_files(&killed);

    // --index 0..4 one by one, then --summary: the same statuses.
    let by_index = b.dir.join("by-index");
    for (i, (_, code)) in STATUSES.iter().enumerate() {
        let o = imgsan(&["batch", &m, "-o", &s(&by_index), "--index", &i.to_string()]);
        assert_eq!(
            o.status.code(),
            Some(*code as i32),
            "--index {i}: {}",
            text(&o)
        );
        let j = summary(&by_index);
        let pending = j["images"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["status"] == "pending")
            .count();
        assert_eq!(pending, 4 - i, "{j:#}");
    }
    let o = imgsan(&["batch", &m, "-o", &s(&by_index), "--summary"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(outcome(&summary(&by_index)), outcome(&first));
    assert_eq!(junit_suites(&by_index), 5);

    // --emit k8s follows the Kubernetes API schema.
    let o = imgsan(&["batch", &m, "-o", &s(&out), "--emit", "k8s"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let job = b.dir.join("job.yaml");
    fs::write(&job, &o.stdout).unwrap();
    let y = String::from_utf8_lossy(&o.stdout);
    assert!(
        y.contains("completionMode: Indexed") && y.contains("completions: 5"),
        "{y}"
    );
    let v = Command::new("kubernetes-validate")
        .args(["--strict", &s(&job)])
        .output()
        .expect("kubernetes-validate (pip install kubernetes-validate) runs");
    assert!(v.status.success(), "{}", text(&v));

    // The input was only read.
    assert_eq!(disk::blake3_file(&b.problems.disk.path), in_hash);
}

/// Stops the daemons by their PID files, whatever happens to the test.
struct Slurm;

const PID_FILES: [&str; 3] = [
    "/run/slurmd.pid",
    "/run/slurmctld.pid",
    "/run/munge/munged.pid",
];

fn stop_daemons() {
    for p in PID_FILES {
        if let Ok(pid) = fs::read_to_string(p) {
            let pid = pid.trim();
            if !pid.is_empty() {
                let _ = Command::new("kill").arg(pid).status();
                for _ in 0..100 {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
            let _ = fs::remove_file(p);
        }
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        stop_daemons();
    }
}

fn sh(cmd: &str) -> Output {
    Command::new("bash").args(["-c", cmd]).output().unwrap()
}

fn start_slurm() -> Slurm {
    stop_daemons();
    let host = String::from_utf8(sh("hostname -s").stdout).unwrap();
    let host = host.trim();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let o = sh("mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /etc/slurm && chown munge:munge /run/munge");
    assert!(o.status.success(), "{}", text(&o));
    fs::write(
        "/etc/slurm/slurm.conf",
        format!(
            "ClusterName=ci\nSlurmctldHost={host}\nSlurmUser=root\nAuthType=auth/munge\nStateSaveLocation=/var/spool/slurmctld\nSlurmdSpoolDir=/var/spool/slurmd\nProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nJobAcctGatherType=jobacct_gather/none\nSelectType=select/cons_tres\nSelectTypeParameters=CR_Core\nReturnToService=2\nSlurmctldLogFile=/var/log/slurm/slurmctld.log\nSlurmdLogFile=/var/log/slurm/slurmd.log\nSlurmctldPidFile=/run/slurmctld.pid\nSlurmdPidFile=/run/slurmd.pid\nNodeName={host} CPUs={cpus} RealMemory=4000 State=UNKNOWN\nPartitionName=batch Nodes={host} Default=YES MaxTime=INFINITE State=UP\n"
        ),
    )
    .unwrap();
    let guard = Slurm;
    for cmd in [
        "runuser -u munge -- /usr/sbin/munged --force",
        "/usr/sbin/slurmctld",
        "/usr/sbin/slurmd",
    ] {
        let o = sh(cmd);
        assert!(o.status.success(), "{cmd}: {}", text(&o));
    }
    // Ready when the node is idle (about 2 s here); bounded, not timed.
    let mut idle = false;
    for _ in 0..600 {
        let o = sh("sinfo -h -o %T");
        if String::from_utf8_lossy(&o.stdout).contains("idle") {
            idle = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        idle,
        "the node never became idle: {}",
        text(&sh(
            "sinfo; tail -20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log"
        ))
    );
    guard
}

#[test]
fn slurm_array_matches_the_local_run() {
    let b = batch();
    let m = s(&b.manifest);
    let local = b.dir.join("local");
    let o = imgsan(&["batch", &m, "-o", &s(&local)]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let want = summary(&local);
    statuses_are_the_expected(&want);

    let out = b.dir.join("slurm");
    let o = imgsan(&["batch", &m, "-o", &s(&out), "--emit", "slurm"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let script = String::from_utf8(o.stdout).unwrap();
    assert!(script.contains("#SBATCH --array=0-4%"), "{script}");
    assert!(
        script.contains("--index \"$SLURM_ARRAY_TASK_ID\""),
        "{script}"
    );
    assert!(
        script.contains(&format!("'{m}'")),
        "absolute manifest path: {script}"
    );
    let job = b.dir.join("job.sh");
    fs::write(&job, &script).unwrap();

    let _slurm = start_slurm();
    let o = Command::new("sbatch")
        .arg("--wait")
        .arg(&job)
        .current_dir(&b.dir)
        .output()
        .unwrap();
    // sbatch --wait gives the highest exit code of the tasks.
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}\nlogs: {}",
        text(&o),
        text(&sh(&format!("tail -n 20 {}/slurm-*.log", out.display())))
    );
    let got = summary(&out);
    assert_eq!(outcome(&got), outcome(&want), "{got:#}");
    assert_eq!(junit_suites(&out), 5);
    no_temporary_files(&out);
}
