//! Temporary output files: how they are named, the list of the ones this
//! process has open (which a signal empties before the process exits), the
//! removal of stale ones that dead runs left, and [`OutputGroup`], which makes
//! several outputs final together.
//!
//! Every output is written as `.NAME.imgsan-PID-N.tmp` beside its final name
//! and renamed when complete. Creating, renaming and removing one all happen
//! under one lock, and so does the signal handler's clean-up, so a signal sees
//! each temporary file either still to remove or already renamed, and a group
//! either wholly renamed or not at all.
//!
//! Nothing here decides what is written; it only owns names and renames.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::error::{Error, Result};

/// The temporary files this process has created and not yet renamed or removed.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> MutexGuard<'static, Vec<PathBuf>> {
    // A panic while the lock was held leaves the list as it was: still valid.
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn forget(list: &mut Vec<PathBuf>, tmp: &Path) {
    list.retain(|p| p != tmp);
}

/// The folder an output lands in ("." for a bare name).
fn folder_of(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn name_of(dest: &Path) -> Result<OsString> {
    dest.file_name().map(|n| n.to_os_string()).ok_or_else(|| {
        Error::output(
            dest.display().to_string(),
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
        )
    })
}

/// The process id in a temporary file name made for `name`, if `entry` is one:
/// `.NAME.imgsan-PID-N.tmp`, or `.NAME.imgsan-tmp-PID` (the name earlier
/// versions gave reports and manifests).
fn temp_owner(entry: &[u8], name: &[u8]) -> Option<u32> {
    let rest = entry.strip_prefix(b".")?.strip_prefix(name)?;
    let rest = rest.strip_prefix(b".imgsan-")?;
    let digits = |b: &[u8]| -> Option<u32> {
        if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(b).ok()?.parse().ok()
    };
    if let Some(pid) = rest.strip_prefix(b"tmp-") {
        return digits(pid);
    }
    let body = rest.strip_suffix(b".tmp")?;
    let dash = body.iter().position(|&b| b == b'-')?;
    digits(&body[dash + 1..])?;
    digits(&body[..dash])
}

fn process_exists(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes the temporary files for `dest` that runs no longer alive left in
/// its folder (killed with SIGKILL, or a crash). Files of live processes,
/// another imgsan writing the same name now, are left alone. Returns the
/// names removed.
pub fn remove_stale(dest: &Path) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut removed = Vec::new();
    let Ok(name) = name_of(dest) else {
        return removed;
    };
    let Ok(entries) = std::fs::read_dir(folder_of(dest)) else {
        return removed;
    };
    let me = std::process::id();
    for e in entries.flatten() {
        let entry = e.file_name();
        let Some(pid) = temp_owner(entry.as_bytes(), name.as_bytes()) else {
            continue;
        };
        if pid == me || process_exists(pid) {
            continue;
        }
        let p = e.path();
        if std::fs::remove_file(&p).is_ok() {
            removed.push(p);
        }
    }
    removed
}

/// Creates a new, empty temporary file beside `dest`, exclusively, and
/// records it for clean-up. Stale ones for the same name go first.
pub(crate) fn create_beside(dest: &Path) -> Result<(PathBuf, File)> {
    use std::os::unix::ffi::OsStrExt;
    let name = name_of(dest)?;
    let dir = folder_of(dest);
    remove_stale(dest);
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut attempt = 0;
    loop {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let mut file_name = OsString::from(".");
        file_name.push(&name);
        file_name.push(format!(".imgsan-{}-{n}.tmp", std::process::id()));
        let tmp = dir.join(&file_name);
        debug_assert!(temp_owner(file_name.as_bytes(), name.as_bytes()).is_some());
        let mut list = live();
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => {
                list.push(tmp.clone());
                return Ok((tmp, f));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1;
            }
            Err(e) => {
                return Err(Error::output(
                    format!("{} (temporary file)", tmp.display()),
                    e,
                ))
            }
        }
    }
}

/// Removes a temporary file and forgets it.
pub(crate) fn remove(tmp: &Path) {
    let mut list = live();
    let _ = std::fs::remove_file(tmp);
    forget(&mut list, tmp);
}

/// Renames temporary files to their final names, all under the lock. If one
/// rename fails, the ones already done are undone (their final names removed)
/// and every temporary file is removed: the outputs become final together or
/// not at all.
pub(crate) fn rename_all(pairs: &[(PathBuf, PathBuf)]) -> Result<()> {
    let mut list = live();
    for (i, (tmp, dest)) in pairs.iter().enumerate() {
        if let Err(e) = std::fs::rename(tmp, dest) {
            for (_, done) in &pairs[..i] {
                let _ = std::fs::remove_file(done);
            }
            for (t, _) in &pairs[i..] {
                let _ = std::fs::remove_file(t);
            }
            for (t, _) in pairs {
                forget(&mut list, t);
            }
            return Err(Error::output(dest.display().to_string(), e));
        }
    }
    for (t, _) in pairs {
        forget(&mut list, t);
    }
    Ok(())
}

/// Makes the renames into `dest`'s folder durable. A failure leaves complete
/// files under their final names, so it is not an error.
pub(crate) fn sync_folder(dest: &Path) {
    if let Ok(d) = File::open(folder_of(dest)) {
        let _ = d.sync_all();
    }
}

/// The signals that end a run early: the temporary files are removed, then the
/// process exits with 128 + the signal's number, as a shell reports it.
pub const SIGNALS: [i32; 3] = [
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGHUP,
    signal_hook::consts::SIGINT,
];

/// Starts a thread that, on SIGTERM, SIGHUP or SIGINT, removes every
/// temporary file of this process and exits with 128 + signal. Meant to be
/// called once, by the binary, before anything is written.
pub fn remove_temporaries_on_signal() -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new(SIGNALS)?;
    std::thread::Builder::new()
        .name("imgsan-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                // Holding the lock to the end: no temporary file is created
                // and no rename happens after the clean-up.
                let list = live();
                for p in list.iter() {
                    let _ = std::fs::remove_file(p);
                }
                std::process::exit(128 + sig);
            }
        })?;
    Ok(())
}

/// Outputs of one run that become final together: each is written and synced
/// under its temporary name, then [`OutputGroup::commit`] renames all of them.
/// Dropped without a commit, the group removes every temporary file it holds.
#[derive(Debug, Default)]
pub struct OutputGroup {
    staged: Mutex<Vec<(PathBuf, PathBuf)>>,
}

impl OutputGroup {
    pub fn new() -> Self {
        Self::default()
    }

    fn staged(&self) -> MutexGuard<'_, Vec<(PathBuf, PathBuf)>> {
        self.staged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes over a complete, synced temporary file that is to become `dest`.
    pub(crate) fn stage(&self, tmp: PathBuf, dest: PathBuf) {
        self.staged().push((tmp, dest));
    }

    /// Writes a small file (a report, a manifest) under a temporary name beside
    /// `dest` and syncs it; it becomes `dest` on commit.
    pub fn write_file(
        &self,
        dest: &Path,
        fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<()> {
        let (tmp, file) = create_beside(dest)?;
        let res = (|| -> std::io::Result<()> {
            let mut w = std::io::BufWriter::new(file);
            fill(&mut w)?;
            w.into_inner().map_err(|e| e.into_error())?.sync_all()
        })();
        match res {
            Ok(()) => {
                self.stage(tmp, dest.to_path_buf());
                Ok(())
            }
            Err(e) => {
                remove(&tmp);
                Err(Error::output(dest.display().to_string(), e))
            }
        }
    }

    /// Renames every staged file into place, or none.
    pub fn commit(self) -> Result<()> {
        let pairs = std::mem::take(&mut *self.staged());
        rename_all(&pairs)?;
        for (_, dest) in &pairs {
            sync_folder(dest);
        }
        Ok(())
    }
}

impl Drop for OutputGroup {
    fn drop(&mut self) {
        for (tmp, _) in std::mem::take(&mut *self.staged()) {
            remove(&tmp);
        }
    }
}

/// Writes a small file through a temporary name beside `path`, synced and
/// renamed when `fill` has written everything: a failed run leaves nothing
/// under the final name, and no temporary file.
pub fn write_file_atomically(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let group = OutputGroup::new();
    group.write_file(path, fill)?;
    group.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_parse_back_to_their_owner() {
        assert_eq!(temp_owner(b".x.raw.imgsan-123-4.tmp", b"x.raw"), Some(123));
        assert_eq!(temp_owner(b".x.raw.imgsan-tmp-77", b"x.raw"), Some(77));
        assert_eq!(temp_owner(b".x.raw.imgsan-123-4.tmp", b"y.raw"), None);
        assert_eq!(temp_owner(b".x.raw.imgsan-12a-4.tmp", b"x.raw"), None);
        assert_eq!(temp_owner(b".x.raw.imgsan-123-.tmp", b"x.raw"), None);
        assert_eq!(temp_owner(b"x.raw", b"x.raw"), None);
        // A longer name that starts with the same bytes is someone else's.
        assert_eq!(temp_owner(b".x.raw2.imgsan-1-1.tmp", b"x.raw"), None);
    }

    #[test]
    fn stale_files_of_dead_processes_go_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.raw");
        // pid_max is at most 2^22 on Linux: this one cannot be running.
        let dead = dir.path().join(".out.raw.imgsan-99999999-0.tmp");
        let old_style = dir.path().join(".out.raw.imgsan-tmp-99999998");
        let mine = dir
            .path()
            .join(format!(".out.raw.imgsan-{}-0.tmp", std::process::id()));
        let other_name = dir.path().join(".other.raw.imgsan-99999999-0.tmp");
        for p in [&dead, &old_style, &mine, &other_name] {
            std::fs::write(p, b"x").unwrap();
        }
        let mut removed = remove_stale(&dest);
        removed.sort();
        let mut want = vec![dead.clone(), old_style.clone()];
        want.sort();
        assert_eq!(removed, want);
        assert!(mine.exists() && other_name.exists());
    }

    #[test]
    fn a_group_is_final_together_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        let b = dir.path().join("b.txt");
        let g = OutputGroup::new();
        g.write_file(&a, |w| w.write_all(b"one")).unwrap();
        g.write_file(&b, |w| w.write_all(b"two")).unwrap();
        assert!(!a.exists() && !b.exists());
        g.commit().unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"one");
        assert_eq!(std::fs::read(&b).unwrap(), b"two");

        // A failed write drops the group: nothing at all is left.
        let c = dir.path().join("c.txt");
        let d = dir.path().join("d.txt");
        {
            let g = OutputGroup::new();
            g.write_file(&c, |w| w.write_all(b"three")).unwrap();
            let e = g.write_file(&d, |_| Err(std::io::Error::other("disk full")));
            assert!(e.is_err());
        }
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["a.txt", "b.txt"]);
        let dir_path = dir.path().to_path_buf();
        assert!(!live().iter().any(|p| p.starts_with(&dir_path)));
    }

    #[test]
    fn a_failed_rename_undoes_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        let g = OutputGroup::new();
        g.write_file(&a, |w| w.write_all(b"one")).unwrap();
        // The second destination's folder does not exist: its rename fails.
        let b = dir.path().join("gone").join("b.txt");
        let (tmp, _) = create_beside(&dir.path().join("b.txt")).unwrap();
        g.stage(tmp, b);
        assert!(g.commit().is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
