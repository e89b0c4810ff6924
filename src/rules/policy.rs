//! policy.yaml: accepted OS families and versions, filesystems, name and
//! description rules, post-boot script rules, and the severity of each check.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::error::Problems;
use super::types::{is_ident, Base, FileMode, FormatVersion, Kind, OsVersion};
use crate::policy::{ids, Severity};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub version: FormatVersion,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Spanned<Kind>>,
    pub os: OsPolicy,
    pub filesystems: FilesystemPolicy,
    pub image_name: NamePolicy,
    pub description: DescriptionPolicy,
    pub post_scripts: PostScriptsPolicy,
    #[serde(default)]
    pub checks: BTreeMap<CheckId, Level>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OsPolicy {
    pub families: Vec<OsFamily>,
    pub end_of_life: EolPolicy,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OsFamily {
    pub id: Spanned<String>,
    pub name: String,
    pub os_release_ids: Vec<String>,
    pub base: Base,
    pub enabled: bool,
    pub min_version: OsVersion,
    #[serde(default)]
    pub recommended: Vec<OsVersion>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EolPolicy {
    pub warn_days: u32,
    pub count_extended_support: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemPolicy {
    pub allowed: Vec<String>,
    #[serde(default)]
    pub flagged: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NamePolicy {
    pub max_length: u32,
    #[serde(default)]
    pub forbidden_chars: Vec<char>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DescriptionPolicy {
    pub min_length: u32,
    pub must_differ_from_name: bool,
    /// The most characters a description may have: the image service keeps it
    /// as a property, and Glance's properties hold at most 255.
    #[serde(default = "default_description_max")]
    pub max_length: u32,
    /// From this many characters on, a warning says the limit is near.
    #[serde(default = "default_description_warn")]
    pub warn_length: u32,
}

fn default_description_max() -> u32 {
    255
}

fn default_description_warn() -> u32 {
    230
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostScriptsPolicy {
    pub dir: String,
    pub first_line: String,
    pub mode: FileMode,
}

/// A check id known to imgsan (validated while reading, so a typo in the
/// `checks:` table is reported at its line).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct CheckId(pub String);

impl<'de> Deserialize<'de> for CheckId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if ids::lookup(&s).is_some() {
            Ok(CheckId(s))
        } else {
            let near: Vec<&str> = ids::CHECKS
                .iter()
                .map(|c| c.id)
                .filter(|id| id.split('.').next() == s.split('.').next())
                .collect();
            let hint = if near.is_empty() {
                "see rules/README.md for the list".to_string()
            } else {
                format!("checks in this group: {}", near.join(", "))
            };
            Err(serde::de::Error::custom(format!(
                "unknown check id `{s}` ({hint})"
            )))
        }
    }
}

/// A check's configured severity, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warning,
    Info,
    Off,
}

impl Level {
    pub fn severity(self) -> Option<Severity> {
        match self {
            Level::Error => Some(Severity::Error),
            Level::Warning => Some(Severity::Warning),
            Level::Info => Some(Severity::Info),
            Level::Off => None,
        }
    }
}

impl Policy {
    /// The severity of a check: the `checks:` table's, else the check's
    /// default; `None` when the check is off. An id imgsan does not know (a
    /// programming error in a caller) is reported as an error so it is seen.
    pub fn severity(&self, check_id: &str) -> Option<Severity> {
        match self.checks.get(&CheckId(check_id.to_string())) {
            Some(level) => level.severity(),
            None => Some(ids::lookup(check_id).map_or(Severity::Error, |c| c.default)),
        }
    }

    pub fn set_level(&mut self, check_id: &str, level: Level) {
        self.checks.insert(CheckId(check_id.to_string()), level);
    }

    pub fn family(&self, id: &str) -> Option<&OsFamily> {
        self.os.families.iter().find(|f| f.id.value == id)
    }

    /// The family whose os-release ids include `os_release_id`.
    pub fn family_of(&self, os_release_id: &str) -> Option<&OsFamily> {
        self.os
            .families
            .iter()
            .find(|f| f.os_release_ids.iter().any(|i| i == os_release_id))
    }

    pub(crate) fn validate(&self, file: &str, p: &mut Problems) {
        let mut seen_ids = BTreeMap::new();
        let mut seen_os_ids = BTreeMap::new();
        for fam in &self.os.families {
            let loc = fam.id.referenced;
            if !is_ident(&fam.id.value) {
                p.at(
                    file,
                    loc,
                    format!(
                        "family id `{}`: expected lower-case letters, digits and hyphens",
                        fam.id.value
                    ),
                );
            }
            if seen_ids.insert(fam.id.value.clone(), ()).is_some() {
                p.at(
                    file,
                    loc,
                    format!("family `{}` is defined twice", fam.id.value),
                );
            }
            if fam.os_release_ids.is_empty() {
                p.at(
                    file,
                    loc,
                    format!("family `{}`: os_release_ids is empty", fam.id.value),
                );
            }
            for r in &fam.os_release_ids {
                if let Some(other) = seen_os_ids.insert(r.clone(), fam.id.value.clone()) {
                    p.at(
                        file,
                        loc,
                        format!(
                            "os-release id `{r}` belongs to both `{other}` and `{}`",
                            fam.id.value
                        ),
                    );
                }
            }
            for r in &fam.recommended {
                if r.key() < fam.min_version.key() {
                    p.at(
                        file,
                        loc,
                        format!(
                            "family `{}`: recommended {r} is older than min_version {}",
                            fam.id.value, fam.min_version
                        ),
                    );
                }
            }
        }
        if self.filesystems.allowed.is_empty() {
            p.whole(file, "filesystems.allowed is empty: no image could pass");
        }
        for t in &self.filesystems.flagged {
            // Flagged types are accepted with a warning (fs.legacy); a type in
            // both lists would be both clean and flagged.
            if self.filesystems.allowed.contains(t) {
                p.whole(
                    file,
                    format!(
                        "filesystem `{t}` is in both filesystems.allowed and filesystems.flagged"
                    ),
                );
            }
        }
        if self.image_name.max_length == 0 {
            p.whole(file, "image_name.max_length must be at least 1");
        }
        let d = &self.description;
        if d.max_length < d.min_length.max(1) {
            p.whole(
                file,
                format!(
                    "description.max_length ({}) is below description.min_length ({})",
                    d.max_length, d.min_length
                ),
            );
        }
        if d.warn_length > d.max_length {
            p.whole(
                file,
                format!(
                    "description.warn_length ({}) is above description.max_length ({})",
                    d.warn_length, d.max_length
                ),
            );
        }
        if !self.post_scripts.dir.starts_with('/') {
            p.whole(
                file,
                format!(
                    "post_scripts.dir `{}` is not an absolute path",
                    self.post_scripts.dir
                ),
            );
        }
        if !self.post_scripts.first_line.starts_with("#!") {
            p.whole(
                file,
                format!(
                    "post_scripts.first_line `{}` is not an interpreter line (#!...)",
                    self.post_scripts.first_line
                ),
            );
        }
    }
}
