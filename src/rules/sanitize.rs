//! sanitize.yaml: the rule set `imgsan sanitize` applies to the guest tree.
//! This module is the model and its validation; applying rules to a tree is
//! the sanitize layer's job.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::error::Problems;
use super::templates::Templates;
use super::types::{is_ident, Base, FormatVersion, Kind, PathGlob};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SanitizeRules {
    pub version: FormatVersion,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Spanned<Kind>>,
    pub rules: Vec<SanitizeRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    /// What the imaging guidelines require.
    Required,
    /// Cloud hygiene: on by default, each rule can be turned off.
    Hygiene,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Delete a directory's contents, keep the directory, its mode and owner.
    EmptyDir,
    /// Delete matching paths (directories with their contents).
    Delete,
    /// Make matching regular files empty, keeping owner and mode.
    Truncate,
    /// Overwrite matching regular files with a template.
    Replace,
    /// A built-in edit.
    Transform,
}

/// The built-in transforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transform {
    /// passwd, shadow, group, gshadow, subuid, subgid: drop human accounts,
    /// lock the remaining password hashes.
    Accounts,
    /// Keep entries that resolve in the image, and swap; drop the rest.
    Fstab,
    /// Delete host keys; make sure they are regenerated at first boot.
    SshHostKeys,
    /// Truncate logs, delete rotated ones, empty the journal.
    VarLog,
    /// Keep a symlink; reset a regular file from the template.
    ResolvConf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SanitizeRule {
    pub id: Spanned<String>,
    pub group: Group,
    pub enabled: bool,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<Transform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Spanned<String>>,
    pub paths: Vec<PathGlob>,
    /// Empty: every base.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bases: Vec<Base>,
    #[serde(default)]
    pub only_regular_files: bool,
    /// For `replace`: create the file when it does not exist.
    #[serde(default)]
    pub create: bool,
    pub description: String,
}

impl SanitizeRule {
    pub fn applies_to(&self, base: Base) -> bool {
        self.bases.is_empty() || self.bases.contains(&base)
    }
}

impl SanitizeRules {
    pub fn rule(&self, id: &str) -> Option<&SanitizeRule> {
        self.rules.iter().find(|r| r.id.value == id)
    }

    pub fn ids(&self) -> BTreeSet<String> {
        self.rules.iter().map(|r| r.id.value.clone()).collect()
    }

    /// Whether rule `id` exists and is enabled.
    pub fn enabled(&self, id: &str) -> bool {
        self.rule(id).is_some_and(|r| r.enabled)
    }

    /// Turns a rule on or off (the CLI's `--skip-rule`, tests).
    pub fn set_enabled(&mut self, id: &str, on: bool) -> bool {
        match self.rules.iter_mut().find(|r| r.id.value == id) {
            Some(r) => {
                r.enabled = on;
                true
            }
            None => false,
        }
    }

    pub(crate) fn validate(&self, file: &str, templates: &Templates, p: &mut Problems) {
        let mut seen = BTreeSet::new();
        for r in &self.rules {
            let id = &r.id.value;
            let loc = r.id.referenced;
            if !is_ident(id) {
                p.at(
                    file,
                    loc,
                    format!("rule id `{id}`: expected lower-case letters, digits and hyphens"),
                );
            }
            if !seen.insert(id.clone()) {
                p.at(file, loc, format!("rule `{id}` is defined twice"));
            }
            if r.paths.is_empty() {
                p.at(file, loc, format!("rule `{id}` has no paths"));
            }
            match (r.action, r.transform) {
                (Action::Transform, None) => p.at(file, loc, format!("rule `{id}`: action transform needs `transform:` (accounts, fstab, ssh-host-keys, var-log, resolv-conf)")),
                (Action::Transform, Some(_)) => {}
                (a, Some(_)) => p.at(file, loc, format!("rule `{id}`: `transform:` is only for action transform, not {}", action_name(a))),
                _ => {}
            }
            let wants_template =
                matches!(r.action, Action::Replace) || r.transform == Some(Transform::ResolvConf);
            match (&r.template, wants_template) {
                (None, true) => p.at(file, loc, format!("rule `{id}`: needs `template:` (a file name in rules/templates/)")),
                (Some(t), false) => p.at(file, t.referenced, format!("rule `{id}`: `template:` is only for replace and the resolv-conf transform")),
                (Some(t), true) => {
                    for base in Base::ALL {
                        if r.applies_to(base) && templates.get(base, &t.value).is_none() {
                            p.at(file, t.referenced, format!(
                                "unknown template `{}` for {} guests: no templates/{}/{0} or templates/common/{0} (known: {})",
                                t.value, base.as_str(), base.as_str(), templates.names().join(", ")
                            ));
                        }
                    }
                }
                (None, false) => {}
            }
            if r.create && r.action != Action::Replace {
                p.at(
                    file,
                    loc,
                    format!("rule `{id}`: `create:` is only for action replace"),
                );
            }
            if r.action == Action::Replace && r.create && r.paths.iter().any(|g| !g.is_literal()) {
                p.at(
                    file,
                    loc,
                    format!("rule `{id}`: `create: true` needs literal paths, not globs"),
                );
            }
            if r.action == Action::EmptyDir && r.paths.iter().any(|g| g.as_str() == "/") {
                p.at(
                    file,
                    loc,
                    format!("rule `{id}`: emptying / would delete the whole guest"),
                );
            }
            if r.action == Action::Delete
                && r.paths
                    .iter()
                    .any(|g| g.as_str() == "/" || g.as_str() == "/**")
            {
                p.at(
                    file,
                    loc,
                    format!("rule `{id}`: deleting / would delete the whole guest"),
                );
            }
        }
    }
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::EmptyDir => "empty-dir",
        Action::Delete => "delete",
        Action::Truncate => "truncate",
        Action::Replace => "replace",
        Action::Transform => "transform",
    }
}
