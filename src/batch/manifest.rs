//! The batch manifest (`kind: batch`): which images a batch sanitizes, under
//! which names, with which options. Read strictly, like the rules files (unknown
//! keys, duplicate keys and wrong types are errors at their line and column),
//! then checked as a whole: entry names must give distinct file names, rule ids
//! must exist, request files must validate.
//!
//! Owns reading and resolving the manifest; it must not run anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::rules::error::Problems;
use crate::rules::types::FormatVersion;
use crate::rules::{Date, Kind, Problem, RuleSet, RulesError};

/// Longest file stem an entry's name may give: its files add at most
/// ".report.json.imgsan-tmp-NNNNNNNNNN" and a name must fit in 255 bytes.
const MAX_STEM: usize = 200;

/// Most entries one manifest may hold.
pub const MAX_ENTRIES: usize = 100_000;

/// Entry fields that `defaults:` may set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    request: Option<Spanned<String>>,
    #[serde(default)]
    force: Option<bool>,
    #[serde(default)]
    shrink: Option<bool>,
    #[serde(default)]
    disable: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    keep_user: Option<Vec<String>>,
    #[serde(default)]
    manifest: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    image: Spanned<String>,
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    request: Option<Spanned<String>>,
    #[serde(default)]
    force: Option<bool>,
    #[serde(default)]
    shrink: Option<bool>,
    #[serde(default)]
    disable: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    keep_user: Option<Vec<String>>,
    #[serde(default)]
    manifest: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    #[allow(dead_code)] // checked while read: only version 1 exists
    version: Option<FormatVersion>,
    kind: Spanned<Kind>,
    #[serde(default)]
    rules: Option<Spanned<String>>,
    #[serde(default)]
    today: Option<Date>,
    #[serde(default)]
    defaults: Defaults,
    images: Vec<RawEntry>,
}

/// One image of the batch, with the defaults applied and paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 0-based position in `images:` (what `--index` names).
    pub index: usize,
    /// The image name, as the policy checks it.
    pub name: String,
    /// The name made safe as a file name: NAME of OUTDIR/NAME.raw.
    pub stem: String,
    /// The `image:` value as written.
    pub image: String,
    /// The image file, resolved against the manifest's folder.
    pub path: PathBuf,
    pub description: Option<String>,
    pub request: Option<PathBuf>,
    pub force: bool,
    pub shrink: bool,
    pub disable: Vec<String>,
    pub keep_user: Vec<String>,
    /// Write OUTDIR/NAME.manifest.
    pub manifest: bool,
}

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The manifest file, absolute.
    pub path: PathBuf,
    /// Its folder, which relative paths are resolved against.
    pub dir: PathBuf,
    /// `rules:`, resolved.
    pub rules_dir: Option<PathBuf>,
    /// `today:`.
    pub today: Option<Date>,
    pub entries: Vec<Entry>,
}

/// NAME made into a file stem: every byte other than ASCII letters, digits and
/// `. _ + -` becomes `_`, and so does a leading dot (no hidden outputs).
pub fn file_stem(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with('.') {
        s.replace_range(0..1, "_");
    }
    s
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Reads and validates the manifest at `path`.
pub fn load(path: &Path) -> Result<Manifest, RulesError> {
    let text = std::fs::read_to_string(path).map_err(|source| RulesError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// `imgsan rules check` on a manifest.
pub fn check_text(path: &Path, text: &str) -> Result<(), RulesError> {
    parse(path, text).map(|_| ())
}

/// Parses and validates manifest text; `path` names it in errors and is the
/// base of its relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Manifest, RulesError> {
    let file = path.display().to_string();
    let raw: RawManifest = crate::rules::parse(&file, text)?;
    let path = absolute(path);
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut p = Problems::default();
    if raw.kind.value != Kind::Batch {
        p.at(
            &file,
            raw.kind.referenced,
            format!("this is a {} file, but it is read as batch", raw.kind.value),
        );
    }
    if raw.images.is_empty() {
        p.whole(&file, "`images:` lists no image");
    }
    if raw.images.len() > MAX_ENTRIES {
        p.whole(
            &file,
            format!(
                "{} images: one manifest holds at most {MAX_ENTRIES}",
                raw.images.len()
            ),
        );
    }
    let rules_dir = raw.rules.as_ref().map(|r| dir.join(&r.value));
    // The rules the entries run with: their rule ids and request files are
    // checked against them.
    let rules = match RuleSet::load(rules_dir.as_deref(), &[]) {
        Ok(r) => Some(r),
        Err(RulesError::Io { path: bad, source }) => {
            let loc = raw.rules.as_ref().map(|r| r.referenced);
            let msg = format!("rules directory {}: {source}", bad.display());
            match loc {
                Some(l) => p.at(&file, l, msg),
                None => p.whole(&file, msg),
            }
            None
        }
        Err(RulesError::Invalid(list)) => {
            p.list.extend(list);
            None
        }
    };
    let d = &raw.defaults;
    let mut stems: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    let mut entries = Vec::with_capacity(raw.images.len().min(MAX_ENTRIES));
    let mut requests_checked: BTreeMap<PathBuf, ()> = BTreeMap::new();
    for (index, e) in raw.images.iter().enumerate() {
        let name = e.name.value.trim().to_string();
        let stem = file_stem(&name);
        if name.is_empty() {
            p.at(&file, e.name.referenced, "the entry's name is empty");
        } else if stem.len() > MAX_STEM {
            p.at(
                &file,
                e.name.referenced,
                format!("the name is {} bytes long: at most {MAX_STEM}", stem.len()),
            );
        } else if let Some((other, line)) = stems.get(&stem) {
            p.at(
                &file,
                e.name.referenced,
                format!(
                    "`{name}` gives the output names {stem}.* of entry {other} (line {line}): names must differ in letters, digits or . _ + -"
                ),
            );
        } else {
            stems.insert(stem.clone(), (index, e.name.referenced.line()));
        }
        if e.image.value.trim().is_empty() {
            p.at(&file, e.image.referenced, "the entry's image is empty");
        }
        let request = e.request.as_ref().or(d.request.as_ref());
        let request_path = request.map(|r| dir.join(&r.value));
        if let (Some(r), Some(rp), Some(rules)) = (request, &request_path, &rules) {
            if requests_checked.insert(rp.clone(), ()).is_none() {
                match rules.load_request(rp) {
                    Ok(_) => {}
                    Err(RulesError::Io { source, .. }) => p.at(
                        &file,
                        r.referenced,
                        format!("request file {}: {source}", rp.display()),
                    ),
                    Err(RulesError::Invalid(list)) => p.list.extend(list),
                }
            }
        }
        let disable = e.disable.as_ref().or(d.disable.as_ref());
        if let (Some(list), Some(rules)) = (disable, &rules) {
            let ids = rules.sanitize.ids();
            for id in list {
                if !ids.contains(&id.value) {
                    p.at(
                        &file,
                        id.referenced,
                        format!(
                            "`{}` is not a sanitize rule (`imgsan rules show sanitize` lists them)",
                            id.value
                        ),
                    );
                }
            }
        }
        entries.push(Entry {
            index,
            name,
            stem,
            image: e.image.value.clone(),
            path: dir.join(&e.image.value),
            description: e.description.clone().or_else(|| d.description.clone()),
            request: request_path,
            force: e.force.or(d.force).unwrap_or(false),
            shrink: e.shrink.or(d.shrink).unwrap_or(false),
            disable: disable
                .map(|l| l.iter().map(|s| s.value.clone()).collect())
                .unwrap_or_default(),
            keep_user: e
                .keep_user
                .clone()
                .or_else(|| d.keep_user.clone())
                .unwrap_or_default(),
            manifest: e.manifest.or(d.manifest).unwrap_or(false),
        });
    }
    p.into_result()?;
    Ok(Manifest {
        path,
        dir,
        rules_dir,
        today: raw.today,
        entries,
    })
}

/// A problem about the manifest as a whole (for callers outside this module).
pub fn problem(manifest: &Path, message: impl Into<String>) -> RulesError {
    RulesError::Invalid(vec![Problem {
        file: manifest.display().to_string(),
        line: 0,
        column: 0,
        message: message.into(),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Manifest, RulesError> {
        parse(Path::new("/m/batch.yaml"), text)
    }

    #[test]
    fn defaults_apply_and_entries_override() {
        let m = parse_str(
            "kind: batch\ndefaults:\n  force: true\n  disable: [var-log]\n  description: d\nimages:\n  - image: a.raw\n    name: A one\n  - image: /abs/b.qcow2\n    name: B\n    force: false\n    disable: []\n",
        )
        .unwrap();
        assert_eq!(m.dir, Path::new("/m"));
        let a = &m.entries[0];
        assert_eq!((a.stem.as_str(), a.force), ("A_one", true));
        assert_eq!(a.path, Path::new("/m/a.raw"));
        assert_eq!(a.disable, vec!["var-log".to_string()]);
        assert_eq!(a.description.as_deref(), Some("d"));
        let b = &m.entries[1];
        assert_eq!(b.path, Path::new("/abs/b.qcow2"));
        assert!(!b.force && b.disable.is_empty());
    }

    #[test]
    fn problems_have_line_and_column() {
        let e = parse_str(
            "kind: batch\nimages:\n  - image: a.raw\n    name: x/y\n  - image: b.raw\n    name: x y\n    disable: [no-such-rule]\n",
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("/m/batch.yaml:6:11: `x y` gives the output names x_y.*"),
            "{text}"
        );
        assert!(
            text.contains("/m/batch.yaml:7:15: `no-such-rule` is not a sanitize rule"),
            "{text}"
        );
        let e = parse_str("kind: batch\nimages:\n  - image: a.raw\n    nmae: x\n").unwrap_err();
        assert!(e.to_string().contains("/m/batch.yaml:4:"), "{e}");
        let e = parse_str("kind: request\nimages: []\n").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("read as batch") && text.contains("lists no image"),
            "{text}"
        );
    }

    #[test]
    fn stems_are_safe_file_names() {
        assert_eq!(file_stem(".hidden"), "_hidden");
        assert_eq!(file_stem("a/../b"), "a_.._b");
        assert_eq!(file_stem("Ubuntu 22.04 (GPU)"), "Ubuntu_22.04__GPU_");
        assert_eq!(file_stem("é"), "_");
    }
}
