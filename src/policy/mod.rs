//! Policy: checks that turn facts about a guest into findings, and the report
//! that carries them.
//!
//! Owns the check ids ([`ids`]), [`Finding`], [`Report`], and the *pure* checks:
//! each takes a small input struct of plain facts (defined here, filled by the
//! caller from `inspect`) plus the loaded rules, and returns findings. Nothing
//! here reads an image, a filesystem or the host: no I/O, no on-disk formats.
//! Rendering lives in `output::report`.

pub mod daemons;
pub mod guest;
pub mod ids;
pub mod names;
pub mod os;
pub mod post_scripts;
pub mod software;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::rules::Policy;

/// How much a finding matters. Ordered: `Info < Warning < Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One thing a check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// A stable id from [`ids::CHECKS`].
    pub check_id: String,
    pub severity: Severity,
    /// One sentence for a person.
    pub message: String,
    /// What was seen: guest paths, `path:line: text` excerpts, package names.
    pub evidence: Vec<String>,
    /// What the user can do about it.
    pub fix_hint: Option<String>,
    /// The id of the sanitize rule that removes the cause, when one does (and it
    /// is enabled and not excepted; see [`Report::resolve_fixers`]).
    pub fixed_by_sanitize: Option<String>,
}

impl Finding {
    /// Whether `other` reports the same problem: same check, same message.
    pub fn same_problem(&self, other: &Finding) -> bool {
        self.check_id == other.check_id && self.message == other.message
    }
    pub fn with_evidence(mut self, e: impl IntoIterator<Item = String>) -> Finding {
        self.evidence.extend(e);
        self
    }
    pub fn hint(mut self, h: impl Into<String>) -> Finding {
        self.fix_hint = Some(h.into());
        self
    }
    pub fn fixed_by(mut self, rule: &str) -> Finding {
        self.fixed_by_sanitize = Some(rule.to_string());
        self
    }
}

/// Starts a finding for `check_id` at the severity the policy gives it, or
/// `None` when the policy turns the check off. Every check goes through here,
/// so severities always come from the policy.
pub fn finding(policy: &Policy, check_id: &str, message: impl Into<String>) -> Option<Finding> {
    let severity = policy.severity(check_id)?;
    Some(Finding {
        check_id: check_id.to_string(),
        severity,
        message: message.into(),
        evidence: Vec::new(),
        fix_hint: None,
        fixed_by_sanitize: None,
    })
}

/// The version of the JSON report layout (rules/report.schema.json). Bumped on
/// any change that could break a consumer; additions of optional fields do not
/// bump it.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// What produced a report: `imgsan check` (findings block) or `imgsan sanitize`
/// (findings a sanitize rule fixes do not block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Check,
    Sanitize,
}

/// The image a report is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The input file as given on the command line.
    pub path: Option<String>,
    /// `raw` or `qcow2`.
    pub format: Option<String>,
    pub size_bytes: Option<u64>,
    pub blake3: Option<String>,
    /// The requested image name and description (from flags or the request file).
    pub name: Option<String>,
    pub description: Option<String>,
}

/// Counts over the findings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub errors: u32,
    pub warnings: u32,
    pub info: u32,
    /// Error-level findings that block: all errors in check mode; in sanitize
    /// mode, the errors no sanitize rule fixes, and once the rules ran, the errors
    /// the re-check of the sanitized filesystems gives (see [`Recheck`]).
    pub blocking: u32,
    /// Findings (any severity) that a sanitize rule fixes.
    pub fixed_by_sanitize: u32,
    /// True when `blocking` is 0.
    pub passed: bool,
}

/// A report: what was checked, what was found, and the facts it was based on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub tool: Tool,
    pub mode: Mode,
    /// The date used for end-of-life checks (the clock's, or `--today`).
    pub today: String,
    pub image: ImageInfo,
    /// Ids of the checks that ran, in [`ids::CHECKS`] order: a check that ran
    /// and has no finding passed.
    pub checks_run: Vec<String>,
    /// Sorted: most severe first, then by check order, then by message.
    pub findings: Vec<Finding>,
    /// What `inspect` found, as the inspection layer serialises it.
    pub facts: serde_json::Value,
    /// Filled by `sanitize`: what the rules did (free-form until that layer
    /// fixes its layout).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sanitize: Option<serde_json::Value>,
    /// Filled by `sanitize`: the output written (or planned, on a dry run).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub output: Option<serde_json::Value>,
    /// Filled by `sanitize` once its rules ran: the checks run again on the
    /// sanitized filesystems, before anything is written.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub recheck: Option<Recheck>,
    /// Filled by `sanitize` once the output is planned: what an image service
    /// needs to take it (formats, minimum disk, digests, properties, the
    /// `openstack image create` line), and whether the disk was shrunk and why.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub upload: Option<serde_json::Value>,
    pub summary: Summary,
}

/// The checks run again on what `sanitize` is about to write. A rule's claim to
/// fix a finding is a prediction; the re-check is the evidence. Once it exists,
/// what blocks is what it still finds, not what the input had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recheck {
    /// What the re-check found, sorted like [`Report::findings`].
    pub findings: Vec<Finding>,
    /// Check ids of input findings whose fixing rule ran, but that the re-check
    /// still gives: the rule did not remove the cause.
    pub not_fixed: Vec<String>,
}

fn check_order(id: &str) -> usize {
    ids::CHECKS
        .iter()
        .position(|c| c.id == id)
        .unwrap_or(usize::MAX)
}

/// Most severe first, then by check order, then by message.
fn sort_findings(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        (b.severity, check_order(&a.check_id), &a.message).cmp(&(
            a.severity,
            check_order(&b.check_id),
            &b.message,
        ))
    });
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

impl Report {
    /// Builds a report; sorts findings and computes the summary. `checks_run`
    /// may name checks in any order and more than once; unknown ids are kept
    /// (at the end) so nothing a caller ran disappears.
    pub fn new(
        mode: Mode,
        today: crate::rules::Date,
        image: ImageInfo,
        checks_run: impl IntoIterator<Item = String>,
        mut findings: Vec<Finding>,
        facts: serde_json::Value,
    ) -> Report {
        let order = check_order;
        let mut ran: Vec<String> = checks_run
            .into_iter()
            .chain(findings.iter().map(|f| f.check_id.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        ran.sort_by(|a, b| (order(a), a).cmp(&(order(b), b)));
        sort_findings(&mut findings);
        let mut r = Report {
            schema_version: REPORT_SCHEMA_VERSION,
            tool: Tool {
                name: "imgsan".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            mode,
            today: today.to_string(),
            image,
            checks_run: ran,
            findings,
            facts,
            sanitize: None,
            output: None,
            recheck: None,
            upload: None,
            summary: Summary::default(),
        };
        r.summary = r.compute_summary();
        r
    }

    /// Whether the input finding `f` stops this run: an error, unless a sanitize
    /// run fixes it; after a re-check, an error the re-check still gives.
    pub fn is_blocking(&self, f: &Finding) -> bool {
        if f.severity != Severity::Error {
            return false;
        }
        match &self.recheck {
            Some(r) => r.findings.iter().any(|g| f.same_problem(g)),
            None => !(self.mode == Mode::Sanitize && f.fixed_by_sanitize.is_some()),
        }
    }

    fn compute_summary(&self) -> Summary {
        let mut s = Summary::default();
        for f in &self.findings {
            match f.severity {
                Severity::Error => s.errors += 1,
                Severity::Warning => s.warnings += 1,
                Severity::Info => s.info += 1,
            }
            if f.fixed_by_sanitize.is_some() {
                s.fixed_by_sanitize += 1;
            }
        }
        s.blocking = u32::try_from(self.blocking().count()).unwrap_or(u32::MAX);
        s.passed = s.blocking == 0;
        s
    }

    /// Records the re-check of the sanitized filesystems. An input finding
    /// whose rule ran but that is still there loses its "fixed by" and is
    /// listed in [`Recheck::not_fixed`]; from now on the re-check decides what
    /// blocks.
    pub fn set_recheck(&mut self, mut findings: Vec<Finding>) {
        sort_findings(&mut findings);
        let mut not_fixed = Vec::new();
        for f in &mut self.findings {
            if f.fixed_by_sanitize.is_some() && findings.iter().any(|g| f.same_problem(g)) {
                f.fixed_by_sanitize = None;
                not_fixed.push(f.check_id.clone());
            }
        }
        // The re-check's own findings name no fixer: their rules already ran.
        for g in &mut findings {
            g.fixed_by_sanitize = None;
        }
        not_fixed.dedup();
        self.recheck = Some(Recheck {
            findings,
            not_fixed,
        });
        self.summary = self.compute_summary();
    }

    /// Clears `fixed_by_sanitize` on findings whose rule will not run: disabled
    /// in the rule set, or skipped by the request's exceptions. Checks name the
    /// rule that *would* fix them; only the caller knows which rules run.
    pub fn resolve_fixers(&mut self, rule_runs: impl Fn(&str) -> bool) {
        for f in &mut self.findings {
            if f.fixed_by_sanitize
                .as_deref()
                .is_some_and(|r| !rule_runs(r))
            {
                f.fixed_by_sanitize = None;
            }
        }
        self.summary = self.compute_summary();
    }

    /// Switch the report to `mode` (a sanitize run starts from a check's
    /// report), recomputing what blocks.
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
        self.summary = self.compute_summary();
    }

    /// The blocking findings, for "refusing to write because of ...": after a
    /// re-check, its errors (which may include problems the input did not have).
    pub fn blocking(&self) -> Box<dyn Iterator<Item = &Finding> + '_> {
        match &self.recheck {
            Some(r) => Box::new(r.findings.iter().filter(|f| f.severity == Severity::Error)),
            None => Box::new(self.findings.iter().filter(|f| self.is_blocking(f))),
        }
    }
}

/// The process exit code a report asks for: 0 when nothing blocks, 1 otherwise
/// (DESIGN.md: 1 = policy violations found).
pub fn exit_code(report: &Report) -> u8 {
    if report.summary.passed {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Date, RuleSet};

    fn f(id: &str, sev: Severity, fixed: Option<&str>) -> Finding {
        Finding {
            check_id: id.into(),
            severity: sev,
            message: format!("m {id}"),
            evidence: vec![],
            fix_hint: None,
            fixed_by_sanitize: fixed.map(String::from),
        }
    }

    #[test]
    fn summary_and_exit_code_follow_mode_and_fixers() {
        let today = Date::new(2025, 1, 1).unwrap();
        let fs = vec![
            f("name.forbidden-char", Severity::Error, None),
            f("volumes.detached", Severity::Error, Some("fstab")),
            f("os.eol-soon", Severity::Warning, None),
        ];
        let r = Report::new(
            Mode::Check,
            today,
            ImageInfo::default(),
            [],
            fs.clone(),
            serde_json::Value::Null,
        );
        assert_eq!(
            (r.summary.errors, r.summary.warnings, r.summary.blocking),
            (2, 1, 2)
        );
        assert_eq!(exit_code(&r), 1);
        // Sorted by severity then check order: volumes.* comes before name.*.
        assert_eq!(r.findings[0].check_id, "volumes.detached");
        assert_eq!(r.findings[2].check_id, "os.eol-soon");
        assert_eq!(
            r.checks_run,
            ["os.eol-soon", "volumes.detached", "name.forbidden-char"]
        );

        let mut s = Report::new(
            Mode::Sanitize,
            today,
            ImageInfo::default(),
            [],
            fs[1..].to_vec(),
            serde_json::Value::Null,
        );
        assert_eq!(s.summary.blocking, 0);
        assert_eq!(exit_code(&s), 0);
        // The fstab rule turned off: the finding blocks again.
        s.resolve_fixers(|rule| rule != "fstab");
        assert_eq!(s.summary.blocking, 1);
        assert_eq!(exit_code(&s), 1);
    }

    #[test]
    fn the_recheck_decides_what_blocks_after_the_rules() {
        let today = Date::new(2025, 1, 1).unwrap();
        let input = vec![
            f("volumes.detached", Severity::Error, Some("fstab")),
            f("software.in-home", Severity::Error, Some("home")),
            f("os.eol-soon", Severity::Warning, None),
        ];
        let mut r = Report::new(
            Mode::Sanitize,
            today,
            ImageInfo::default(),
            [],
            input.clone(),
            serde_json::Value::Null,
        );
        assert!(r.summary.passed, "both errors are predicted fixed");

        // The fstab rule did its job; the home rule did not; something new came up.
        r.set_recheck(vec![
            f("os.eol-soon", Severity::Warning, None),
            f("software.in-home", Severity::Error, Some("home")),
            f("access.sshd-missing", Severity::Error, None),
        ]);
        let rc = r.recheck.as_ref().unwrap();
        assert_eq!(rc.not_fixed, ["software.in-home"]);
        assert!(rc.findings.iter().all(|g| g.fixed_by_sanitize.is_none()));
        assert_eq!(rc.findings[2].check_id, "os.eol-soon", "sorted");
        let home = r.findings.iter().find(|x| x.check_id == "software.in-home");
        assert_eq!(
            home.unwrap().fixed_by_sanitize,
            None,
            "the claim is withdrawn"
        );
        assert!(r.is_blocking(home.unwrap()));
        let detached = r.findings.iter().find(|x| x.check_id == "volumes.detached");
        assert!(!r.is_blocking(detached.unwrap()));
        let mut ids: Vec<&str> = r.blocking().map(|x| x.check_id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["access.sshd-missing", "software.in-home"]);
        assert_eq!((r.summary.blocking, r.summary.fixed_by_sanitize), (2, 1));
        assert_eq!(exit_code(&r), 1);

        // A clean re-check passes whatever the input had.
        let mut clean = Report::new(
            Mode::Sanitize,
            today,
            ImageInfo::default(),
            [],
            input,
            serde_json::Value::Null,
        );
        clean.set_recheck(vec![f("os.eol-soon", Severity::Warning, None)]);
        assert!(clean.summary.passed);
        assert_eq!(clean.recheck.as_ref().unwrap().not_fixed.len(), 0);
    }

    #[test]
    fn finding_takes_severity_from_policy_and_honours_off() {
        let mut rules = RuleSet::embedded().unwrap();
        let p = &mut rules.policy;
        assert_eq!(finding(p, "os.eol", "x").unwrap().severity, Severity::Error);
        p.set_level("os.eol", crate::rules::Level::Warning);
        assert_eq!(
            finding(p, "os.eol", "x").unwrap().severity,
            Severity::Warning
        );
        p.set_level("os.eol", crate::rules::Level::Off);
        assert!(finding(p, "os.eol", "x").is_none());
    }
}
