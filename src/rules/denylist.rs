//! denylist.yaml: licensed and cloud-unsuitable software, where licence files
//! are looked for, and the cloud's allowlist.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::error::Problems;
use super::types::{is_ident, Blake3Hex, FormatVersion, Kind, NameGlob, PathGlob};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Denylist {
    pub version: FormatVersion,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Spanned<Kind>>,
    pub entries: Vec<DenyEntry>,
    pub license_files: LicenseFiles,
    #[serde(default)]
    pub allowlist: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    Licensed,
    CloudUnsuitable,
}

impl Category {
    /// The check that reports a match of this category.
    pub fn check_id(self) -> &'static str {
        match self {
            Category::Licensed => "software.licensed",
            Category::CloudUnsuitable => "software.cloud-unsuitable",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DenyEntry {
    pub id: Spanned<String>,
    pub product: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    pub category: Category,
    #[serde(default)]
    pub packages: Vec<NameGlob>,
    #[serde(default)]
    pub paths: Vec<PathGlob>,
    /// FlexNet vendor daemon names / RLM ISV names, compared ignoring case.
    #[serde(default)]
    pub license_vendors: Vec<String>,
    #[serde(default)]
    pub hashes: Vec<KnownFile>,
    pub reason: String,
}

/// A known binary: hashed only when a file has exactly this size.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KnownFile {
    pub size: u64,
    pub blake3: Blake3Hex,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseFiles {
    pub paths: Vec<PathGlob>,
    pub max_bytes: u64,
}

impl Denylist {
    pub fn entry(&self, id: &str) -> Option<&DenyEntry> {
        self.entries.iter().find(|e| e.id.value == id)
    }

    pub fn ids(&self) -> BTreeSet<String> {
        self.entries.iter().map(|e| e.id.value.clone()).collect()
    }

    pub(crate) fn validate(&self, file: &str, p: &mut Problems) {
        let mut seen = BTreeSet::new();
        for e in &self.entries {
            let loc = e.id.referenced;
            if !is_ident(&e.id.value) {
                p.at(
                    file,
                    loc,
                    format!(
                        "entry id `{}`: expected lower-case letters, digits and hyphens",
                        e.id.value
                    ),
                );
            }
            if !seen.insert(e.id.value.clone()) {
                p.at(
                    file,
                    loc,
                    format!("entry `{}` is defined twice", e.id.value),
                );
            }
            if e.packages.is_empty()
                && e.paths.is_empty()
                && e.hashes.is_empty()
                && e.license_vendors.is_empty()
            {
                p.at(file, loc, format!("entry `{}` can never match: give packages, paths, hashes or license_vendors", e.id.value));
            }
            if e.product.trim().is_empty() || e.reason.trim().is_empty() {
                p.at(
                    file,
                    loc,
                    format!(
                        "entry `{}`: product and reason must not be empty",
                        e.id.value
                    ),
                );
            }
            for v in &e.license_vendors {
                if v.is_empty()
                    || !v
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
                {
                    p.at(
                        file,
                        loc,
                        format!(
                            "entry `{}`: license vendor `{v}` is not a daemon name",
                            e.id.value
                        ),
                    );
                }
            }
        }
        check_allowlist(file, &self.allowlist, &seen, p);
        if self.license_files.max_bytes == 0 {
            p.whole(file, "license_files.max_bytes must be at least 1");
        }
    }
}

/// Every allowlist id must name a denylist entry (a typo would silently allow
/// nothing).
pub(crate) fn check_allowlist(
    file: &str,
    list: &[Spanned<String>],
    ids: &BTreeSet<String>,
    p: &mut Problems,
) {
    for a in list {
        if !ids.contains(&a.value) {
            p.at(
                file,
                a.referenced,
                format!(
                    "allowlist names `{}`, which is not a denylist entry id",
                    a.value
                ),
            );
        }
    }
}
