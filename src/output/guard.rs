//! The output guard: before a command opens anything for writing, it checks
//! that none of its outputs is one of its inputs, and that no two outputs are the
//! same file.
//!
//! "The same file" means the same device and inode once symlinks are resolved,
//! so `x.raw`, `./x.raw`, `dir-link/x.raw`, a symlink to `x.raw` and a hard
//! link to it all count as one. An output that does not exist yet cannot be an
//! input; two such outputs are compared by their folder's identity and their
//! name. Standard output is checked too: `imgsan convert x.raw -o - 1<>x.raw`
//! would otherwise write into the image being read.
//!
//! Every command that writes calls [`check`]; nothing here writes or removes.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A file a command reads or writes, and what it is to the command ("the input
/// image", "the --report file").
#[derive(Debug, Clone)]
pub struct Named {
    pub path: PathBuf,
    pub what: String,
}

impl Named {
    pub fn new(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Named {
            path: path.into(),
            what: what.into(),
        }
    }

    /// Whether this names standard output ("-").
    fn is_stdout(&self) -> bool {
        self.path.as_os_str() == "-"
    }
}

/// An output that would overwrite an input or another output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clash {
    pub output: PathBuf,
    pub output_what: String,
    pub other: PathBuf,
    pub other_what: String,
}

impl fmt::Display for Clash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |p: &Path| {
            if p.as_os_str() == "-" {
                "(standard output)".to_string()
            } else {
                p.display().to_string()
            }
        };
        write!(
            f,
            "refusing to write {} {}: it is the same file as {} {}; nothing was written",
            self.output_what,
            show(&self.output),
            self.other_what,
            show(&self.other)
        )
    }
}

impl std::error::Error for Clash {}

/// The identity of an existing file: device and inode, symlinks followed.
type Id = (u64, u64);

fn id_of(path: &Path) -> Option<Id> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Standard output's identity, when it is a regular file (a redirection).
fn stdout_id() -> Option<Id> {
    use std::os::fd::AsFd;
    let out = std::io::stdout();
    let st = rustix::fs::fstat(out.as_fd()).ok()?;
    let regular =
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile;
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    regular.then_some((st.st_dev as u64, st.st_ino as u64))
}

/// Where an output will be once renamed into place: its folder's identity and
/// its file name. `None` when the folder does not exist (the write will fail
/// with its own error).
fn place_of(path: &Path) -> Option<(Id, std::ffi::OsString)> {
    let name = path.file_name()?.to_os_string();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Some((id_of(dir)?, name))
}

/// Refuses when an output is an input (same device and inode) or two outputs
/// are the same file. Inputs that cannot be stat'ed are skipped: opening them
/// has already failed or will fail with a clearer error.
pub fn check(inputs: &[Named], outputs: &[Named]) -> Result<(), Clash> {
    let input_ids: Vec<(Id, &Named)> = inputs
        .iter()
        .filter(|n| !n.is_stdout())
        .filter_map(|n| id_of(&n.path).map(|id| (id, n)))
        .collect();
    let clash = |out: &Named, other: &Named| Clash {
        output: out.path.clone(),
        output_what: out.what.clone(),
        other: other.path.clone(),
        other_what: other.what.clone(),
    };
    // Outputs by identity: existing files by inode, new ones by place.
    #[derive(PartialEq)]
    enum Key {
        Inode(Id),
        Place(Id, std::ffi::OsString),
        Stdout,
    }
    let mut seen: Vec<(Key, &Named)> = Vec::new();
    for out in outputs {
        let key = if out.is_stdout() {
            if let Some(id) = stdout_id() {
                if let Some((_, inp)) = input_ids.iter().find(|(i, _)| *i == id) {
                    return Err(clash(out, inp));
                }
            }
            Key::Stdout
        } else if let Some(id) = id_of(&out.path) {
            if let Some((_, inp)) = input_ids.iter().find(|(i, _)| *i == id) {
                return Err(clash(out, inp));
            }
            Key::Inode(id)
        } else {
            match place_of(&out.path) {
                Some((dir, name)) => Key::Place(dir, name),
                None => continue,
            }
        };
        // Two outputs on standard output are the command's own choice (the
        // report goes to standard error then); two files are not.
        if key != Key::Stdout {
            if let Some((_, other)) = seen.iter().find(|(k, _)| *k == key) {
                return Err(clash(out, other));
            }
        }
        seen.push((key, out));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(p: &Path, what: &str) -> Named {
        Named::new(p, what)
    }

    #[test]
    fn same_file_by_any_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.raw");
        std::fs::write(&input, b"data").unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::os::unix::fs::symlink(dir.path(), sub.join("up")).unwrap();
        std::os::unix::fs::symlink(&input, dir.path().join("link.raw")).unwrap();
        std::fs::hard_link(&input, dir.path().join("hard.raw")).unwrap();
        let inputs = [named(&input, "the input image")];
        for out in [
            input.clone(),
            dir.path().join(".").join("in.raw"),
            sub.join("up").join("in.raw"),
            sub.join("..").join("in.raw"),
            dir.path().join("link.raw"),
            dir.path().join("hard.raw"),
        ] {
            let e = check(&inputs, &[named(&out, "the output image")]).unwrap_err();
            assert_eq!(e.other, input, "{}", out.display());
            let msg = e.to_string();
            assert!(msg.contains(&*out.to_string_lossy()), "{msg}");
            assert!(msg.contains(&*input.to_string_lossy()), "{msg}");
        }
        let fine = dir.path().join("out.raw");
        check(&inputs, &[named(&fine, "the output image")]).unwrap();
    }

    #[test]
    fn two_outputs_naming_one_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("out.raw");
        let b = dir.path().join(".").join("out.raw");
        let e = check(
            &[],
            &[
                named(&a, "the output image"),
                named(&b, "the --report file"),
            ],
        )
        .unwrap_err();
        assert_eq!(e.output_what, "the --report file");
        let c = dir.path().join("report.txt");
        check(
            &[],
            &[
                named(&a, "the output image"),
                named(&c, "the --report file"),
            ],
        )
        .unwrap();
    }
}
