//! `imgsan convert` output handling: failures to write exit 4 and leave nothing
//! behind; a successful run replaces the destination whole.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn imgsan() -> Command {
    Command::new(env!("CARGO_BIN_EXE_imgsan"))
}

/// An 8 MiB qcow2 image with 6 MiB of non-zero data.
fn image(dir: &Path) -> PathBuf {
    let img = dir.join("in.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", p(&img), "8M"])
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x5c 1m 6m", p(&img)])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    img
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn full_stream_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = imgsan()
        .args(["convert", p(&img), "-o", "-"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("standard output"), "{err}");
}

/// Unmounts on drop, so a failing assertion does not leave the mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_filesystem_exits_4_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs", p(&mnt)])
        .status()
        .unwrap();
    assert!(
        st.success(),
        "cannot mount a small tmpfs (the tests run as root)"
    );
    let _guard = Mount(mnt.clone());
    let out = imgsan()
        .args(["convert", p(&img), "-o", p(&mnt.join("out.raw"))])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("out.raw"), "{err}");
    assert!(entries(&mnt).is_empty(), "left behind: {:?}", entries(&mnt));
}

#[test]
fn rename_failure_removes_the_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    // The destination is a non-empty folder: everything is written, then the
    // rename fails.
    let dest = dir.path().join("taken");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("keep"), b"x").unwrap();
    let out = imgsan()
        .args(["convert", p(&img), "-o", p(&dest)])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut left = entries(dir.path());
    left.sort();
    assert_eq!(left, ["in.qcow2", "taken"]);
    assert_eq!(entries(&dest), ["keep"]);
}

#[test]
fn missing_output_folder_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let out = imgsan()
        .args([
            "convert",
            p(&img),
            "-o",
            p(&dir.path().join("no/such/out.raw")),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn unreadable_input_exits_3_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = imgsan()
        .args([
            "convert",
            p(&dir.path().join("missing.qcow2")),
            "-o",
            p(&dir.path().join("out.raw")),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn existing_destination_is_replaced_whole() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let dest = dir.path().join("out.raw");
    std::fs::write(&dest, vec![0xffu8; 16 << 20]).unwrap();
    let st = imgsan()
        .args(["convert", "-q", p(&img), "-o", p(&dest)])
        .status()
        .unwrap();
    assert!(st.success());
    let b = std::fs::read(&dest).unwrap();
    assert_eq!(b.len(), 8 << 20);
    assert!(b[..1 << 20].iter().all(|&x| x == 0));
    assert!(b[1 << 20..7 << 20].iter().all(|&x| x == 0x5c));
    assert!(b[7 << 20..].iter().all(|&x| x == 0));
    let mut left = entries(dir.path());
    left.sort();
    assert_eq!(left, ["in.qcow2", "out.raw"]);
}
