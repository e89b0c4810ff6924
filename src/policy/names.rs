//! Image name and description checks (the request form's rules).

use crate::rules::{normalize_name, FeaturedNames, Policy};

use super::{finding, Finding};

pub const NAME_IDS: &[&str] = &[
    "name.missing",
    "name.forbidden-char",
    "name.too-long",
    "name.featured",
    "name.existing",
];

pub const DESCRIPTION_IDS: &[&str] = &[
    "description.missing",
    "description.too-short",
    "description.same-as-name",
    "description.too-long",
    "description.near-limit",
];

/// Checks the requested image name. `extra_featured` comes from
/// `--featured-names FILE`, `existing` from `--existing-names FILE` (the user's
/// own images: reusing one is a warning, not an error).
pub fn check_name(
    policy: &Policy,
    featured: &FeaturedNames,
    extra_featured: &[String],
    existing: &[String],
    name: Option<&str>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(name) = name.filter(|n| !n.trim().is_empty()) else {
        out.extend(
            finding(policy, "name.missing", "no image name was given")
                .map(|f| f.hint("give one with --name or `name:` in the request file")),
        );
        return out;
    };
    let rules = &policy.image_name;

    // Control characters (a NUL, an escape sequence) are never part of a
    // name, whatever the policy lists.
    let mut bad: Vec<char> = rules
        .forbidden_chars
        .iter()
        .copied()
        .filter(|c| name.contains(*c))
        .collect();
    for c in name.chars().filter(|c| c.is_control()) {
        if !bad.contains(&c) {
            bad.push(c);
        }
    }
    if !bad.is_empty() {
        let list: Vec<String> = bad.iter().map(|c| format!("{c:?}")).collect();
        out.extend(
            finding(
                policy,
                "name.forbidden-char",
                format!("image name {name:?} contains {}", list.join(", ")),
            )
            .map(|f| {
                f.hint(format!(
                    "use a name without {} (for example {:?})",
                    list.join(" or "),
                    name.replace(&bad[..], "-")
                ))
            }),
        );
    }

    let len = name.chars().count();
    if len > rules.max_length as usize {
        out.extend(
            finding(
                policy,
                "name.too-long",
                format!(
                    "image name is {len} characters long; at most {} are allowed",
                    rules.max_length
                ),
            )
            .map(|f| f.with_evidence([name.to_string()]).hint("shorten the name")),
        );
    }

    let norm = normalize_name(name);
    let featured_hit = featured
        .iter()
        .map(String::from)
        .chain(extra_featured.iter().cloned())
        .find(|n| normalize_name(n) == norm);
    if let Some(hit) = featured_hit {
        out.extend(
            finding(
                policy,
                "name.featured",
                format!("image name {name:?} is the name of the featured image {hit:?}"),
            )
            .map(|f| {
                f.hint(
                    "choose a name of your own; users would mistake the image for the featured one",
                )
            }),
        );
    }
    if let Some(hit) = existing.iter().find(|n| normalize_name(n) == norm) {
        out.extend(
            finding(policy, "name.existing", format!("you already have an image named {hit:?}"))
                .map(|f| f.hint("make sure you mean to reuse this name; add a version suffix to keep both apart")),
        );
    }
    out
}

/// Checks the description: present, long enough, and more than the name.
pub fn check_description(
    policy: &Policy,
    name: Option<&str>,
    description: Option<&str>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let rules = &policy.description;
    let Some(desc) = description.map(str::trim).filter(|d| !d.is_empty()) else {
        out.extend(finding(policy, "description.missing", "no image description was given").map(|f| {
            f.hint("describe the tools installed, their purpose, and how the image differs from its base")
        }));
        return out;
    };
    let len = desc.chars().count();
    if len < rules.min_length as usize {
        out.extend(
            finding(
                policy,
                "description.too-short",
                format!(
                    "the description is {len} characters long; at least {} are expected",
                    rules.min_length
                ),
            )
            .map(|f| {
                f.with_evidence([desc.to_string()]).hint(
                    "say what is installed, what it is for, and how it differs from the base image",
                )
            }),
        );
    }
    if len > rules.max_length as usize {
        out.extend(
            finding(
                policy,
                "description.too-long",
                format!(
                    "the description is {len} characters long; the image service keeps at most {}",
                    rules.max_length
                ),
            )
            .map(|f| {
                f.with_evidence([preview(desc)]).hint(format!(
                    "shorten it to {} characters or fewer; put longer documentation inside the image",
                    rules.max_length
                ))
            }),
        );
    } else if len >= rules.warn_length as usize {
        out.extend(
            finding(
                policy,
                "description.near-limit",
                format!(
                    "the description is {len} characters long, close to the limit of {}",
                    rules.max_length
                ),
            )
            .map(|f| f.hint("keep edits short: past the limit the image is refused")),
        );
    }
    if rules.must_differ_from_name {
        if let Some(name) = name {
            if normalize_name(name) == normalize_name(desc) {
                out.extend(
                    finding(
                        policy,
                        "description.same-as-name",
                        "the description only repeats the image name",
                    )
                    .map(|f| f.hint("describe the image's contents and purpose")),
                );
            }
        }
    }
    out
}

/// The start of a long text, for evidence: a report must not carry a
/// megabyte-long description.
fn preview(text: &str) -> String {
    const SHOWN: usize = 80;
    match text.char_indices().nth(SHOWN) {
        Some((i, _)) => format!("{}... ({} characters)", &text[..i], text.chars().count()),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleSet;

    fn ids(f: &[Finding]) -> Vec<&str> {
        f.iter().map(|f| f.check_id.as_str()).collect()
    }

    #[test]
    fn name_rules_trigger_and_pass() {
        let rs = RuleSet::embedded().unwrap();
        let (p, feat) = (&rs.policy, &rs.featured);
        let none: &[String] = &[];
        assert!(check_name(p, feat, none, none, Some("Genomics-Workbench-v2")).is_empty());
        assert_eq!(
            ids(&check_name(p, feat, none, none, None)),
            ["name.missing"]
        );
        assert_eq!(
            ids(&check_name(p, feat, none, none, Some("  "))),
            ["name.missing"]
        );
        let f = check_name(p, feat, none, none, Some("my.image"));
        assert_eq!(ids(&f), ["name.forbidden-char"]);
        assert!(f[0].fix_hint.as_deref().unwrap().contains("my-image"));
        // 30 characters pass, 31 do not; length counts characters, not bytes.
        let thirty = "é".repeat(30);
        assert!(check_name(p, feat, none, none, Some(&thirty)).is_empty());
        assert_eq!(
            ids(&check_name(p, feat, none, none, Some(&"a".repeat(31)))),
            ["name.too-long"]
        );
        // Featured names match across case and separators.
        assert_eq!(
            ids(&check_name(p, feat, none, none, Some("featured_ubuntu20"))),
            ["name.featured"]
        );
        assert_eq!(
            ids(&check_name(
                p,
                feat,
                none,
                none,
                Some("CentOS 7 Development GUI")
            )),
            ["name.featured"]
        );
        let extra = vec!["Site Special".to_string()];
        assert_eq!(
            ids(&check_name(p, feat, &extra, none, Some("site-special"))),
            ["name.featured"]
        );
        let existing = vec!["My-Pipeline".to_string()];
        let f = check_name(p, feat, none, &existing, Some("my pipeline"));
        assert_eq!(ids(&f), ["name.existing"]);
        assert_eq!(f[0].severity, crate::policy::Severity::Warning);
        assert!(check_name(p, feat, none, &existing, Some("my pipeline 2")).is_empty());
    }

    #[test]
    fn description_rules_trigger_and_pass() {
        let rs = RuleSet::embedded().unwrap();
        let p = &rs.policy;
        let good = "Ubuntu 22.04 with samtools for the genomics workshop";
        assert!(check_description(p, Some("wb"), Some(good)).is_empty());
        assert_eq!(
            ids(&check_description(p, Some("wb"), None)),
            ["description.missing"]
        );
        assert_eq!(
            ids(&check_description(p, Some("wb"), Some(" \n"))),
            ["description.missing"]
        );
        assert_eq!(
            ids(&check_description(p, Some("wb"), Some("my image"))),
            ["description.too-short"]
        );
        let name = "Genomics Workbench for Spring Workshop";
        assert_eq!(
            ids(&check_description(
                p,
                Some(name),
                Some("genomics-workbench-for-spring-workshop")
            )),
            ["description.same-as-name"]
        );
    }

    #[test]
    fn description_length_is_capped_at_the_property_limit() {
        let rs = RuleSet::embedded().unwrap();
        let p = &rs.policy;
        // Characters count, not bytes: 229 two-byte characters pass quietly.
        let d = |n: usize| "é".repeat(n);
        assert!(check_description(p, Some("wb"), Some(&d(229))).is_empty());
        assert_eq!(
            ids(&check_description(p, Some("wb"), Some(&d(230)))),
            ["description.near-limit"]
        );
        assert_eq!(
            ids(&check_description(p, Some("wb"), Some(&d(255)))),
            ["description.near-limit"]
        );
        let f = check_description(p, Some("wb"), Some(&d(256)));
        assert_eq!(ids(&f), ["description.too-long"]);
        assert_eq!(f[0].severity, crate::policy::Severity::Error);
        // A huge description is reported, not copied whole into the report.
        let huge = "x".repeat(50 << 20);
        let f = check_description(p, Some("wb"), Some(&huge));
        assert_eq!(ids(&f), ["description.too-long"]);
        assert!(f[0].evidence.iter().map(String::len).sum::<usize>() < 200);
    }

    #[test]
    fn control_characters_in_a_name_are_forbidden() {
        let rs = RuleSet::embedded().unwrap();
        let none: &[String] = &[];
        for bad in ["my\0image", "my\u{1b}[31mimage", "tab\there"] {
            let f = check_name(&rs.policy, &rs.featured, none, none, Some(bad));
            assert_eq!(ids(&f), ["name.forbidden-char"], "{bad:?}");
        }
    }
}
