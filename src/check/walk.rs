//! The one walk over the whole guest namespace that the facts need: sizes under
//! chosen directories, denylist path matches, hashes of files whose size equals
//! a known binary's, licence files recognised by content, daemon configuration
//! files, and software under /home.
//!
//! Reads through the [`Namespace`] only. File data is read for three reasons
//! alone, each bounded: hashing size-matched candidates, reading licence-file
//! candidates (up to the denylist's `max_bytes` each, and [`LICENCE_BUDGET`] in
//! all), and daemon configurations (up to [`MAX_CONFIG_BYTES`]).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::guest::{Namespace, Pos};
use crate::policy::daemons::{ConfigMatcher, MAX_CONFIG_BYTES};
use crate::policy::software::{detect_license, FileEntry, FoundLicense, SoftwareMatcher};
use crate::tree::{Kind, Tree};

use crate::policy::guest::HomeItem;

/// Licence candidates are read up to this many bytes in all: a guest with
/// thousands of files named `license.txt` costs bounded time.
pub const LICENCE_BUDGET: u64 = 256 << 20;

/// How deep the walk goes. Far beyond any real tree; a bound all the same.
const MAX_DEPTH: usize = 4096;

/// What to look for.
pub struct Plan<'m> {
    pub matcher: Option<&'m SoftwareMatcher<'m>>,
    /// Canonical directory paths (and top-level entries) whose content to sum.
    pub measure: Vec<Vec<u8>>,
    /// Canonical path of /home, when it is a directory.
    pub home_root: Option<Vec<u8>>,
}

/// Counts over the whole guest.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WalkStats {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    /// Devices, FIFOs, sockets.
    pub other: u64,
    /// Sum of regular file sizes.
    pub bytes: u64,
}

/// What the denylist part of the walk found.
#[derive(Debug, Default)]
pub struct DenyFound {
    /// Files a path glob matched, and files hashed.
    pub files: Vec<FileEntry>,
    pub hashes: BTreeMap<String, [u8; 32]>,
    pub licences: Vec<FoundLicense>,
    pub licence_candidates_read: u64,
}

#[derive(Debug, Default)]
pub struct Output {
    pub stats: WalkStats,
    /// Canonical path -> (bytes, files) for every path of `Plan::measure`.
    pub sizes: HashMap<Vec<u8>, (u64, u64)>,
    pub denylist: DenyFound,
    pub daemon_configs: Vec<DaemonConfig>,
    pub home_software: Vec<HomeSoftware>,
    pub warnings: Vec<String>,
}

/// Per top-level entry of a home directory.
#[derive(Default)]
struct HomeTop {
    bytes: u64,
    files: u64,
    evidence: Vec<String>,
}

impl HomeTop {
    fn note(&mut self, why: &str) {
        if !self.evidence.iter().any(|e| e == why) {
            self.evidence.push(why.to_string());
        }
    }
}

/// The file names and directory names that mark a tree as installed software.
fn software_marker(name: &[u8]) -> Option<&'static str> {
    match name {
        b"pyvenv.cfg" => Some("Python virtualenv (pyvenv.cfg)"),
        b"conda-meta" => Some("conda environment (conda-meta)"),
        b"site-packages" => Some("Python packages (site-packages)"),
        b"node_modules" => Some("Node.js packages (node_modules)"),
        b"Cargo.toml" | b"CMakeLists.txt" | b"configure.ac" => Some("source tree"),
        _ => None,
    }
}

fn blake3_of(tree: &Tree, node: u32) -> crate::Result<[u8; 32]> {
    let size = tree.node(node).size;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(buf.len() as u64) as usize;
        tree.read_file(node, off, &mut buf[..n])?;
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(*h.finalize().as_bytes())
}

/// Whether a file starts with the ELF magic.
fn is_elf(tree: &Tree, node: u32) -> bool {
    let mut m = [0u8; 4];
    tree.node(node).size >= 4 && tree.read_file(node, 0, &mut m).is_ok() && &m == b"\x7fELF"
}

/// Walks everything below the guest root once.
pub fn walk(ns: &Namespace<'_>, plan: &Plan<'_>) -> Output {
    let mut out = Output::default();
    let measure: HashMap<&[u8], ()> = plan.measure.iter().map(|p| (&p[..], ())).collect();
    for p in &plan.measure {
        out.sizes.insert(p.clone(), (0, 0));
    }
    let daemons = ConfigMatcher::new();
    let mut homes: BTreeMap<Vec<u8>, HomeTop> = BTreeMap::new();
    let mut licence_budget = LICENCE_BUDGET;
    let home_prefix = plan.home_root.as_ref().map(|h| {
        let mut p = h.clone();
        if p.len() > 1 {
            p.push(b'/');
        }
        p
    });

    let res = ns.walk(b"/", MAX_DEPTH, |path, pos: Pos| {
        let node = ns.node(pos);
        let tree = ns.tree(pos.vol);
        // The top-level entry of a home this path is in: /home/<user>/<top>.
        let home_top: Option<(Vec<u8>, &[u8])> = home_prefix.as_ref().and_then(|hp| {
            let rel = path.strip_prefix(&hp[..])?;
            let user_end = rel.iter().position(|&b| b == b'/')?;
            let after = &rel[user_end + 1..];
            let top_end = after.iter().position(|&b| b == b'/').unwrap_or(after.len());
            let key_len = hp.len() + user_end + 1 + top_end;
            Some((path[..key_len].to_vec(), &path[key_len..]))
        });
        match &node.kind {
            Kind::Dir(_) => {
                out.stats.directories += 1;
                if let Some((key, rest)) = &home_top {
                    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(b"");
                    let top = homes.entry(key.clone()).or_default();
                    if let Some(why) = software_marker(name) {
                        top.note(why);
                    }
                    let _ = rest;
                }
            }
            Kind::Symlink(_) => out.stats.symlinks += 1,
            Kind::File(_) => {
                let size = node.size;
                out.stats.files += 1;
                out.stats.bytes = out.stats.bytes.saturating_add(size);
                // Sizes of every measured ancestor, and of the path itself.
                for (i, &b) in path.iter().enumerate() {
                    if b == b'/' && i > 0 && measure.contains_key(&path[..i]) {
                        if let Some(s) = out.sizes.get_mut(&path[..i]) {
                            s.0 = s.0.saturating_add(size);
                            s.1 += 1;
                        }
                    }
                }
                if measure.contains_key(path) {
                    if let Some(s) = out.sizes.get_mut(path) {
                        s.0 = s.0.saturating_add(size);
                        s.1 += 1;
                    }
                }
                let spath = text(path);
                if let Some(m) = plan.matcher {
                    let matched = !m.match_path(&spath).is_empty();
                    let mut listed = matched;
                    if m.wants_hash(size) {
                        match blake3_of(tree, pos.node) {
                            Ok(d) => {
                                out.denylist.hashes.insert(spath.clone(), d);
                                listed = true;
                            }
                            Err(e) => out.warnings.push(format!("hashing {spath}: {e}")),
                        }
                    }
                    if listed {
                        out.denylist.files.push(FileEntry {
                            path: spath.clone(),
                            size,
                        });
                    }
                    if m.is_license_candidate(&spath, size) && size <= licence_budget {
                        licence_budget -= size;
                        out.denylist.licence_candidates_read += 1;
                        match tree.read_all(pos.node, size) {
                            Ok(bytes) => {
                                if let Some(d) = detect_license(&bytes) {
                                    out.denylist.licences.push(FoundLicense {
                                        path: spath.clone(),
                                        detection: d,
                                    });
                                }
                            }
                            Err(e) => out.warnings.push(format!("reading {spath}: {e}")),
                        }
                    }
                }
                if let Some(kind) = daemons.kind(&spath) {
                    if size <= MAX_CONFIG_BYTES {
                        match tree.read_all(pos.node, MAX_CONFIG_BYTES) {
                            Ok(bytes) => out.daemon_configs.push(DaemonConfig {
                                path: spath.clone(),
                                daemon: kind.name().to_string(),
                                size,
                                bytes,
                            }),
                            Err(e) => out.warnings.push(format!("reading {spath}: {e}")),
                        }
                    }
                }
                if let Some((key, rest)) = &home_top {
                    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(b"");
                    let top = homes.entry(key.clone()).or_default();
                    top.bytes = top.bytes.saturating_add(size);
                    top.files += 1;
                    if let Some(why) = software_marker(name) {
                        top.note(why);
                    }
                    let executable = node.perm & 0o111 != 0;
                    if rest.is_empty() {
                        // A file right in the home: software only if it is a
                        // program binary.
                        if executable && is_elf(tree, pos.node) {
                            top.note("executable program");
                        }
                    } else if executable {
                        top.note("executable files");
                    }
                }
            }
            _ => out.stats.other += 1,
        }
    });
    if let Err(e) = res {
        out.warnings
            .push(format!("walking the guest stopped early: {e}"));
    }
    out.home_software = homes
        .into_iter()
        .filter(|(_, t)| !t.evidence.is_empty())
        .map(|(k, t)| HomeSoftware {
            path: text(&k),
            bytes: t.bytes,
            files: t.files,
            evidence: t.evidence,
        })
        .collect();
    out
}

/// A daemon configuration file found in the guest.
#[derive(Debug, Clone, Serialize)]
pub struct DaemonConfig {
    pub path: String,
    pub daemon: String,
    pub size: u64,
    #[serde(skip)]
    pub bytes: Vec<u8>,
}

/// Software found under /home.
#[derive(Debug, Clone, Serialize)]
pub struct HomeSoftware {
    pub path: String,
    pub bytes: u64,
    pub files: u64,
    /// Why it looks like software ("virtualenv", "executables", ...).
    pub evidence: Vec<String>,
}

impl HomeSoftware {
    pub fn item(&self) -> HomeItem {
        HomeItem {
            path: self.path.clone(),
            bytes: self.bytes,
        }
    }
}

/// Lossy UTF-8 for guest bytes.
pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
