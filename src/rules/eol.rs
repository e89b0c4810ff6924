//! eol.yaml: the dated end-of-life table.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::date::Date;
use super::error::Problems;
use super::types::{FormatVersion, Kind, OsVersion};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EolTable {
    pub version: FormatVersion,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Spanned<Kind>>,
    pub releases: Vec<EolRelease>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EolRelease {
    /// A family id of policy.yaml.
    pub family: Spanned<String>,
    pub version: OsVersion,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codename: Option<String>,
    pub released: Date,
    /// Last day of standard (free) security support.
    pub standard_end: Date,
    /// Last day of paid extended support, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_end: Option<Date>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl EolTable {
    /// The entry for a guest release: an exact major.minor entry first, then a
    /// major-only entry.
    pub fn find(&self, family: &str, major: u32, minor: Option<u32>) -> Option<&EolRelease> {
        let of_family = || {
            self.releases
                .iter()
                .filter(move |r| r.family.value == family)
        };
        of_family()
            .find(|r| r.version.minor.is_some() && r.version.covers(major, minor))
            .or_else(|| of_family().find(|r| r.version.minor.is_none() && r.version.major == major))
    }

    pub(crate) fn validate(&self, file: &str, families: &BTreeSet<String>, p: &mut Problems) {
        let mut seen = BTreeSet::new();
        for r in &self.releases {
            let loc = r.family.referenced;
            if !families.contains(&r.family.value) {
                let known: Vec<&str> = families.iter().map(String::as_str).collect();
                p.at(
                    file,
                    loc,
                    format!(
                        "unknown family `{}` (policy families: {})",
                        r.family.value,
                        known.join(", ")
                    ),
                );
            }
            if !seen.insert((r.family.value.clone(), r.version.to_string())) {
                p.at(
                    file,
                    loc,
                    format!("{} {} is listed twice", r.family.value, r.version),
                );
            }
            if r.standard_end < r.released {
                p.at(
                    file,
                    loc,
                    format!(
                        "{} {}: standard_end {} is before released {}",
                        r.family.value, r.version, r.standard_end, r.released
                    ),
                );
            }
            if let Some(x) = r.extended_end {
                if x < r.standard_end {
                    p.at(
                        file,
                        loc,
                        format!(
                            "{} {}: extended_end {x} is before standard_end {}",
                            r.family.value, r.version, r.standard_end
                        ),
                    );
                }
            }
        }
    }
}
