//! OS checks: accepted family and minimum version, recommended releases, and
//! end of life from the dated table.

use serde::{Deserialize, Serialize};

use crate::rules::{Date, EolTable, OsFamily, Policy};

use super::{finding, Finding};

pub const IDS: &[&str] = &[
    "os.unknown",
    "os.unsupported",
    "os.not-recommended",
    "os.eol",
    "os.eol-soon",
    "os.eol-unknown",
];

/// What the policy needs to know about the guest OS (filled from os-release and
/// friends by the inspection layer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsFacts {
    /// os-release `ID` ("ubuntu", "centos", "rocky", ...).
    pub id: String,
    /// os-release `ID_LIKE`, split.
    pub id_like: Vec<String>,
    pub version_major: Option<u32>,
    pub version_minor: Option<u32>,
    pub pretty_name: Option<String>,
    /// The file the facts came from (evidence), e.g. "/etc/os-release".
    pub source: Option<String>,
}

impl OsFacts {
    fn version_text(&self) -> String {
        match (self.version_major, self.version_minor) {
            (Some(a), Some(b)) if self.id == "ubuntu" => format!("{a}.{b:02}"),
            (Some(a), Some(b)) => format!("{a}.{b}"),
            (Some(a), None) => a.to_string(),
            _ => "(unknown version)".into(),
        }
    }
    /// PRETTY_NAME ("Ubuntu 16.04.7 LTS"), else the family's name and the
    /// version.
    fn label(&self, family: Option<&OsFamily>) -> String {
        self.pretty_name.clone().unwrap_or_else(|| {
            let name = family.map_or(self.id.as_str(), |f| f.name.as_str());
            format!("{name} {}", self.version_text())
        })
    }
    fn evidence(&self) -> Vec<String> {
        self.source.iter().cloned().collect()
    }
}

fn accepted_list(policy: &Policy) -> String {
    let v: Vec<String> = policy
        .os
        .families
        .iter()
        .filter(|f| f.enabled)
        .map(|f| format!("{} {}+", f.name, f.min_version))
        .collect();
    v.join(", ")
}

/// The release of `family` that is out on `today` and supported the longest
/// (an LTS rather than a newer short-lived release), for hints.
fn newest_supported(eol: &EolTable, family: &OsFamily, today: Date) -> Option<String> {
    eol.releases
        .iter()
        .filter(|r| {
            r.family.value == family.id.value && r.released <= today && r.standard_end >= today
        })
        .max_by_key(|r| (r.standard_end, r.version.key()))
        .map(|r| format!("{} {}", family.name, r.version))
}

/// Runs the OS checks. `os` is `None` when inspection found no OS at all.
pub fn check_os(
    policy: &Policy,
    eol: &EolTable,
    os: Option<&OsFacts>,
    today: Date,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(os) = os.filter(|o| !o.id.is_empty()) else {
        out.extend(finding(policy, "os.unknown", "the guest's operating system could not be identified").map(|f| {
            f.hint("the image needs /etc/os-release (or /etc/redhat-release, /etc/lsb-release) on its root filesystem")
        }));
        return out;
    };
    let Some(family) = policy.family_of(&os.id) else {
        let like = if os.id_like.is_empty() {
            String::new()
        } else {
            format!(" (like {})", os.id_like.join(", "))
        };
        out.extend(
            finding(
                policy,
                "os.unsupported",
                format!(
                    "{}{like} is not an accepted OS; accepted: {}",
                    os.label(None),
                    accepted_list(policy)
                ),
            )
            .map(|f| {
                f.with_evidence(os.evidence())
                    .hint("rebuild the image from an accepted distribution")
            }),
        );
        return out;
    };
    if !family.enabled {
        out.extend(
            finding(
                policy,
                "os.unsupported",
                format!(
                    "{} is not accepted by this cloud; accepted: {}",
                    family.name,
                    accepted_list(policy)
                ),
            )
            .map(|f| {
                f.with_evidence(os.evidence())
                    .hint("rebuild the image from an accepted distribution")
            }),
        );
        return out;
    }
    let Some(major) = os.version_major else {
        out.extend(
            finding(
                policy,
                "os.unknown",
                format!("the version of {} could not be determined", family.name),
            )
            .map(|f| {
                f.with_evidence(os.evidence())
                    .hint("os-release should carry VERSION_ID")
            }),
        );
        return out;
    };
    let minor = os.version_minor;
    let hint_upgrade = |what: &str| match newest_supported(eol, family, today) {
        Some(n) => format!("{what} (for example to {n})"),
        None => what.to_string(),
    };

    if (major, minor.unwrap_or(0)) < family.min_version.key() {
        out.extend(
            finding(
                policy,
                "os.unsupported",
                format!(
                    "{} is older than the oldest accepted release, {} {}",
                    os.label(Some(family)),
                    family.name,
                    family.min_version
                ),
            )
            .map(|f| {
                f.with_evidence(os.evidence())
                    .hint(hint_upgrade("upgrade the release"))
            }),
        );
        // Too old for the policy: end-of-life details would only repeat it.
        return out;
    }

    if !family.recommended.is_empty() && !family.recommended.iter().any(|r| r.covers(major, minor))
    {
        let rec: Vec<String> = family
            .recommended
            .iter()
            .map(|r| format!("{} {r}", family.name))
            .collect();
        out.extend(
            finding(
                policy,
                "os.not-recommended",
                format!(
                    "{} is not a recommended release ({})",
                    os.label(Some(family)),
                    rec.join(", ")
                ),
            )
            .map(|f| f.with_evidence(os.evidence())),
        );
    }

    match eol.find(&family.id.value, major, minor) {
        None => {
            out.extend(
                finding(
                    policy,
                    "os.eol-unknown",
                    format!(
                        "the end-of-life table has no entry for {} {}",
                        family.name,
                        os.version_text()
                    ),
                )
                .map(|f| {
                    f.with_evidence(os.evidence())
                        .hint("add the release to rules/eol.yaml")
                }),
            );
        }
        Some(rel) => {
            let counted_extended =
                policy.os.end_of_life.count_extended_support && rel.extended_end.is_some();
            let end = if counted_extended {
                rel.extended_end.unwrap_or(rel.standard_end)
            } else {
                rel.standard_end
            };
            let what = if counted_extended {
                "extended support"
            } else {
                "standard support"
            };
            let mut ev = os.evidence();
            ev.push(format!(
                "{} {}: {what} ends {end}",
                family.name, rel.version
            ));
            if today > end {
                let esm = match rel.extended_end {
                    Some(x) if !counted_extended && x >= today => format!(
                        "; paid extended support runs until {x}, which this policy does not count"
                    ),
                    _ => String::new(),
                };
                out.extend(
                    finding(
                        policy,
                        "os.eol",
                        format!(
                            "{} reached the end of {what} on {end}{esm}",
                            os.label(Some(family))
                        ),
                    )
                    .map(|f| {
                        f.with_evidence(ev).hint(hint_upgrade(
                            "upgrade to a supported release before imaging",
                        ))
                    }),
                );
            } else {
                let left = today.days_until(end);
                if left <= i64::from(policy.os.end_of_life.warn_days) {
                    out.extend(
                        finding(
                            policy,
                            "os.eol-soon",
                            format!(
                                "{} reaches the end of {what} on {end}, in {left} days",
                                os.label(Some(family))
                            ),
                        )
                        .map(|f| f.with_evidence(ev).hint(hint_upgrade("plan an upgrade"))),
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Level, RuleSet};

    fn os(id: &str, major: u32, minor: Option<u32>) -> OsFacts {
        OsFacts {
            id: id.into(),
            version_major: Some(major),
            version_minor: minor,
            source: Some("/etc/os-release".into()),
            ..Default::default()
        }
    }
    fn d(s: &str) -> Date {
        Date::parse(s).unwrap()
    }
    fn ids(f: &[Finding]) -> Vec<&str> {
        f.iter().map(|f| f.check_id.as_str()).collect()
    }

    #[test]
    fn supported_recommended_release_in_support_is_clean() {
        let rs = RuleSet::embedded().unwrap();
        let f = check_os(
            &rs.policy,
            &rs.eol,
            Some(&os("ubuntu", 20, Some(4))),
            d("2021-06-01"),
        );
        assert!(f.is_empty(), "{f:?}");
        let f = check_os(
            &rs.policy,
            &rs.eol,
            Some(&os("centos", 7, Some(9))),
            d("2022-01-01"),
        );
        assert!(f.is_empty(), "{f:?}");
        let f = check_os(
            &rs.policy,
            &rs.eol,
            Some(&os("rocky", 9, Some(4))),
            d("2026-11-22"),
        );
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn unknown_and_unsupported() {
        let rs = RuleSet::embedded().unwrap();
        let (p, e) = (&rs.policy, &rs.eol);
        let today = d("2021-06-01");
        assert_eq!(ids(&check_os(p, e, None, today)), ["os.unknown"]);
        let mut no_version = os("ubuntu", 0, None);
        no_version.version_major = None;
        assert_eq!(
            ids(&check_os(p, e, Some(&no_version), today)),
            ["os.unknown"]
        );
        let f = check_os(p, e, Some(&os("debian", 11, None)), today);
        assert_eq!(ids(&f), ["os.unsupported"]);
        assert!(f[0].message.contains("Ubuntu 16.04+"), "{}", f[0].message);
        // Too old: 14.04 and CentOS 6; RHEL rebuilds start at 8.
        let f = check_os(p, e, Some(&os("ubuntu", 14, Some(4))), today);
        assert_eq!(ids(&f), ["os.unsupported"]);
        assert!(
            f[0].fix_hint.as_deref().unwrap().contains("Ubuntu 20.04"),
            "{:?}",
            f[0].fix_hint
        );
        assert_eq!(
            ids(&check_os(p, e, Some(&os("centos", 6, Some(10))), today)),
            ["os.unsupported"]
        );
        assert_eq!(
            ids(&check_os(p, e, Some(&os("rocky", 7, None)), today)),
            ["os.unsupported"]
        );
        // A disabled family is refused whatever its version.
        let mut rs2 = rs.clone();
        rs2.policy
            .os
            .families
            .iter_mut()
            .find(|f| f.id.value == "rocky")
            .unwrap()
            .enabled = false;
        assert_eq!(
            ids(&check_os(
                &rs2.policy,
                e,
                Some(&os("rocky", 9, None)),
                today
            )),
            ["os.unsupported"]
        );
    }

    #[test]
    fn recommended_is_info() {
        let rs = RuleSet::embedded().unwrap();
        let f = check_os(
            &rs.policy,
            &rs.eol,
            Some(&os("ubuntu", 22, Some(4))),
            d("2023-01-01"),
        );
        assert_eq!(ids(&f), ["os.not-recommended"]);
        assert_eq!(f[0].severity, crate::policy::Severity::Info);
    }

    #[test]
    fn end_of_life_uses_the_given_date() {
        let rs = RuleSet::embedded().unwrap();
        let (p, e) = (&rs.policy, &rs.eol);
        let u1604 = os("ubuntu", 16, Some(4));
        // Ubuntu 16.04 standard support ended 2021-04-30.
        assert_eq!(
            ids(&check_os(p, e, Some(&u1604), d("2021-04-30"))),
            ["os.not-recommended", "os.eol-soon"]
        );
        let f = check_os(p, e, Some(&u1604), d("2021-05-01"));
        assert_eq!(ids(&f), ["os.not-recommended", "os.eol"]);
        assert!(
            f[1].message.contains("2021-04-30") && f[1].message.contains("2026-04-23"),
            "{}",
            f[1].message
        );
        assert!(ids(&check_os(p, e, Some(&u1604), d("2020-01-01")))
            .iter()
            .all(|i| !i.starts_with("os.eol")));
        // warn_days = 180 before the end.
        let c7 = os("centos", 7, Some(9));
        assert_eq!(
            ids(&check_os(p, e, Some(&c7), d("2024-01-02"))),
            ["os.eol-soon"]
        );
        assert!(check_os(p, e, Some(&c7), d("2024-01-01")).is_empty());
        assert_eq!(ids(&check_os(p, e, Some(&c7), d("2024-07-01"))), ["os.eol"]);
        // Counting extended support moves 18.04's end to 2028-04-26.
        let mut rs2 = rs.clone();
        rs2.policy.os.end_of_life.count_extended_support = true;
        let u1804 = os("ubuntu", 18, Some(4));
        assert!(check_os(&rs2.policy, e, Some(&u1804), d("2026-11-22")).is_empty());
        assert_eq!(
            ids(&check_os(p, e, Some(&u1804), d("2026-11-22"))),
            ["os.eol"]
        );
        // A release the table does not know.
        assert_eq!(
            ids(&check_os(
                p,
                e,
                Some(&os("ubuntu", 99, Some(4))),
                d("2026-01-01")
            )),
            ["os.not-recommended", "os.eol-unknown"]
        );
        // Severity comes from the policy; off drops the finding.
        let mut rs3 = rs.clone();
        rs3.policy.set_level("os.eol", Level::Off);
        rs3.policy.set_level("os.not-recommended", Level::Off);
        assert!(check_os(&rs3.policy, e, Some(&u1604), d("2022-01-01")).is_empty());
    }
}
