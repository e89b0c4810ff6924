//! A deterministic random tree generator for filesystem tests.
//!
//! [`generate`] writes a host directory full of the odd cases a filesystem reader
//! or builder must get right (nested and deep directories, a huge directory, hard
//! links, short and long symlinks, sparse files, sizes around block boundaries,
//! xattrs in every namespace incl. POSIX ACLs and a file capability, devices in
//! both encodings, fifos, sockets, non-UTF-8 names, setuid/setgid/sticky modes,
//! uid/gid above 65535, timestamps with nanoseconds before 1970 and after 2038),
//! then reads it back from the host with lstat/statx/getxattr into a [`Model`]:
//! "the generator's tree", the oracle a test compares against.
//!
//! Metadata the host cannot be made to carry (ctime, creation time, inode flags,
//! generation, project id) is chosen by the generator too and returned as
//! [`Extra`] per inode; image tooling writes it into an image after creation
//! (see `ext4img::apply_extra`).
//!
//! Same seed and config, same tree. Needs root (mknod, chown, trusted.* xattrs).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What to generate. Sizes scale the run time: [`GenConfig::new`] makes a tree of
/// a few thousand inodes plus the big directory.
#[derive(Debug, Clone)]
pub struct GenConfig {
    pub seed: u64,
    /// Regular files spread over the nested directories.
    pub files: usize,
    /// Nested directories (random shape).
    pub dirs: usize,
    /// Entries of the one huge directory (0: none).
    pub big_dir: usize,
    /// Levels of the deep path (0: none).
    pub deep: usize,
    /// The longest symlink target (keep it below the block size: mke2fs refuses
    /// longer ones).
    pub max_symlink: usize,
    pub symlinks: usize,
    /// The largest ordinary file; a few sparse files go much further.
    pub max_file: u64,
    /// Sizes are picked around multiples of this.
    pub block_size: u64,
    pub sparse: usize,
    pub hard_links: usize,
    /// Fraction (percent) of nodes that get xattrs.
    pub xattr_percent: u32,
    /// Devices, fifos and sockets.
    pub specials: usize,
}

impl GenConfig {
    /// A tree of a few thousand inodes and a 10k-entry directory.
    pub fn new(seed: u64, block_size: u64) -> Self {
        GenConfig {
            seed,
            files: 2500,
            dirs: 150,
            big_dir: 10_000,
            deep: 40,
            max_symlink: (block_size as usize - 1).min(4000),
            symlinks: 200,
            max_file: 256 * 1024,
            block_size,
            sparse: 12,
            hard_links: 120,
            xattr_percent: 25,
            specials: 40,
        }
    }

    /// A small tree (tens of inodes) for quick tests and fuzz seeds.
    pub fn tiny(seed: u64, block_size: u64) -> Self {
        GenConfig {
            seed,
            files: 30,
            dirs: 6,
            big_dir: 0,
            deep: 4,
            max_symlink: (block_size as usize - 1).min(300),
            symlinks: 8,
            max_file: 3 * block_size,
            block_size,
            sparse: 2,
            hard_links: 4,
            xattr_percent: 40,
            specials: 4,
        }
    }
}

/// A timestamp as (seconds, nanoseconds).
pub type Ts = (i64, u32);

/// The type of a node and its type-specific content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MKind {
    File { blake3: [u8; 32] },
    Dir,
    Symlink(Vec<u8>),
    CharDev(u32, u32),
    BlockDev(u32, u32),
    Fifo,
    Socket,
}

/// One path of the tree as the host shows it.
#[derive(Debug, Clone)]
pub struct MNode {
    pub kind: MKind,
    /// Permission bits (0o7777).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime: Ts,
    pub mtime: Ts,
    pub nlink: u64,
    /// The host inode number: equal for hard links.
    pub host_ino: u64,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Metadata the generator chose that the host cannot carry; written into images
/// after they are made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extra {
    pub ctime: Ts,
    pub crtime: Ts,
    /// ext4 inode flags (non-structural: sync, immutable, append, nodump,
    /// noatime, dirsync, topdir, projinherit).
    pub flags: u32,
    /// Set only on inodes with no checksummed blocks that depend on it.
    pub generation: u32,
    pub projid: u32,
}

/// The generator's tree.
#[derive(Debug, Clone)]
pub struct Model {
    pub root: PathBuf,
    /// Every path relative to the root (the root itself is `b""`), sorted.
    pub nodes: BTreeMap<Vec<u8>, MNode>,
    /// Extra metadata by host inode number, with the first path naming it.
    pub extra: BTreeMap<u64, (Vec<u8>, Extra)>,
}

impl Model {
    /// Paths of directories, then each directory's entry names.
    pub fn children(&self, dir: &[u8]) -> Vec<&[u8]> {
        let mut v = Vec::new();
        for p in self.nodes.keys() {
            if p.is_empty() {
                continue;
            }
            let (parent, name) = split(p);
            if parent == dir {
                v.push(name);
            }
        }
        v
    }
}

/// Split a relative path into (parent, last component).
pub fn split(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (&b""[..], p),
    }
}

struct Gen<'c> {
    cfg: &'c GenConfig,
    rng: StdRng,
    root: PathBuf,
    dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
    others: Vec<PathBuf>,
    counter: u32,
    extra: Vec<(PathBuf, Extra)>,
}

/// ext4 inode flags the generator may set.
const FILE_FLAGS: &[u32] = &[0x8, 0x10, 0x20, 0x40, 0x80];
const DIR_FLAGS: &[u32] = &[0x8, 0x40, 0x80, 0x10000, 0x20000, 0x2000_0000];

/// Write a tree under `dir` (created if missing) and read it back.
pub fn generate(dir: &Path, cfg: &GenConfig) -> Model {
    fs::create_dir_all(dir).unwrap();
    let mut g = Gen {
        cfg,
        rng: StdRng::seed_from_u64(cfg.seed),
        root: dir.to_path_buf(),
        dirs: vec![dir.to_path_buf()],
        files: Vec::new(),
        others: Vec::new(),
        counter: 0,
        extra: Vec::new(),
    };
    g.nested_dirs();
    g.deep_path();
    g.regular_files();
    g.sparse_files();
    g.hard_links();
    g.symlinks();
    g.specials();
    g.big_dir();
    g.small_dirs();
    g.ownership_and_modes();
    g.xattrs();
    g.times();
    let extra = std::mem::take(&mut g.extra);
    let mut model = scan(dir);
    for (p, e) in extra {
        let rel = p.strip_prefix(dir).unwrap().as_os_str().as_bytes().to_vec();
        let n = &model.nodes[&rel];
        model.extra.entry(n.host_ino).or_insert((rel, e));
    }
    model
}

impl Gen<'_> {
    /// A fresh entry name: mostly ASCII, some UTF-8, some not UTF-8 at all,
    /// some long. Never '/', NUL, whitespace, quotes or backslashes (debugfs
    /// scripts name paths).
    fn name(&mut self) -> Vec<u8> {
        self.counter += 1;
        let mut n = format!("n{}", self.counter).into_bytes();
        match self.rng.random_range(0..20) {
            0 => n.extend_from_slice("-é日本".as_bytes()),
            1 => n.extend_from_slice(&[0xff, 0xfe, 0x80, b'x', 0xc3]),
            2 => {
                let len = self.rng.random_range(100..=255 - n.len());
                n.extend((0..len).map(|i| b'a' + (i % 26) as u8));
            }
            3 => n.extend_from_slice(b".hidden~#%"),
            _ => {
                let len = self.rng.random_range(0..12);
                n.extend((0..len).map(|_| {
                    b"abcdefghijklmnopqrstuvwxyz0123456789_-."[self.rng.random_range(0..39)]
                }));
            }
        }
        n
    }

    fn pick_dir(&mut self) -> PathBuf {
        let i = self.rng.random_range(0..self.dirs.len());
        self.dirs[i].clone()
    }

    fn child(&mut self) -> PathBuf {
        let d = self.pick_dir();
        let n = self.name();
        d.join(OsStr::from_bytes(&n))
    }

    fn nested_dirs(&mut self) {
        for _ in 0..self.cfg.dirs {
            let p = self.child();
            fs::create_dir(&p).unwrap();
            self.dirs.push(p);
        }
    }

    fn deep_path(&mut self) {
        let mut p = self.root.clone();
        for i in 0..self.cfg.deep {
            p = p.join(format!("deep{i:02}"));
            fs::create_dir(&p).unwrap();
            self.dirs.push(p.clone());
        }
        if self.cfg.deep > 0 {
            fs::write(p.join("bottom"), b"the bottom of the deep path\n").unwrap();
            self.files.push(p.join("bottom"));
        }
    }

    /// Sizes around block boundaries and the indirect-map thresholds.
    fn pick_size(&mut self) -> u64 {
        let bs = self.cfg.block_size;
        let special = [
            0,
            1,
            59,
            60,
            61,
            bs - 1,
            bs,
            bs + 1,
            2 * bs - 1,
            2 * bs,
            2 * bs + 1,
            12 * bs - 1,
            12 * bs,
            12 * bs + 1,
        ];
        match self.rng.random_range(0..10) {
            0..=4 => special[self.rng.random_range(0..special.len())],
            5..=8 => self.rng.random_range(0..3 * bs),
            _ => self.rng.random_range(0..=self.cfg.max_file),
        }
    }

    fn content(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        if self.rng.random_bool(0.5) {
            self.rng.fill(&mut v[..]);
        } else {
            // Text-like content compresses and repeats; some readers care.
            let line = format!("line of file {} ", self.counter).into_bytes();
            for (i, b) in v.iter_mut().enumerate() {
                *b = line[i % line.len()];
            }
        }
        v
    }

    fn regular_files(&mut self) {
        for _ in 0..self.cfg.files {
            let p = self.child();
            let size = self.pick_size() as usize;
            let data = self.content(size);
            fs::write(&p, &data).unwrap();
            self.files.push(p);
        }
    }

    fn sparse_files(&mut self) {
        let bs = self.cfg.block_size;
        let per = bs / 4;
        // The first block of the double and triple indirect ranges.
        let dind = (12 + per) * bs;
        let tind = (12 + per + per * per) * bs;
        // With 4 KiB blocks the triple indirect range starts at 4 GiB: hashing
        // that many zeros would dominate the tests, so go one level less far.
        let far = if tind < 256 << 20 {
            tind
        } else {
            dind + 3 * per * bs
        };
        for k in 0..self.cfg.sparse {
            let p = self.child();
            let mut f = fs::File::create(&p).unwrap();
            let mut pieces: Vec<(u64, usize)> = Vec::new();
            match k % 4 {
                // Data in the middle, holes around, size past the last data.
                0 => {
                    pieces.push((self.rng.random_range(1..50) * bs + 7, 100));
                    pieces.push((self.rng.random_range(60..200) * bs - 3, bs as usize + 5));
                }
                // A hole at the start, data at the end.
                1 => pieces.push((self.rng.random_range(3..40) * bs + 1, 3 * bs as usize)),
                // Data at the start of the double indirect range.
                2 => {
                    pieces.push((0, 10));
                    pieces.push((dind - 5, 20));
                }
                // Data far away: the triple indirect range where cheap.
                _ => pieces.push((far + 11, 33)),
            }
            for (off, len) in &pieces {
                let data = self.content(*len);
                std::os::unix::fs::FileExt::write_all_at(&f, &data, *off).unwrap();
            }
            let end = pieces.iter().map(|(o, l)| o + *l as u64).max().unwrap();
            if k % 2 == 0 {
                // A trailing hole.
                f.set_len(end + self.rng.random_range(1..5 * bs)).unwrap();
            }
            f.flush().unwrap();
            self.files.push(p);
        }
    }

    fn hard_links(&mut self) {
        if self.files.is_empty() {
            return;
        }
        for _ in 0..self.cfg.hard_links {
            let i = self.rng.random_range(0..self.files.len());
            let src = self.files[i].clone();
            let dst = self.child();
            fs::hard_link(&src, &dst).unwrap();
        }
    }

    fn symlinks(&mut self) {
        let max = self.cfg.max_symlink;
        for k in 0..self.cfg.symlinks {
            let len = match k % 8 {
                0 => 1,
                1 => 59,
                2 => 60,
                3 => 61,
                4 => max,
                _ => self.rng.random_range(1..=max),
            };
            let mut t: Vec<u8> = match self.rng.random_range(0..4) {
                0 => b"/etc/passwd/../".to_vec(),
                1 => b"../".to_vec(),
                2 => vec![0xe2, 0x82, 0xac, 0xff],
                _ => Vec::new(),
            };
            while t.len() < len {
                t.push(b"abcdefghij/._-\xc3\xa9"[self.rng.random_range(0..16)]);
            }
            t.truncate(len);
            if t.contains(&0) || t.is_empty() {
                t = b"x".to_vec();
            }
            let p = self.child();
            std::os::unix::fs::symlink(OsStr::from_bytes(&t), &p).unwrap();
            if len < 60 && self.rng.random_bool(0.3) {
                let g = self.rng.random();
                self.extra(&p, 0, g);
            } else {
                self.extra(&p, 0, 0);
            }
            self.others.push(p);
        }
    }

    fn specials(&mut self) {
        use rustix::fs::{makedev, mknodat, FileType, Mode, CWD};
        let devs = [
            (1u32, 3u32),
            (8, 1),
            (255, 255),
            (300, 5),
            (4, 70000),
            (4095, 1_048_575),
        ];
        for k in 0..self.cfg.specials {
            let p = self.child();
            match k % 4 {
                0 | 1 => {
                    let (ma, mi) = devs[(k / 2) % devs.len()];
                    let ft = if k % 4 == 0 {
                        FileType::CharacterDevice
                    } else {
                        FileType::BlockDevice
                    };
                    mknodat(CWD, &p, ft, Mode::from_raw_mode(0o640), makedev(ma, mi)).unwrap();
                }
                2 => mknodat(CWD, &p, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap(),
                _ => {
                    // A bound socket leaves its inode behind. Socket paths
                    // are short (108 bytes): bind beside the root, then move.
                    let short = self.root.with_file_name(format!(
                        "s{}-{}",
                        std::process::id(),
                        self.counter
                    ));
                    let l = std::os::unix::net::UnixListener::bind(&short).unwrap();
                    drop(l);
                    fs::rename(&short, &p).unwrap();
                }
            }
            let g = self.rng.random();
            self.extra(&p, 0, g);
            self.others.push(p);
        }
    }

    fn big_dir(&mut self) {
        if self.cfg.big_dir == 0 {
            return;
        }
        let d = self.root.join("big");
        fs::create_dir(&d).unwrap();
        self.dirs.push(d.clone());
        for i in 0..self.cfg.big_dir {
            let mut name = format!("entry-{i:05}").into_bytes();
            if i % 97 == 0 {
                name.extend(std::iter::repeat_n(b'L', 200));
            }
            let p = d.join(OsStr::from_bytes(&name));
            if i % 10 == 0 {
                fs::write(&p, format!("{i}\n")).unwrap();
            } else {
                fs::File::create(&p).unwrap();
            }
            // Whole seconds inside the 32-bit range: what mke2fs -d copies by
            // itself, so these ten thousand inodes need no fixing up. The atime
            // lies in the future (2037) so that reading the file (mke2fs does)
            // does not move it (relatime).
            let t = |s: i64| rustix::fs::Timespec {
                tv_sec: s,
                tv_nsec: 0,
            };
            rustix::fs::utimensat(
                rustix::fs::CWD,
                &p,
                &rustix::fs::Timestamps {
                    last_access: t(2_100_000_000 + i as i64),
                    last_modification: t(1_600_000_000 + i as i64),
                },
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .unwrap();
        }
    }

    /// Directories too small for a block (inline candidates): empty, one
    /// entry, and a few entries (past the 56 bytes of i_block). Made after the
    /// random placement so that nothing else lands in them.
    fn small_dirs(&mut self) {
        for (k, n) in [0usize, 1, 5].into_iter().enumerate() {
            let d = self.root.join(format!("small{k}"));
            fs::create_dir(&d).unwrap();
            for i in 0..n {
                let p = d.join(format!("f{i}"));
                fs::write(&p, b"tiny").unwrap();
                self.files.push(p);
            }
            self.dirs.push(d);
        }
    }

    fn random_ts(&mut self) -> Ts {
        let sec = match self.rng.random_range(0..12) {
            0 => self.rng.random_range(-(1i64 << 31)..0),
            1 => self.rng.random_range(1i64 << 31..1i64 << 33),
            2 => 0,
            _ => self.rng.random_range(946_684_800..1_900_000_000),
        };
        let nsec = if self.rng.random_bool(0.1) {
            0
        } else {
            self.rng.random_range(0..1_000_000_000)
        };
        (sec, nsec)
    }

    /// Record the generator's choice of non-host metadata for `p`.
    fn extra(&mut self, p: &Path, flags: u32, generation: u32) {
        let e = Extra {
            ctime: self.random_ts(),
            crtime: self.random_ts(),
            flags,
            generation,
            projid: if self.rng.random_bool(0.2) {
                self.rng.random_range(1..100_000)
            } else {
                0
            },
        };
        self.extra.push((p.to_path_buf(), e));
    }

    fn ownership_and_modes(&mut self) {
        let ids = [0u32, 1, 1000, 65534, 65535, 65536, 100_000, 4_000_000_000];
        let all: Vec<PathBuf> = self
            .dirs
            .iter()
            .skip(1)
            .chain(&self.files)
            .chain(&self.others)
            .cloned()
            .collect();
        for p in all {
            let uid = ids[self.rng.random_range(0..ids.len())];
            let gid = ids[self.rng.random_range(0..ids.len())];
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).unwrap();
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                continue;
            }
            let mut perm = self.rng.random_range(0..0o1000u32);
            if self.rng.random_bool(0.15) {
                perm |= [0o4000, 0o2000, 0o1000, 0o7000][self.rng.random_range(0..4)];
            }
            if meta.is_dir() {
                // The walk (and mke2fs) must be able to enter it.
                perm |= 0o700;
            } else if meta.is_file() {
                perm |= 0o400;
            }
            fs::set_permissions(&p, fs::Permissions::from_mode(perm)).unwrap();
        }
        // Flags and extras for files and directories (others already have
        // theirs). Generation stays 0 here: it seeds the checksums of blocks
        // the inode owns.
        let fd: Vec<(PathBuf, bool)> = self
            .dirs
            .iter()
            .skip(1)
            .map(|p| (p.clone(), true))
            .chain(self.files.iter().map(|p| (p.clone(), false)))
            .collect();
        for (p, is_dir) in fd {
            let flags = if self.rng.random_bool(0.1) {
                let set = if is_dir { DIR_FLAGS } else { FILE_FLAGS };
                set[self.rng.random_range(0..set.len())]
            } else {
                0
            };
            self.extra(&p, flags, 0);
        }
    }

    fn xattrs(&mut self) {
        let all: Vec<PathBuf> = self
            .dirs
            .iter()
            .skip(1)
            .chain(&self.files)
            .chain(&self.others)
            .cloned()
            .collect();
        let bs = self.cfg.block_size as usize;
        for p in all {
            if self.rng.random_range(0..100) >= self.cfg.xattr_percent {
                continue;
            }
            let meta = fs::symlink_metadata(&p).unwrap();
            let is_link = meta.file_type().is_symlink();
            let mut budget = bs / 2;
            let set = |name: &str, value: &[u8], budget: &mut usize| {
                let cost = name.len() + value.len() + 20;
                if cost > *budget {
                    return;
                }
                *budget -= cost;
                rustix::fs::lsetxattr(&p, name, value, rustix::fs::XattrFlags::empty())
                    .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", p.display()));
            };
            set(
                "security.selinux",
                b"system_u:object_r:etc_t:s0\0",
                &mut budget,
            );
            // user.* exists only on regular files and directories.
            if meta.is_file() || meta.is_dir() {
                let n = self.rng.random_range(0..4);
                for i in 0..n {
                    let len = [0, 1, 10, 100, bs / 4][self.rng.random_range(0..5)];
                    let v = self.content(len);
                    set(&format!("user.attr{i}"), &v, &mut budget);
                }
            }
            if self.rng.random_bool(0.3) {
                set("trusted.overlay.opaque", b"y", &mut budget);
            }
            if meta.is_file() && self.rng.random_bool(0.3) {
                // struct vfs_cap_data, revision 2: cap_net_bind_service,
                // effective.
                let mut cap = Vec::new();
                cap.extend_from_slice(&0x0200_0001u32.to_le_bytes());
                cap.extend_from_slice(&(1u32 << 10).to_le_bytes());
                cap.extend_from_slice(&0u32.to_le_bytes());
                cap.extend_from_slice(&0u32.to_le_bytes());
                cap.extend_from_slice(&0u32.to_le_bytes());
                set("security.capability", &cap, &mut budget);
            }
            if !is_link && self.rng.random_bool(0.4) {
                let access = acl(&[
                    (1, 6, u32::MAX),
                    (2, 4, 1000),
                    (2, 6, 70000),
                    (4, 4, u32::MAX),
                    (8, 5, 100),
                    (0x10, 7, u32::MAX),
                    (0x20, 0, u32::MAX),
                ]);
                set("system.posix_acl_access", &access, &mut budget);
                if meta.is_dir() {
                    let d = acl(&[(1, 7, u32::MAX), (4, 5, u32::MAX), (0x20, 5, u32::MAX)]);
                    set("system.posix_acl_default", &d, &mut budget);
                }
            }
        }
    }

    fn times(&mut self) {
        let mut nondirs: Vec<PathBuf> = self.files.iter().chain(&self.others).cloned().collect();
        nondirs.sort();
        nondirs.dedup();
        let mut dirs: Vec<PathBuf> = self.dirs.clone();
        // Deepest first, so that setting a child never changes a parent after
        // the parent's times are set (setting times does not, but be plain).
        dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in nondirs.into_iter().chain(dirs) {
            let a = self.random_ts();
            let m = self.random_ts();
            let ts = |t: Ts| rustix::fs::Timespec {
                tv_sec: t.0,
                tv_nsec: i64::from(t.1),
            };
            rustix::fs::utimensat(
                rustix::fs::CWD,
                &p,
                &rustix::fs::Timestamps {
                    last_access: ts(a),
                    last_modification: ts(m),
                },
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .unwrap();
        }
    }
}

/// A POSIX ACL in the VFS xattr form: (tag, perm, id) entries.
pub fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// Read a host directory into a model (lstat, getxattr, content hashes). Reads
/// files with O_NOATIME so that scanning does not change what it records.
pub fn scan(root: &Path) -> Model {
    let mut nodes = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), Vec::<u8>::new())];
    while let Some((p, rel)) = stack.pop() {
        let n = scan_one(&p);
        if n.kind == MKind::Dir {
            let mut names: Vec<_> = fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for name in names {
                let mut r = rel.clone();
                if !r.is_empty() {
                    r.push(b'/');
                }
                r.extend_from_slice(name.as_bytes());
                stack.push((p.join(&name), r));
            }
        }
        nodes.insert(rel, n);
    }
    Model {
        root: root.to_path_buf(),
        nodes,
        extra: BTreeMap::new(),
    }
}

fn scan_one(p: &Path) -> MNode {
    let m = fs::symlink_metadata(p).unwrap();
    let ft = m.file_type();
    use std::os::unix::fs::FileTypeExt;
    let rdev = m.rdev();
    let (ma, mi) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    let kind = if ft.is_file() {
        MKind::File {
            blake3: hash_file(p),
        }
    } else if ft.is_dir() {
        MKind::Dir
    } else if ft.is_symlink() {
        MKind::Symlink(fs::read_link(p).unwrap().as_os_str().as_bytes().to_vec())
    } else if ft.is_char_device() {
        MKind::CharDev(ma, mi)
    } else if ft.is_block_device() {
        MKind::BlockDev(ma, mi)
    } else if ft.is_fifo() {
        MKind::Fifo
    } else {
        MKind::Socket
    };
    MNode {
        kind,
        perm: (m.mode() & 0o7777) as u16,
        uid: m.uid(),
        gid: m.gid(),
        size: m.size(),
        atime: (m.atime(), m.atime_nsec() as u32),
        mtime: (m.mtime(), m.mtime_nsec() as u32),
        nlink: m.nlink(),
        host_ino: m.ino(),
        xattrs: xattrs_of(p),
    }
}

fn hash_file(p: &Path) -> [u8; 32] {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(p, OFlags::RDONLY | OFlags::NOATIME, Mode::empty()).unwrap();
    let mut f = fs::File::from(fd);
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    *h.finalize().as_bytes()
}

/// All xattrs of a path (not following symlinks).
pub fn xattrs_of(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 1 << 16];
    let n = rustix::fs::llistxattr(p, &mut names[..]).unwrap();
    let mut value = vec![0u8; 1 << 16];
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let k = rustix::fs::lgetxattr(p, OsStr::from_bytes(name), &mut value[..]).unwrap();
        out.insert(name.to_vec(), value[..k].to_vec());
    }
    out
}

/// Host inode number -> every path naming it (for hard-link structure).
pub fn links(model: &Model) -> HashMap<u64, Vec<Vec<u8>>> {
    let mut m: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
    for (p, n) in &model.nodes {
        m.entry(n.host_ino).or_default().push(p.clone());
    }
    m
}

/// Write `data` to a new file (for tests that add a few files by hand).
pub fn write_file(p: &Path, data: &[u8]) {
    let mut f = fs::File::create(p).unwrap();
    f.write_all(data).unwrap();
}
