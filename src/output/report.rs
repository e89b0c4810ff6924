//! Report rendering: human text (grouped by severity, ANSI colour on request),
//! JSON (the layout of rules/report.schema.json) and JUnit XML for CI systems.
//!
//! Renders a [`Report`]; it decides nothing about findings. Whether stdout is a
//! terminal is the caller's business: it passes `color`.
//!
//! Strings in a report come partly from the guest (paths, configuration lines),
//! which is untrusted: text output escapes control characters so a crafted file
//! name cannot drive the terminal, and XML output escapes markup and drops
//! characters XML 1.0 forbids.
//!
//! JUnit mapping (one `<testcase>` per check id that ran, `classname` =
//! `imgsan.<group>`, `name` = the check id):
//! - blocking error findings: one `<failure>` per testcase (type "error",
//!   message = the first finding, text = all of them); after a sanitize run's
//!   re-check, the errors that re-check still gives;
//! - warnings, info, and errors a sanitize run fixes: the testcase passes and
//!   lists them in its `<system-out>`, prefixed by their severity;
//!   warnings are not failures, so a CI gate fails only where `imgsan` exits 1.

use std::fmt::Write as _;

pub use crate::policy::exit_code;
use crate::policy::{Finding, Mode, Recheck, Report, Severity};
pub use crate::units::escape_terminal;
use crate::units::human;

/// The output formats of `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Junit,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            "junit" => Ok(Format::Junit),
            _ => Err(format!(
                "unknown format `{s}`: expected text, json or junit"
            )),
        }
    }
}

/// Renders `report` in `format`; `color` only affects text.
pub fn render(report: &Report, format: Format, color: bool) -> String {
    match format {
        Format::Text => render_text(report, color),
        Format::Json => render_json(report),
        Format::Junit => render_junit(report),
    }
}

// ---- text -----------------------------------------------------------------------

const RED: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[1;33m";
const CYAN: &str = "\x1b[1;36m";
const GREEN: &str = "\x1b[1;32m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

struct Paint {
    on: bool,
}

impl Paint {
    fn p(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("{code}{text}{RESET}")
        } else {
            text.to_string()
        }
    }
}

fn severity_heading(s: Severity) -> (&'static str, &'static str) {
    match s {
        Severity::Error => ("Errors", RED),
        Severity::Warning => ("Warnings", YELLOW),
        Severity::Info => ("Info", CYAN),
    }
}

/// Human-readable text: a header, the findings grouped by severity (errors
/// first), and a summary line.
pub fn render_text(report: &Report, color: bool) -> String {
    let paint = Paint { on: color };
    let mut out = String::new();
    let verb = match report.mode {
        Mode::Check => "check",
        Mode::Sanitize => "sanitize",
    };
    let image = report
        .image
        .path
        .as_deref()
        .map(escape_terminal)
        .unwrap_or_else(|| "(no image)".into());
    let _ = writeln!(out, "imgsan {verb}: {image} (today {})", report.today);
    if let Some(h) = &report.image.blake3 {
        let _ = writeln!(out, "input blake3 {h}");
    }
    if let Some(n) = &report.image.name {
        let _ = writeln!(out, "image name: {}", escape_terminal(n));
    }
    for sev in [Severity::Error, Severity::Warning, Severity::Info] {
        let group: Vec<&Finding> = report
            .findings
            .iter()
            .filter(|f| f.severity == sev)
            .collect();
        if group.is_empty() {
            continue;
        }
        let (title, code) = severity_heading(sev);
        let _ = writeln!(
            out,
            "\n{}",
            paint.p(code, &format!("{title} ({})", group.len()))
        );
        for f in group {
            let _ = writeln!(out, "  [{}] {}", f.check_id, escape_terminal(&f.message));
            for e in &f.evidence {
                let _ = writeln!(out, "      {}", paint.p(DIM, &escape_terminal(e)));
            }
            if let Some(h) = &f.fix_hint {
                let _ = writeln!(out, "      fix: {}", escape_terminal(h));
            }
            if let Some(r) = &f.fixed_by_sanitize {
                let what = if report.mode == Mode::Sanitize {
                    "fixed by"
                } else {
                    "sanitize fixes this: rule"
                };
                let _ = writeln!(out, "      {what} `{}`", escape_terminal(r));
            }
        }
    }
    if let Some(v) = &report.sanitize {
        sanitize_text(&mut out, v);
    }
    if let Some(r) = &report.recheck {
        recheck_text(&mut out, report, r, &paint);
    }
    if let Some(v) = &report.output {
        output_text(&mut out, v);
    }
    let s = &report.summary;
    let verdict = if s.passed {
        paint.p(GREEN, "PASSED")
    } else {
        paint.p(RED, "FAILED")
    };
    let plural = |n: u32, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let _ = writeln!(
        out,
        "\n{}, {}, {} ({} blocking, {} fixed by sanitize); {} run: {verdict}",
        plural(s.errors, "error", "errors"),
        plural(s.warnings, "warning", "warnings"),
        plural(s.info, "info", "info"),
        s.blocking,
        s.fixed_by_sanitize,
        plural(
            u32::try_from(report.checks_run.len()).unwrap_or(u32::MAX),
            "check",
            "checks"
        ),
    );
    out
}

/// The re-check section: which input findings are gone, which remain, which the
/// rules claimed and did not fix, and anything new (in full, since it was not
/// listed above).
fn recheck_text(out: &mut String, report: &Report, r: &Recheck, paint: &Paint) {
    let _ = writeln!(out, "\nChecks again, on the sanitized filesystems");
    let gone: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| !r.findings.iter().any(|g| g.same_problem(f)))
        .map(|f| f.check_id.as_str())
        .collect();
    let list = |ids: &[&str]| {
        let mut v = ids.to_vec();
        v.dedup();
        v.join(", ")
    };
    if !gone.is_empty() {
        let _ = writeln!(out, "  gone: {}", list(&gone));
    }
    let (kept, new): (Vec<&Finding>, Vec<&Finding>) = r
        .findings
        .iter()
        .partition(|g| report.findings.iter().any(|f| f.same_problem(g)));
    if !kept.is_empty() {
        let ids: Vec<&str> = kept.iter().map(|f| f.check_id.as_str()).collect();
        let _ = writeln!(out, "  still there: {}", list(&ids));
    }
    if !r.not_fixed.is_empty() {
        let ids: Vec<&str> = r.not_fixed.iter().map(String::as_str).collect();
        let _ = writeln!(
            out,
            "  {}: {}",
            paint.p(RED, "not fixed by the rule that claims them"),
            list(&ids)
        );
    }
    for f in new {
        let (_, code) = severity_heading(f.severity);
        let _ = writeln!(
            out,
            "  new {}: [{}] {}",
            paint.p(code, f.severity.as_str()),
            f.check_id,
            escape_terminal(&f.message)
        );
        for e in &f.evidence {
            let _ = writeln!(out, "      {}", paint.p(DIM, &escape_terminal(e)));
        }
    }
    if r.findings.is_empty() {
        let _ = writeln!(out, "  nothing found");
    }
}

/// The sanitize section: one line per rule that did something, then totals.
fn sanitize_text(out: &mut String, v: &serde_json::Value) {
    let n = |r: &serde_json::Value, k: &str| r.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    let _ = writeln!(out, "\nSanitize rules");
    for r in v
        .get("rules")
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
    {
        let id = r.get("id").and_then(|x| x.as_str()).unwrap_or("?");
        let status = r.get("status").and_then(|x| x.as_str()).unwrap_or("?");
        if status != "applied" {
            if status == "excepted" || status == "disabled-by-option" {
                let _ = writeln!(out, "  {id}: {status}");
            }
            continue;
        }
        let mut parts = Vec::new();
        for (k, what) in [
            ("files_deleted", "deleted"),
            ("dirs_deleted", "dirs deleted"),
            ("files_truncated", "truncated"),
            ("files_overwritten", "overwritten"),
            ("files_created", "created"),
        ] {
            if n(r, k) > 0 {
                parts.push(format!("{} {what}", n(r, k)));
            }
        }
        if n(r, "bytes_freed") > 0 {
            parts.push(format!("{} freed", human(n(r, "bytes_freed"))));
        }
        if parts.is_empty() {
            continue;
        }
        let _ = writeln!(out, "  {id}: {}", parts.join(", "));
        for note in r
            .get("notes")
            .and_then(|x| x.as_array())
            .into_iter()
            .flatten()
            .take(5)
        {
            if let Some(t) = note.as_str() {
                let _ = writeln!(out, "      {}", escape_terminal(t));
            }
        }
    }
    if let Some(t) = v.get("totals") {
        let _ = writeln!(
            out,
            "  total: {} files and {} directories deleted ({} freed), {} truncated, {} overwritten, {} created",
            n(t, "files_deleted"),
            n(t, "dirs_deleted"),
            human(n(t, "bytes_freed")),
            n(t, "files_truncated"),
            n(t, "files_overwritten"),
            n(t, "files_created"),
        );
    }
}

/// The output section: volumes, sizes, hashes.
fn output_text(out: &mut String, v: &serde_json::Value) {
    let u = |k: &str| v.get(k).and_then(|x| x.as_u64());
    let st = |k: &str| v.get(k).and_then(|x| x.as_str());
    let dry = v.get("dry_run").and_then(|x| x.as_bool()).unwrap_or(false);
    let _ = writeln!(
        out,
        "\n{}",
        if dry {
            "Output (dry run: nothing written)"
        } else {
            "Output"
        }
    );
    for vol in v
        .get("volumes")
        .and_then(|x| x.as_array())
        .into_iter()
        .flatten()
    {
        let g = |k: &str| vol.get(k).and_then(|x| x.as_str()).unwrap_or("");
        let size = |k: &str| human(vol.get(k).and_then(|x| x.as_u64()).unwrap_or(0));
        let note = vol
            .get("note")
            .and_then(|x| x.as_str())
            .map(|n| format!(" ({})", escape_terminal(n)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}: {}, {} -> {}{note}",
            g("name"),
            g("action"),
            size("source_size"),
            size("output_size")
        );
    }
    let _ = writeln!(
        out,
        "  kept {} files ({}); disk {}{}",
        u("files_kept").unwrap_or(0),
        human(u("bytes_kept").unwrap_or(0)),
        human(u("size_bytes").unwrap_or(0)),
        if v.get("table_rewritten").and_then(|x| x.as_bool()) == Some(true) {
            ", partition table rewritten"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "  plan: {} of data to write",
        human(u("planned_data_bytes").unwrap_or(0))
    );
    if let Some(p) = st("path") {
        let _ = writeln!(
            out,
            "  wrote {} ({} of data)",
            escape_terminal(p),
            human(u("data_bytes").unwrap_or(0))
        );
    }
    if let Some(h) = st("blake3") {
        let _ = writeln!(out, "  output blake3 {h}");
    }
    if let Some(m) = st("manifest") {
        let _ = writeln!(out, "  manifest {}", escape_terminal(m));
    }
    if v.get("forced").and_then(|x| x.as_bool()) == Some(true) {
        let _ = writeln!(out, "  written despite blocking findings (--force)");
    }
}

// ---- JSON -----------------------------------------------------------------------

/// The report as pretty-printed JSON, following rules/report.schema.json.
pub fn render_json(report: &Report) -> String {
    // Serialising plain data to a String cannot fail; keep a valid document even
    // if it somehow did.
    let mut s = serde_json::to_string_pretty(report).unwrap_or_else(|e| {
        format!(
            "{{\"schema_version\":{},\"error\":{:?}}}",
            report.schema_version,
            e.to_string()
        )
    });
    s.push('\n');
    s
}

// ---- JUnit ----------------------------------------------------------------------

/// Escapes text for XML 1.0 content and attribute values, replacing characters
/// XML forbids (most C0 controls, U+FFFE, U+FFFF) with U+FFFD.
pub fn escape_xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Kept literally in content; in attributes a parser would
            // normalise them to spaces, so encode them.
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn finding_text(f: &Finding) -> String {
    let mut t = format!("{}: [{}] {}", f.severity.as_str(), f.check_id, f.message);
    for e in &f.evidence {
        let _ = write!(t, "\n    {e}");
    }
    if let Some(h) = &f.fix_hint {
        let _ = write!(t, "\n    fix: {h}");
    }
    if let Some(r) = &f.fixed_by_sanitize {
        let _ = write!(t, "\n    fixed by sanitize rule `{r}`");
    }
    t
}

/// JUnit XML: one `<testsuite>` named after the image, one `<testcase>` per
/// check that ran.
pub fn render_junit(report: &Report) -> String {
    let mut cases = String::new();
    let mut failures = 0u32;
    for id in &report.checks_run {
        // After a sanitize re-check, the failures are its errors (which may be
        // problems the input did not have); the input's other findings are output.
        let blocking: Vec<&Finding> = report.blocking().filter(|f| &f.check_id == id).collect();
        let other: Vec<&Finding> = report
            .findings
            .iter()
            .filter(|f| &f.check_id == id && !report.is_blocking(f))
            .collect();
        let group = id.split('.').next().unwrap_or(id);
        let _ = write!(
            cases,
            "    <testcase classname=\"imgsan.{}\" name=\"{}\" time=\"0\"",
            escape_xml(group),
            escape_xml(id)
        );
        if blocking.is_empty() && other.is_empty() {
            cases.push_str("/>\n");
            continue;
        }
        cases.push_str(">\n");
        if let Some(first) = blocking.first() {
            failures += 1;
            let more = if blocking.len() > 1 {
                format!(" (and {} more)", blocking.len() - 1)
            } else {
                String::new()
            };
            let body: Vec<String> = blocking.iter().map(|f| finding_text(f)).collect();
            let _ = writeln!(
                cases,
                "      <failure type=\"error\" message=\"{}\">{}</failure>",
                escape_xml(&format!("{}{more}", first.message)),
                escape_xml(&body.join("\n"))
            );
        }
        if !other.is_empty() {
            let body: Vec<String> = other.iter().map(|f| finding_text(f)).collect();
            let _ = writeln!(
                cases,
                "      <system-out>{}</system-out>",
                escape_xml(&body.join("\n"))
            );
        }
        cases.push_str("    </testcase>\n");
    }
    let tests = report.checks_run.len();
    let suite = format!(
        "imgsan {}: {}",
        match report.mode {
            Mode::Check => "check",
            Mode::Sanitize => "sanitize",
        },
        report.image.path.as_deref().unwrap_or("(no image)")
    );
    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(out, "<testsuites name=\"imgsan\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"0\">");
    let _ = writeln!(out, "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"0\">", escape_xml(&suite));
    out.push_str("    <properties>\n");
    let mut prop = |k: &str, v: &str| {
        let _ = writeln!(
            out,
            "      <property name=\"{}\" value=\"{}\"/>",
            escape_xml(k),
            escape_xml(v)
        );
    };
    prop("schema_version", &report.schema_version.to_string());
    prop("tool_version", &report.tool.version);
    prop("today", &report.today);
    if let Some(n) = &report.image.name {
        prop("image_name", n);
    }
    out.push_str("    </properties>\n");
    out.push_str(&cases);
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{ImageInfo, Report};
    use crate::rules::Date;

    fn report(mode: Mode) -> Report {
        let f = |id: &str, s: Severity, fixed: Option<&str>| Finding {
            check_id: id.into(),
            severity: s,
            message: format!("msg <{id}> & \"q\""),
            evidence: vec!["/etc/\x1b[31mevil\x07".into()],
            fix_hint: Some("do it".into()),
            fixed_by_sanitize: fixed.map(String::from),
        };
        Report::new(
            mode,
            Date::new(2026, 1, 2).unwrap(),
            ImageInfo {
                path: Some("img.qcow2".into()),
                name: Some("n".into()),
                ..Default::default()
            },
            ["os.eol".to_string(), "name.forbidden-char".to_string()],
            vec![
                f("volumes.detached", Severity::Error, Some("fstab")),
                f("name.forbidden-char", Severity::Error, None),
                f("network.open-daemon", Severity::Warning, None),
            ],
            serde_json::json!({}),
        )
    }

    #[test]
    fn text_groups_by_severity_and_escapes_controls() {
        let t = render_text(&report(Mode::Check), false);
        assert!(!t.contains('\x1b') && !t.contains('\x07'), "{t}");
        assert!(t.contains("\\u{1b}[31mevil\\u{7}"), "{t}");
        let e = t.find("Errors (2)").unwrap();
        let w = t.find("Warnings (1)").unwrap();
        assert!(e < w);
        assert!(t.contains("FAILED"));
        let c = render_text(&report(Mode::Check), true);
        assert!(c.contains("\x1b[1;31mErrors (2)\x1b[0m"));
    }

    #[test]
    fn junit_counts_blocking_failures_only() {
        let x = render_junit(&report(Mode::Check));
        assert!(x.contains("tests=\"4\" failures=\"2\""), "{x}");
        assert!(x.contains("&lt;volumes.detached&gt; &amp; &quot;q&quot;"));
        assert!(!x.contains('\x1b'));
        let s = render_junit(&report(Mode::Sanitize));
        assert!(s.contains("failures=\"1\""), "{s}");
        assert!(s.contains("<testcase classname=\"imgsan.os\" name=\"os.eol\" time=\"0\"/>"));
    }

    #[test]
    fn after_a_recheck_its_errors_are_the_failures_and_the_text_says_what_changed() {
        let mut r = report(Mode::Sanitize);
        let mut new = r.findings[1].clone();
        new.check_id = "os.eol".into();
        new.message = "came up after the rules".into();
        // The detached volume is gone; the name problem stays; an os.eol error is new.
        r.set_recheck(vec![r.findings[1].clone(), new]);
        let x = render_junit(&r);
        assert!(x.contains("failures=\"2\""), "{x}");
        assert!(x.contains("came up after the rules"), "{x}");
        let t = render_text(&r, false);
        assert!(
            t.contains("gone: volumes.detached, network.open-daemon"),
            "{t}"
        );
        assert!(t.contains("still there: name.forbidden-char"), "{t}");
        assert!(
            t.contains("new error: [os.eol] came up after the rules"),
            "{t}"
        );
        assert!(!t.contains("not fixed by"), "{t}");
        assert!(t.contains("(2 blocking, 1 fixed by sanitize)"), "{t}");
    }

    #[test]
    fn xml_escaping() {
        assert_eq!(
            escape_xml("a<b>&'\"\u{0}\u{1f}\u{fffe}é"),
            "a&lt;b&gt;&amp;&apos;&quot;\u{fffd}\u{fffd}\u{fffd}é"
        );
    }

    #[test]
    fn formats_parse() {
        assert_eq!("junit".parse::<Format>(), Ok(Format::Junit));
        assert!("xml".parse::<Format>().is_err());
    }
}
