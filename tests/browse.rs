//! `imgsan ls` and `imgsan cat` through the binary, on a guest disk packed by
//! tests/common/disk.rs (GPT: BIOS boot, EFI, a separate ext4 /boot that the
//! guest's fstab mounts, an ext4 root, swap), on the same disk as QCOW2, on a
//! bare data filesystem and on a disk of two data filesystems.
//!
//! The oracle is the host directory the filesystems were made from with
//! `mke2fs -d`: `ls -lR /` must list exactly its entries (plus each
//! filesystem's lost+found) with lstat's mode, owner, links, size and mtime, and
//! `cat` must give a file's bytes. Symlinks that climb above the root (absolute
//! and relative) must land on the guest's files, not the host's.

#[path = "common/disk.rs"]
mod disk;
#[path = "common/guest.rs"]
mod guest;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use guest::{Distro, GuestOptions, Role};

const BIN: &str = env!("CARGO_BIN_EXE_imgsan");

fn imgsan(args: &[&[u8]]) -> Output {
    let mut c = Command::new(BIN);
    c.arg("--quiet");
    for a in args {
        c.arg(std::ffi::OsStr::from_bytes(a));
    }
    c.output().expect("imgsan runs")
}

fn ok(args: &[&[u8]]) -> Vec<u8> {
    let out = imgsan(args);
    assert!(
        out.status.success(),
        "imgsan {:?} failed ({}): {}",
        args.iter()
            .map(|a| String::from_utf8_lossy(a))
            .collect::<Vec<_>>(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn code(args: &[&[u8]]) -> (i32, String) {
    let out = imgsan(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Undo the name escaping of `imgsan ls`: `\\` is a backslash, `\xHH` a byte.
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' {
            match s.get(i + 1) {
                Some(b'\\') => {
                    out.push(b'\\');
                    i += 2;
                }
                Some(b'x') => {
                    let hex = std::str::from_utf8(&s[i + 2..i + 4]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 4;
                }
                other => panic!("bad escape {other:?} in {:?}", String::from_utf8_lossy(s)),
            }
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// One `ls -l` line, split.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Long {
    mode: String,
    links: u64,
    uid: u32,
    gid: u32,
    /// The size, or "major, minor" for devices.
    size: String,
    mtime: String,
    name: Vec<u8>,
    target: Option<Vec<u8>>,
}

fn parse_long(line: &[u8]) -> Long {
    let text = std::str::from_utf8(line).expect("ls output is UTF-8 (names escaped)");
    let mut rest = text;
    let mut take = || {
        let t = rest.trim_start();
        let end = t.find(' ').unwrap_or(t.len());
        let (tok, r) = t.split_at(end);
        rest = r;
        tok.to_string()
    };
    let mode = take();
    let links = take().parse().unwrap();
    let uid = take().parse().unwrap();
    let gid = take().parse().unwrap();
    let mut size = take();
    if mode.starts_with('c') || mode.starts_with('b') {
        size = format!("{size} {}", take());
    }
    let mtime = format!("{} {}", take(), take());
    let name_part = &rest[1..];
    let (name, target) = if mode.starts_with('l') {
        let (n, t) = name_part
            .split_once(" -> ")
            .expect("symlink shows its target");
        (n, Some(unescape(t.as_bytes())))
    } else {
        (name_part, None)
    };
    Long {
        mode,
        links,
        uid,
        gid,
        size,
        mtime,
        name: unescape(name.as_bytes()),
        target,
    }
}

/// `ls -R` output: directory (unescaped) -> its lines.
fn parse_recursive(out: &[u8]) -> BTreeMap<Vec<u8>, Vec<Vec<u8>>> {
    let mut blocks = BTreeMap::new();
    let text = out.strip_suffix(b"\n").unwrap_or(out);
    for block in text
        .split(|&b| b == b'\n')
        .collect::<Vec<_>>()
        .split(|l| l.is_empty())
    {
        let (header, lines) = block.split_first().expect("a block has a header");
        let dir = header.strip_suffix(b":").expect("header ends with a colon");
        let prev = blocks.insert(unescape(dir), lines.iter().map(|l| l.to_vec()).collect());
        assert!(prev.is_none(), "directory listed twice");
    }
    blocks
}

/// Days since the epoch to (year, month, day), proleptic Gregorian.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn utc(sec: i64) -> String {
    let (y, m, d) = civil(sec.div_euclid(86_400));
    let r = sec.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        r / 3600,
        r / 60 % 60,
        r % 60
    )
}

/// What `ls -l` should show for a host path (lstat).
fn expected_long(host: &Path, name: &[u8]) -> Long {
    let md = fs::symlink_metadata(host).unwrap();
    let m = md.mode();
    let ft = md.file_type();
    let t = if ft.is_dir() {
        'd'
    } else if ft.is_symlink() {
        'l'
    } else if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else if ft.is_fifo() {
        'p'
    } else if ft.is_socket() {
        's'
    } else {
        '-'
    };
    let rwx = |r: u32, w: u32, x: u32, s: u32, on: char, off: char| {
        let mut v = String::new();
        v.push(if m & r != 0 { 'r' } else { '-' });
        v.push(if m & w != 0 { 'w' } else { '-' });
        v.push(match (m & x != 0, m & s != 0) {
            (true, true) => on,
            (false, true) => off,
            (true, false) => 'x',
            (false, false) => '-',
        });
        v
    };
    let mode = format!(
        "{t}{}{}{}",
        rwx(0o400, 0o200, 0o100, 0o4000, 's', 'S'),
        rwx(0o040, 0o020, 0o010, 0o2000, 's', 'S'),
        rwx(0o004, 0o002, 0o001, 0o1000, 't', 'T')
    );
    let size = if ft.is_char_device() || ft.is_block_device() {
        let r = md.rdev();
        format!("{}, {}", rustix::fs::major(r), rustix::fs::minor(r))
    } else {
        md.size().to_string()
    };
    Long {
        mode,
        links: md.nlink(),
        uid: md.uid(),
        gid: md.gid(),
        size,
        mtime: utc(md.mtime()),
        name: name.to_vec(),
        target: ft
            .is_symlink()
            .then(|| fs::read_link(host).unwrap().as_os_str().as_bytes().to_vec()),
    }
}

/// Guest directory -> host directory, for the guest's readable filesystems.
struct HostGuest {
    root: PathBuf,
    /// (guest mount point, host directory) of mounted ext4 filesystems.
    mounts: Vec<(Vec<u8>, PathBuf)>,
}

impl HostGuest {
    fn host(&self, guest: &[u8]) -> PathBuf {
        for (mp, dir) in &self.mounts {
            if guest == mp.as_slice() {
                return dir.clone();
            }
            if let Some(rest) = guest.strip_prefix(mp.as_slice()) {
                if rest.first() == Some(&b'/') {
                    return dir.join(std::ffi::OsStr::from_bytes(&rest[1..]));
                }
            }
        }
        self.root.join(std::ffi::OsStr::from_bytes(
            guest.strip_prefix(b"/").unwrap_or(guest),
        ))
    }

    fn is_fs_root(&self, guest: &[u8]) -> bool {
        guest == b"/" || self.mounts.iter().any(|(mp, _)| mp == guest)
    }

    /// Every directory and its sorted entry names, as the guest shows them:
    /// mounted filesystems replace their mount point, each filesystem root has
    /// a lost+found.
    fn walk(&self) -> BTreeMap<Vec<u8>, Vec<Vec<u8>>> {
        let mut out = BTreeMap::new();
        let mut todo = vec![b"/".to_vec()];
        while let Some(dir) = todo.pop() {
            let host = self.host(&dir);
            let mut names: Vec<Vec<u8>> = fs::read_dir(&host)
                .unwrap()
                .map(|e| e.unwrap().file_name().as_bytes().to_vec())
                .collect();
            if self.is_fs_root(&dir) {
                names.push(b"lost+found".to_vec());
            }
            names.sort();
            for n in &names {
                let mut child = dir.clone();
                if child.len() > 1 {
                    child.push(b'/');
                }
                child.extend_from_slice(n);
                if n == b"lost+found" && self.is_fs_root(&dir) {
                    // mke2fs's, empty; the host has none.
                    out.insert(child, Vec::new());
                } else if fs::symlink_metadata(self.host(&child)).unwrap().is_dir() {
                    todo.push(child);
                }
            }
            out.insert(dir, names);
        }
        out
    }
}

/// Adds the odd cases to the root filesystem's host directory before packing.
fn add_odd_cases(root: &Path) {
    let srv = root.join("srv/odd");
    fs::create_dir_all(&srv).unwrap();
    // Symlinks that climb above the root: in the guest they stop at its root.
    symlink("/../../etc/passwd", root.join("etc/x")).unwrap();
    symlink("../../../../../etc/passwd", srv.join("rel-escape")).unwrap();
    symlink("/srv/odd/../../etc", srv.join("etc-dir")).unwrap();
    symlink("loop2", srv.join("loop1")).unwrap();
    symlink("loop1", srv.join("loop2")).unwrap();
    // A sparse file spanning several of cat's 1 MiB chunks: data, a hole, data
    // across a chunk boundary, and a tail that is not block-aligned.
    let mut f = fs::File::create(srv.join("sparse")).unwrap();
    f.write_all(&guest::det_bytes("browse/sparse/a", 100_000))
        .unwrap();
    f.seek(SeekFrom::Start((2 << 20) - 5000)).unwrap();
    f.write_all(&guest::det_bytes("browse/sparse/b", 300_000))
        .unwrap();
    f.seek(SeekFrom::Start((3 << 20) + 12_345)).unwrap();
    f.write_all(b"tail").unwrap();
    drop(f);
    // Names that need escaping.
    for name in [
        &b"bad\nname\xff"[..],
        b"back\\slash",
        "caf\u{e9} ok".as_bytes(),
        b"\x1b[31mred",
    ] {
        fs::write(srv.join(std::ffi::OsStr::from_bytes(name)), name).unwrap();
    }
    // A hard link, a fifo, a character device, a setuid file.
    fs::write(srv.join("hl1"), b"linked\n").unwrap();
    fs::hard_link(srv.join("hl1"), srv.join("hl2")).unwrap();
    guest::run(Command::new("mkfifo").arg(srv.join("pipe")));
    guest::run(
        Command::new("mknod")
            .arg(srv.join("null"))
            .args(["c", "1", "3"]),
    );
    fs::write(srv.join("suid"), b"#!/bin/sh\n").unwrap();
    guest::run(Command::new("chmod").arg("4755").arg(srv.join("suid")));
}

#[test]
fn ls_and_cat_on_a_guest_disk() {
    let dir = tempfile::tempdir().unwrap();
    let gdir = dir.path().join("guest");
    fs::create_dir(&gdir).unwrap();
    let opts = GuestOptions {
        separate_boot: true,
        deleted_secret: false,
        ..GuestOptions::new(Distro::Ubuntu2204)
    };
    let g = guest::build(&gdir, &opts);
    add_odd_cases(&g.root);
    let img = dir.path().join("disk.raw");
    let d = disk::pack(&g, &img, &disk::DiskOptions::default());
    assert!(d.parts.iter().any(|p| p.role == Role::Boot));
    let qcow = dir.path().join("disk.qcow2");
    disk::to_qcow2(&img, &qcow, true);
    let img_b = img.as_os_str().as_bytes();
    let hg = HostGuest {
        root: g.root.clone(),
        mounts: vec![(b"/boot".to_vec(), g.boot.clone().unwrap())],
    };

    // ls -R / lists exactly the host's tree, /boot from the /boot filesystem.
    let listed = parse_recursive(&ok(&[b"ls", img_b, b"/", b"-R"]));
    let expected = hg.walk();
    let only_listed: Vec<_> = listed
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    let only_host: Vec<_> = expected
        .keys()
        .filter(|k| !listed.contains_key(*k))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert!(
        only_listed.is_empty() && only_host.is_empty(),
        "directories only in ls: {only_listed:?}; only on the host: {only_host:?}"
    );
    for (dir, names) in &expected {
        let got: Vec<Vec<u8>> = listed[dir].iter().map(|l| unescape(l)).collect();
        assert_eq!(&got, names, "entries of {}", String::from_utf8_lossy(dir));
    }
    assert!(
        expected.len() > 50,
        "the guest has {} directories",
        expected.len()
    );
    assert!(expected.contains_key(b"/boot/grub".as_slice()));

    // ls -lR: every entry's metadata is the host's lstat.
    let long = parse_recursive(&ok(&[b"ls", img_b, b"/", b"-l", b"-R"]));
    assert_eq!(
        long.keys().collect::<Vec<_>>(),
        listed.keys().collect::<Vec<_>>()
    );
    let mut compared = 0;
    for (dir, lines) in &long {
        for line in lines {
            let got = parse_long(line);
            let mut path = dir.clone();
            if path.len() > 1 {
                path.push(b'/');
            }
            path.extend_from_slice(&got.name);
            if got.name == b"lost+found" && hg.is_fs_root(dir) {
                assert_eq!(got.mode, "drwx------");
                continue;
            }
            let mut want = expected_long(&hg.host(&path), &got.name);
            if want.mode.starts_with('d') {
                // Directory sizes are the filesystem's own.
                want.size = got.size.clone();
                if hg.is_fs_root(&path) {
                    // The mounted filesystem's root: its own lost+found, and its
                    // times are not the mount point's.
                    want.links += 1;
                    want.mtime = got.mtime.clone();
                }
            }
            assert_eq!(got, want, "ls -l of {}", String::from_utf8_lossy(&path));
            compared += 1;
        }
    }
    assert!(compared > 300, "only {compared} entries compared");

    // Single entries: a file, a symlink shown as itself, a device.
    let l = parse_long(ok(&[b"ls", img_b, b"/etc/x", b"-l"]).trim_ascii_end());
    assert_eq!(l.name, b"/etc/x");
    assert_eq!(l.target.as_deref(), Some(&b"/../../etc/passwd"[..]));
    let l = parse_long(ok(&[b"ls", img_b, b"/srv/odd/null", b"-l"]).trim_ascii_end());
    assert_eq!((l.mode.as_str(), l.size.as_str()), ("crw-r--r--", "1, 3"));
    let l = parse_long(ok(&[b"ls", img_b, b"/srv/odd/suid", b"-l"]).trim_ascii_end());
    assert_eq!(l.mode, "-rwsr-xr-x");
    assert_eq!(l.links, 1);
    assert_eq!(
        parse_long(ok(&[b"ls", img_b, b"/srv/odd/hl2", b"-l"]).trim_ascii_end()).links,
        2
    );
    // A symlink to a directory is listed through, unless -l.
    let etc = ok(&[b"ls", img_b, b"/etc"]);
    assert_eq!(ok(&[b"ls", img_b, b"/srv/odd/etc-dir"]), etc);
    assert_eq!(ok(&[b"ls", img_b, b"/srv/odd/etc-dir/"]), etc);
    assert!(ok(&[b"ls", img_b, b"/srv/odd/etc-dir", b"-l"]).starts_with(b"l"));
    // A subtree through the /boot mount, with a path given through "..".
    let boot = parse_recursive(&ok(&[b"ls", img_b, b"/etc/../boot", b"-R"]));
    assert_eq!(
        boot.keys().cloned().collect::<Vec<_>>(),
        expected
            .keys()
            .filter(|k| k.starts_with(b"/boot"))
            .cloned()
            .collect::<Vec<_>>()
    );

    // cat: bytes equal to the host file's, in both image formats.
    let passwd = fs::read(g.root.join("etc/passwd")).unwrap();
    assert_ne!(
        passwd,
        fs::read("/etc/passwd").unwrap_or_default(),
        "the guest's passwd must differ from the host's for the escape checks"
    );
    let mut cat_paths: Vec<Vec<u8>> = vec![
        b"/etc/os-release".to_vec(),
        b"/etc/fstab".to_vec(),
        b"/srv/odd/sparse".to_vec(),
        b"/srv/odd/bad\nname\xff".to_vec(),
        b"/srv/odd/hl2".to_vec(),
    ];
    // Files below /boot come from the /boot filesystem; take them all.
    for (dir, names) in &expected {
        if !dir.starts_with(b"/boot") {
            continue;
        }
        for n in names {
            let mut p = dir.clone();
            p.push(b'/');
            p.extend_from_slice(n);
            if fs::symlink_metadata(hg.host(&p)).is_ok_and(|m| m.is_file()) {
                cat_paths.push(p);
            }
        }
    }
    assert!(cat_paths.len() > 8, "{} files to cat", cat_paths.len());
    for p in &cat_paths {
        let want = fs::read(hg.host(p)).unwrap();
        for image in [img_b, qcow.as_os_str().as_bytes()] {
            let got = ok(&[b"cat", image, p]);
            assert!(
                got == want,
                "cat {} differs from the host file ({} vs {} bytes)",
                String::from_utf8_lossy(p),
                got.len(),
                want.len()
            );
        }
    }
    // Escaping symlinks stay in the guest.
    assert_eq!(ok(&[b"cat", img_b, b"/etc/x"]), passwd);
    assert_eq!(ok(&[b"cat", img_b, b"/srv/odd/rel-escape"]), passwd);
    assert_eq!(ok(&[b"cat", img_b, b"/srv/odd/etc-dir/passwd"]), passwd);
    assert_eq!(ok(&[b"cat", img_b, b"/../../../etc/passwd"]), passwd);
    // Piping into a reader that stops early is not a failure.
    let head = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{BIN}' cat '{}' /srv/odd/sparse | head -c 10 >/dev/null",
            img.display()
        ))
        .status()
        .unwrap();
    assert!(head.success());

    let bios = d.part(Role::BiosBoot).number.to_string();
    // Errors: a path the guest does not have is exit 2, as are directories,
    // special files and symlink loops given to cat.
    for (args, why) in [
        (&[&b"cat"[..], img_b, b"/nope"][..], "no such file"),
        (&[b"cat", img_b, b"/etc"], "is a directory"),
        (&[b"cat", img_b, b"/srv/odd/pipe"], "is a fifo"),
        (&[b"cat", img_b, b"/srv/odd/null"], "is a char device"),
        (&[b"cat", img_b, b"/srv/odd/loop1"], "too many levels"),
        (&[b"cat", img_b, b"/etc/passwd/x"], "not a directory"),
        (&[b"ls", img_b, b"/nope"], "no such file"),
        (
            &[b"ls", img_b, b"/", b"--volume", b"9"],
            "no such partition",
        ),
        (
            &[b"ls", img_b, b"/", b"--volume", bios.as_bytes()],
            "not a filesystem imgsan reads",
        ),
    ] {
        let (c, err) = code(args);
        assert_eq!(c, 2, "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    // --volume picks one filesystem, alone, as /.
    let boot_part = d.part(Role::Boot).number.to_string();
    assert_eq!(
        ok(&[
            b"cat",
            img_b,
            b"/grub/grub.cfg",
            b"--volume",
            boot_part.as_bytes()
        ]),
        fs::read(g.boot.as_ref().unwrap().join("grub/grub.cfg")).unwrap()
    );

    // inspect: the existing JSON keys stay, `filesystems` has each ext4 volume.
    let doc: serde_json::Value =
        serde_json::from_slice(&ok(&[b"inspect", img_b, b"--json"])).unwrap();
    for key in ["image", "format", "partition_table", "volumes", "facts"] {
        assert!(doc.get(key).is_some(), "inspect --json lost {key}");
    }
    let fss = doc["filesystems"].as_array().unwrap();
    let got: Vec<(String, String)> = fss
        .iter()
        .map(|f| {
            (
                f["volume"].as_str().unwrap().to_string(),
                f["uuid"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut want: Vec<(u32, String)> = vec![
        (d.part(Role::Boot).number, g.ids.boot_uuid.clone()),
        (d.part(Role::Root).number, g.ids.root_uuid.clone()),
    ];
    want.sort();
    let want: Vec<(String, String)> = want
        .into_iter()
        .map(|(n, u)| (format!("partition {n}"), u))
        .collect();
    assert_eq!(got, want);

    // Unreadable images: exit 3.
    let junk = dir.path().join("junk.raw");
    fs::write(&junk, guest::det_bytes("browse/junk", 1 << 20)).unwrap();
    for args in [
        &[&b"ls"[..], junk.as_os_str().as_bytes()][..],
        &[b"cat", junk.as_os_str().as_bytes(), b"/etc/passwd"],
        &[b"ls", b"/nonexistent/image.raw"],
    ] {
        let (c, err) = code(args);
        assert_eq!(c, 3, "{args:?}: {err}");
    }
}

fn mkfs(img: &Path, dir: &Path, mib: u64) {
    guest::run(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-d"])
            .arg(dir)
            .arg(img)
            .arg(format!("{mib}M")),
    );
}

#[test]
fn data_filesystems_without_a_guest_root() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    fs::create_dir_all(a.join("sub")).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("sub/file"), b"from a\n").unwrap();
    fs::write(b.join("other"), b"from b\n").unwrap();
    symlink("/../sub/file", b.join("up")).unwrap();

    // A bare filesystem is its own /.
    let bare = dir.path().join("bare.raw");
    mkfs(&bare, &a, 8);
    let bare_b = bare.as_os_str().as_bytes();
    assert_eq!(ok(&[b"ls", bare_b]), b"lost+found\nsub\n");
    assert_eq!(ok(&[b"cat", bare_b, b"sub/file"]), b"from a\n");

    // inspect's filesystem details against dumpe2fs, on the bare filesystem
    // after debugfs left a committed transaction in its journal.
    fs::write(dir.path().join("block"), vec![0x5a; 1024]).unwrap();
    let script = dir.path().join("journal.txt");
    fs::write(
        &script,
        format!(
            "jo\njw -b 3000 {}\njc\n",
            dir.path().join("block").display()
        ),
    )
    .unwrap();
    guest::run(
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&script)
            .arg(&bare),
    );
    let dump = guest::run(Command::new("dumpe2fs").arg("-h").arg(&bare));
    let field = |k: &str| -> String {
        dump.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("dumpe2fs has no {k}"))
            .trim()
            .to_string()
    };
    assert!(field("Filesystem features").contains("needs_recovery"));
    let doc: serde_json::Value =
        serde_json::from_slice(&ok(&[b"inspect", bare_b, b"--json"])).unwrap();
    let f = &doc["filesystems"][0];
    let num = |k: &str| f[k].as_u64().unwrap().to_string();
    let features: Vec<&str> = f["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(features.join(" "), field("Filesystem features"));
    assert_eq!(f["uuid"].as_str().unwrap(), field("Filesystem UUID"));
    assert_eq!(num("block_size"), field("Block size"));
    assert_eq!(num("inode_size"), field("Inode size"));
    assert_eq!(num("inodes_count"), field("Inode count"));
    assert_eq!(num("free_inodes"), field("Free inodes"));
    assert_eq!(num("free_blocks"), field("Free blocks"));
    assert_eq!(num("blocks_count"), field("Block count"));
    assert_eq!(num("reserved_blocks"), field("Reserved block count"));
    assert_eq!(
        f["used_bytes"].as_u64().unwrap(),
        (f["blocks_count"].as_u64().unwrap() - f["free_blocks"].as_u64().unwrap())
            * f["block_size"].as_u64().unwrap()
    );
    assert_eq!(f["state"], "clean");
    assert_eq!(f["journal"]["kind"], "internal");
    assert_eq!(f["journal"]["needs_recovery"], true);
    assert_eq!(f["journal"]["replayed"], true);
    assert_eq!(f["transactions_replayed"], 1);
    assert_eq!(f["blocks_replayed"], 1);
    assert_eq!(f["orphans"], 0);
    let text = String::from_utf8(ok(&[b"inspect", bare_b])).unwrap();
    for want in [
        format!("features:     {}", field("Filesystem features")),
        format!("block size:   {}", field("Block size")),
        "needs_recovery yes, replayed yes (1 transactions, 1 blocks, 0 revoked)".to_string(),
        "orphans:      0".to_string(),
    ] {
        assert!(text.contains(&want), "inspect text lacks {want:?}:\n{text}");
    }

    // Two data filesystems on a GPT disk: ambiguous without --volume.
    let (pa, pb) = (dir.path().join("pa"), dir.path().join("pb"));
    mkfs(&pa, &a, 8);
    mkfs(&pb, &b, 8);
    let img = dir.path().join("two.raw");
    fs::File::create(&img)
        .unwrap()
        .set_len(18 * disk::MIB)
        .unwrap();
    guest::run(
        Command::new("sgdisk")
            .args(["-o", "--new=1:2048:+8M", "--new=2:18432:+8M"])
            .arg(&img),
    );
    disk::copy_into(&img, disk::MIB, &pa);
    disk::copy_into(&img, 9 * disk::MIB, &pb);
    let img_b = img.as_os_str().as_bytes();
    let (c, err) = code(&[b"ls", img_b]);
    assert_eq!(c, 2, "{err}");
    assert!(
        err.contains("--volume") && err.contains("1 (ext4), 2 (ext4)"),
        "{err}"
    );
    assert_eq!(
        ok(&[b"ls", img_b, b"/", b"--volume", b"2"]),
        b"lost+found\nother\nup\n"
    );
    assert_eq!(
        ok(&[b"cat", img_b, b"/sub/file", b"--volume", b"1"]),
        b"from a\n"
    );
    // The absolute symlink resolves inside volume 2, where /sub does not exist.
    let (c, err) = code(&[b"cat", img_b, b"/up", b"--volume", b"2"]);
    assert_eq!(c, 2, "{err}");
}
