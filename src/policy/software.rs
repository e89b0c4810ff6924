//! Licensed and cloud-unsuitable software: the denylist matched against package
//! names, install paths, known binaries' blake3 hashes, and licence files found
//! by their contents (FlexNet/FLEXlm and RLM formats).
//!
//! Pure: the caller lists packages and files and provides a hash function; this
//! module asks for a hash only for files whose size equals a known binary's.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use globset::{GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::rules::{Denylist, Policy};

use super::{finding, Finding};

pub const IDS: &[&str] = &[
    "software.licensed",
    "software.cloud-unsuitable",
    "software.license-file",
    "software.allowlisted",
];

/// Evidence lines listed per denylist entry; a product installs thousands of
/// files its globs match, and the rest is summarised as a count.
pub const MAX_EVIDENCE: usize = 20;

/// A file of the guest, as listed by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
}

/// The denylist compiled for matching.
pub struct SoftwareMatcher<'a> {
    denylist: &'a Denylist,
    allow: BTreeSet<String>,
    packages: GlobSet,
    package_owner: Vec<usize>,
    paths: GlobSet,
    path_owner: Vec<usize>,
    by_size: HashMap<u64, Vec<(usize, [u8; 32])>>,
    license_paths: GlobSet,
    vendors: HashMap<String, usize>,
    /// The request's `exclude` globs: what they match is deleted from the output
    /// by the `request-exclude` rule.
    excluded: Option<GlobSet>,
}

impl<'a> SoftwareMatcher<'a> {
    /// Compiles `denylist`; ids in `allowlist` report as info.
    pub fn new(denylist: &'a Denylist, allowlist: BTreeSet<String>) -> Result<Self, String> {
        let mut pk = GlobSetBuilder::new();
        let mut pk_owner = Vec::new();
        let mut pa = GlobSetBuilder::new();
        let mut pa_owner = Vec::new();
        let mut by_size: HashMap<u64, Vec<(usize, [u8; 32])>> = HashMap::new();
        let mut vendors = HashMap::new();
        for (i, e) in denylist.entries.iter().enumerate() {
            for g in &e.packages {
                pk.add(g.glob().clone());
                pk_owner.push(i);
            }
            for g in &e.paths {
                pa.add(g.glob().clone());
                pa_owner.push(i);
            }
            for h in &e.hashes {
                by_size.entry(h.size).or_default().push((i, h.blake3.0));
            }
            for v in &e.license_vendors {
                vendors.entry(v.to_ascii_lowercase()).or_insert(i);
            }
        }
        let mut lf = GlobSetBuilder::new();
        for g in &denylist.license_files.paths {
            lf.add(g.glob().clone());
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| format!("denylist patterns: {e}"));
        Ok(SoftwareMatcher {
            denylist,
            allow: allowlist,
            packages: build(pk)?,
            package_owner: pk_owner,
            paths: build(pa)?,
            path_owner: pa_owner,
            by_size,
            license_paths: build(lf)?,
            vendors,
            excluded: None,
        })
    }

    /// Takes the request's `exclude` globs into account: a match only in places
    /// they delete is fixed by `request-exclude`, so it does not block before the
    /// rules ran (the re-check then confirms it is gone).
    pub fn with_excluded(mut self, globs: &[crate::rules::PathGlob]) -> Self {
        if globs.is_empty() {
            return self;
        }
        let mut b = GlobSetBuilder::new();
        for g in globs {
            b.add(g.glob().clone());
        }
        self.excluded = b.build().ok();
        self
    }

    /// The rule that deletes `path`: a default rule's place, or the request's
    /// exclusions (the path itself, or its contents).
    fn deleted_by(&self, path: &str) -> Option<&'static str> {
        deleted_by(path).or_else(|| {
            let set = self.excluded.as_ref()?;
            let inside = format!("{}/x", path.trim_end_matches('/'));
            (set.is_match(path) || set.is_match(&inside))
                .then_some(crate::sanitize::REQUEST_EXCLUDE)
        })
    }

    fn owners(set: &GlobSet, owner: &[usize], s: &str) -> BTreeSet<usize> {
        set.matches(s)
            .into_iter()
            .filter_map(|k| owner.get(k).copied())
            .collect()
    }

    /// Entry ids whose package patterns match `name`.
    pub fn match_package(&self, name: &str) -> Vec<&str> {
        Self::owners(&self.packages, &self.package_owner, name)
            .into_iter()
            .filter_map(|i| self.denylist.entries.get(i).map(|e| e.id.value.as_str()))
            .collect()
    }

    /// Entry ids whose path patterns match `path`.
    pub fn match_path(&self, path: &str) -> Vec<&str> {
        Self::owners(&self.paths, &self.path_owner, path)
            .into_iter()
            .filter_map(|i| self.denylist.entries.get(i).map(|e| e.id.value.as_str()))
            .collect()
    }

    /// Whether a file of this size could be a known binary (then, and only then,
    /// is it worth hashing).
    pub fn wants_hash(&self, size: u64) -> bool {
        self.by_size.contains_key(&size)
    }

    /// Whether the caller should read this file and pass it to
    /// [`detect_license`].
    pub fn is_license_candidate(&self, path: &str, size: u64) -> bool {
        size > 0
            && size <= self.denylist.license_files.max_bytes
            && self.license_paths.is_match(path)
    }

    fn vendor_entry(&self, vendor: &str) -> Option<usize> {
        self.vendors.get(&vendor.to_ascii_lowercase()).copied()
    }
}

/// The sanitize rule that deletes `path` with the default rules, if any: a match
/// only in such places goes away by itself.
fn deleted_by(path: &str) -> Option<&'static str> {
    [
        ("/home/", "home"),
        ("/root/", "root-home"),
        ("/tmp/", "tmp"),
        ("/mnt/", "mnt"),
        ("/var/tmp/", "var-tmp"),
    ]
    .into_iter()
    .find(|(prefix, _)| path.starts_with(prefix))
    .map(|(_, rule)| rule)
}

/// A licence file found by content, with where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundLicense {
    pub path: String,
    pub detection: LicenseDetection,
}

#[derive(Default)]
struct Hits {
    evidence: Vec<String>,
    /// Guest paths of the evidence; `None` entries are packages (never removed
    /// by deleting a directory).
    places: Vec<Option<String>>,
}

/// Runs the denylist over packages, files and licence files. `hash` returns the
/// blake3 of a guest file; it is called only for files whose size matches a
/// known binary, at most once per file. A `None` from it (unreadable) is
/// skipped.
pub fn check_software(
    policy: &Policy,
    matcher: &SoftwareMatcher<'_>,
    packages: &[String],
    files: &[FileEntry],
    hash: &mut dyn FnMut(&str) -> Option<[u8; 32]>,
    licenses: &[FoundLicense],
) -> Vec<Finding> {
    let mut hits: BTreeMap<usize, Hits> = BTreeMap::new();
    for p in packages {
        for i in SoftwareMatcher::owners(&matcher.packages, &matcher.package_owner, p) {
            let h = hits.entry(i).or_default();
            h.evidence.push(format!("package {p}"));
            h.places.push(None);
        }
    }
    for f in files {
        for i in SoftwareMatcher::owners(&matcher.paths, &matcher.path_owner, &f.path) {
            let h = hits.entry(i).or_default();
            h.evidence.push(f.path.clone());
            h.places.push(Some(f.path.clone()));
        }
        if let Some(known) = matcher.by_size.get(&f.size) {
            if let Some(digest) = hash(&f.path) {
                for (i, want) in known {
                    if *want == digest {
                        let h = hits.entry(*i).or_default();
                        h.evidence.push(format!(
                            "{} (blake3 of a known binary, {} bytes)",
                            f.path, f.size
                        ));
                        h.places.push(Some(f.path.clone()));
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    for lic in licenses {
        let d = &lic.detection;
        let owner = d.vendors.iter().find_map(|v| matcher.vendor_entry(v));
        let summary = format!(
            "{} ({} licence, vendor {})",
            lic.path,
            d.format.as_str(),
            if d.vendors.is_empty() {
                "unknown".to_string()
            } else {
                d.vendors.join(", ")
            }
        );
        match owner {
            Some(i) => {
                let h = hits.entry(i).or_default();
                h.evidence.push(summary);
                h.places.push(Some(lic.path.clone()));
            }
            None => {
                let ev = std::iter::once(summary).chain(
                    d.lines
                        .iter()
                        .map(|(n, t)| format!("{}:{n}: {t}", lic.path)),
                );
                let f = finding(policy, "software.license-file", format!("{} licence file: licensed software, or the address of a site's licence server", d.format.as_str()))
                    .map(|f| f.with_evidence(ev).hint("remove the licence file and the software it unlocks"));
                out.extend(f.map(|f| match matcher.deleted_by(&lic.path) {
                    Some(rule) => f.fixed_by(rule),
                    None => f,
                }));
            }
        }
    }
    for (i, h) in hits {
        let Some(e) = matcher.denylist.entries.get(i) else {
            continue;
        };
        let allowed = matcher.allow.contains(&e.id.value);
        let id = if allowed {
            "software.allowlisted"
        } else {
            e.category.check_id()
        };
        let what = match e.category {
            crate::rules::Category::Licensed => "licensed software",
            crate::rules::Category::CloudUnsuitable => "cloud-unsuitable software",
        };
        let message = if allowed {
            format!(
                "{} found; the cloud holds a licence for it (allowlist)",
                e.product
            )
        } else {
            format!("{} found: {what}", e.product)
        };
        let fixer = {
            let rules: BTreeSet<Option<&str>> = h
                .places
                .iter()
                .map(|p| p.as_deref().and_then(|p| matcher.deleted_by(p)))
                .collect();
            match rules.into_iter().collect::<Vec<_>>().as_slice() {
                [Some(rule)] => Some(*rule),
                _ => None,
            }
        };
        let mut evidence = h.evidence;
        if evidence.len() > MAX_EVIDENCE {
            let more = evidence.len() - MAX_EVIDENCE;
            evidence.truncate(MAX_EVIDENCE);
            evidence.push(format!("... and {more} more"));
        }
        let f = finding(policy, id, message).map(|f| {
            let f = f.with_evidence(evidence);
            let f = if allowed {
                f
            } else {
                f.hint(format!(
                    "remove {} from the instance before imaging, or ask the cloud to allowlist `{}`. Why: {}",
                    e.product,
                    e.id.value,
                    e.reason.trim()
                ))
            };
            match fixer {
                Some(rule) => f.fixed_by(rule),
                None => f,
            }
        });
        out.extend(f);
    }
    out
}

/// Which licence file format was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LicenseFormat {
    FlexNet,
    Rlm,
}

impl LicenseFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseFormat::FlexNet => "FlexNet",
            LicenseFormat::Rlm => "RLM",
        }
    }
}

/// What [`detect_license`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseDetection {
    pub format: LicenseFormat,
    /// Vendor daemon (FlexNet) or ISV (RLM) names, in order of appearance.
    pub vendors: Vec<String>,
    /// Licensed feature or product names.
    pub features: Vec<String>,
    /// Up to [`MAX_EVIDENCE_LINES`] (line number, text) pairs, signatures
    /// redacted and long lines cut.
    pub lines: Vec<(usize, String)>,
}

pub const MAX_EVIDENCE_LINES: usize = 5;
const MAX_LINE_CHARS: usize = 160;
/// A logical line may continue over at most this many physical lines; a file
/// of backslashes cannot make us build one huge line.
const MAX_CONTINUATIONS: usize = 64;

/// Joins backslash-continued lines (both formats use them). Yields the first
/// physical line number and the joined text.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String, usize)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let (body, cont) = match line.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (line, false),
        };
        let entry = cur.get_or_insert_with(|| (i + 1, String::new(), 0));
        if !entry.1.is_empty() {
            entry.1.push(' ');
        }
        entry.1.push_str(body.trim());
        entry.2 += 1;
        if !cont || entry.2 >= MAX_CONTINUATIONS {
            if let Some((n, s, _)) = cur.take() {
                out.push((n, s));
            }
        }
    }
    if let Some((n, s, _)) = cur {
        out.push((n, s));
    }
    out
}

/// Splits on whitespace, keeping "quoted strings" (which may hold spaces) in
/// their token.
fn tokens(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        let mut quoted = false;
        while i < b.len() && (quoted || !b[i].is_ascii_whitespace()) {
            if b[i] == b'"' {
                quoted = !quoted;
            }
            i += 1;
        }
        if let Some(t) = line.get(start..i) {
            out.push(t);
        }
    }
    out
}

fn is_signature_key(tok: &str) -> bool {
    let lower = tok.to_ascii_lowercase();
    ["sign=", "sign2=", "sig=", "_ck=", "vendor_info=\"sig"]
        .iter()
        .any(|k| lower.starts_with(k))
}

/// The line with signature values replaced, cut to a readable length.
fn redact(line: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for t in tokens(line) {
        match t.split_once('=') {
            Some((k, _)) if is_signature_key(t) => out.push(format!("{k}=<redacted>")),
            _ => out.push(t.to_string()),
        }
    }
    let s = out.join(" ");
    if s.chars().count() > MAX_LINE_CHARS {
        let cut: String = s.chars().take(MAX_LINE_CHARS).collect();
        format!("{cut}...")
    } else {
        s
    }
}

fn is_version(t: &str) -> bool {
    !t.is_empty()
        && t.bytes().all(|c| c.is_ascii_digit() || c == b'.')
        && t.bytes().any(|c| c.is_ascii_digit())
}

/// FlexNet expiry: "permanent", "0", "jan-01-0" style "1-jan-2025" dates.
fn is_expiry(t: &str) -> bool {
    let t = t.to_ascii_lowercase();
    if t == "permanent" || t == "0" || t == "uncounted" {
        return true;
    }
    let parts: Vec<&str> = t.split('-').collect();
    matches!(parts.as_slice(), [d, m, y]
        if !d.is_empty() && d.len() <= 2 && d.bytes().all(|c| c.is_ascii_digit())
        && m.len() == 3 && m.bytes().all(|c| c.is_ascii_alphabetic())
        && !y.is_empty() && y.len() <= 4 && y.bytes().all(|c| c.is_ascii_digit()))
}

fn has_signature(toks: &[&str]) -> bool {
    toks.iter().any(|t| is_signature_key(t))
}

/// Legacy FLEXlm keys: a 12 to 20 hex-digit field right after the count.
fn has_legacy_key(toks: &[&str]) -> bool {
    toks.get(6)
        .is_some_and(|t| (12..=20).contains(&t.len()) && t.bytes().all(|c| c.is_ascii_hexdigit()))
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

/// Recognises a FlexNet (FLEXlm) or RLM licence file by its contents.
///
/// FlexNet: FEATURE, INCREMENT, PACKAGE or UPGRADE lines with a signature
/// (SIGN=, or a legacy hex key) and the documented field shapes (name vendor
/// version expiry count), or a SERVER line together with VENDOR/DAEMON or
/// USE_SERVER lines (a client file pointing at a site's licence server).
/// RLM: LICENSE lines (isv product version expiry count) with sig= or _ck=, or
/// HOST and ISV lines together. Anything else, such as documentation that
/// mentions the keywords, is not a licence file.
pub fn detect_license(bytes: &[u8]) -> Option<LicenseDetection> {
    let text = String::from_utf8_lossy(bytes);
    let lines = logical_lines(&text);
    let mut flex = LicenseDetection {
        format: LicenseFormat::FlexNet,
        vendors: vec![],
        features: vec![],
        lines: vec![],
    };
    let mut rlm = LicenseDetection {
        format: LicenseFormat::Rlm,
        vendors: vec![],
        features: vec![],
        lines: vec![],
    };
    let (mut flex_signed, mut flex_server, mut flex_vendor_or_use) = (false, false, false);
    let (mut rlm_signed, mut rlm_host, mut rlm_isv) = (false, false, false);
    for (n, line) in &lines {
        let toks = tokens(line);
        let Some(kw) = toks.first() else { continue };
        let ev = |d: &mut LicenseDetection| {
            if d.lines.len() < MAX_EVIDENCE_LINES {
                d.lines.push((*n, redact(line)));
            }
        };
        match *kw {
            "FEATURE" | "INCREMENT" | "PACKAGE" | "UPGRADE" => {
                let shaped = toks.len() >= 6
                    && is_version(toks[3])
                    && (is_expiry(toks[4]) || *kw == "PACKAGE" || *kw == "UPGRADE");
                if shaped && (has_signature(&toks) || has_legacy_key(&toks)) {
                    flex_signed = true;
                    push_unique(&mut flex.features, toks[1]);
                    push_unique(&mut flex.vendors, toks[2]);
                    ev(&mut flex);
                }
            }
            "SERVER" if toks.len() >= 3 => {
                flex_server = true;
                ev(&mut flex);
            }
            "VENDOR" | "DAEMON" if toks.len() >= 2 => {
                flex_vendor_or_use = true;
                push_unique(&mut flex.vendors, toks[1]);
                ev(&mut flex);
            }
            "USE_SERVER" => {
                flex_vendor_or_use = true;
                ev(&mut flex);
            }
            _ => {}
        }
        match kw.to_ascii_uppercase().as_str() {
            "LICENSE" | "UPGRADE"
                if toks.len() >= 6 && is_version(toks[3]) && has_signature(&toks) =>
            {
                rlm_signed = true;
                push_unique(&mut rlm.vendors, toks[1]);
                push_unique(&mut rlm.features, toks[2]);
                ev(&mut rlm);
            }
            "HOST" if toks.len() >= 3 => {
                rlm_host = true;
                ev(&mut rlm);
            }
            "ISV" if toks.len() >= 2 => {
                rlm_isv = true;
                push_unique(&mut rlm.vendors, toks[1]);
                ev(&mut rlm);
            }
            _ => {}
        }
    }
    if flex_signed || (flex_server && flex_vendor_or_use) {
        Some(flex)
    } else if rlm_signed || (rlm_host && rlm_isv) {
        Some(rlm)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{parse, Denylist, RuleSet};

    fn ids(f: &[Finding]) -> Vec<&str> {
        f.iter().map(|f| f.check_id.as_str()).collect()
    }
    fn file(path: &str, size: u64) -> FileEntry {
        FileEntry {
            path: path.into(),
            size,
        }
    }
    fn no_hash(_: &str) -> Option<[u8; 32]> {
        panic!("no file should be hashed")
    }

    #[test]
    fn clean_guest_has_no_findings() {
        let rs = RuleSet::embedded().unwrap();
        let m = SoftwareMatcher::new(&rs.denylist, BTreeSet::new()).unwrap();
        let pk = vec![
            "openssh-server".to_string(),
            "openjdk-11-jdk".to_string(),
            "matlab-support".to_string(),
            "python3".into(),
        ];
        let files = [
            file("/usr/bin/python3", 10),
            file(
                "/usr/local/MATLAB/MATLAB_Runtime/v912/bin/glnxa64/libmwmclmcrrt.so",
                10,
            ),
            file("/opt/intel/oneapi/compiler/latest/bin/icx", 10),
            file(
                "/opt/ibm/ILOG/CPLEX_Studio_Community2211/cplex/bin/x86-64_linux/cplex",
                10,
            ),
            file(
                "/opt/nvidia/hpc_sdk/Linux_x86_64/23.1/compilers/bin/nvc",
                10,
            ),
            file("/usr/share/doc/xmrig-notes.txt", 10),
        ];
        let f = check_software(&rs.policy, &m, &pk, &files, &mut no_hash, &[]);
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn packages_paths_and_allowlist() {
        let rs = RuleSet::embedded().unwrap();
        let m = SoftwareMatcher::new(&rs.denylist, BTreeSet::new()).unwrap();
        assert_eq!(m.match_package("XMRig"), ["xmrig"]);
        assert_eq!(
            m.match_path("/usr/local/MATLAB/R2023a/bin/matlab"),
            ["matlab"]
        );
        assert_eq!(m.match_path("/home/u/src/vasp.6.4/bin/vasp_std"), ["vasp"]);
        assert_eq!(
            m.match_path("/opt/ibm/ILOG/CPLEX_Studio2211/cplex/bin/x86-64_linux/cplex"),
            ["cplex"]
        );
        assert!(m
            .match_path("/usr/local/MATLAB/R2023a/bin/matlab2")
            .is_empty());
        let files = [
            file("/usr/local/MATLAB/R2023a/bin/matlab", 5),
            file("/opt/pgi/linux86-64/19.10/bin/pgcc", 5),
            file("/opt/pgi/linux86-64/20.4/bin/pgcc", 5),
            file("/home/alice/bin/xmrig", 5),
        ];
        let pk = vec!["ethminer".to_string()];
        let f = check_software(&rs.policy, &m, &pk, &files, &mut no_hash, &[]);
        assert_eq!(
            ids(&f),
            [
                "software.licensed",
                "software.licensed",
                "software.cloud-unsuitable",
                "software.cloud-unsuitable"
            ]
        );
        assert!(f[0].message.starts_with("MATLAB and Simulink"));
        assert_eq!(f[1].evidence, ["/opt/pgi/linux86-64/19.10/bin/pgcc"]);
        // Only under /home: the home rule removes it.
        let xm = f.iter().find(|f| f.message.starts_with("XMRig")).unwrap();
        assert_eq!(xm.fixed_by_sanitize.as_deref(), Some("home"));
        let eth = f
            .iter()
            .find(|f| f.message.starts_with("Ethminer"))
            .unwrap();
        assert_eq!(
            (eth.evidence.as_slice(), eth.fixed_by_sanitize.as_deref()),
            (["package ethminer".to_string()].as_slice(), None)
        );

        let m = SoftwareMatcher::new(&rs.denylist, ["matlab".to_string()].into()).unwrap();
        let f = check_software(&rs.policy, &m, &[], &files[..1], &mut no_hash, &[]);
        assert_eq!(ids(&f), ["software.allowlisted"]);
        assert_eq!(f[0].severity, crate::policy::Severity::Info);
    }

    #[test]
    fn hashes_are_computed_only_for_matching_sizes() {
        let rs = RuleSet::embedded().unwrap();
        let bin = b"pretend this is a licensed binary";
        let digest = blake3::hash(bin);
        let yaml = format!(
            "version: 1\nentries:\n  - id: thing\n    product: Thing\n    category: licensed\n    hashes:\n      - size: {}\n        blake3: {}\n    reason: r\nlicense_files:\n  paths: [/x]\n  max_bytes: 10\n",
            bin.len(),
            digest.to_hex()
        );
        let dl: Denylist = parse("t.yaml", &yaml).unwrap();
        let m = SoftwareMatcher::new(&dl, BTreeSet::new()).unwrap();
        assert!(m.wants_hash(bin.len() as u64) && !m.wants_hash(1));
        let files = [
            file("/opt/a", bin.len() as u64),
            file("/opt/b", 7),
            file("/opt/c", bin.len() as u64),
        ];
        let mut asked = Vec::new();
        let mut hash = |p: &str| {
            asked.push(p.to_string());
            Some(if p == "/opt/a" {
                *digest.as_bytes()
            } else {
                [0; 32]
            })
        };
        let f = check_software(&rs.policy, &m, &[], &files, &mut hash, &[]);
        assert_eq!(asked, ["/opt/a", "/opt/c"]);
        assert_eq!(ids(&f), ["software.licensed"]);
        assert!(f[0].evidence[0].starts_with("/opt/a (blake3"));
    }

    const FLEX: &str = "# MathWorks network licence\n\
SERVER lic.example.edu 001122334455 27000\n\
DAEMON MLM \"/usr/local/MATLAB/R2023a/etc/glnxa64/MLM\"\n\
INCREMENT MATLAB MLM 47 01-jan-2030 50 \\\n\
\tVENDOR_STRING=QQ SIGN=\"0123 4567 89AB CDEF 0123 4567 89AB CDEF\" \\\n\
\tSN=123456\n\
INCREMENT Simulink MLM 47 permanent uncounted SIGN=ABCDEF012345\n";

    #[test]
    fn flexnet_files_are_detected_and_redacted() {
        let d = detect_license(FLEX.as_bytes()).unwrap();
        assert_eq!(d.format, LicenseFormat::FlexNet);
        assert_eq!(d.vendors, ["MLM"]);
        assert_eq!(d.features, ["MATLAB", "Simulink"]);
        let joined: Vec<&str> = d.lines.iter().map(|(_, l)| l.as_str()).collect();
        assert!(
            joined.iter().any(|l| l.contains("SIGN=<redacted>")),
            "{joined:?}"
        );
        assert!(
            !joined.iter().any(|l| l.contains("0123 4567")),
            "{joined:?}"
        );
        assert_eq!(
            d.lines[2].0, 4,
            "continued line keeps its first line number"
        );
        // A client file: SERVER + USE_SERVER.
        let client = detect_license(b"SERVER lic.example.edu ANY 27000\nUSE_SERVER\n").unwrap();
        assert_eq!(client.format, LicenseFormat::FlexNet);
        // Legacy key instead of SIGN=.
        assert!(detect_license(b"FEATURE f vend 1.0 1-jan-2030 4 0123456789AB\n").is_some());
    }

    #[test]
    fn rlm_files_are_detected() {
        let t = b"HOST licserver 0a1b2c3d4e5f 5053\nISV reprise\nLICENSE reprise demo 1.0 permanent uncounted hostid=any sig=\"60P0450QAAH\"\n";
        let d = detect_license(t).unwrap();
        assert_eq!(d.format, LicenseFormat::Rlm);
        assert_eq!(d.vendors, ["reprise"]);
        assert_eq!(d.features, ["demo"]);
        assert!(d.lines.iter().all(|(_, l)| !l.contains("60P0450QAAH")));
        assert!(detect_license(b"HOST h 1 5053\nISV x\n").is_some());
    }

    #[test]
    fn look_alikes_are_not_licences() {
        for t in [
            &b"The FEATURE line names the product.\nA SERVER line is required.\n"[..],
            b"FEATURE f vend 1.0 1-jan-2030 4\n",
            b"INCREMENT f vend notaversion 1-jan-2030 4 SIGN=1234\n",
            b"LICENSE reprise demo 1.0 permanent uncounted\n",
            b"SERVER only\n",
            b"HOST h 1 5053\n",
            b"",
            b"\\\\\\\\\\\n\\\n",
            &[0xff, 0xfe, 0x00, 0x46][..],
        ] {
            assert!(
                detect_license(t).is_none(),
                "{:?}",
                String::from_utf8_lossy(t)
            );
        }
    }

    #[test]
    fn licence_files_join_their_product_or_stand_alone() {
        let rs = RuleSet::embedded().unwrap();
        let m = SoftwareMatcher::new(&rs.denylist, BTreeSet::new()).unwrap();
        assert!(m.is_license_candidate("/opt/foo/license.dat", 100));
        assert!(!m.is_license_candidate("/opt/foo/license.dat", 0));
        assert!(!m.is_license_candidate("/opt/foo/license.dat", 2 << 20));
        assert!(!m.is_license_candidate("/etc/passwd", 100));
        let mlm = FoundLicense {
            path: "/srv/network.lic".into(),
            detection: detect_license(FLEX.as_bytes()).unwrap(),
        };
        let other = FoundLicense {
            path: "/home/u/x.lic".into(),
            detection: detect_license(b"SERVER h ANY\nVENDOR zzz\n").unwrap(),
        };
        let f = check_software(&rs.policy, &m, &[], &[], &mut no_hash, &[mlm, other]);
        assert_eq!(ids(&f), ["software.license-file", "software.licensed"]);
        assert_eq!(f[0].fixed_by_sanitize.as_deref(), Some("home"));
        assert!(f[1].message.starts_with("MATLAB"));
        assert!(f[1].evidence[0].contains("FlexNet licence, vendor MLM"));
    }
}

#[cfg(test)]
mod random_input {
    use super::detect_license;
    use rand::{Rng, SeedableRng};

    #[test]
    fn random_licence_like_bytes_do_not_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let words: [&[u8]; 14] = [
            b"FEATURE ",
            b"INCREMENT ",
            b"SERVER ",
            b"VENDOR ",
            b"USE_SERVER",
            b"LICENSE ",
            b"HOST ",
            b"ISV ",
            b"SIGN=\"",
            b"sig=",
            b"1.0 ",
            b"1-jan-2030 ",
            b"\\\n",
            b"\n",
        ];
        for _ in 0..2000 {
            let mut b = Vec::new();
            for _ in 0..rng.random_range(0..40) {
                if rng.random_bool(0.7) {
                    b.extend_from_slice(words[rng.random_range(0..words.len())]);
                } else {
                    b.push(rng.random());
                }
            }
            let _ = detect_license(&b);
        }
    }
}
