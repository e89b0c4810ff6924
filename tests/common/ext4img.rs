//! ext4 images for tests: mke2fs variants, `mke2fs -d` from a generated tree,
//! writing the generator's extra metadata in with debugfs, and debugfs queries.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::gen::{Model, Ts};

/// One way of making an ext4 (or ext3) image.
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: &'static str,
    pub mkfs: &'static [&'static str],
    pub block_size: u64,
    pub inode_size: u32,
    /// Whether ext4-view 1.0 can read it (it refuses inline_data, meta_bg and
    /// 128-byte inodes).
    pub ext4_view: bool,
    /// Write every regular file's size in after `mke2fs -d`: with inline_data,
    /// e2fsprogs 1.47.0 records a sparse file with a trailing hole with a
    /// wrong i_size (cut to the end of its last data block), which debugfs shows
    /// too. The data blocks are right.
    pub fix_sizes: bool,
    /// Run `e2fsck -fyD` after `mke2fs -d`: mke2fs 1.47.0 writes every
    /// directory linear, and e2fsck -D rebuilds the large ones as htrees.
    pub htree: bool,
}

impl Variant {
    /// Whether inodes have the extra fields (nanoseconds, crtime, projid).
    pub fn has_extra(&self) -> bool {
        self.inode_size > 128
    }
}

/// Every variant the reader must handle.
pub fn variants() -> Vec<Variant> {
    let v = |name, mkfs, block_size, inode_size, ext4_view| Variant {
        name,
        mkfs,
        block_size,
        inode_size,
        ext4_view,
        fix_sizes: name == "inline_data",
        // One variant keeps mke2fs's multi-block linear directories. And
        // e2fsck 1.47.0 does not see the xattr block of an inline-data inode:
        // -fyD frees it and reuses it for directory blocks, so the inline_data
        // variant is left as mke2fs made it.
        htree: name != "uninit_bg" && name != "inline_data",
    };
    vec![
        // Small images get 1 KiB blocks unless told: say 4096 where meant.
        v("default", &["-t", "ext4", "-b", "4096"], 4096, 256, true),
        v("1k", &["-t", "ext4", "-b", "1024"], 1024, 256, true),
        v(
            "inode128",
            &["-t", "ext4", "-b", "4096", "-I", "128"],
            4096,
            128,
            false,
        ),
        v(
            "uninit_bg",
            &["-t", "ext4", "-b", "4096", "-O", "^metadata_csum,uninit_bg"],
            4096,
            256,
            true,
        ),
        v(
            "no64bit",
            &["-t", "ext4", "-b", "4096", "-O", "^64bit"],
            4096,
            256,
            true,
        ),
        v("ext3", &["-t", "ext3", "-b", "4096"], 4096, 256, true),
        v("ext3_1k", &["-t", "ext3", "-b", "1024"], 1024, 256, true),
        v(
            "inline_data",
            &["-t", "ext4", "-b", "4096", "-O", "inline_data"],
            4096,
            256,
            false,
        ),
        v(
            "meta_bg",
            &["-t", "ext4", "-b", "4096", "-O", "meta_bg,^resize_inode"],
            4096,
            256,
            false,
        ),
    ]
}

/// Run a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} does not run: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `mke2fs -d src` into a new image of `size` (e.g. "96M").
pub fn mkfs(img: &Path, v: &Variant, src: Option<&Path>, size: &str, extra: &[&str]) {
    let _ = std::fs::remove_file(img);
    let mut c = Command::new("mke2fs");
    c.args(["-q", "-F"]).args(v.mkfs).args(extra);
    if let Some(d) = src {
        c.arg("-d").arg(d);
    }
    c.arg(img).arg(size);
    run(&mut c);
    if v.htree && src.is_some() {
        let st = Command::new("e2fsck")
            .args(["-fyD"])
            .arg(img)
            .output()
            .unwrap();
        // 0: nothing to do; 1: errors corrected (the re-indexing counts).
        assert!(
            matches!(st.status.code(), Some(0 | 1)),
            "e2fsck -fyD: {}",
            String::from_utf8_lossy(&st.stdout)
        );
    }
}

/// Run debugfs commands (read-only unless `write`) and return stdout.
pub fn debugfs(img: &Path, script: &[u8], write: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("cmds");
    std::fs::write(&f, script).unwrap();
    let mut c = Command::new("debugfs");
    if write {
        c.arg("-w");
    }
    c.arg("-f").arg(&f).arg(img);
    let out = run(&mut c);
    let err = String::from_utf8_lossy(&out.stderr);
    // debugfs reports command failures on stderr but still exits 0.
    let bad: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    assert!(bad.is_empty(), "debugfs complained: {}", bad.join("\n"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One read-only debugfs request (`-R`: its output is not preceded by an echo of
/// the command, as `-f` output is).
pub fn debugfs_cmd(img: &Path, cmd: &str) -> String {
    let out = run(Command::new("debugfs").arg("-R").arg(cmd).arg(img));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The low 32 bits and the extra word of an ext4 timestamp
/// (fs/ext4/ext4.h: ext4_encode_extra_time).
pub fn encode_time(t: Ts) -> (i32, u32) {
    let lo = t.0 as u32 as i32;
    let epoch = (((t.0 - i64::from(lo)) >> 32) & 3) as u32;
    (lo, (t.1 << 2) | epoch)
}

/// What a timestamp reads back as from an inode of the variant.
pub fn representable(t: Ts, v: &Variant) -> Ts {
    let (lo, extra) = encode_time(t);
    if v.has_extra() {
        (i64::from(lo) + (i64::from(extra & 3) << 32), extra >> 2)
    } else {
        (i64::from(lo), 0)
    }
}

fn path_arg(rel: &[u8]) -> Vec<u8> {
    let mut p = b"/".to_vec();
    p.extend_from_slice(rel);
    p
}

/// Write the generator's extra metadata (nanoseconds of atime/mtime, ctime,
/// crtime, flags, generation, project id) into an image made by `mke2fs -d`,
/// with debugfs.
pub fn apply_extra(img: &Path, model: &Model, v: &Variant) {
    // Flags are set whole, so read the current ones (EXTENTS, INDEX, ...) first.
    let flagged: Vec<(&Vec<u8>, u32)> = model
        .extra
        .values()
        .filter(|(_, e)| e.flags != 0)
        .map(|(p, e)| (p, e.flags))
        .collect();
    let mut current = Vec::new();
    if !flagged.is_empty() {
        let mut s = Vec::new();
        for (p, _) in &flagged {
            s.extend_from_slice(b"stat ");
            s.extend_from_slice(&path_arg(p));
            s.push(b'\n');
        }
        let out = debugfs(img, &s, false);
        for l in out.lines() {
            if let Some(i) = l.find("Flags: 0x") {
                let hex = l[i + 9..].split_whitespace().next().unwrap();
                current.push(u32::from_str_radix(hex, 16).unwrap());
            }
        }
        assert_eq!(current.len(), flagged.len(), "debugfs stat output:\n{out}");
    }
    let mut s: Vec<u8> = Vec::new();
    let mut line = |p: &[u8], rest: String| {
        s.extend_from_slice(b"sif ");
        s.extend_from_slice(&path_arg(p));
        s.push(b' ');
        s.extend_from_slice(rest.as_bytes());
        s.push(b'\n');
    };
    for ((p, f), cur) in flagged.iter().zip(&current) {
        line(p, format!("flags {:#x}", cur | f));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut done = HashSet::new();
    for (rel, n) in &model.nodes {
        if rel.is_empty() || !done.insert(n.host_ino) {
            continue;
        }
        if v.fix_sizes && matches!(n.kind, super::gen::MKind::File { .. }) {
            line(rel, format!("size {}", n.size));
        }
        // Reading a file or directory on the host (mke2fs does, for every
        // variant) moves its atime to now (relatime) unless it is later than
        // both now and the mtime, so the seconds mke2fs copied may be stale:
        // write them.
        if n.atime.0 <= now || n.atime <= n.mtime {
            line(rel, format!("atime @{}", encode_time(n.atime).0));
        }
        if v.has_extra() {
            for (field, t) in [("atime", n.atime), ("mtime", n.mtime)] {
                let (lo, extra) = encode_time(t);
                if extra != 0 || i64::from(lo) != t.0 {
                    line(rel, format!("{field}_extra {extra:#x}"));
                }
            }
        }
        let Some((_, e)) = model.extra.get(&n.host_ino) else {
            continue;
        };
        let (lo, extra) = encode_time(e.ctime);
        line(rel, format!("ctime @{lo}"));
        if v.has_extra() {
            line(rel, format!("ctime_extra {extra:#x}"));
            let (lo, extra) = encode_time(e.crtime);
            line(rel, format!("crtime @{lo}"));
            line(rel, format!("crtime_extra {extra:#x}"));
            if e.projid != 0 {
                line(rel, format!("projid {}", e.projid));
            }
        }
        if e.generation != 0 {
            line(rel, format!("generation {}", e.generation));
        }
    }
    debugfs(img, &s, true);
}

/// A generated tree and images of it, made once per test binary and shared.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub model: Model,
}

impl Fixture {
    pub fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }
}
