//! XFS image tooling for the tests: the mkfs.xfs variants the issue names (the
//! defaults of the guests imgsan meets), images filled by the kernel itself
//! (mount -o loop, `cp -a`, unmount), and xfs_db queries.
//!
//! The kernel is the oracle: a filled image's [`Model`] is read from the mounted
//! filesystem (lstat, getxattr, statx), not from the source directory, so what
//! XFS cannot hold (times past 2038 without bigtime, 20-bit device minors) is
//! whatever the kernel made of it. Every mount is undone by a Drop guard, on
//! failures too. Needs root, xfsprogs and loop devices; a missing one fails.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::gen::{self, MKind, Model, Ts};

/// One mkfs.xfs flavour.
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: &'static str,
    pub args: &'static [&'static str],
    /// V5 (CRCs, v3 inodes with creation times).
    pub v5: bool,
    /// Timestamps past 2038 (bigtime).
    pub bigtime: bool,
    pub block_size: u64,
}

/// The variants of the issue: CentOS 7, Rocky 8, Rocky 9, Debian 13-like, V4,
/// and 512-byte and 4096-byte sectors.
pub fn variants() -> Vec<Variant> {
    vec![
        Variant {
            name: "centos7",
            args: &[
                "-m",
                "crc=1,finobt=0,reflink=0,rmapbt=0,bigtime=0,inobtcount=0",
                "-i",
                "sparse=0,nrext64=0",
            ],
            v5: true,
            bigtime: false,
            block_size: 4096,
        },
        Variant {
            name: "rocky8",
            args: &[
                "-m",
                "crc=1,finobt=1,reflink=1,rmapbt=0,bigtime=0,inobtcount=0",
                "-i",
                "sparse=1,nrext64=0",
            ],
            v5: true,
            bigtime: false,
            block_size: 4096,
        },
        Variant {
            name: "rocky9",
            args: &[
                "-m",
                "crc=1,finobt=1,reflink=1,rmapbt=0,bigtime=1,inobtcount=1",
                "-i",
                "sparse=1,nrext64=0",
            ],
            v5: true,
            bigtime: true,
            block_size: 4096,
        },
        Variant {
            name: "debian13",
            args: &[
                "-m",
                "crc=1,finobt=1,reflink=1,rmapbt=1,bigtime=1,inobtcount=1",
                "-i",
                "sparse=1,nrext64=1",
            ],
            v5: true,
            bigtime: true,
            block_size: 4096,
        },
        Variant {
            name: "v4",
            args: &["-m", "crc=0", "-i", "sparse=0", "-n", "ftype=1"],
            v5: false,
            bigtime: false,
            block_size: 4096,
        },
        Variant {
            name: "sect512",
            args: &[
                "-s",
                "size=512",
                "-b",
                "size=1024",
                "-m",
                "crc=1,finobt=1,reflink=1,bigtime=1",
            ],
            v5: true,
            bigtime: true,
            block_size: 1024,
        },
        Variant {
            name: "sect4096",
            args: &[
                "-s",
                "size=4096",
                "-m",
                "crc=1,finobt=1,reflink=1,bigtime=1",
                "-n",
                "size=8192",
            ],
            v5: true,
            bigtime: true,
            block_size: 4096,
        },
    ]
}

pub fn variant(name: &str) -> Variant {
    variants()
        .into_iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no XFS variant {name}"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (is it installed? see .ci/setup.sh)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Make a sparse image of `size` (e.g. "200M") and mkfs.xfs it with the
/// variant's options plus `extra`.
pub fn mkfs(img: &Path, v: &Variant, size: &str, extra: &[&str]) {
    let _ = std::fs::remove_file(img);
    run(Command::new("truncate").arg("-s").arg(size).arg(img));
    let mut c = Command::new("mkfs.xfs");
    c.arg("-q").arg("-f").args(v.args).args(extra).arg(img);
    // mkfs.xfs warns (and asks for -f) about V4; -q keeps it quiet.
    run(&mut c);
}

/// A loop mount of an image, undone on drop (unmount; the loop device made by
/// `mount -o loop` is freed with it).
pub struct Mount {
    pub dir: PathBuf,
    mounted: bool,
}

impl Mount {
    /// Mount `img` (read-write unless `opts` says otherwise) on a fresh
    /// directory under `parent`.
    pub fn new(img: &Path, parent: &Path, opts: &str) -> Mount {
        let dir = tempfile::Builder::new()
            .prefix("mnt")
            .tempdir_in(parent)
            .unwrap()
            .keep();
        let mut m = Mount {
            dir,
            mounted: false,
        };
        let o = if opts.is_empty() {
            "loop".to_string()
        } else {
            format!("loop,{opts}")
        };
        let out = Command::new("mount")
            .arg("-t")
            .arg("xfs")
            .arg("-o")
            .arg(&o)
            .arg(img)
            .arg(&m.dir)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mount -o {o} {img:?}: {} (loop devices and the xfs module are needed)",
            String::from_utf8_lossy(&out.stderr)
        );
        m.mounted = true;
        m
    }

    /// Unmount now (panics on failure); drop does the same quietly.
    pub fn unmount(mut self) {
        self.mounted = false;
        // A child process forked by another test thread holds our open files
        // for the moment between fork and exec: "target is busy" passes.
        for _ in 0..20 {
            let out = Command::new("umount").arg(&self.dir).output().unwrap();
            if out.status.success() {
                let _ = std::fs::remove_dir(&self.dir);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        run(Command::new("umount").arg(&self.dir));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.dir).status();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Remove from a generated source tree what XFS cannot hold at all (device
/// numbers beyond 14 bits of major or 18 of minor), so `cp -a` succeeds.
pub fn drop_unrepresentable(model: &Model) {
    for (rel, n) in &model.nodes {
        if let MKind::CharDev(ma, mi) | MKind::BlockDev(ma, mi) = n.kind {
            if ma >= 1 << 14 || mi >= 1 << 18 {
                let p = model.root.join(std::ffi::OsStr::from_bytes(rel));
                std::fs::remove_file(&p).unwrap();
            }
        }
    }
}

/// The kernel lists an XFS POSIX ACL twice to root: as `system.posix_acl_*`
/// and as the raw `trusted.SGI_ACL_FILE` / `trusted.SGI_ACL_DEFAULT` it is
/// stored as. It is one attribute on disk, and imgsan's tree holds it once, in
/// the VFS form (as the ext4 reader does), so the raw aliases leave the model.
pub fn drop_acl_aliases(model: &mut Model) {
    for n in model.nodes.values_mut() {
        n.xattrs.remove(&b"trusted.SGI_ACL_FILE"[..]);
        n.xattrs.remove(&b"trusted.SGI_ACL_DEFAULT"[..]);
    }
}

/// Creation and change times of every path of a model, read with statx.
pub type Times = BTreeMap<Vec<u8>, (Ts, Ts)>;

/// What the kernel holds in a filled image.
pub struct Filled {
    pub model: Model,
    /// Path -> (ctime, crtime) from the mounted filesystem.
    pub times: Times,
}

fn statx_times(root: &Path, model: &Model) -> Times {
    use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
    let mut out = BTreeMap::new();
    for rel in model.nodes.keys() {
        let p = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(std::ffi::OsStr::from_bytes(rel))
        };
        let s = statx(
            CWD,
            &p,
            AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::CTIME | StatxFlags::BTIME,
        )
        .unwrap();
        out.insert(
            rel.clone(),
            (
                (s.stx_ctime.tv_sec, s.stx_ctime.tv_nsec),
                (s.stx_btime.tv_sec, s.stx_btime.tv_nsec),
            ),
        );
    }
    out
}

/// mkfs the variant, mount it, `cp -a` the contents of `src` into it, read the
/// model and times back from the mount, unmount.
pub fn fill(img: &Path, v: &Variant, size: &str, src: &Path, scratch: &Path) -> Filled {
    mkfs(img, v, size, &[]);
    let m = Mount::new(img, scratch, "noatime");
    let mut c = Command::new("cp");
    c.arg("-a").arg(format!("{}/.", src.display())).arg(&m.dir);
    run(&mut c);
    let mut filled = snapshot(&m.dir);
    m.unmount();
    drop_acl_aliases(&mut filled.model);
    Filled {
        model: Model {
            root: src.to_path_buf(),
            ..filled.model
        },
        times: filled.times,
    }
}

/// Read the model and times of a mounted filesystem (after a sync).
pub fn snapshot(mnt: &Path) -> Filled {
    run(Command::new("sync").arg("-f").arg(mnt));
    let model = gen::scan(mnt);
    let times = statx_times(mnt, &model);
    Filled { model, times }
}

/// Run xfs_db read-only with `-c` commands and return its output.
pub fn xfs_db(img: &Path, cmds: &[&str]) -> String {
    let mut c = Command::new("xfs_db");
    c.arg("-r");
    for x in cmds {
        c.arg("-c").arg(x);
    }
    c.arg(img);
    run(&mut c)
}

/// `xfs_db -c 'inode N' -c print` as field -> value.
pub fn inode_fields(img: &Path, ino: u64) -> BTreeMap<String, String> {
    let out = xfs_db(img, &[&format!("inode {ino}"), "print"]);
    let mut m = BTreeMap::new();
    for line in out.lines() {
        if let Some((k, v)) = line.split_once(" = ") {
            m.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    m
}

/// `xfs_repair -n` must find nothing.
pub fn repair_clean(img: &Path) {
    run(Command::new("xfs_repair").arg("-n").arg("-f").arg(img));
}
