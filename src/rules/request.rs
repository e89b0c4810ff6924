//! The imaging request file: the fields of the cloud's "Request Imaging" form.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::denylist::check_allowlist;
use super::error::Problems;
use super::types::{FormatVersion, Kind, PathGlob, Text};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub version: FormatVersion,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Spanned<Kind>>,
    #[serde(default)]
    pub name: Option<Spanned<Text>>,
    #[serde(default)]
    pub description: Option<Spanned<Text>>,
    #[serde(default)]
    pub installed_software: Vec<InstalledSoftware>,
    #[serde(default)]
    pub exceptions: Vec<Exception>,
    #[serde(default)]
    pub exclude: Vec<PathGlob>,
    #[serde(default)]
    pub allowlist: Vec<Spanned<String>>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub visibility: Option<Spanned<Visibility>>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub certify_no_restricted_software: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstalledSoftware {
    pub name: String,
    /// Text, not a number: `1.10` unquoted would be read as 1.1.
    #[serde(default)]
    pub version: Option<Text>,
    #[serde(default)]
    pub path: Option<String>,
}

/// A managed-file exception: skip sanitize rule `rule`, for `reason`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Exception {
    pub rule: Spanned<String>,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Visibility {
    Public,
    Private,
    SpecificUsers,
}

impl Request {
    /// The image name, if the request gives one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_ref().map(|n| n.value.as_str())
    }

    /// The description, if the request gives one.
    pub fn description(&self) -> Option<&str> {
        self.description.as_ref().map(|d| d.value.as_str())
    }

    /// Whether the request skips sanitize rule `id`.
    pub fn excepts(&self, rule_id: &str) -> Option<&Exception> {
        self.exceptions.iter().find(|e| e.rule.value == rule_id)
    }

    pub(crate) fn validate(
        &self,
        file: &str,
        rule_ids: &BTreeSet<String>,
        deny_ids: &BTreeSet<String>,
        p: &mut Problems,
    ) {
        // A name is one line: the Text type lets tabs and newlines through for
        // the description's sake.
        if let Some(n) = &self.name {
            if n.value.as_str().contains(['\n', '\t']) {
                p.at(
                    file,
                    n.referenced,
                    "the image name holds a tab or a line break; a name is one line",
                );
            }
        }
        for e in &self.exceptions {
            if !rule_ids.contains(&e.rule.value) {
                p.at(
                    file,
                    e.rule.referenced,
                    format!(
                        "exception names rule `{}`, which is not in the sanitize rules (known: {})",
                        e.rule.value,
                        rule_ids
                            .iter()
                            .map(String::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            if e.reason.trim().is_empty() {
                p.at(
                    file,
                    e.rule.referenced,
                    format!("exception for `{}` needs a reason", e.rule.value),
                );
            }
        }
        check_allowlist(file, &self.allowlist, deny_ids, p);
        match &self.visibility {
            Some(v) if v.value == Visibility::SpecificUsers && self.users.is_empty() => {
                p.at(
                    file,
                    v.referenced,
                    "visibility specific-users needs a `users:` list",
                );
            }
            Some(v) if v.value != Visibility::SpecificUsers && !self.users.is_empty() => {
                p.at(
                    file,
                    v.referenced,
                    "`users:` is only meaningful with visibility: specific-users",
                );
            }
            None if !self.users.is_empty() => {
                p.whole(
                    file,
                    "`users:` is only meaningful with visibility: specific-users",
                );
            }
            _ => {}
        }
        for s in &self.installed_software {
            if let Some(path) = &s.path {
                if !path.starts_with('/') {
                    p.whole(
                        file,
                        format!(
                            "installed_software `{}`: path `{path}` is not absolute",
                            s.name
                        ),
                    );
                }
            }
        }
    }
}
