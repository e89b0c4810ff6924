//! The e2fsprogs-corpus findings of issue 10 §6, each on an image made here with
//! mke2fs and debugfs, through the binary (`imgsan inspect` / `repack`):
//! an ext2 filesystem under a 0x55AA signature with an empty table, a zeroed
//! primary superblock, bigalloc, the `encrypt` flag with and without an
//! encrypted inode, source values e2fsck rejects (normalised by the builder and
//! reported), and a rebuild that cannot fit.
//!
//! Oracles: `e2fsck -fn` (zero complaints) on every output, `e2fsck -fy` on a
//! copy for the zeroed superblock, `debugfs` for what the output holds.
//! About 20 s in the dev profile.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_imgsan");

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> Output {
    let o = run(cmd);
    assert!(o.status.success(), "{cmd:?}: {}", text(&o));
    o
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A small source tree: a few files, a directory, a symlink.
fn source_dir(root: &Path) -> PathBuf {
    let d = root.join("src");
    fs::create_dir_all(d.join("etc/sub")).unwrap();
    fs::write(d.join("etc/hostname"), b"corpus-case\n").unwrap();
    fs::write(d.join("etc/sub/data"), vec![7u8; 50_000]).unwrap();
    std::os::unix::fs::symlink("etc/hostname", d.join("link")).unwrap();
    d
}

fn mkfs(img: &Path, src: &Path, size: &str, opts: &[&str]) {
    let _ = fs::remove_file(img);
    ok(Command::new("mke2fs")
        .args(["-q", "-F"])
        .args(opts)
        .arg("-d")
        .arg(src)
        .arg(img)
        .arg(size));
}

fn debugfs_w(img: &Path, cmds: &str) {
    let o = ok(Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg("-")
        .arg(img)
        .stdin({
            let f = img.with_extension("cmds");
            fs::write(&f, cmds).unwrap();
            fs::File::open(&f).unwrap()
        }));
    let err = String::from_utf8_lossy(&o.stderr);
    let bad: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    assert!(bad.is_empty(), "debugfs: {}", bad.join("\n"));
}

fn repack(img: &Path, out: &Path, extra: &[&str]) -> Output {
    run(Command::new(BIN)
        .arg("repack")
        .arg(img)
        .arg("-o")
        .arg(out)
        .args(extra))
}

/// `e2fsck -fn` exits 0 and prints nothing but pass headers and the summary.
fn fsck_clean(img: &Path) {
    let o = run(Command::new("e2fsck").arg("-fn").arg(img));
    let t = text(&o);
    let complaints: Vec<&str> = t
        .lines()
        .filter(|l| {
            !(l.is_empty()
                || l.starts_with("e2fsck ")
                || l.starts_with("Pass ")
                || (l.contains(" files (") && l.contains(" blocks")))
        })
        .collect();
    assert!(
        o.status.success() && complaints.is_empty(),
        "e2fsck -fn {}: {t}",
        img.display()
    );
}

fn cat(img: &Path, path: &str) -> Vec<u8> {
    ok(Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(img))
    .stdout
}

/// mke2fs leaves sector 0 alone: an ext2 image made over an old disk keeps its
/// 0x55AA with an all-zero table. It is a bare filesystem, and it is rebuilt.
#[test]
fn boot_signature_over_ext2_is_a_bare_filesystem() {
    let t = tempfile::tempdir().unwrap();
    let src = source_dir(t.path());
    let img = t.path().join("ext2.img");
    mkfs(&img, &src, "8M", &["-t", "ext2"]);
    let mut b = fs::read(&img).unwrap();
    b[510] = 0x55;
    b[511] = 0xAA;
    fs::write(&img, &b).unwrap();
    let o = run(Command::new(BIN).arg("inspect").arg("--json").arg(&img));
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let s = j.to_string();
    assert!(s.contains("\"ext2\""), "{s}");
    assert!(s.contains("bare filesystem"), "{s}");
    let out = t.path().join("out.img");
    let o = repack(&img, &out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("rebuilt"), "{}", text(&o));
    fsck_clean(&out);
    assert_eq!(cat(&out, "/etc/sub/data"), vec![7u8; 50_000]);
}

/// A zeroed primary superblock: the backup is found as e2fsck finds it, the
/// tree is the one e2fsck -fy recovers, and the user is told.
#[test]
fn zeroed_primary_superblock_uses_the_backup() {
    let t = tempfile::tempdir().unwrap();
    let src = source_dir(t.path());
    for (bs, size) in [("1024", "16M"), ("4096", "200M")] {
        let img = t.path().join(format!("zero-{bs}.img"));
        mkfs(&img, &src, size, &["-t", "ext4", "-b", bs]);
        let mut f = fs::OpenOptions::new().write(true).open(&img).unwrap();
        use std::io::{Seek, SeekFrom, Write};
        f.seek(SeekFrom::Start(1024)).unwrap();
        f.write_all(&[0u8; 1024]).unwrap();
        drop(f);
        let out = t.path().join(format!("out-{bs}.img"));
        let o = repack(&img, &out, &[]);
        assert!(o.status.success(), "{bs}: {}", text(&o));
        fsck_clean(&out);
        assert_eq!(cat(&out, "/etc/hostname"), b"corpus-case\n");
        let o = run(Command::new(BIN).arg("inspect").arg(&img));
        assert!(text(&o).contains("backup superblock"), "{}", text(&o));
        // The input is untouched, and e2fsck -fy on a copy agrees on the content.
        let copy = t.path().join("copy.img");
        fs::copy(&img, &copy).unwrap();
        let o = run(Command::new("e2fsck").arg("-fy").arg(&copy));
        assert!(matches!(o.status.code(), Some(0..=1)), "{}", text(&o));
        assert_eq!(cat(&copy, "/etc/sub/data"), cat(&out, "/etc/sub/data"));
        let mut head = vec![0u8; 1024];
        use std::io::Read;
        let mut f = fs::File::open(&img).unwrap();
        f.seek(SeekFrom::Start(1024)).unwrap();
        f.read_exact(&mut head).unwrap();
        assert!(head.iter().all(|&b| b == 0), "the input was modified");
    }
}

#[test]
fn bigalloc_is_unsupported_not_corrupt() {
    let t = tempfile::tempdir().unwrap();
    let src = source_dir(t.path());
    let img = t.path().join("big.img");
    mkfs(
        &img,
        &src,
        "64M",
        &["-t", "ext4", "-O", "bigalloc", "-C", "16384"],
    );
    let out = t.path().join("out.img");
    let o = repack(&img, &out, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("unsupported: bigalloc"), "{}", text(&o));
    assert!(!text(&o).contains("corrupt"), "{}", text(&o));
    assert!(!out.exists());
}

/// The `encrypt` feature alone is accepted; an inode that is really encrypted
/// is refused by name.
#[test]
fn encrypt_flag_alone_is_accepted_encrypted_inodes_are_named() {
    let t = tempfile::tempdir().unwrap();
    let src = source_dir(t.path());
    let img = t.path().join("enc.img");
    mkfs(&img, &src, "16M", &["-t", "ext4", "-O", "encrypt"]);
    let out = t.path().join("out.img");
    let o = repack(&img, &out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    fsck_clean(&out);
    let o = ok(Command::new("dumpe2fs").arg("-h").arg(&out));
    assert!(text(&o).contains("encrypt"), "the feature is kept");

    // Mark one file encrypted (EXT4_ENCRYPT_FL on top of its extents flag).
    debugfs_w(&img, "sif /etc/hostname flags 0x80800\n");
    let out2 = t.path().join("out2.img");
    let o = repack(&img, &out2, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("/etc/hostname"), "{}", text(&o));
    assert!(text(&o).contains("encrypted"), "{}", text(&o));
    assert!(!out2.exists());
}

/// Values e2fsck rejects are normalised by the builder and each is reported.
#[test]
fn values_e2fsck_rejects_are_normalised_and_reported() {
    let t = tempfile::tempdir().unwrap();
    let src = source_dir(t.path());
    let img = t.path().join("odd.img");
    mkfs(&img, &src, "16M", &["-t", "ext4"]);
    debugfs_w(
        &img,
        "sif /etc/sub/data flags 0x82000\n\
         mknod dev0 c 4 1\n\
         sif dev0 flags 0x10\n\
         mknod fifo0 p\n\
         sif fifo0 flags 0x20\n\
         ssv min_extra_isize 2\n",
    );
    // The source itself is what e2fsck complains about.
    let o = run(Command::new("e2fsck").arg("-fn").arg(&img));
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    let out = t.path().join("out.img");
    let o = repack(&img, &out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let t_out = text(&o);
    assert!(t_out.contains("normalised"), "{t_out}");
    assert!(t_out.contains("imagic"), "{t_out}");
    assert!(t_out.contains("immutable/append-only"), "{t_out}");
    assert!(t_out.contains("s_min_extra_isize 2"), "{t_out}");
    fsck_clean(&out);
    assert_eq!(cat(&out, "/etc/sub/data"), vec![7u8; 50_000]);
}

/// A size that cannot hold the tree: exit 3, saying why, and no output.
#[test]
fn a_rebuild_that_does_not_fit_exits_3() {
    let t = tempfile::tempdir().unwrap();
    let src = source_dir(t.path());
    fs::write(src.join("big"), vec![1u8; 6 << 20]).unwrap();
    let img = t.path().join("full.img");
    mkfs(&img, &src, "32M", &["-t", "ext4"]);
    let out = t.path().join("out.img");
    let o = repack(&img, &out, &["--size", "4M"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("does not fit"), "{}", text(&o));
    assert!(!out.exists());
}
