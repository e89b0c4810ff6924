//! The ext4 builder against e2fsprogs and the kernel: trees read from generated host
//! directories are built with the geometry of mke2fs-made source images (one per
//! feature variant), then checked by e2fsck, dumpe2fs, debugfs (rdump, stat,
//! ea_get), resize2fs, a second build (determinism) and, in one test, the Linux
//! kernel through libguestfs.

#[path = "support/hostdir.rs"]
mod hostdir;

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use imgsan::fs::ext4::build::hash::DirHash;
use imgsan::fs::ext4::build::{self, BuildOptions, Built, Placement, TargetSize};
use imgsan::fs::ext4::superblock::Superblock;
use imgsan::tree::{Kind, Node, Run, Src, Tree};

// ---- tools -------------------------------------------------------------------------

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} runs: {e}"))
}

fn mkfs(dir: &Path, name: &str, args: &[&str], size: &str) -> PathBuf {
    let p = dir.join(name);
    let st = Command::new("mke2fs")
        .args(["-q", "-F"])
        .args(args)
        .arg(&p)
        .arg(size)
        .status()
        .expect("mke2fs runs");
    assert!(st.success(), "mke2fs {args:?}");
    p
}

fn source_sb(img: &Path) -> Superblock {
    let f = std::fs::File::open(img).unwrap();
    let mut raw = [0u8; 1024];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut raw, 1024).unwrap();
    Superblock::parse(&raw, f.metadata().unwrap().len()).unwrap()
}

/// Execute a plan into a fresh sparse file.
fn write_built(built: &Built, path: &Path) {
    let _ = std::fs::remove_file(path);
    let f = std::fs::File::create(path).unwrap();
    f.set_len(built.plan.len).unwrap();
    built.plan.write_parallel(&f, 0).unwrap();
}

/// `e2fsck -fn` exits 0 and says nothing but its pass headers and summary.
fn fsck_clean(img: &Path) {
    fsck_clean_with(img, None);
}

/// `fsck_clean`, optionally with an e2fsck.conf (`E2FSCK_CONFIG`).
fn fsck_clean_with(img: &Path, config: Option<&Path>) {
    let mut cmd = Command::new("e2fsck");
    cmd.arg("-fn").arg(img);
    if let Some(c) = config {
        cmd.env("E2FSCK_CONFIG", c);
    }
    let out = cmd.output().expect("e2fsck runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let complaints: Vec<&str> = text
        .lines()
        .filter(|l| {
            !(l.is_empty()
                || l.starts_with("e2fsck ")
                || l.starts_with("Pass ")
                || (l.contains(" files (") && l.contains(" blocks")))
        })
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "e2fsck -fn {}: status {:?}\n{text}",
        img.display(),
        out.status
    );
}

fn dumpe2fs(img: &Path) -> HashMap<String, String> {
    let out = run("dumpe2fs", &["-h", img.to_str().unwrap()]);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn same_identity(src: &Path, out: &Path) {
    let a = dumpe2fs(src);
    let b = dumpe2fs(out);
    for k in [
        "Filesystem features",
        "Filesystem UUID",
        "Filesystem volume name",
        "Block size",
        "Inode size",
        "Directory Hash Seed",
        "Default directory hash",
        "Filesystem flags",
        "Default mount options",
        "Errors behavior",
        "Filesystem OS type",
        "Blocks per group",
        "Inodes per group",
        "Flex block group size",
        "Checksum type",
        "Checksum seed",
        "Group descriptor size",
        "Required extra isize",
        "Desired extra isize",
        "First inode",
        "Filesystem created",
        "Journal features",
    ] {
        assert_eq!(
            a.get(k),
            b.get(k),
            "dumpe2fs -h field {k}: {} vs {}",
            src.display(),
            out.display()
        );
    }
    assert_eq!(b.get("Filesystem state").map(|s| s.as_str()), Some("clean"));
    assert_eq!(b.get("Mount count").map(|s| s.as_str()), Some("0"));
}

// ---- the host directory ----------------------------------------------------------------

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

fn set_times(path: &Path, atime: (i64, u32), mtime: (i64, u32)) {
    use rustix::fs::{utimensat, AtFlags, Timespec, Timestamps, CWD};
    let ts = |t: (i64, u32)| Timespec {
        tv_sec: t.0,
        tv_nsec: t.1 as _,
    };
    utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: ts(atime),
            last_modification: ts(mtime),
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

/// An ACL in the xattr (VFS) form: (tag, perm, id) entries.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// Long name for the big directory: 200 bytes, so that 10 000 of them need two
/// htree index levels with 1 KiB and with 4 KiB blocks.
fn big_name(i: usize) -> String {
    format!("{i:05}-{}", "n".repeat(194))
}

const BIG_DIR_ENTRIES: usize = 10_000;

/// Generate the test directory. Everything the fidelity contract covers has an
/// example here.
fn make_host_dir(root: &Path) {
    let p = |s: &str| root.join(s);
    std::fs::create_dir_all(root).unwrap();
    for d in [
        "etc",
        "bin",
        "tmp",
        "var/shared",
        "sizes",
        "sparse",
        "links/other",
        "dev",
        "names",
        "xattr/shared",
        "uids",
        "many",
        "lost+found",
        "times",
    ] {
        std::fs::create_dir_all(p(d)).unwrap();
    }
    std::fs::set_permissions(p("lost+found"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(p("etc/hostname"), b"imgsan-test\n").unwrap();
    std::fs::write(
        p("etc/passwd"),
        b"root:x:0:0:root:/root:/bin/bash\n".repeat(40),
    )
    .unwrap();
    // setuid binary with a file capability, sticky tmp, setgid directory.
    std::fs::write(p("bin/sudo"), pattern(30_000, 1)).unwrap();
    std::fs::set_permissions(p("bin/sudo"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    let mut cap = vec![0u8; 20];
    cap[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    cap[4..8].copy_from_slice(&(1u32 << 21).to_le_bytes());
    set_xattr(&p("bin/sudo"), "security.capability", &cap);
    std::fs::set_permissions(p("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(p("var/shared"), std::fs::Permissions::from_mode(0o2775)).unwrap();
    std::fs::write(p("var/shared/g"), b"setgid dir member").unwrap();
    std::fs::set_permissions(p("var/shared/g"), std::fs::Permissions::from_mode(0o2750)).unwrap();
    // Sizes around the inline, block and extent boundaries.
    for (k, size) in [
        0usize, 1, 59, 60, 61, 127, 128, 129, 1023, 1024, 1025, 4095, 4096, 4097, 65535, 65536,
        65537, 200_000,
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::write(p(&format!("sizes/s{size}")), pattern(size, 10 + k as u32)).unwrap();
    }
    std::fs::write(p("bigfile"), pattern(3 << 20, 3)).unwrap();
    // Sparse files: a few holes; many small extents (an extent tree of depth 1 at
    // 4 KiB, depth 2 at 1 KiB); all hole.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(p("sparse/holes")).unwrap();
        f.write_all_at(&pattern(5000, 4), 0).unwrap();
        f.write_all_at(&pattern(10, 5), 1 << 20).unwrap();
        f.write_all_at(b"x", (5 << 20) - 1).unwrap();
        let f = std::fs::File::create(p("sparse/many")).unwrap();
        for i in 0..500u64 {
            f.write_all_at(&pattern(100, i as u32), i * 16384 + 7)
                .unwrap();
        }
        let f = std::fs::File::create(p("sparse/empty")).unwrap();
        f.set_len(100 << 20).unwrap();
    }
    // Hard links, across directories too; short, long and longer symlinks.
    std::fs::write(p("links/target"), b"linked content\n").unwrap();
    for l in ["links/h1", "links/h2", "links/other/h3"] {
        std::fs::hard_link(p("links/target"), p(l)).unwrap();
    }
    std::os::unix::fs::symlink("target", p("links/short")).unwrap();
    std::os::unix::fs::symlink("/".to_string() + &"long/".repeat(40), p("links/long")).unwrap();
    std::os::unix::fs::symlink("x".repeat(1000), p("links/longer")).unwrap();
    std::os::unix::fs::symlink("y".repeat(59), p("links/fast59")).unwrap();
    std::os::unix::fs::symlink("z".repeat(60), p("links/slow60")).unwrap();
    // Devices, a fifo and a socket.
    use rustix::fs::{makedev, mknodat, FileType, Mode, CWD};
    mknodat(
        CWD,
        p("dev/null"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        makedev(1, 3),
    )
    .unwrap();
    mknodat(
        CWD,
        p("dev/sda1"),
        FileType::BlockDevice,
        Mode::from_raw_mode(0o660),
        makedev(8, 1),
    )
    .unwrap();
    mknodat(
        CWD,
        p("dev/big"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o600),
        makedev(300, 70000),
    )
    .unwrap();
    mknodat(
        CWD,
        p("dev/fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    drop(std::os::unix::net::UnixListener::bind(p("dev/socket")).unwrap());
    // Names: not UTF-8, control characters, the longest allowed.
    for name in [
        &b"caf\xe9"[..],
        b"\xff\xfe\xfd",
        b"tab\tname",
        b"new\nline",
        &[b'L'; 255][..],
    ] {
        let path = p("names").join(std::ffi::OsStr::from_bytes(name));
        std::fs::write(&path, name).unwrap();
    }
    // A deep path.
    let mut deep = p("deep");
    for i in 0..60 {
        deep = deep.join(format!("level{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("bottom"), b"deep").unwrap();
    // Extended attributes: in-inode, in a block, shared blocks, SELinux labels,
    // POSIX ACLs (access and default).
    let x = p("xattr/small");
    std::fs::write(&x, b"x").unwrap();
    set_xattr(&x, "user.a", b"1");
    set_xattr(&x, "user.comment", b"a comment");
    set_xattr(&x, "trusted.t", b"trusted value");
    let y = p("xattr/large");
    std::fs::write(&y, b"y").unwrap();
    set_xattr(&y, "user.big", &pattern(900, 9));
    set_xattr(&y, "user.small", b"s");
    for i in 0..20 {
        let f = p(&format!("xattr/shared/f{i:02}"));
        std::fs::write(&f, format!("{i}")).unwrap();
        set_xattr(&f, "user.shared", &pattern(700, 77));
    }
    let acl_file = p("xattr/acl");
    std::fs::write(&acl_file, b"acl").unwrap();
    set_xattr(
        &acl_file,
        "system.posix_acl_access",
        &acl(&[
            (1, 6, u32::MAX),
            (2, 4, 1000),
            (4, 4, u32::MAX),
            (0x10, 6, u32::MAX),
            (0x20, 0, u32::MAX),
        ]),
    );
    set_xattr(
        &p("xattr"),
        "system.posix_acl_default",
        &acl(&[
            (1, 7, u32::MAX),
            (4, 5, u32::MAX),
            (8, 5, 2000),
            (0x10, 7, u32::MAX),
            (0x20, 5, u32::MAX),
        ]),
    );
    // Owners: large and very large ids.
    for (name, uid, gid) in [
        ("u100000", 100_000u32, 100_000u32),
        ("u65536", 65536, 70000),
        ("ubig", 4_000_000_000, 3_000_000_000),
    ] {
        let f = p(&format!("uids/{name}"));
        std::fs::write(&f, name).unwrap();
        chown(&f, uid, gid);
    }
    // Thousands of small files in nested directories, labelled like an SELinux
    // system (the same label repeats).
    for d in 0..30 {
        let dir = p(&format!("many/d{d:02}"));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for i in 0..100 {
            let f = dir.join(format!("f{i:03}"));
            std::fs::write(&f, pattern(37 * i + d, (d * 1000 + i) as u32)).unwrap();
            set_xattr(&f, "security.selinux", b"system_u:object_r:usr_t:s0\0");
        }
        std::fs::write(dir.join("sub/inner"), b"inner").unwrap();
    }
    std::os::unix::fs::symlink("../etc/hostname", p("many/link")).unwrap();
    set_xattr(
        &p("many/link"),
        "security.selinux",
        b"system_u:object_r:etc_t:s0\0",
    );
    // A directory with 10 000 entries (htree with two index levels).
    let big = p("big");
    std::fs::create_dir_all(&big).unwrap();
    for i in 0..BIG_DIR_ENTRIES {
        std::fs::File::create(big.join(big_name(i))).unwrap();
    }
    // Times with nanoseconds, before 1970 and after 2038 (these need large inodes).
    let t = p("times/old");
    std::fs::write(&t, b"old").unwrap();
    set_times(&t, (-1_000_000_000, 123), (-86_400, 999_999_999));
    let t = p("times/future");
    std::fs::write(&t, b"future").unwrap();
    set_times(&t, (4_102_444_800, 1), (4_102_444_800, 500_000_000));
    for (k, f) in ["etc/hostname", "bin/sudo", "sizes/s61", "links/target"]
        .iter()
        .enumerate()
    {
        set_times(
            &p(f),
            (1_600_000_000 + k as i64, 111_111_111 * k as u32),
            (1_500_000_000, 987_654_321),
        );
    }
}

fn host_dir() -> &'static (tempfile::TempDir, PathBuf) {
    static DIR: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        make_host_dir(&root);
        (t, root)
    })
}

// ---- comparisons -----------------------------------------------------------------------

/// rdump the output and compare it with the host directory: the same names,
/// types, file contents, permission bits, owners, mtimes and symlink targets
/// (rdump skips devices, fifos and sockets; those are checked with stat).
fn rdump_matches(host: &Path, img: &Path, skip: &[&str]) {
    let t = tempfile::tempdir().unwrap();
    let out = run(
        "debugfs",
        &[
            "-R",
            &format!("rdump / {}", t.path().display()),
            img.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "rdump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    compare_dirs(host, t.path(), Path::new(""), skip);
}

fn compare_dirs(a_root: &Path, b_root: &Path, rel: &Path, skip: &[&str]) {
    let a = a_root.join(rel);
    let b = b_root.join(rel);
    let list = |p: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| {
                !(rel.as_os_str().is_empty() && skip.iter().any(|s| n.as_bytes() == s.as_bytes()))
            })
            .collect();
        v.sort();
        v
    };
    let (la, lb) = (list(&a), list(&b));
    let special = |p: &Path| {
        let ft = std::fs::symlink_metadata(p).unwrap().file_type();
        use std::os::unix::fs::FileTypeExt;
        ft.is_fifo() || ft.is_socket() || ft.is_char_device() || ft.is_block_device()
    };
    let la: Vec<_> = la.into_iter().filter(|n| !special(&a.join(n))).collect();
    assert_eq!(la, lb, "entries of {}", rel.display());
    for name in la {
        let (pa, pb) = (a.join(&name), b.join(&name));
        let (ma, mb) = (
            std::fs::symlink_metadata(&pa).unwrap(),
            std::fs::symlink_metadata(&pb).unwrap(),
        );
        let what = rel.join(&name);
        assert_eq!(ma.file_type(), mb.file_type(), "type of {}", what.display());
        if ma.file_type().is_symlink() {
            assert_eq!(
                std::fs::read_link(&pa).unwrap(),
                std::fs::read_link(&pb).unwrap(),
                "{}",
                what.display()
            );
            continue;
        }
        // rdump translates only the rwx bits (and its chown would clear setuid
        // anyway); the stat comparison checks setuid, setgid and sticky.
        assert_eq!(
            ma.mode() & 0o777,
            mb.mode() & 0o777,
            "mode of {}",
            what.display()
        );
        assert_eq!(
            (ma.uid(), ma.gid()),
            (mb.uid(), mb.gid()),
            "owner of {}",
            what.display()
        );
        if ma.is_dir() {
            compare_dirs(a_root, b_root, &what, skip);
        } else {
            // debugfs restores the low 32 bits of a time as unsigned (pre-1970
            // times come back in 2106); stat_matches checks the full encoding.
            assert_eq!(
                ma.mtime() as u32,
                mb.mtime() as u32,
                "mtime of {}",
                what.display()
            );
            let (ca, cb) = (std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap());
            // debugfs dumps inline-data files with all of i_block (60 bytes and
            // more), whatever i_size says; stat_matches checks the size.
            let inline_dump =
                ca.len() < cb.len() && cb.len() <= 256 && cb[ca.len()..].iter().all(|&b| b == 0);
            if !inline_dump {
                assert_eq!(ma.len(), mb.len(), "size of {}", what.display());
            }
            assert!(
                ca[..] == cb[..ca.len().min(cb.len())] && (inline_dump || ca.len() == cb.len()),
                "content of {}",
                what.display()
            );
        }
    }
}

/// Parsed `debugfs stat` output.
#[derive(Debug, Default)]
struct Stat {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    links: u32,
    blockcount: u64,
    times: HashMap<String, (u32, u32)>,
    fast_link: Option<String>,
    device: Option<(u32, u32)>,
    generation: u32,
    flags: u32,
}

fn hex(s: &str) -> u32 {
    u32::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

fn parse_stat(text: &str) -> Stat {
    let mut s = Stat::default();
    let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    for line in text.lines() {
        let w = words(line);
        let get = |key: &str| w.iter().position(|x| x == key).map(|i| w[i + 1].clone());
        if line.starts_with("Inode:") {
            s.mode = u32::from_str_radix(&get("Mode:").unwrap(), 8).unwrap();
            s.flags = hex(&get("Flags:").unwrap());
        } else if line.starts_with("Generation:") {
            s.generation = get("Generation:").unwrap().parse().unwrap();
        } else if line.starts_with("User:") {
            // debugfs prints ids as signed ints.
            s.uid = get("User:").unwrap().parse::<i64>().unwrap() as u32;
            s.gid = get("Group:").unwrap().parse::<i64>().unwrap() as u32;
            s.size = get("Size:").unwrap().parse().unwrap();
        } else if line.starts_with("Links:") {
            s.links = get("Links:").unwrap().parse().unwrap();
            s.blockcount = get("Blockcount:").unwrap().parse().unwrap();
        } else if let Some(rest) = line.trim_start().strip_prefix("Fast link dest: ") {
            s.fast_link = Some(rest.trim_matches('"').to_string());
        } else if line.contains("Device major/minor number:") {
            let v = line
                .split("number:")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            let (a, b) = v.split_once(':').unwrap();
            s.device = Some((a.parse().unwrap(), b.parse().unwrap()));
        } else {
            for t in ["ctime", "atime", "mtime", "crtime"] {
                if let Some(rest) = line.trim_start().strip_prefix(&format!("{t}: ")) {
                    let v = rest.split_whitespace().next().unwrap();
                    let (a, b) = v.split_once(':').unwrap_or((v, "0"));
                    s.times.insert(t.to_string(), (hex(a), hex(b)));
                }
            }
        }
    }
    s
}

/// Run debugfs commands in one process; returns each command's output.
fn debugfs_batch(img: &Path, cmds: &[String]) -> Vec<String> {
    let t = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(t.path(), cmds.join("\n") + "\n").unwrap();
    let out = run(
        "debugfs",
        &["-f", t.path().to_str().unwrap(), img.to_str().unwrap()],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut parts: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with("debugfs: ") {
            parts.push(String::new());
        } else if let Some(p) = parts.last_mut() {
            p.push_str(line);
            p.push('\n');
        }
    }
    assert_eq!(parts.len(), cmds.len(), "debugfs answered every command");
    parts
}

fn quote(path: &[u8]) -> String {
    // debugfs takes paths in double quotes; our sample avoids names it cannot
    // quote (newlines, quotes).
    format!("\"{}\"", String::from_utf8_lossy(path))
}

/// The extra time word ext4 stores for a time (epoch bits and nanoseconds).
fn extra(t: imgsan::tree::Time) -> (u32, u32) {
    let lo = t.sec as i32;
    let epoch = ((t.sec - i64::from(lo)) >> 32) as u32 & 3;
    (lo as u32, epoch | (t.nsec << 2))
}

/// Compare inode metadata of a sample of paths with the tree: type and mode,
/// owners, size, link counts, all four times with nanoseconds, generation,
/// symlink targets, device numbers, xattrs (names via ea_list, values via ea_get).
fn stat_matches(tree: &Tree, img: &Path, large_inodes: bool) {
    let links = tree.link_counts();
    let sample: Vec<(Vec<u8>, u32)> = tree
        .paths()
        .into_iter()
        .enumerate()
        .filter(|(i, (p, _))| {
            (i % 37 == 0 || !p.starts_with(b"/big/"))
                && !p.contains(&b'\n')
                && !p.contains(&b'"')
                && std::str::from_utf8(p).is_ok()
        })
        .map(|(_, x)| x)
        .collect();
    let cmds: Vec<String> = sample
        .iter()
        .map(|(p, _)| format!("stat {}", quote(p)))
        .collect();
    let outs = debugfs_batch(img, &cmds);
    let mut xattr_cmds = Vec::new();
    let mut xattr_expect = Vec::new();
    let vals = tempfile::tempdir().unwrap();
    for ((path, id), text) in sample.iter().zip(&outs) {
        let node = tree.node(*id);
        let s = parse_stat(text);
        let what = String::from_utf8_lossy(path);
        assert_eq!(s.mode, node.mode() & 0o7777, "mode of {what}: {text}");
        assert_eq!((s.uid, s.gid), (node.uid, node.gid), "owner of {what}");
        assert_eq!(
            s.links,
            if links[*id as usize] > 65000 {
                1
            } else {
                links[*id as usize]
            },
            "links of {what}"
        );
        assert_eq!(s.generation, node.generation, "generation of {what}");
        match &node.kind {
            Kind::File(_) | Kind::Symlink(_) => assert_eq!(s.size, node.size, "size of {what}"),
            Kind::CharDev(d) | Kind::BlockDev(d) => {
                assert_eq!(s.device, Some((d.major, d.minor)), "device {what}")
            }
            _ => {}
        }
        if let Kind::Symlink(t) = &node.kind {
            if t.len() < 60 {
                assert_eq!(
                    s.fast_link.as_deref(),
                    Some(&*String::from_utf8_lossy(t)),
                    "fast link {what}"
                );
                assert_eq!(s.flags & 0x80000, 0, "fast link {what} has no extent tree");
            }
        }
        for (name, t) in [
            ("atime", node.atime),
            ("mtime", node.mtime),
            ("ctime", node.ctime),
        ] {
            let (lo, x) = extra(t);
            let want = if large_inodes { (lo, x) } else { (lo, 0) };
            assert_eq!(
                s.times.get(name).copied(),
                Some(want),
                "{name} of {what}: {text}"
            );
        }
        if large_inodes {
            if let Some(c) = node.crtime {
                assert_eq!(
                    s.times.get("crtime").copied(),
                    Some(extra(c)),
                    "crtime of {what}"
                );
            }
        }
        for x in &node.xattrs {
            let name = String::from_utf8_lossy(tree.xattr_name(x)).into_owned();
            let file = vals.path().join(format!("v{}", xattr_cmds.len()));
            xattr_cmds.push(format!(
                "ea_get -f {} {} {}",
                file.display(),
                quote(path),
                name
            ));
            xattr_expect.push((
                file,
                tree.xattr_value(x).to_vec(),
                name.clone(),
                what.to_string(),
            ));
        }
    }
    debugfs_batch(img, &xattr_cmds);
    for (file, want, name, what) in xattr_expect {
        let got = std::fs::read(&file).unwrap_or_else(|_| panic!("xattr {name} of {what} missing"));
        if name.starts_with("system.posix_acl") {
            // debugfs reports the ids of owner/group/mask/other entries as 0, the
            // kernel as -1: compare tags, permissions and the ids that matter.
            let norm = |v: &[u8]| -> Vec<(u16, u16, u32)> {
                v[4..]
                    .chunks(8)
                    .map(|e| {
                        let tag = u16::from_le_bytes([e[0], e[1]]);
                        let id = if tag == 2 || tag == 8 {
                            u32::from_le_bytes(e[4..8].try_into().unwrap())
                        } else {
                            0
                        };
                        (tag, u16::from_le_bytes([e[2], e[3]]), id)
                    })
                    .collect()
            };
            assert_eq!(norm(&got), norm(&want), "xattr {name} of {what}");
        } else {
            assert_eq!(got, want, "xattr {name} of {what}");
        }
    }
}

/// Holes stay holes: a sparse file holds exactly the blocks its data touches.
fn holes_kept(tree: &Tree, img: &Path, bs: u64) {
    for path in ["/sparse/holes", "/sparse/many", "/sparse/empty"] {
        let id = tree.resolve(path.as_bytes(), false).unwrap();
        let Kind::File(runs) = &tree.node(id).kind else {
            panic!()
        };
        let mut blocks = std::collections::BTreeSet::new();
        for r in runs {
            for b in r.logical / bs..(r.logical + r.len).div_ceil(bs) {
                blocks.insert(b);
            }
        }
        let s = parse_stat(&debugfs_batch(img, &[format!("stat {path}")])[0]);
        let data_sectors = blocks.len() as u64 * bs / 512;
        // Map blocks (extent tree or indirect) come on top of the data: at most
        // one indirect block per pointer block's worth of logical range, or one
        // extent block per block's worth of extents, and a few above them.
        let last = blocks.iter().next_back().map_or(0, |b| b + 1);
        let map = last / (bs / 4) + runs.len() as u64 / ((bs - 12) / 12) + 4;
        assert!(
            s.blockcount >= data_sectors && s.blockcount <= data_sectors + map * bs / 512,
            "{path}: {} sectors for {} data blocks",
            s.blockcount,
            blocks.len()
        );
    }
}

/// The structures the tree should have produced are really there: a two-level
/// htree for the big directory, a deep extent tree for the fragmented file, a
/// shared xattr block, fast and slow symlinks, inline files on inline_data.
fn structures_built(img: &Path, sb: &Superblock) {
    use imgsan::fs::ext4::superblock::{compat, incompat};
    let cmds: Vec<String> = [
        "htree_dump /big",
        "ex /sparse/many",
        "stat /xattr/shared/f00",
        "stat /xattr/shared/f19",
        "stat /links/fast59",
        "stat /links/slow60",
        "stat /sizes/s1",
        "stat /sizes/s128",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let o = debugfs_batch(img, &cmds);
    if sb.has_compat(compat::DIR_INDEX) {
        assert!(
            o[0].contains("Indirect levels: 1"),
            "htree of /big:\n{}",
            &o[0][..o[0].len().min(2000)]
        );
    }
    if sb.has_incompat(incompat::EXTENTS) {
        let depth = o[1]
            .lines()
            .filter_map(|l| {
                l.trim_start()
                    .split('/')
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<u32>()
                    .ok()
            })
            .max()
            .unwrap_or(0);
        let want = if sb.block_size() == 1024 { 2 } else { 1 };
        assert_eq!(depth, want, "extent tree of /sparse/many:\n{}", o[1]);
    }
    let acl = |t: &str| {
        t.lines()
            .find_map(|l| l.strip_prefix("File ACL: "))
            .map(|v| v.split_whitespace().next().unwrap().parse::<u64>().unwrap())
            .unwrap()
    };
    assert_ne!(acl(&o[2]), 0, "shared xattrs live in a block");
    assert_eq!(acl(&o[2]), acl(&o[3]), "identical xattr blocks are shared");
    assert!(
        o[4].contains("Fast link dest"),
        "59-byte target is a fast symlink"
    );
    assert!(
        !o[5].contains("Fast link dest"),
        "60-byte target is a slow symlink"
    );
    let inline = parse_stat(&o[6]).flags & 0x1000_0000 != 0;
    assert_eq!(
        inline,
        sb.has_incompat(incompat::INLINE_DATA),
        "1-byte file inline:\n{}",
        o[6]
    );
    if sb.has_incompat(incompat::INLINE_DATA) && sb.inode_size() >= 256 {
        assert!(
            o[7].contains("system.data (68)"),
            "128-byte file spills into system.data:\n{}",
            o[7]
        );
    }
}

fn blake3_file(p: &Path) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    let mut f = std::fs::File::open(p).unwrap();
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize()
}

/// First-boot growth: enlarge the image, resize2fs it offline, e2fsck clean.
fn grows(img: &Path, by: u64) {
    let copy = img.with_extension("grown");
    let st = Command::new("cp")
        .args(["--sparse=always"])
        .arg(img)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    let f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len + by).unwrap();
    let out = run("resize2fs", &[copy.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "resize2fs: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    fsck_clean(&copy);
    let _ = std::fs::remove_file(&copy);
}

// ---- the variants ------------------------------------------------------------------------

struct Variant {
    name: &'static str,
    mkfs: &'static [&'static str],
    /// tune2fs arguments applied to the source after mke2fs.
    tune: &'static [&'static str],
    size: &'static str,
    target: TargetSize,
    large_inodes: bool,
    placement: Placement,
}

fn check_variant(v: &Variant) {
    let (_keep, host) = host_dir();
    let work = tempfile::tempdir().unwrap();
    let src = mkfs(work.path(), &format!("{}-src.img", v.name), v.mkfs, v.size);
    if !v.tune.is_empty() {
        let mut args: Vec<&str> = v.tune.to_vec();
        args.push(src.to_str().unwrap());
        let out = run("tune2fs", &args);
        assert!(
            out.status.success(),
            "tune2fs {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sb = source_sb(&src);
    let mut tree = hostdir::tree_from_dir(host);
    let mut skip = vec![];
    if !v.large_inodes {
        // Times past 2038 and before 1901 need the extra inode fields.
        tree.unlink(tree.root, b"times");
        skip.push("times");
    }
    let opts = BuildOptions {
        size: v.target,
        placement: v.placement,
        ..Default::default()
    };
    let built = build::build(&tree, &sb, &opts).unwrap_or_else(|e| panic!("{}: {e}", v.name));
    let out = work.path().join(format!("{}-out.img", v.name));
    write_built(&built, &out);
    fsck_clean(&out);
    same_identity(&src, &out);
    rdump_matches(host, &out, &skip);
    stat_matches(&tree, &out, v.large_inodes);
    holes_kept(&tree, &out, u64::from(sb.block_size()));
    structures_built(&out, &sb);
    // Determinism: a second build writes the same bytes.
    let again = build::build(&tree, &sb, &opts).unwrap();
    let out2 = work.path().join(format!("{}-again.img", v.name));
    write_built(&again, &out2);
    assert_eq!(
        blake3_file(&out),
        blake3_file(&out2),
        "{}: two builds differ",
        v.name
    );
    grows(&out, 64 << 20);
}

#[test]
fn ext4_default_4k() {
    check_variant(&Variant {
        name: "ext4",
        mkfs: &["-t", "ext4", "-b", "4096", "-L", "cloudimg-rootfs"],
        tune: &[],
        size: "256M",
        target: TargetSize::Source,
        large_inodes: true,
        placement: Placement::Packed,
    });
}

#[test]
fn ext4_1k_blocks() {
    check_variant(&Variant {
        name: "k1",
        mkfs: &["-t", "ext4", "-b", "1024", "-L", "small"],
        tune: &[],
        size: "160M",
        target: TargetSize::Source,
        large_inodes: true,
        placement: Placement::Packed,
    });
}

#[test]
fn ext4_128_byte_inodes() {
    check_variant(&Variant {
        name: "i128",
        mkfs: &["-t", "ext4", "-I", "128"],
        tune: &[],
        size: "200M",
        target: TargetSize::Source,
        large_inodes: false,
        placement: Placement::Packed,
    });
}

#[test]
fn ext4_uninit_bg_without_metadata_csum() {
    check_variant(&Variant {
        name: "uninit",
        mkfs: &["-t", "ext4", "-O", "^metadata_csum,uninit_bg"],
        tune: &[],
        size: "200M",
        target: TargetSize::Source,
        large_inodes: true,
        placement: Placement::Packed,
    });
}

#[test]
fn ext4_without_64bit() {
    check_variant(&Variant {
        name: "no64",
        mkfs: &["-t", "ext4", "-O", "^64bit,fast_commit"],
        tune: &["-E", "hash_alg=tea"],
        size: "200M",
        target: TargetSize::Source,
        large_inodes: true,
        placement: Placement::Packed,
    });
}

#[test]
fn ext4_meta_bg() {
    // 1 KiB blocks: a meta group is 16 groups (128 MiB), so this has three.
    check_variant(&Variant {
        name: "metabg",
        mkfs: &["-t", "ext4", "-b", "1024", "-O", "meta_bg,^resize_inode"],
        tune: &[],
        size: "300M",
        target: TargetSize::Source,
        large_inodes: true,
        placement: Placement::Packed,
    });
}

#[test]
fn ext3() {
    check_variant(&Variant {
        name: "ext3",
        mkfs: &["-t", "ext3"],
        tune: &[],
        size: "200M",
        target: TargetSize::Source,
        large_inodes: true,
        placement: Placement::Packed,
    });
}

#[test]
fn ext4_inline_data() {
    check_variant(&Variant {
        name: "inline",
        mkfs: &[
            "-t",
            "ext4",
            "-O",
            "inline_data,metadata_csum_seed,large_dir",
        ],
        tune: &["-E", "hash_alg=legacy"],
        size: "200M",
        target: TargetSize::Source,
        large_inodes: true,
        placement: Placement::Packed,
    });
}

#[test]
fn ext4_other_size() {
    check_variant(&Variant {
        name: "bigger",
        mkfs: &["-t", "ext4", "-O", "sparse_super2"],
        tune: &[],
        size: "128M",
        target: TargetSize::Bytes(700 << 20),
        large_inodes: true,
        placement: Placement::Spread,
    });
}

// ---- targeted tests --------------------------------------------------------------------------

/// The builder's directory hashes agree with `debugfs dx_hash` for every hash
/// version, signed and unsigned, with and without a seed, on awkward names.
#[test]
fn dir_hashes_match_debugfs() {
    let work = tempfile::tempdir().unwrap();
    let img = mkfs(work.path(), "h.img", &["-t", "ext4"], "8M");
    let seed_str = "2e667659-c119-42b7-a5cf-57b428feeb19";
    let seed_bytes: Vec<u8> = seed_str
        .replace('-', "")
        .as_bytes()
        .chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
        .collect();
    let mut seed = [0u32; 4];
    for i in 0..4 {
        seed[i] = u32::from_le_bytes(seed_bytes[4 * i..4 * i + 4].try_into().unwrap());
    }
    let names: Vec<String> = vec![
        "a".into(),
        "hello".into(),
        "lost+found".into(),
        "x".repeat(31),
        "y".repeat(32),
        "z".repeat(33),
        "w".repeat(255),
        "caf\u{e9}-\u{fc}ber-\u{4e2d}\u{6587}".into(),
        big_name(4242),
    ];
    let algs = [
        "legacy",
        "half_md4",
        "tea",
        "legacy_unsigned",
        "half_md4_unsigned",
        "tea_unsigned",
    ];
    let mut cmds = Vec::new();
    let mut want = Vec::new();
    for (v, alg) in algs.iter().enumerate() {
        for s in [None, Some(seed)] {
            for n in &names {
                let seed_arg = if s.is_some() {
                    format!("-s {seed_str} ")
                } else {
                    String::new()
                };
                // debugfs names only the signed hashes; numbers reach them all.
                cmds.push(format!("dx_hash -h {v} {seed_arg}{n}"));
                let h = DirHash {
                    version: v as u8,
                    seed: s.unwrap_or([0; 4]),
                };
                want.push((h.hash(n.as_bytes()), alg, n.clone()));
            }
        }
    }
    let outs = debugfs_batch(&img, &cmds);
    for (text, ((major, minor), alg, n)) in outs.iter().zip(want) {
        let expect = format!("is 0x{major:x} (minor 0x{minor:x})");
        assert!(
            text.contains(&expect),
            "{alg} {n:?}: debugfs says {text}, we say {expect}"
        );
    }
}

/// A synthetic tree of about 1 GiB on a 6 GiB source geometry shrinks to about
/// 1.3 GiB (data, a 64 MiB journal, metadata, and the 256 MiB default margin),
/// passes e2fsck, grows back with resize2fs, and builds identically twice.
#[test]
fn shrink_6g_to_fit() {
    let work = tempfile::tempdir().unwrap();
    let src = mkfs(
        work.path(),
        "big-src.img",
        &["-t", "ext4", "-L", "rootfs"],
        "6G",
    );
    let sb = source_sb(&src);
    // 1 GiB of file data, every run pointing into one 1 MiB pattern: cheap to
    // describe, and still 1 GiB written.
    let pat: Arc<[u8]> = pattern(1 << 20, 42).into();
    let mut tree = Tree::new(imgsan::tree::Flavor::Synthetic, None);
    let blob = tree.add_blob(pat);
    for d in 0..8 {
        let dir = tree.add_node(Node::new(Kind::Dir(vec![])));
        tree.node_mut(dir).perm = 0o755;
        tree.link(tree.root, format!("d{d}").as_bytes(), dir)
            .unwrap();
        for f in 0..4 {
            let runs: Vec<Run> = (0..32u64)
                .map(|k| Run {
                    logical: k << 20,
                    len: 1 << 20,
                    src: Src::Blob { blob, offset: 0 },
                })
                .collect();
            let mut n = Node::new(Kind::File(runs));
            n.size = 32 << 20;
            n.perm = 0o644;
            let id = tree.add_node(n);
            tree.link(dir, format!("f{f}").as_bytes(), id).unwrap();
        }
    }
    let lf = tree.add_node(Node::new(Kind::Dir(vec![])));
    tree.link(tree.root, b"lost+found", lf).unwrap();
    tree.finish().unwrap();
    let opts = BuildOptions {
        size: TargetSize::Shrink { margin: None },
        ..Default::default()
    };
    let built = build::build(&tree, &sb, &opts).unwrap();
    let gib = 1u64 << 30;
    eprintln!(
        "shrunk: {} bytes ({:.3} GiB), minimum {} bytes",
        built.plan.len,
        built.plan.len as f64 / gib as f64,
        built.stats.min_bytes
    );
    assert!(
        built.plan.len > gib && built.plan.len < gib + gib / 2,
        "shrunk to {} bytes",
        built.plan.len
    );
    assert_eq!(built.stats.data_bytes, gib);
    let out = work.path().join("big-out.img");
    write_built(&built, &out);
    fsck_clean(&out);
    same_identity(&src, &out);
    let cat = run("debugfs", &["-R", "cat /d3/f2", out.to_str().unwrap()]);
    assert_eq!(cat.stdout.len(), 32 << 20);
    assert!(cat
        .stdout
        .chunks(1 << 20)
        .all(|c| c == &pattern(1 << 20, 42)[..]));
    // Determinism, checked on the plan (the file is 1.3 GiB).
    let again = build::build(&tree, &sb, &opts).unwrap();
    assert_eq!(
        format!("{:?}", again.plan.writes),
        format!("{:?}", built.plan.writes)
    );
    grows(&out, 5 << 30);
}

/// A journal described by the caller (as the reader will from the source journal
/// superblock): checksum v3, 64-bit tags, revoke. e2fsck verifies the journal
/// superblock's checksum; dumpe2fs shows the features.
#[test]
fn journal_with_checksums() {
    use imgsan::fs::ext4::build::journal::features;
    let work = tempfile::tempdir().unwrap();
    let src = mkfs(work.path(), "j.img", &["-t", "ext4"], "128M");
    let mut tree = Tree::new(imgsan::tree::Flavor::Synthetic, None);
    tree.finish().unwrap();
    let opts = BuildOptions {
        journal: Some(build::JournalSpec {
            blocks: 2048,
            fc_blocks: 0,
            feature_compat: 0,
            feature_incompat: features::INCOMPAT_REVOKE
                | features::INCOMPAT_64BIT
                | features::INCOMPAT_CSUM_V3,
            feature_ro_compat: 0,
            max_transaction: 0,
            max_trans_data: 0,
        }),
        ..Default::default()
    };
    let built = build::build(&tree, &source_sb(&src), &opts).unwrap();
    let out = work.path().join("j-out.img");
    write_built(&built, &out);
    fsck_clean(&out);
    let d = dumpe2fs(&out);
    assert_eq!(
        d["Journal features"],
        "journal_incompat_revoke journal_64bit journal_checksum_v3"
    );
    assert_eq!(d["Journal checksum type"], "crc32c");
    assert_eq!(d["Total journal blocks"], "2048");
    // A corrupted journal superblock checksum is noticed: the test would see it.
    let jblk = built.sb.s_jnl_blocks[5] as u64; // first extent's start (ee_start_lo)
    let f = std::fs::OpenOptions::new().write(true).open(&out).unwrap();
    let bs = u64::from(built.sb.block_size());
    std::os::unix::fs::FileExt::write_all_at(&f, &[0xff], jblk * bs + 0x40 + 3).unwrap();
    let bad = run("e2fsck", &["-fn", out.to_str().unwrap()]);
    assert!(
        !bad.status.success(),
        "e2fsck notices a bad journal superblock checksum"
    );
}

/// A directory big enough for three htree levels (dx_root, two levels of
/// dx_node) needs large_dir; with it e2fsck accepts the tree and the kernel's
/// limit of two levels without it is enforced.
#[test]
fn large_dir_three_levels() {
    let work = tempfile::tempdir().unwrap();
    // 1 KiB blocks: a root indexes 123 blocks, a node 126; 250-byte names fill a
    // leaf with 3 entries, so 48 000 names need 16 000 leaves > 123 * 126.
    let mut tree = Tree::new(imgsan::tree::Flavor::Synthetic, None);
    let dir = tree.add_node(Node::new(Kind::Dir(vec![])));
    tree.link(tree.root, b"huge", dir).unwrap();
    let file = tree.add_node(Node::new(Kind::File(vec![])));
    for i in 0..48_000 {
        tree.link(dir, format!("{i:06}{}", "q".repeat(244)).as_bytes(), file)
            .unwrap();
    }
    tree.finish().unwrap();
    let without = mkfs(work.path(), "n.img", &["-t", "ext4", "-b", "1024"], "64M");
    let e = build::build(&tree, &source_sb(&without), &BuildOptions::default()).unwrap_err();
    assert_eq!(e.kind(), imgsan::ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("large_dir"), "{e}");
    let with = mkfs(
        work.path(),
        "l.img",
        &["-t", "ext4", "-b", "1024", "-O", "large_dir"],
        "64M",
    );
    let built = build::build(&tree, &source_sb(&with), &BuildOptions::default()).unwrap();
    let out = work.path().join("l-out.img");
    write_built(&built, &out);
    fsck_clean(&out);
    let h = debugfs_batch(&out, &["htree_dump /huge".to_string()]);
    assert!(
        h[0].contains("Indirect levels: 2"),
        "{}",
        &h[0][..h[0].len().min(500)]
    );
}

/// Project ids (project feature) and the behavioural inode flags of ext4 trees
/// (immutable, append-only, noatime, project inheritance) are kept; layout flags
/// in the tree are ignored in favour of the builder's own.
#[test]
fn project_ids_and_flags() {
    let work = tempfile::tempdir().unwrap();
    let src = mkfs(
        work.path(),
        "p.img",
        &["-t", "ext4", "-O", "project"],
        "64M",
    );
    let mut tree = Tree::new(imgsan::tree::Flavor::Ext4, None);
    let dir = tree.add_node(Node::new(Kind::Dir(vec![])));
    tree.node_mut(dir).projid = 42;
    tree.node_mut(dir).flags = 0x2000_0000; // PROJINHERIT
    tree.node_mut(dir).perm = 0o755;
    tree.link(tree.root, b"proj", dir).unwrap();
    let mut f = Node::new(Kind::File(vec![]));
    f.projid = 42;
    // immutable | append-only | noatime, plus stale layout flags (index,
    // inline data) that must not survive.
    f.flags = 0x10 | 0x20 | 0x80 | 0x1000 | 0x1000_0000;
    f.perm = 0o644;
    let id = tree.add_node(f);
    tree.link(dir, b"file", id).unwrap();
    tree.finish().unwrap();
    let built = build::build(&tree, &source_sb(&src), &BuildOptions::default()).unwrap();
    let out = work.path().join("p-out.img");
    write_built(&built, &out);
    fsck_clean(&out);
    let o = debugfs_batch(&out, &["stat /proj".into(), "stat /proj/file".into()]);
    assert!(o[0].contains("Project:    42"), "{}", o[0]);
    assert!(o[1].contains("Project:    42"), "{}", o[1]);
    assert_eq!(parse_stat(&o[0]).flags, 0x2000_0000 | 0x80000, "{}", o[0]);
    assert_eq!(
        parse_stat(&o[1]).flags,
        0x10 | 0x20 | 0x80 | 0x80000,
        "{}",
        o[1]
    );
    // Without the project feature a project id cannot be stored: refused.
    let plain = mkfs(work.path(), "n.img", &["-t", "ext4"], "64M");
    let e = build::build(&tree, &source_sb(&plain), &BuildOptions::default()).unwrap_err();
    assert_eq!(e.kind(), imgsan::ErrorKind::Unsupported, "{e}");
}

/// Sources with features the builder does not reproduce are refused before
/// anything is built; a size too small names what is needed.
#[test]
fn refusals_are_clear() {
    let work = tempfile::tempdir().unwrap();
    let tree = {
        let mut t = Tree::new(imgsan::tree::Flavor::Synthetic, None);
        t.finish().unwrap();
        t
    };
    let quota = mkfs(work.path(), "q.img", &["-t", "ext4", "-O", "quota"], "32M");
    let e = build::build(&tree, &source_sb(&quota), &BuildOptions::default()).unwrap_err();
    assert_eq!(e.kind(), imgsan::ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("quota"), "{e}");
    let plain = mkfs(work.path(), "p.img", &["-t", "ext4"], "64M");
    let sb = source_sb(&plain);
    let (_k, host) = host_dir();
    let big = hostdir::tree_from_dir(host);
    let e = build::build(
        &big,
        &sb,
        &BuildOptions {
            size: TargetSize::Bytes(8 << 20),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.kind(), imgsan::ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("does not fit"), "{e}");
    assert!(e.to_string().contains("need at least"), "{e}");
    // Trees the builder cannot store faithfully are refused, naming the inode.
    let bad = |f: &dyn Fn(&mut Tree, imgsan::tree::NodeId)| {
        let mut t = Tree::new(imgsan::tree::Flavor::Synthetic, None);
        let blob = t.add_blob(Arc::from(&b"0123456789"[..]));
        let mut n = Node::new(Kind::File(vec![Run {
            logical: 0,
            len: 10,
            src: Src::Blob { blob, offset: 0 },
        }]));
        n.size = 10;
        n.source_ino = 4242;
        let id = t.add_node(n);
        t.link(t.root, b"f", id).unwrap();
        f(&mut t, id);
        build::build(&t, &sb, &BuildOptions::default()).unwrap_err()
    };
    let e = bad(&|t, id| {
        let x = t.xattr(b"os2.name", b"v");
        t.node_mut(id).xattrs.push(x);
    });
    assert_eq!(e.kind(), imgsan::ErrorKind::Unsupported, "{e}");
    assert!(
        e.to_string().contains("os2.name") && e.to_string().contains("4242"),
        "{e}"
    );
    let e = bad(&|t, id| t.node_mut(id).size = 5);
    assert_eq!(
        e.kind(),
        imgsan::ErrorKind::Corrupt,
        "runs past the size: {e}"
    );
    let e = bad(&|t, id| {
        if let Kind::File(runs) = &mut t.node_mut(id).kind {
            runs[0].len = 11;
        }
        t.node_mut(id).size = 11;
    });
    assert_eq!(
        e.kind(),
        imgsan::ErrorKind::Corrupt,
        "run past its blob: {e}"
    );
    let e = bad(&|t, id| t.node_mut(id).kind = Kind::Symlink(Box::from(&b"a\0b"[..])));
    assert_eq!(
        e.kind(),
        imgsan::ErrorKind::Corrupt,
        "NUL in a symlink target: {e}"
    );
    let e = bad(&|t, id| {
        let x = t.xattr(b"system.posix_acl_access", b"not an acl");
        t.node_mut(id).xattrs.push(x);
    });
    assert_eq!(e.kind(), imgsan::ErrorKind::Corrupt, "malformed ACL: {e}");
    let e = bad(&|t, id| {
        let x = t.xattr(b"user.huge", &vec![1u8; 70_000]);
        t.node_mut(id).xattrs.push(x);
    });
    assert_eq!(
        e.kind(),
        imgsan::ErrorKind::Unsupported,
        "value larger than a block: {e}"
    );
}

/// An empty tree (root and lost+found) built with the geometry of a fresh mke2fs
/// image gives the same filesystem as mke2fs, group by group: `dumpe2fs` shows
/// the same superblock and the same bitmaps, inode tables, free counts and free
/// ranges in every group. Only two things differ on purpose: every group is
/// marked ITABLE_ZEROED (the inode tables of the output are holes), and the
/// group checksums differ with it.
#[test]
fn empty_tree_reproduces_mke2fs_layout() {
    let work = tempfile::tempdir().unwrap();
    let mut tree = Tree::new(imgsan::tree::Flavor::Synthetic, None);
    let lf = tree.add_node(Node::new(Kind::Dir(vec![])));
    tree.node_mut(lf).perm = 0o700;
    tree.link(tree.root, b"lost+found", lf).unwrap();
    tree.finish().unwrap();
    let normalize = |img: &Path| -> Vec<String> {
        let out = run("dumpe2fs", &[img.to_str().unwrap()]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("Checksum:"))
            .map(|l| {
                l.replace(", ITABLE_ZEROED", "")
                    .replace(" [ITABLE_ZEROED]", "")
                    .split(" csum 0x")
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    for (name, args, size) in [
        ("4k", &["-t", "ext4", "-b", "4096"][..], "600M"),
        ("1k", &["-t", "ext4", "-b", "1024"], "100M"),
        ("ext3", &["-t", "ext3"], "300M"),
        ("ext2", &["-t", "ext2"], "50M"),
        (
            "metabg",
            &["-t", "ext4", "-O", "meta_bg,^resize_inode"],
            "3G",
        ),
        ("sparse2", &["-t", "ext4", "-O", "sparse_super2"], "3G"),
        ("fc", &["-t", "ext4", "-O", "fast_commit"], "1G"),
        ("inline", &["-t", "ext4", "-O", "inline_data"], "500M"),
        ("noflex", &["-t", "ext4", "-O", "^flex_bg"], "2G"),
        ("flex4", &["-t", "ext4", "-G", "4"], "3G"),
        ("big", &["-t", "ext4"], "20G"),
        (
            "orphan",
            &["-t", "ext4", "-O", "orphan_file,metadata_csum_seed"],
            "9G",
        ),
        (
            "orphan1k",
            &["-t", "ext4", "-b", "1024", "-O", "orphan_file"],
            "100M",
        ),
    ] {
        let p = work.path().join(format!("{name}.img"));
        let st = Command::new("mke2fs")
            .args(["-q", "-F"])
            .args(args)
            .arg(&p)
            .arg(size)
            .env("E2FSPROGS_FAKE_TIME", "1700000000")
            .status()
            .unwrap();
        assert!(st.success());
        let built = build::build(&tree, &source_sb(&p), &BuildOptions::default()).unwrap();
        let out = work.path().join(format!("{name}-out.img"));
        write_built(&built, &out);
        fsck_clean(&out);
        let (a, b) = (normalize(&p), normalize(&out));
        let diff: Vec<String> = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x != y)
            .map(|(x, y)| format!("mke2fs: {x}\nbuilt:  {y}"))
            .take(10)
            .collect();
        assert!(
            diff.is_empty() && a.len() == b.len(),
            "{name}:\n{}",
            diff.join("\n")
        );
        std::fs::remove_file(&p).unwrap();
        std::fs::remove_file(&out).unwrap();
    }
}

/// The Linux kernel accepts built filesystems: through libguestfs (TCG, one
/// appliance boot for all), mount each read-write, read files, symlinks, xattrs
/// and a 10 000-entry htree directory, create files (one in the htree, one that
/// turns an inline directory into a block directory), delete them, unmount; then
/// e2fsck is still clean.
#[test]
fn kernel_mounts_and_writes() {
    let (_keep, host) = host_dir();
    let work = tempfile::tempdir().unwrap();
    let tree = hostdir::tree_from_dir(host);
    let variants: [(&str, &[&str], &str); 3] = [
        // Today's upstream mke2fs defaults: orphan_file and metadata_csum_seed.
        (
            "k-ext4",
            &[
                "-t",
                "ext4",
                "-b",
                "4096",
                "-O",
                "orphan_file,metadata_csum_seed",
            ],
            "256M",
        ),
        (
            "k-inline",
            &["-t", "ext4", "-b", "1024", "-O", "inline_data"],
            "200M",
        ),
        ("k-ext3", &["-t", "ext3"], "200M"),
    ];
    let mut images = Vec::new();
    for (name, args, size) in variants {
        let src = mkfs(work.path(), &format!("{name}-src.img"), args, size);
        let built = build::build(&tree, &source_sb(&src), &BuildOptions::default()).unwrap();
        let out = work.path().join(format!("{name}.img"));
        write_built(&built, &out);
        images.push(out);
    }
    let mut script = String::from("run\n");
    for (i, _) in images.iter().enumerate() {
        let dev = format!("/dev/sd{}", (b'a' + i as u8) as char);
        script.push_str(&format!(
            "mount {dev} /\n\
             echo ---checksum\n checksum sha256 /bigfile\n\
             echo ---readlink\n readlink /links/long\n\
             echo ---xattr\n getxattr /xattr/small user.comment\n\
             echo ---big\n ls /big\n\
             echo ---end\n\
             write /created \"made by the kernel\"\n\
             write /big/created-in-htree \"x\"\n\
             mkdir /many/d00/sub/a-directory-with-a-long-name-to-overflow-inline\n\
             write /many/d00/sub/another-long-file-name \"y\"\n\
             rm /created\n rm /big/created-in-htree\n\
             rmdir /many/d00/sub/a-directory-with-a-long-name-to-overflow-inline\n\
             rm /many/d00/sub/another-long-file-name\n\
             umount-all\n"
        ));
    }
    script.push_str("echo ---dmesg\n dmesg\n");
    let mut cmd = Command::new("guestfish");
    cmd.arg("--rw")
        .env("LIBGUESTFS_BACKEND", "direct")
        .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg");
    for img in &images {
        cmd.arg("-a").arg(img);
    }
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("guestfish runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "guestfish: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want_sum = String::from_utf8_lossy(
        &run("sha256sum", &[host.join("bigfile").to_str().unwrap()]).stdout,
    )
    .split_whitespace()
    .next()
    .unwrap()
    .to_string();
    let sections: Vec<&str> = text.split("---").collect();
    let dmesg = sections
        .iter()
        .find(|s| s.starts_with("dmesg"))
        .expect("dmesg section");
    let kernel_complaints: Vec<&str> = dmesg
        .lines()
        .filter(|l| {
            l.contains("EXT4-fs")
                && (l.contains("error") || l.contains("warning") || l.contains("corrupt"))
        })
        .collect();
    assert!(
        kernel_complaints.is_empty(),
        "the kernel complained:\n{}",
        kernel_complaints.join("\n")
    );
    assert!(
        dmesg.contains("EXT4-fs (sda)"),
        "dmesg shows the mounts:\n{dmesg}"
    );
    for (i, img) in images.iter().enumerate() {
        let part = |name: &str| -> &str {
            sections
                .iter()
                .filter(|s| s.starts_with(name))
                .nth(i)
                .map(|s| s[name.len()..].trim())
                .unwrap_or_else(|| panic!("no {name} section {i} in\n{text}"))
        };
        assert_eq!(
            part("checksum"),
            want_sum,
            "{}: kernel reads /bigfile",
            img.display()
        );
        assert_eq!(part("readlink"), "/".to_string() + &"long/".repeat(40));
        assert_eq!(part("xattr"), "a comment");
        assert_eq!(
            part("big").lines().count(),
            BIG_DIR_ENTRIES,
            "{}: kernel lists the htree",
            img.display()
        );
        fsck_clean(img);
    }
}
