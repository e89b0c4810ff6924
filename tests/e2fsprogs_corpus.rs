//! e2fsprogs' own regression images (`../shared/corpus/e2fsprogs/*/image*`, found
//! by walking up from the crate to a `shared/corpus` folder, or at
//! `IMGSAN_CORPUS`) run through the binary: `inspect`, `ls -R /` and `repack` on
//! every image. Nothing is copied into the project; each image is unpacked into a
//! temporary folder.
//!
//! What must hold:
//! - every exit code is 0 to 4 (never a panic, a signal or an unknown code);
//! - every `repack` that exits 0 gives a filesystem on which `e2fsck -fn` exits 0
//!   and prints nothing but its pass headers and summary;
//! - for the journal images (`j_*`, `f_*jnl*`) that `repack` accepts, the tree of
//!   the output equals the tree of a copy of the input after `e2fsck -fy`
//!   (journal replayed by e2fsprogs), both dumped with `debugfs rdump` and
//!   compared by type, permission bits, size, content and symlink target.
//!
//! Images run on a pool of threads (one per core). About 3 minutes in the dev
//! profile on 2 loaded cores, under a minute in release.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const BIN: &str = env!("CARGO_BIN_EXE_imgsan");

/// The corpus folder, as the shared corpus README places it.
fn corpus_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("IMGSAN_CORPUS") {
        return PathBuf::from(p);
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    for a in here.ancestors() {
        let c = a.join("shared/corpus/e2fsprogs");
        if c.is_dir() {
            return c;
        }
    }
    panic!(
        "the e2fsprogs corpus is missing: no shared/corpus/e2fsprogs above {} (set IMGSAN_CORPUS)",
        here.display()
    );
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Unpack a test's image into `dir`; the path of the filesystem image.
fn unpack(test: &Path, dir: &Path) -> Option<PathBuf> {
    let img = dir.join("image");
    let sh = |c: String| {
        let o = run(Command::new("sh").arg("-c").arg(&c));
        assert!(o.status.success(), "{c}: {}", text(&o));
    };
    let q = |p: &Path| format!("'{}'", p.display());
    if test.join("image.gz").is_file() {
        sh(format!(
            "gzip -dc {} > {}",
            q(&test.join("image.gz")),
            q(&img)
        ));
    } else if test.join("image.bz2").is_file() {
        sh(format!(
            "bzip2 -dc {} > {}",
            q(&test.join("image.bz2")),
            q(&img)
        ));
    } else if test.join("image.tar.bz2").is_file() {
        sh(format!(
            "tar -xjf {} -C {}",
            q(&test.join("image.tar.bz2")),
            q(dir)
        ));
        // The archive holds NAME.img (and NAME.img.jnl, an external journal).
        let found = fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "img"))?;
        fs::rename(found, &img).unwrap();
    } else if test.join("image").is_file() {
        fs::copy(test.join("image"), &img).unwrap();
    } else {
        return None;
    }
    Some(img)
}

/// `e2fsck -fn` complaints: anything but pass headers, the banner and the summary.
fn fsck_complaints(img: &Path) -> Option<String> {
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
    (!o.status.success() || !complaints.is_empty())
        .then(|| format!("status {:?}: {}", o.status.code(), complaints.join(" | ")))
}

/// What the comparison looks at, per path under the dump root.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir(u32),
    File(u32, Vec<u8>),
    Link(PathBuf),
    Other(u32, u64),
}

fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
    let p = root.join(rel);
    let m = fs::symlink_metadata(&p).unwrap();
    let perm = m.permissions().mode() & 0o7777;
    let e = if m.file_type().is_symlink() {
        Entry::Link(fs::read_link(&p).unwrap())
    } else if m.is_dir() {
        let mut names: Vec<_> = fs::read_dir(&p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            walk(root, &rel.join(n), out);
        }
        Entry::Dir(perm)
    } else if m.is_file() {
        Entry::File(perm, fs::read(&p).unwrap())
    } else {
        Entry::Other(m.mode(), m.rdev())
    };
    out.insert(rel.to_path_buf(), e);
}

/// The tree of a filesystem image as `debugfs rdump` writes it.
fn dump(img: &Path, dir: &Path) -> Result<BTreeMap<PathBuf, Entry>, String> {
    fs::create_dir_all(dir).unwrap();
    let o = run(Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump / {}", dir.display()))
        .arg(img));
    if !o.status.success() {
        return Err(format!("debugfs rdump: {}", text(&o)));
    }
    let mut out = BTreeMap::new();
    walk(dir, Path::new(""), &mut out);
    // The dump root's own permissions are rdump's, not the filesystem's.
    out.remove(Path::new(""));
    Ok(out)
}

fn differences(a: &BTreeMap<PathBuf, Entry>, b: &BTreeMap<PathBuf, Entry>) -> Vec<String> {
    let mut d = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => d.push(format!("{} only in e2fsck's tree", k.display())),
            Some(w) if w != v => d.push(format!(
                "{} differs: e2fsck {} / imgsan {}",
                k.display(),
                brief(v),
                brief(w)
            )),
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            d.push(format!("{} only in imgsan's tree", k.display()));
        }
    }
    d
}

fn brief(e: &Entry) -> String {
    match e {
        Entry::Dir(p) => format!("dir {p:o}"),
        Entry::File(p, c) => format!("file {p:o} {} bytes", c.len()),
        Entry::Link(t) => format!("symlink -> {}", t.display()),
        Entry::Other(m, r) => format!("special {m:o} rdev {r}"),
    }
}

fn is_journal_test(name: &str) -> bool {
    name.starts_with("j_") || (name.starts_with("f_") && name.contains("jnl"))
}

/// One image; the failures found, and a one-line summary.
fn check_image(test: &Path, scratch: &Path) -> (Vec<String>, String) {
    let name = test.file_name().unwrap().to_string_lossy().to_string();
    let dir = scratch.join(&name);
    fs::create_dir_all(&dir).unwrap();
    let Some(img) = unpack(test, &dir) else {
        return (Vec::new(), format!("{name}: no image"));
    };
    let mut fails = Vec::new();
    let mut codes = Vec::new();
    let mut code_of = |what: &str, o: &Output| -> Option<i32> {
        let c = o.status.code();
        codes.push(format!(
            "{what}={}",
            c.map_or("signal".into(), |c| c.to_string())
        ));
        if !matches!(c, Some(0..=4)) {
            fails.push(format!(
                "{name}: {what} exit {:?}: {}",
                c,
                text(o).lines().last().unwrap_or("")
            ));
        }
        c
    };
    let o = run(Command::new(BIN).arg("inspect").arg(&img));
    code_of("inspect", &o);
    let o = run(Command::new(BIN)
        .args(["--quiet", "ls", "-R"])
        .arg(&img)
        .arg("/"));
    code_of("ls", &o);
    let out = dir.join("out.img");
    let o = run(Command::new(BIN)
        .args(["--quiet", "repack"])
        .arg(&img)
        .arg("-o")
        .arg(&out));
    let repack = code_of("repack", &o);
    let why = text(&o).lines().last().unwrap_or("").to_string();
    if repack == Some(0) {
        if let Some(c) = fsck_complaints(&out) {
            fails.push(format!("{name}: e2fsck -fn on the repacked image: {c}"));
        } else if is_journal_test(&name) {
            let copy = dir.join("fixed.img");
            fs::copy(&img, &copy).unwrap();
            let o = run(Command::new("e2fsck").arg("-fy").arg(&copy));
            if o.status.code().is_some_and(|c| c >= 4) {
                // e2fsck could not fix the copy: there is no tree to compare with.
                codes.push(format!("e2fsck-fy={:?}", o.status.code()));
            } else {
                match (dump(&copy, &dir.join("a")), dump(&out, &dir.join("b"))) {
                    (Ok(a), Ok(b)) => {
                        let d = differences(&a, &b);
                        if !d.is_empty() {
                            fails.push(format!(
                                "{name}: tree differs from e2fsck -fy's ({} paths): {}",
                                d.len(),
                                d.iter().take(6).cloned().collect::<Vec<_>>().join("; ")
                            ));
                        } else {
                            codes.push(format!("same tree ({} paths)", a.len()));
                        }
                    }
                    (Err(e), _) | (_, Err(e)) => fails.push(format!("{name}: {e}")),
                }
            }
        }
    }
    let _ = fs::remove_dir_all(&dir);
    let summary = if repack == Some(0) {
        format!("{name}: {}", codes.join(" "))
    } else {
        format!("{name}: {} ({why})", codes.join(" "))
    };
    (fails, summary)
}

#[test]
fn every_corpus_image() {
    let corpus = corpus_dir();
    let mut tests: Vec<PathBuf> = fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    tests.sort();
    if let Ok(only) = std::env::var("CORPUS_ONLY") {
        tests.retain(|t| t.file_name().unwrap().to_string_lossy().contains(&only));
    }
    assert!(
        tests.len() > 100 || std::env::var("CORPUS_ONLY").is_ok(),
        "corpus too small: {}",
        tests.len()
    );
    let scratch = tempfile::tempdir().unwrap();
    let next = AtomicUsize::new(0);
    let fails = Mutex::new(Vec::new());
    let lines = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(t) = tests.get(i) else { break };
                let (f, line) = check_image(t, scratch.path());
                eprintln!("{line}");
                fails.lock().unwrap().extend(f);
                lines.lock().unwrap().push(line);
            });
        }
    });
    let fails = fails.into_inner().unwrap();
    let lines = lines.into_inner().unwrap();
    let accepted = lines.iter().filter(|l| l.contains("repack=0")).count();
    eprintln!(
        "{} images, {accepted} repacked, {} failures",
        lines.len(),
        fails.len()
    );
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}
