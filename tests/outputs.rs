//! What imgsan does with its output files, through the binary: it never writes
//! over an input (issue 10 §1), it leaves nothing behind when a signal stops it,
//! stale temporary files of dead runs are removed, and a run's outputs (image,
//! report, manifest) become final together or not at all (issue 10 §5).
//!
//! Oracles: the file system itself (what is in the output folder, device and
//! inode numbers), BLAKE3 of the input before and after, mke2fs and qemu-img
//! to make the inputs, a small tmpfs (mounted by the test) for ENOSPC, and the
//! shell's convention for the exit status of a signalled process.
//!
//! Run time: about 2 minutes (the signal tests write a 3 GiB disk with 640 MiB
//! of data up to 20 times).

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rand::Rng;

const MIB: u64 = 1 << 20;

/// Name, description and date that pass the policy checks on them.
const REQUEST: [&str; 6] = [
    "--name",
    "Output-Tests-v1",
    "--description",
    "Ubuntu 22.04 test guest for the output file handling of imgsan",
    "--today",
    "2024-06-01",
];

fn imgsan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgsan"))
        .args(args)
        .env("CI", "1")
        .output()
        .expect("imgsan runs")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(cmd: &mut Command) {
    let o = cmd.output().expect("tool runs");
    assert!(o.status.success(), "{cmd:?}: {}", text(&o));
}

fn hash(p: &Path) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update_reader(fs::File::open(p).unwrap()).unwrap();
    h.finalize()
}

/// Names in a folder, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A guest tree: an os-release, `small` little files, and one file of
/// `big_mib` MiB of data with no zero block (so every block is written out).
fn guest_tree(dir: &Path, small: usize, big_mib: u64) {
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(
        dir.join("etc/os-release"),
        "NAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nID=ubuntu\nPRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\nVERSION_CODENAME=jammy\n",
    )
    .unwrap();
    fs::create_dir_all(dir.join("srv/many")).unwrap();
    for i in 0..small {
        fs::write(
            dir.join(format!("srv/many/file-{i:06}.txt")),
            format!("{i}\n"),
        )
        .unwrap();
    }
    if big_mib > 0 {
        let mut f = std::io::BufWriter::new(fs::File::create(dir.join("srv/big.bin")).unwrap());
        let mut block = vec![0u8; MIB as usize];
        for m in 0..big_mib {
            for (i, w) in block.chunks_exact_mut(8).enumerate() {
                w.copy_from_slice(&(m << 20 | i as u64 | 1 << 63).to_le_bytes());
            }
            f.write_all(&block).unwrap();
        }
        f.flush().unwrap();
    }
}

/// A bare ext4 filesystem image of `size_mib` MiB holding `tree`.
fn ext4_image(img: &Path, tree: &Path, size_mib: u64) {
    run(Command::new("mke2fs")
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-E",
            "root_owner=0:0",
        ])
        .arg("-d")
        .arg(tree)
        .arg(img)
        .arg(format!("{size_mib}M")));
}

/// A small image to point outputs at.
fn small_image(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    guest_tree(&tree, 3, 0);
    let img = dir.join("in.raw");
    ext4_image(&img, &tree, 16);
    fs::remove_dir_all(&tree).unwrap();
    img
}

fn expect_refused(o: &Output, out: &str, input: &Path) {
    assert_eq!(o.status.code(), Some(2), "{}", text(o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("refusing to write"), "{err}");
    assert!(
        err.contains(out),
        "the message names the output {out}: {err}"
    );
    assert!(
        err.contains(&*input.to_string_lossy()),
        "the message names the input {}: {err}",
        input.display()
    );
}

#[test]
fn an_output_that_is_the_input_is_refused_before_anything_is_written() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let input = small_image(dir);
    let before = hash(&input);
    fs::create_dir(dir.join("sub")).unwrap();
    std::os::unix::fs::symlink(dir, dir.join("sub/up")).unwrap();
    std::os::unix::fs::symlink(&input, dir.join("link.raw")).unwrap();
    fs::hard_link(&input, dir.join("hard.raw")).unwrap();
    let listing_before = listing(dir);

    let inp = input.to_str().unwrap();
    let same_names = [
        inp.to_string(),
        format!("{}/./in.raw", dir.display()),
        format!("{}/sub/up/in.raw", dir.display()),
        format!("{}/sub/../in.raw", dir.display()),
        format!("{}/link.raw", dir.display()),
        format!("{}/hard.raw", dir.display()),
    ];
    for out in &same_names {
        for args in [
            vec!["convert", inp, "-o", out],
            vec!["repack", inp, "-o", out],
            vec!["sanitize", inp, "-o", out, "--force"],
            vec!["check", inp, "-o", out],
        ] {
            let mut a = args.clone();
            if a[0] != "convert" && a[0] != "repack" {
                a.extend(REQUEST);
            }
            let o = imgsan(&a);
            expect_refused(&o, out, &input);
        }
    }
    // Relative to the working directory, with and without "./".
    for out in ["in.raw", "./in.raw"] {
        let o = Command::new(env!("CARGO_BIN_EXE_imgsan"))
            .current_dir(dir)
            .args(["convert", "in.raw", "-o", out])
            .output()
            .unwrap();
        expect_refused(&o, out, Path::new("in.raw"));
    }
    // The report and the manifest may not name the input either.
    let clean = format!("{}/clean.raw", dir.display());
    for flag in ["--report", "--manifest"] {
        let mut a = vec!["sanitize", inp, "-o", &clean, "--force", flag, inp];
        a.extend(REQUEST);
        expect_refused(&imgsan(&a), inp, &input);
    }
    // Nor two outputs the same file.
    let mut a = vec!["sanitize", inp, "-o", &clean, "--force", "--report", &clean];
    a.extend(REQUEST);
    let o = imgsan(&a);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing to write"));

    assert_eq!(hash(&input), before, "the input changed");
    assert_eq!(listing(dir), listing_before, "something was written");
}

#[test]
fn a_qcow2_backing_file_is_an_input_too() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let base = small_image(dir);
    let top = dir.join("top.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&base)
        .arg(&top));
    let (hb, ht) = (hash(&base), hash(&top));
    let b = base.to_str().unwrap();
    let t = top.to_str().unwrap();
    for args in [
        vec!["convert", t, "-o", b],
        vec!["repack", t, "-o", b],
        vec!["check", t, "-o", b],
    ] {
        let o = imgsan(&args);
        expect_refused(&o, b, &base);
        assert!(String::from_utf8_lossy(&o.stderr).contains("backing file"));
    }
    assert_eq!((hash(&base), hash(&top)), (hb, ht));
    // A qcow2 output of another name is fine.
    let o = imgsan(&["convert", t, "-o", &format!("{}/out.raw", dir.display())]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn stale_temporary_files_of_dead_runs_are_removed() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let input = small_image(dir);
    let out = dir.join("out.raw");
    // pid_max is at most 2^22: these processes cannot exist.
    let stale = [
        dir.join(".out.raw.imgsan-99999991-0.tmp"),
        dir.join(".out.raw.imgsan-99999992-7.tmp"),
        dir.join(".out.raw.imgsan-tmp-99999993"),
    ];
    // Ours (a live process: this test) and another name's are kept.
    let live = dir.join(format!(".out.raw.imgsan-{}-0.tmp", std::process::id()));
    let other = dir.join(".other.raw.imgsan-99999991-0.tmp");
    for p in stale.iter().chain([&live, &other]) {
        fs::write(p, b"left over").unwrap();
    }
    let o = imgsan(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for p in &stale {
        assert!(!p.exists(), "{} is still there", p.display());
    }
    assert!(live.exists() && other.exists() && out.exists());
}

/// A tmpfs mounted for one test, unmounted however the test ends.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, bytes: u64) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes}"))
            .arg("imgsan-test")
            .arg(dir));
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// Bytes a file occupies.
fn allocated(p: &Path) -> u64 {
    fs::metadata(p).unwrap().blocks() * 512
}

#[test]
fn a_manifest_that_does_not_fit_leaves_no_output_at_all() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    // 20 000 files: a manifest of about 2 MB.
    guest_tree(&tree, 20_000, 4);
    let input = dir.join("in.raw");
    ext4_image(&input, &tree, 256);
    fs::remove_dir_all(&tree).unwrap();
    let before = hash(&input);
    let inp = input.to_str().unwrap();

    // Where everything fits: how much the image and the manifest take.
    let roomy = dir.join("roomy");
    fs::create_dir(&roomy).unwrap();
    let (img, man, rep) = (
        roomy.join("o.raw"),
        roomy.join("o.manifest"),
        roomy.join("o.json"),
    );
    let mut a = vec![
        "sanitize",
        inp,
        "--force",
        "-o",
        img.to_str().unwrap(),
        "--manifest",
        man.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
        "--format",
        "json",
    ];
    a.extend(REQUEST);
    let o = imgsan(&a);
    assert_eq!(
        o.status.code(),
        Some(1),
        "forced past findings: {}",
        text(&o)
    );
    let (img_bytes, man_bytes) = (allocated(&img), allocated(&man));
    assert!(man_bytes > MIB, "manifest of {man_bytes} bytes");

    // A tmpfs that holds the image and half the manifest.
    let small = Tmpfs::mount(&dir.join("small"), img_bytes + man_bytes / 2);
    let (img, man, rep) = (
        small.dir.join("o.raw"),
        small.dir.join("o.manifest"),
        small.dir.join("o.json"),
    );
    let mut a = vec![
        "sanitize",
        inp,
        "--force",
        "-o",
        img.to_str().unwrap(),
        "--manifest",
        man.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
    ];
    a.extend(REQUEST);
    let o = imgsan(&a);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("o.manifest"), "{err}");
    assert_eq!(
        listing(&small.dir),
        Vec::<String>::new(),
        "left in the folder"
    );
    assert_eq!(hash(&input), before);
}

/// Sends `sig` to a sanitize run at a random moment, and checks that nothing
/// is left in the output folder. The moment is chosen by progress, not by
/// time: before the output exists, or once the temporary image holds a random
/// share of its data.
fn interrupt(name: &str, input: &Path, data: u64, out_dir: &Path, rng: &mut impl Rng) {
    let sig = signal_number(name);
    let img = out_dir.join("o.raw");
    let mut a: Vec<String> = [
        "sanitize",
        input.to_str().unwrap(),
        "--force",
        "-o",
        img.to_str().unwrap(),
        "--manifest",
        out_dir.join("o.manifest").to_str().unwrap(),
        "--report",
        out_dir.join("o.txt").to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    a.extend(REQUEST.map(String::from));
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgsan"))
        .args(&a)
        .env("CI", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A tenth of the tries stop the run while it reads, before any output.
    let early = rng.random_bool(0.1);
    let threshold = rng.random_range(0..data * 4 / 5);
    let during_write = loop {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the run ended before the signal: {st:?}");
        }
        let tmp = fs::read_dir(out_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().contains(".o.raw.imgsan-"));
        match tmp {
            _ if early => break false,
            Some(t) if fs::metadata(&t).map(|m| m.blocks() * 512).unwrap_or(0) >= threshold => {
                break true
            }
            _ => std::thread::sleep(Duration::from_millis(2)),
        }
    };
    run(Command::new("kill")
        .args(["-s", name])
        .arg(child.id().to_string()));
    let o = child.wait_with_output().unwrap();
    if during_write {
        // The handler ran: 128 + signal, as a shell reports it.
        assert_eq!(o.status.code(), Some(128 + sig), "{}", text(&o));
    } else {
        // Before the handler is installed the signal's default action ends
        // the process; either way it did not succeed.
        assert!(
            o.status.code() == Some(128 + sig) || o.status.signal() == Some(sig),
            "{}",
            text(&o)
        );
    }
    assert_eq!(
        listing(out_dir),
        Vec::<String>::new(),
        "left behind after signal {sig} (during the write: {during_write})"
    );
}

#[test]
fn signals_during_a_3_gib_write_leave_nothing_behind() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    let data_mib = 640;
    guest_tree(&tree, 100, data_mib);
    let input = dir.join("in.raw");
    ext4_image(&input, &tree, 3 << 10);
    fs::remove_dir_all(&tree).unwrap();
    let before = hash(&input);
    let out_dir = dir.join("out");
    fs::create_dir(&out_dir).unwrap();
    let mut rng = rand::rng();
    for sig in ["TERM", "HUP"] {
        for _ in 0..10 {
            interrupt(sig, &input, data_mib * MIB, &out_dir, &mut rng);
        }
    }
    interrupt("INT", &input, data_mib * MIB, &out_dir, &mut rng);
    assert_eq!(hash(&input), before, "the input changed");
}

/// A signal's number, from bash's `kill -l`.
fn signal_number(name: &str) -> i32 {
    let o = Command::new("bash")
        .args(["-c", &format!("kill -l {name}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}
