//! The RPM package inventory: finds which database backend a guest uses and turns
//! its header blobs into [`Package`] records.
//!
//! Backends, newest first (rpm picks the same way when several files exist):
//! - `rpmdb.sqlite` ([`sqlite`]), RHEL 9 family and Fedora 33+;
//! - `Packages.db` ([`ndb`]), SUSE;
//! - `Packages` ([`bdb`]), Berkeley DB hash, CentOS/RHEL 5 to 8.
//!
//! The database directory is /var/lib/rpm, or /usr/lib/sysimage/rpm on newer
//! systems (where /var/lib/rpm is often a symlink to it; following it is the
//! caller's job). Nothing here reads files: a [`FileSource`] does.

pub mod bdb;
pub mod header;
pub mod ndb;
pub mod sqlite;

pub use header::Package;

use crate::error::Result;
use crate::inspect::{FileSource, Warning};

/// Directories rpm keeps its database in, in the order they are tried.
pub const RPMDB_DIRS: [&str; 2] = ["/var/lib/rpm", "/usr/lib/sysimage/rpm"];

/// Which on-disk format a database uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Sqlite,
    Ndb,
    BerkeleyDb,
}

impl Backend {
    /// The file name of the backend's package table.
    pub fn file_name(self) -> &'static str {
        match self {
            Backend::Sqlite => "rpmdb.sqlite",
            Backend::Ndb => "Packages.db",
            Backend::BerkeleyDb => "Packages",
        }
    }
}

/// Picks the backend from the names in a database directory (a directory listing
/// of /var/lib/rpm), preferring the newest format.
pub fn detect<S: AsRef<str>>(names: &[S]) -> Option<Backend> {
    let has = |n: &str| names.iter().any(|x| x.as_ref() == n);
    [Backend::Sqlite, Backend::Ndb, Backend::BerkeleyDb]
        .into_iter()
        .find(|b| has(b.file_name()))
}

/// The decoded database.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RpmDb {
    pub backend: Backend,
    /// Guest path of the package table file.
    pub path: String,
    /// Packages in storage order (hnum / package index / hash order).
    pub packages: Vec<Package>,
    /// Records skipped and why.
    pub warnings: Vec<Warning>,
}

/// Decodes the package headers of a database of a known backend from its bytes.
/// `wal` is only used by the SQLite backend. Header blobs that do not decode are
/// skipped with a warning; an unreadable database is an error.
pub fn decode(backend: Backend, bytes: &[u8], wal: Option<&[u8]>, path: &str) -> Result<RpmDb> {
    let (blobs, mut warnings): (Vec<(String, Vec<u8>)>, Vec<Warning>) = match backend {
        Backend::Sqlite => {
            let c = sqlite::read(bytes, wal, path)?;
            let blobs = c
                .blobs
                .into_iter()
                .map(|(h, b)| (format!("hnum {h}"), b))
                .collect();
            (blobs, c.warnings)
        }
        Backend::Ndb => {
            let c = ndb::read(bytes, path)?;
            let blobs = c
                .blobs
                .into_iter()
                .map(|b| (format!("package index {}", b.pkgidx), b.data))
                .collect();
            (blobs, c.warnings)
        }
        Backend::BerkeleyDb => {
            let c = bdb::read(bytes, path)?;
            let blobs = c
                .pairs
                .into_iter()
                // Key 0 holds rpm's next-instance counter, not a header.
                .filter(|(k, _)| k.iter().any(|&b| b != 0))
                .map(|(k, v)| (format!("key {}", hex(&k)), v))
                .collect();
            (blobs, c.warnings)
        }
    };
    let mut packages = Vec::with_capacity(blobs.len());
    for (what, blob) in blobs {
        match header::parse(&blob) {
            Ok(p) => packages.push(p),
            Err(e) => warnings.push(Warning::in_file(path, format!("{what}: {e}"))),
        }
    }
    Ok(RpmDb {
        backend,
        path: path.to_string(),
        packages,
        warnings,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Finds and decodes the guest's RPM database. `Ok(None)` when no database file
/// exists in any of [`RPMDB_DIRS`]. The newest backend wins across both
/// directories: after a conversion, a stale `Packages` may be left behind, never
/// a stale `rpmdb.sqlite`.
pub fn read_guest(src: &dyn FileSource) -> Result<Option<RpmDb>> {
    for backend in [Backend::Sqlite, Backend::Ndb, Backend::BerkeleyDb] {
        for dir in RPMDB_DIRS {
            let path = format!("{dir}/{}", backend.file_name());
            let Some(bytes) = src.read(&path)? else {
                continue;
            };
            let wal = match backend {
                Backend::Sqlite => src.read(&format!("{path}-wal"))?,
                _ => None,
            };
            return decode(backend, &bytes, wal.as_deref(), &path).map(Some);
        }
    }
    Ok(None)
}

/// The newest install time in the database, i.e. when packages last changed.
pub fn last_install_time(packages: &[Package]) -> Option<u32> {
    packages.iter().filter_map(|p| p.install_time).max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::MapSource;

    #[test]
    fn detect_prefers_the_newest_backend() {
        assert_eq!(
            detect(&["Packages", "Name", "rpmdb.sqlite"]),
            Some(Backend::Sqlite)
        );
        assert_eq!(detect(&["Packages.db", "Index.db"]), Some(Backend::Ndb));
        assert_eq!(
            detect(&["Packages", "Basenames"]),
            Some(Backend::BerkeleyDb)
        );
        assert_eq!(detect::<&str>(&["Name"]), None);
    }

    #[test]
    fn bdb_key_zero_is_not_a_package_and_bad_headers_are_warnings() {
        let pairs = vec![
            (0u32.to_le_bytes().to_vec(), 5u32.to_le_bytes().to_vec()),
            (
                1u32.to_le_bytes().to_vec(),
                header::sample("bash", "4.2", 10),
            ),
            (2u32.to_le_bytes().to_vec(), b"not a header".to_vec()),
            (
                3u32.to_le_bytes().to_vec(),
                header::sample("kernel", "3.10.0", 30),
            ),
        ];
        let db = bdb::build(&pairs, 4096, false);
        let src = MapSource::new().with("/var/lib/rpm/Packages", db);
        let got = read_guest(&src).unwrap().unwrap();
        assert_eq!(got.backend, Backend::BerkeleyDb);
        let names: Vec<&str> = got.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["bash", "kernel"]);
        assert_eq!(got.warnings.len(), 1, "{:?}", got.warnings);
        assert!(got.warnings[0].message.contains("key 02000000"));
        assert_eq!(last_install_time(&got.packages), Some(30));
    }

    #[test]
    fn ndb_is_found_under_sysimage() {
        let db = ndb::build(&[(1, header::sample("zypper", "1.14", 5))]);
        let src = MapSource::new().with("/usr/lib/sysimage/rpm/Packages.db", db);
        let got = read_guest(&src).unwrap().unwrap();
        assert_eq!(got.backend, Backend::Ndb);
        assert_eq!(got.packages[0].name, "zypper");
    }

    #[test]
    fn a_newer_backend_wins_over_a_stale_packages_file() {
        let stale = bdb::build(
            &[(1u32.to_le_bytes().to_vec(), header::sample("old", "1", 1))],
            4096,
            false,
        );
        let ndb = ndb::build(&[(1, header::sample("new", "2", 2))]);
        let src = MapSource::new()
            .with("/var/lib/rpm/Packages", stale)
            .with("/usr/lib/sysimage/rpm/Packages.db", ndb);
        let got = read_guest(&src).unwrap().unwrap();
        assert_eq!(got.path, "/usr/lib/sysimage/rpm/Packages.db");
        assert_eq!(got.packages[0].name, "new");
    }

    #[test]
    fn no_database_is_none() {
        assert!(read_guest(&MapSource::new()).unwrap().is_none());
    }
}
