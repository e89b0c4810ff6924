//! Reports read by independent tools: the JSON report validated against
//! rules/report.schema.json by Python's `jsonschema`, the JUnit report parsed by
//! Python's `junitparser` (both installed by .ci/setup.sh). Missing tools fail
//! the tests; they never skip.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use imgsan::output::report::{exit_code, render_json, render_junit, render_text};
use imgsan::policy::software::{detect_license, FileEntry, FoundLicense, SoftwareMatcher};
use imgsan::policy::{
    daemons, guest, names, os, post_scripts, software, Finding, ImageInfo, Mode, Report, Severity,
};
use imgsan::rules::{Date, RuleSet};

fn python(script: &str, args: &[&Path]) -> serde_json::Value {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 must be installed (.ci/setup.sh)");
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

const VALIDATE: &str = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
doc = json.load(open(sys.argv[2]))
errors = sorted(e.message + " at " + "/".join(map(str, e.absolute_path))
                for e in jsonschema.Draft202012Validator(schema).iter_errors(doc))
print(json.dumps(errors))
"#;

const JUNIT: &str = r#"
import json, sys
from junitparser import JUnitXml
xml = JUnitXml.fromfile(sys.argv[1])
suites = []
for suite in xml:
    cases = []
    for case in suite:
        cases.append({
            "classname": case.classname,
            "name": case.name,
            "results": [type(r).__name__ for r in case.result],
            "messages": [r.message for r in case.result],
            "texts": [r.text for r in case.result],
            "system_out": case.system_out,
        })
    suites.append({"name": suite.name, "tests": suite.tests, "failures": suite.failures, "cases": cases})
print(json.dumps(suites))
"#;

fn schema_errors(report: &Report) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("report.json");
    std::fs::write(&p, render_json(report)).unwrap();
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/report.schema.json");
    serde_json::from_value(python(VALIDATE, &[&schema, &p])).unwrap()
}

fn junit(report: &Report) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("report.xml");
    std::fs::write(&p, render_junit(report)).unwrap();
    python(JUNIT, &[&p])
}

/// A guest with a bit of everything wrong, run through every pure check.
fn messy_report(mode: Mode) -> Report {
    let rs = RuleSet::embedded().unwrap();
    let p = &rs.policy;
    let today = Date::parse("2026-11-22").unwrap();
    let mut findings: Vec<Finding> = Vec::new();
    let mut ran: Vec<&str> = Vec::new();

    let osf = os::OsFacts {
        id: "ubuntu".into(),
        version_major: Some(16),
        version_minor: Some(4),
        source: Some("/etc/os-release".into()),
        ..Default::default()
    };
    findings.extend(os::check_os(p, &rs.eol, Some(&osf), today));
    ran.extend(os::IDS);

    let name = "My.Image-With-A-Name-Far-Too-Long";
    findings.extend(names::check_name(
        p,
        &rs.featured,
        &[],
        &["x".into()],
        Some(name),
    ));
    findings.extend(names::check_description(p, Some(name), Some("short")));
    ran.extend(names::NAME_IDS);
    ran.extend(names::DESCRIPTION_IDS);

    findings.extend(guest::check_filesystems(
        p,
        &[guest::VolumeFacts {
            name: "/ (/dev/vda1)".into(),
            fstype: "ext3".into(),
        }],
    ));
    ran.extend(guest::FS_IDS);
    let fstab = guest::FstabEntryFacts {
        line: 3,
        text: "UUID=dead /data ext4 defaults 0 2".into(),
        spec: "UUID=dead".into(),
        mountpoint: "/data".into(),
        fstype: "ext4".into(),
        options: vec!["defaults".into()],
        resolved: false,
        network: false,
    };
    findings.extend(guest::check_volumes(p, &[fstab]));
    ran.extend(guest::VOLUME_IDS);
    findings.extend(guest::check_access(
        p,
        guest::AccessFacts {
            sshd: true,
            sshd_config: true,
            python: false,
        },
    ));
    ran.extend(guest::ACCESS_IDS);
    findings.extend(guest::check_home_software(
        p,
        &[guest::HomeItem {
            path: "/home/u/anaconda3".into(),
            bytes: 5 << 30,
        }],
    ));
    ran.extend(guest::HOME_IDS);
    ran.extend(guest::STATE_IDS);

    let m = SoftwareMatcher::new(&rs.denylist, BTreeSet::new()).unwrap();
    let files = [FileEntry {
        path: "/usr/local/MATLAB/R2022b/bin/matlab".into(),
        size: 1,
    }];
    let lic = FoundLicense {
        path: "/opt/x/license.dat".into(),
        detection: detect_license(b"SERVER srv ANY 27000\nVENDOR acme\n").unwrap(),
    };
    findings.extend(software::check_software(
        p,
        &m,
        &["xmrig".into()],
        &files,
        &mut |_| None,
        &[lic],
    ));
    ran.extend(software::IDS);

    let scripts = post_scripts::PostScriptsFacts {
        dir_mode: Some(0o755),
        scripts: vec![post_scripts::PostScript {
            path: "/etc/atmo/post-scripts.d/setup".into(),
            kind: post_scripts::EntryKind::Regular,
            mode: 0o644,
            first_line: Some(b"#!/bin/sh".to_vec()),
        }],
    };
    findings.extend(post_scripts::check_post_scripts(p, &scripts));
    ran.extend(post_scripts::IDS);

    let cfg = vec![(
        "/etc/mongod.conf".to_string(),
        b"net:\n  bindIp: 0.0.0.0\n".to_vec(),
    )];
    findings.extend(daemons::check_open_daemons(p, &cfg));
    ran.extend(daemons::IDS);

    Report::new(
        mode,
        today,
        ImageInfo {
            path: Some("/images/lab.qcow2".into()),
            format: Some("qcow2".into()),
            size_bytes: Some(6 << 30),
            blake3: Some(blake3::hash(b"image").to_hex().to_string()),
            name: Some(name.into()),
            description: Some("short".into()),
        },
        ran.into_iter().map(String::from),
        findings,
        serde_json::json!({"os": osf}),
    )
}

#[test]
fn json_report_validates_against_the_schema() {
    let r = messy_report(Mode::Check);
    // The messy guest triggers every kind of check and every severity.
    let ids: BTreeSet<&str> = r.findings.iter().map(|f| f.check_id.as_str()).collect();
    for want in [
        "os.eol",
        "os.not-recommended",
        "name.forbidden-char",
        "name.too-long",
        "description.too-short",
        "fs.legacy",
        "volumes.detached",
        "access.python-missing",
        "software.in-home",
        "software.licensed",
        "software.cloud-unsuitable",
        "software.license-file",
        "post-scripts.mode",
        "post-scripts.first-line",
        "network.open-daemon",
    ] {
        assert!(ids.contains(want), "{want} not triggered: {ids:?}");
    }
    assert_eq!(schema_errors(&r), Vec::<String>::new());
    assert_eq!(exit_code(&r), 1);

    // A clean report validates too, and exits 0.
    let rs = RuleSet::embedded().unwrap();
    let clean = Report::new(
        Mode::Check,
        Date::parse("2026-11-22").unwrap(),
        ImageInfo::default(),
        imgsan::policy::ids::CHECKS.iter().map(|c| c.id.to_string()),
        names::check_name(&rs.policy, &rs.featured, &[], &[], Some("Good-Name")),
        serde_json::Value::Null,
    );
    assert!(clean.findings.is_empty());
    assert_eq!(schema_errors(&clean), Vec::<String>::new());
    assert_eq!(exit_code(&clean), 0);
    // The JSON reads back as the same report.
    let back: Report = serde_json::from_str(&render_json(&r)).unwrap();
    assert_eq!(back, r);
}

#[test]
fn the_schema_rejects_what_it_should() {
    // The validator is not vacuous: a report with a bad severity, a missing
    // field and an unknown field fails with three errors.
    let r = messy_report(Mode::Check);
    let mut v: serde_json::Value = serde_json::from_str(&render_json(&r)).unwrap();
    v["findings"][0]["severity"] = "fatal".into();
    v["summary"].as_object_mut().unwrap().remove("passed");
    v["surprise"] = true.into();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.json");
    std::fs::write(&p, v.to_string()).unwrap();
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/report.schema.json");
    let errors: Vec<String> = serde_json::from_value(python(VALIDATE, &[&schema, &p])).unwrap();
    assert_eq!(errors.len(), 3, "{errors:?}");
}

#[test]
fn junit_report_is_read_by_junitparser() {
    let r = messy_report(Mode::Check);
    let suites = junit(&r);
    let suite = &suites[0];
    let cases = suite["cases"].as_array().unwrap();
    assert_eq!(
        cases.len(),
        r.checks_run.len(),
        "one testcase per check that ran"
    );
    assert_eq!(
        suite["tests"].as_u64().unwrap() as usize,
        r.checks_run.len()
    );
    let failing: BTreeSet<String> = r
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| f.check_id.clone())
        .collect();
    assert_eq!(suite["failures"].as_u64().unwrap() as usize, failing.len());
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let results: Vec<&str> = c["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        if failing.contains(name) {
            assert_eq!(results, ["Failure"], "{name}");
        } else {
            assert!(results.is_empty(), "{name}: {results:?}");
        }
        assert_eq!(
            c["classname"].as_str().unwrap(),
            format!("imgsan.{}", name.split('.').next().unwrap())
        );
    }
    // Warnings pass and show in system-out.
    let daemon = cases
        .iter()
        .find(|c| c["name"] == "network.open-daemon")
        .unwrap();
    assert!(daemon["system_out"]
        .as_str()
        .unwrap()
        .starts_with("warning: [network.open-daemon]"));
    // In sanitize mode, the fstab-fixed error no longer fails its testcase.
    let s = junit(&messy_report(Mode::Sanitize));
    let detached = s[0]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "volumes.detached")
        .unwrap();
    assert!(detached["results"].as_array().unwrap().is_empty());
    assert!(detached["system_out"]
        .as_str()
        .unwrap()
        .contains("fixed by sanitize rule `fstab`"));
}

#[test]
fn hostile_guest_strings_survive_both_formats() {
    // Guest paths can hold markup, quotes, a CDATA terminator, terminal escapes
    // and characters XML 1.0 cannot carry.
    let nasty = "/home/<u>/\"q\" & 'a' ]]> \x1b[2J\x00\x08 \u{fffe} é\t\r\n.bin";
    let f = Finding {
        check_id: "software.licensed".into(),
        severity: Severity::Error,
        message: format!("found {nasty}"),
        evidence: vec![nasty.to_string()],
        fix_hint: Some(nasty.into()),
        fixed_by_sanitize: None,
    };
    let r = Report::new(
        Mode::Check,
        Date::parse("2026-01-01").unwrap(),
        ImageInfo {
            path: Some(nasty.into()),
            ..Default::default()
        },
        [],
        vec![f],
        serde_json::json!({"path": nasty}),
    );
    assert_eq!(schema_errors(&r), Vec::<String>::new());
    let back: Report = serde_json::from_str(&render_json(&r)).unwrap();
    assert_eq!(back.findings[0].evidence[0], nasty);

    let s = junit(&r);
    let case = &s[0]["cases"][0];
    let msg = case["messages"][0].as_str().unwrap();
    // Everything XML can carry comes back exactly; the rest is U+FFFD.
    assert_eq!(
        msg,
        format!(
            "found {}",
            nasty.replace(['\x1b', '\x00', '\x08', '\u{fffe}'], "\u{fffd}")
        )
    );
    assert!(case["texts"][0].as_str().unwrap().contains("]]>"));

    let t = render_text(&r, true);
    assert!(!t.contains("\x1b[2J") && !t.contains('\x00'), "{t:?}");
}
