//! featured-names.yaml, and the plain-text name lists given with
//! `--featured-names FILE` and `--existing-names FILE`.

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::error::Problems;
use super::types::{FormatVersion, Kind};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturedNames {
    pub version: FormatVersion,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Spanned<Kind>>,
    pub names: Vec<Spanned<String>>,
}

impl FeaturedNames {
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|n| n.value.as_str())
    }

    pub(crate) fn validate(&self, file: &str, p: &mut Problems) {
        for n in &self.names {
            if n.value.trim().is_empty() {
                p.at(file, n.referenced, "empty image name");
            }
        }
    }
}

/// Reads a plain name list: one name per line; blank lines and lines starting
/// with `#` are skipped; surrounding spaces are trimmed.
pub fn parse_name_list(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// The form names are compared in: lower case, and every run of spaces,
/// hyphens, underscores and periods made one space. "Featured-Ubuntu20" and
/// "featured ubuntu20" are the same name to a person choosing from a list.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending_sep = false;
    for ch in name.trim().chars() {
        if ch.is_whitespace() || matches!(ch, '-' | '_' | '.') {
            pending_sep = !out.is_empty();
        } else {
            if pending_sep {
                out.push(' ');
                pending_sep = false;
            }
            out.extend(ch.to_lowercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_normalization() {
        assert_eq!(parse_name_list("# c\n a \n\nb\n"), ["a", "b"]);
        assert_eq!(normalize_name("  Featured-Ubuntu20 "), "featured ubuntu20");
        assert_eq!(
            normalize_name("Ubuntu 20.04  Devel_and--Docker"),
            "ubuntu 20 04 devel and docker"
        );
        assert_eq!(normalize_name("-x-"), "x");
    }
}
