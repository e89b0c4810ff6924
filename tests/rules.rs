//! The rules files: every shipped file validates, every kind of mistake is
//! reported with file:line:column and what was expected, the request example
//! parses, and the Ubuntu end-of-life dates agree with Debian's distro-info-data.

use std::path::{Path, PathBuf};

use imgsan::policy::ids::CHECKS;
use imgsan::rules::{self, check_file, Kind, RuleSet, RulesError};

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(rules_dir().join(name)).unwrap()
}

/// 1-based line and column of the first occurrence of `needle` (plus `skip`
/// characters) in `text`.
fn pos(text: &str, needle: &str, skip: usize) -> (u64, u64) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in text"))
        + skip;
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap().chars().count() + 1;
    (line as u64, col as u64)
}

/// Writes `text` as `name` in a fresh directory and runs `rules check` on it.
fn check(name: &str, text: &str) -> (PathBuf, Result<Kind, RulesError>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    let r = check_file(&p);
    (p, r, dir)
}

/// Asserts that checking `text` (the shipped file `name` with `from` replaced
/// by `to`) fails at the position of `at` (+`skip`) with a message containing
/// `want`.
fn expect_error(name: &str, from: &str, to: &str, at: &str, skip: usize, want: &str) {
    let orig = read(name);
    assert!(orig.contains(from), "{from:?} not in {name}");
    let text = orig.replacen(from, to, 1);
    let (path, r, _dir) = check(name, &text);
    let err = r.expect_err(&format!("{name}: {to:?} should be rejected"));
    let (line, col) = pos(&text, at, skip);
    let shown = err.to_string();
    let prefix = format!("{}:{line}:{col}: ", path.display());
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with(&prefix) && l.contains(want)),
        "expected a line starting {prefix:?} containing {want:?}, got:\n{shown}"
    );
}

#[test]
fn every_shipped_file_validates_and_is_the_embedded_one() {
    let rs = RuleSet::embedded().expect("built-in rules");
    assert!(!rs.denylist.entries.is_empty() && !rs.sanitize.rules.is_empty());
    for (name, kind) in [
        ("policy.yaml", Kind::Policy),
        ("eol.yaml", Kind::Eol),
        ("denylist.yaml", Kind::Denylist),
        ("sanitize.yaml", Kind::Sanitize),
        ("featured-names.yaml", Kind::FeaturedNames),
        ("request.example.yaml", Kind::Request),
    ] {
        let p = rules_dir().join(name);
        assert_eq!(
            check_file(&p).unwrap_or_else(|e| panic!("{e}")),
            kind,
            "{name}"
        );
        assert_eq!(
            rules::embedded_text(kind),
            read(name),
            "{name} differs from the embedded copy"
        );
        let text = read(name);
        assert!(text.contains("\nversion: 1\n"), "{name} has no version: 1");
    }
    // Loading the directory as an operator would gives the same rules.
    let loaded = RuleSet::load(Some(&rules_dir()), &[]).unwrap();
    assert_eq!(loaded.sanitize.ids(), rs.sanitize.ids());
    assert!(loaded.sources.policy.ends_with("rules/policy.yaml"));
}

#[test]
fn the_example_request_parses_with_its_fields() {
    let rs = RuleSet::embedded().unwrap();
    let req = rs
        .load_request(&rules_dir().join("request.example.yaml"))
        .unwrap();
    assert_eq!(req.name(), Some("Genomics-Workbench-v2"));
    assert!(req.description().unwrap().len() > 40);
    assert_eq!(req.installed_software.len(), 3);
    assert_eq!(
        req.excepts("hosts").map(|e| e.rule.value.as_str()),
        Some("hosts")
    );
    assert!(req.excepts("fstab").is_none());
    assert_eq!(req.exclude.len(), 2);
    assert_eq!(
        req.visibility.as_ref().map(|v| v.value),
        Some(rules::Visibility::SpecificUsers)
    );
    assert_eq!(req.certify_no_restricted_software, Some(true));
}

#[test]
fn every_check_id_is_configured_and_documented() {
    let policy = read("policy.yaml");
    let readme = read("README.md");
    for c in CHECKS {
        assert!(
            policy.contains(&format!("\n  {}: ", c.id)),
            "{} missing from policy.yaml checks",
            c.id
        );
        assert!(
            readme.contains(&format!("`{}`", c.id)),
            "{} missing from rules/README.md",
            c.id
        );
    }
    let rs = RuleSet::embedded().unwrap();
    for id in rs.sanitize.ids() {
        assert!(
            readme.contains(&format!("`{id}`")),
            "sanitize rule {id} missing from rules/README.md"
        );
    }
}

#[test]
fn sanitize_rules_cover_the_guidelines_including_their_typos() {
    let rs = RuleSet::embedded().unwrap();
    let paths: Vec<&str> = rs
        .sanitize
        .rules
        .iter()
        .flat_map(|r| r.paths.iter().map(|p| p.as_str()))
        .collect();
    for p in [
        "/home",
        "/mnt",
        "/tmp",
        "/root",
        "/etc/fstab",
        "/etc/group",
        "/etc/passwd",
        "/etc/shadow",
        "/etc/hosts",
        "/etc/host.conf",
        "/etc/ldap.conf",
        "/etc/sysconfig/iptables",
        "/var/log",
        // the real files the typos mean, and the typos themselves
        "/etc/hosts.allow",
        "/etc/host.allow",
        "/etc/hosts.deny",
        "/etc/host.deny",
        "/etc/resolv.conf",
        "/etc/resolve.conf",
        "/etc/ssh/ssh_host_*key*",
        "/etc/sshd/ssh_host_*key*",
        // hygiene
        "/etc/machine-id",
        "/var/lib/dbus/machine-id",
        "/var/lib/systemd/random-seed",
        "/var/tmp",
        "/**/.bash_history",
        "/etc/udev/rules.d/70-persistent-net.rules",
        "/var/lib/cloud/instances",
    ] {
        assert!(paths.contains(&p), "no rule acts on {p}");
    }
    for r in &rs.sanitize.rules {
        if r.group == rules::Group::Hygiene {
            assert!(r.enabled, "hygiene rule {} is on by default", r.id.value);
        }
    }
    let mid = rs.sanitize.rule("machine-id").unwrap();
    assert_eq!(
        mid.action,
        rules::Action::Truncate,
        "machine-id is emptied, not deleted"
    );
}

#[test]
fn ubuntu_eol_dates_agree_with_distro_info_data() {
    // Debian's distro-info-data is the oracle (.ci/setup.sh installs it).
    let csv = std::fs::read_to_string("/usr/share/distro-info/ubuntu.csv")
        .expect("/usr/share/distro-info/ubuntu.csv: run .ci/setup.sh (distro-info-data)");
    let rs = RuleSet::embedded().unwrap();
    let mut compared = 0;
    let mut header: Vec<&str> = Vec::new();
    for (i, line) in csv.lines().enumerate() {
        let cols: Vec<&str> = line.split(',').collect();
        if i == 0 {
            header = cols;
            continue;
        }
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .and_then(|k| cols.get(k))
                .copied()
                .filter(|s| !s.is_empty())
        };
        let version = col("version").unwrap().split_whitespace().next().unwrap();
        let (maj, min) = version.split_once('.').unwrap();
        let (maj, min): (u32, u32) = (maj.parse().unwrap(), min.parse().unwrap());
        if (maj, min) < (16, 4) {
            continue;
        }
        let Some(entry) = rs.eol.find("ubuntu", maj, Some(min)) else {
            panic!("eol.yaml lacks Ubuntu {version}");
        };
        assert_eq!(
            entry.standard_end.to_string(),
            col("eol").unwrap(),
            "Ubuntu {version} eol"
        );
        assert_eq!(
            entry.released.to_string(),
            col("release").unwrap(),
            "Ubuntu {version} release"
        );
        assert_eq!(
            entry.extended_end.map(|d| d.to_string()).as_deref(),
            col("eol-esm"),
            "Ubuntu {version} ESM"
        );
        compared += 1;
    }
    assert!(compared >= 20, "compared only {compared} releases");
    // Every RHEL-family major from 7 is in the table.
    for (fam, majors) in [
        ("centos", 7..=10),
        ("rhel", 7..=10),
        ("rocky", 8..=10),
        ("almalinux", 8..=10),
    ] {
        for m in majors {
            assert!(rs.eol.find(fam, m, Some(3)).is_some(), "{fam} {m}");
        }
    }
}

#[test]
fn syntax_and_type_errors_give_file_line_column() {
    // Unknown key (with the list of expected ones).
    expect_error(
        "policy.yaml",
        "  max_length: 30\n",
        "  max_length: 30\n  max_lenght: 31\n",
        "max_lenght",
        0,
        "unknown field `max_lenght`, expected one of",
    );
    // Wrong type: text for a number, a scalar for a list, yes for a boolean.
    expect_error(
        "policy.yaml",
        "  max_length: 30",
        "  max_length: thirty",
        "thirty",
        0,
        "expected a whole number",
    );
    expect_error(
        "policy.yaml",
        "  allowed: [ext4, xfs]",
        "  allowed: ext4",
        "ext4\n",
        0,
        "expected a list",
    );
    expect_error(
        "sanitize.yaml",
        "    enabled: true\n    action: empty-dir\n    paths: [/home]",
        "    enabled: yes\n    action: empty-dir\n    paths: [/home]",
        "yes",
        0,
        "expected true or false",
    );
    expect_error(
        "policy.yaml",
        "  min_length: 20",
        "  min_length: -5",
        "-5",
        0,
        "not negative",
    );
    // Unknown enum values.
    expect_error(
        "sanitize.yaml",
        "action: empty-dir",
        "action: wipe",
        "wipe",
        0,
        "unknown variant `wipe`",
    );
    expect_error(
        "denylist.yaml",
        "category: licensed",
        "category: paid",
        "paid",
        0,
        "unknown variant `paid`, expected one of licensed, cloud-unsuitable",
    );
    expect_error(
        "policy.yaml",
        "  os.eol: error",
        "  os.eol: fatal",
        "fatal",
        0,
        "unknown variant `fatal`",
    );
    // Missing key.
    expect_error(
        "sanitize.yaml",
        "    group: required\n    enabled: true\n    action: empty-dir\n    paths: [/home]",
        "    group: required\n    action: empty-dir\n    paths: [/home]",
        "description: User home",
        0,
        "missing field `enabled`",
    );
    // Values with a grammar: dates, globs, check ids, modes, hashes, versions.
    expect_error(
        "eol.yaml",
        "standard_end: 2021-04-30",
        "standard_end: 2021-02-30",
        "2021-02-30",
        0,
        "is not a day of the calendar",
    );
    expect_error(
        "eol.yaml",
        "standard_end: 2021-04-30",
        "standard_end: April 2021",
        "April",
        0,
        "expected YYYY-MM-DD",
    );
    expect_error(
        "denylist.yaml",
        "      - /opt/g16/g16\n",
        "      - /opt/g16/[g16\n",
        "/opt/g16/[g16",
        0,
        "is not a valid glob",
    );
    expect_error(
        "denylist.yaml",
        "      - /opt/g16/g16\n",
        "      - opt/g16/g16\n",
        "opt/g16/g16\n",
        0,
        "is not an absolute path",
    );
    expect_error(
        "policy.yaml",
        "  os.eol: error",
        "  os.eoll: error",
        "os.eoll",
        0,
        "unknown check id `os.eoll`",
    );
    expect_error(
        "policy.yaml",
        "  mode: \"0755\"",
        "  mode: \"0855\"",
        "\"0855\"",
        0,
        "is not a file mode",
    );
    expect_error(
        "policy.yaml",
        "  min_version: \"16.04\"",
        "  min_version: \"16.x\"",
        "\"16.x\"",
        0,
        "is not a release number",
    );
    expect_error(
        "denylist.yaml",
        "    reason: Site licences",
        "    hashes:\n      - size: 10\n        blake3: abc\n    reason: Site licences",
        "abc",
        0,
        "is not a blake3 hash",
    );
    // Format version and YAML syntax.
    expect_error(
        "featured-names.yaml",
        "version: 1",
        "version: 2",
        "2\nkind",
        0,
        "unsupported rules format version 2",
    );
    expect_error(
        "featured-names.yaml",
        "  - Featured-Ubuntu20\n",
        "  - [Featured-Ubuntu20\n",
        "[Featured",
        0,
        "",
    );
    expect_error(
        "policy.yaml",
        "    warn_days: 180\n",
        "    warn_days: 180\n    warn_days: 90\n",
        "warn_days: 90",
        0,
        "key `warn_days` appears twice in this mapping",
    );
}

#[test]
fn meaning_errors_give_file_line_column() {
    // A replace rule naming a template that does not exist.
    expect_error(
        "sanitize.yaml",
        "template: host.conf",
        "template: hostconf",
        "hostconf",
        0,
        "unknown template `hostconf`",
    );
    // A template that exists for RHEL only, used for every base.
    expect_error(
        "sanitize.yaml",
        "    template: iptables\n    bases: [rhel]",
        "    template: iptables\n    bases: [rhel, debian]",
        "iptables\n    bases: [rhel, debian]",
        0,
        "for debian guests",
    );
    // Duplicate ids.
    expect_error(
        "sanitize.yaml",
        "  - id: mnt\n",
        "  - id: tmp\n",
        "id: tmp\n    group: required\n    enabled: true\n    action: empty-dir\n    paths: [/tmp]",
        4,
        "rule `tmp` is defined twice",
    );
    expect_error(
        "denylist.yaml",
        "  - id: maple\n",
        "  - id: matlab\n",
        "id: matlab\n    product: Maple",
        4,
        "entry `matlab` is defined twice",
    );
    // Action/field mismatches.
    expect_error(
        "sanitize.yaml",
        "    action: replace\n    template: hosts\n",
        "    action: delete\n    template: hosts\n",
        "hosts\n    paths: [/etc/hosts]",
        0,
        "`template:` is only for replace",
    );
    expect_error(
        "sanitize.yaml",
        "    action: transform\n    transform: fstab\n",
        "    action: transform\n",
        "id: fstab",
        4,
        "needs `transform:`",
    );
    // End-of-life table: unknown family, dates out of order.
    expect_error(
        "eol.yaml",
        "  - family: rocky\n    version: \"8\"",
        "  - family: rockylinux\n    version: \"8\"",
        "rockylinux",
        0,
        "unknown family `rockylinux`",
    );
    expect_error(
        "eol.yaml",
        "    released: 2016-04-21\n    standard_end: 2021-04-30",
        "    released: 2022-04-21\n    standard_end: 2021-04-30",
        "ubuntu\n    version: \"16.04\"",
        0,
        "standard_end 2021-04-30 is before released 2022-04-21",
    );
    // Allowlist ids must be denylist ids.
    expect_error(
        "denylist.yaml",
        "allowlist: []",
        "allowlist: [matlab, matlba]",
        "matlba",
        0,
        "allowlist names `matlba`",
    );
    // Request: unknown rule in an exception, unknown allowlist id, users without specific-users.
    expect_error(
        "request.example.yaml",
        "  - rule: hosts",
        "  - rule: host",
        "host\n",
        0,
        "exception names rule `host`",
    );
    expect_error(
        "request.example.yaml",
        "allowlist: []",
        "allowlist: [sas9]",
        "sas9",
        0,
        "allowlist names `sas9`",
    );
    expect_error(
        "request.example.yaml",
        "visibility: specific-users",
        "visibility: public",
        "visibility: public",
        12,
        "only meaningful with visibility: specific-users",
    );
    // A kind key that contradicts the file's use, and an unknown kind.
    expect_error(
        "policy.yaml",
        "kind: policy",
        "kind: politics",
        "politics",
        0,
        "unknown kind `politics`",
    );
}

#[test]
fn kind_detection_uses_the_key_then_the_name() {
    // No kind key: the file name decides.
    let text = read("eol.yaml").replace("kind: eol\n", "");
    let (_, r, _d) = check("eol.yaml", &text);
    assert_eq!(r.unwrap(), Kind::Eol);
    // Neither: an explicit error, without a line.
    let (p, r, _d) = check("mine.yaml", &text);
    let e = r.unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: cannot tell which kind", p.display())),
        "{e}"
    );
    // The key wins over the name: a policy saved as eol.yaml is read as a policy.
    let (_, r, _d) = check("eol.yaml", &read("policy.yaml"));
    assert_eq!(r.unwrap(), Kind::Policy);
    // A request file name.
    let (_, r, _d) = check(
        "request-lab.yml",
        &read("request.example.yaml").replace("kind: request\n", ""),
    );
    assert_eq!(r.unwrap(), Kind::Request);
}

#[test]
fn an_operators_directory_replaces_kinds_and_reports_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let policy = read("policy.yaml")
        .replace("  max_length: 30", "  max_length: 20")
        .replace("  name.existing: warning", "  name.existing: off");
    std::fs::write(dir.path().join("policy.yaml"), policy).unwrap();
    std::fs::create_dir_all(dir.path().join("templates/common")).unwrap();
    std::fs::write(dir.path().join("templates/common/motd"), "welcome\n").unwrap();
    let sanitize = read("sanitize.yaml").replace(
        "rules:\n",
        "rules:\n  - id: motd\n    group: hygiene\n    enabled: true\n    action: replace\n    template: motd\n    paths: [/etc/motd]\n    description: Site banner.\n",
    );
    std::fs::write(dir.path().join("sanitize.yaml"), sanitize).unwrap();
    let rs = RuleSet::load(Some(dir.path()), &[]).unwrap();
    assert_eq!(rs.policy.image_name.max_length, 20);
    assert_eq!(rs.policy.severity("name.existing"), None);
    assert_eq!(
        rs.templates.get(rules::Base::Debian, "motd"),
        Some(&b"welcome\n"[..])
    );
    assert!(rs.sanitize.enabled("motd"));
    // The built-in files fill in what the directory lacks.
    assert_eq!(
        rs.eol.releases.len(),
        RuleSet::embedded().unwrap().eol.releases.len()
    );

    // Two broken files: both problems come back together.
    std::fs::write(
        dir.path().join("eol.yaml"),
        read("eol.yaml").replace("family: rocky", "family: rockie"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("featured-names.yaml"),
        read("featured-names.yaml").replace("names:", "namez:"),
    )
    .unwrap();
    let e = RuleSet::load(Some(dir.path()), &[]).unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.contains("featured-names.yaml:") && shown.contains("unknown field `namez`"),
        "{shown}"
    );
    std::fs::write(
        dir.path().join("featured-names.yaml"),
        read("featured-names.yaml"),
    )
    .unwrap();
    let e = RuleSet::load(Some(dir.path()), &[]).unwrap_err();
    assert!(e.to_string().contains("unknown family `rockie`"), "{e}");

    // An explicit file overrides the directory's file of its kind.
    let own = dir.path().join("my-eol.yaml");
    std::fs::write(&own, read("eol.yaml")).unwrap();
    let rs = RuleSet::load(Some(dir.path()), std::slice::from_ref(&own)).unwrap();
    assert_eq!(rs.sources.eol, own.display().to_string());
    // A request is not a rules file.
    let req = dir.path().join("request.yaml");
    std::fs::write(&req, read("request.example.yaml")).unwrap();
    assert!(RuleSet::load(None, &[req])
        .unwrap_err()
        .to_string()
        .contains("--request"));
    // A missing file is an I/O error naming it.
    let e = check_file(&dir.path().join("absent.yaml")).unwrap_err();
    assert!(
        matches!(e, RulesError::Io { .. }) && e.to_string().contains("absent.yaml"),
        "{e}"
    );
}

#[test]
fn show_prints_the_defaults_and_effective_rules_round_trip() {
    let all = rules::show(None);
    for k in [
        Kind::Policy,
        Kind::Eol,
        Kind::Denylist,
        Kind::FeaturedNames,
        Kind::Sanitize,
    ] {
        assert!(all.contains(rules::embedded_text(k)), "{k}");
        assert!(all.contains(&format!("--- # rules/{}", k.file_name())));
    }
    assert_eq!(rules::show(Some(Kind::Policy)), read("policy.yaml"));
    // The effective rules serialise back to YAML that reads as the same rules.
    let rs = RuleSet::embedded().unwrap();
    let again: rules::Policy = rules::parse("effective", &rules::to_yaml(&rs.policy)).unwrap();
    assert_eq!(again.image_name.max_length, rs.policy.image_name.max_length);
    assert_eq!(again.severity("os.eol"), rs.policy.severity("os.eol"));
    let again: rules::SanitizeRules =
        rules::parse("effective", &rules::to_yaml(&rs.sanitize)).unwrap();
    assert_eq!(again.ids(), rs.sanitize.ids());
    let again: rules::EolTable = rules::parse("effective", &rules::to_yaml(&rs.eol)).unwrap();
    assert_eq!(again.releases.len(), rs.eol.releases.len());
    let again: rules::Denylist = rules::parse("effective", &rules::to_yaml(&rs.denylist)).unwrap();
    assert_eq!(again.entries.len(), rs.denylist.entries.len());
}

#[test]
fn templates_are_commented_and_end_with_a_newline() {
    for base in ["common", "debian", "rhel"] {
        for ent in std::fs::read_dir(rules_dir().join("templates").join(base)).unwrap() {
            let p = ent.unwrap().path();
            let t = std::fs::read_to_string(&p).unwrap();
            assert!(t.starts_with('#') && t.ends_with('\n'), "{}", p.display());
        }
    }
    let rs = RuleSet::embedded().unwrap();
    assert!(rs.templates.names().len() >= 10);
}

#[test]
fn mutated_rules_files_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x1375);
    let alphabet = b" \n\t:-[]{}#&*!|>'\"%@`,?0a.\\";
    for name in [
        "policy.yaml",
        "eol.yaml",
        "denylist.yaml",
        "sanitize.yaml",
        "featured-names.yaml",
        "request.example.yaml",
    ] {
        let orig = read(name).into_bytes();
        let mut rejected = 0;
        for _ in 0..100 {
            let mut b = orig.clone();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..b.len());
                match rng.random_range(0..3) {
                    0 => b[i] = alphabet[rng.random_range(0..alphabet.len())],
                    1 => {
                        b.remove(i);
                    }
                    _ => b.insert(i, alphabet[rng.random_range(0..alphabet.len())]),
                }
            }
            let text = String::from_utf8_lossy(&b);
            if let Err(e) = rules::check_text(Path::new(name), &text) {
                rejected += 1;
                assert!(!e.to_string().is_empty());
                // Syntax and type errors always carry a position.
                for p in e.problems() {
                    assert!(p.file == name || p.file.starts_with("<built-in>"), "{p}");
                }
            }
        }
        assert!(rejected > 0, "{name}: no mutation was rejected");
    }
}

/// Checks `text` as a request file named `name` and returns the error text,
/// which must be one line per problem, each starting with file:line:column
/// (or file: for the whole file).
fn request_error(name: &str, text: &str) -> (PathBuf, String, tempfile::TempDir) {
    let (p, r, d) = check(name, text);
    let e = r.expect_err("the request should be refused").to_string();
    for line in e.lines() {
        assert!(line.starts_with(&p.display().to_string()), "{line}");
        // The YAML reader's own vocabulary stays out of what users read.
        for internal in [
            "budget",
            "Budget",
            "DuplicateKeyPolicy",
            "Options",
            "Nodes {",
        ] {
            assert!(!line.contains(internal), "internal wording in {line:?}");
        }
    }
    (p, e, d)
}

#[test]
fn request_messages_are_plain_and_located() {
    // A syntax error in a file whose kind is on line 2 is reported as a syntax
    // error at its place, not as an unknown kind.
    let text = "version: 1\nkind: request\nname: [Lab\n";
    let (p, e, _d) = request_error("mine.yaml", text);
    assert!(e.starts_with(&format!("{}:3:7: ", p.display())), "{e}");
    assert!(!e.contains("cannot tell which kind"), "{e}");

    // A duplicate key: where the second one is, in plain words.
    let text = "version: 1\nkind: request\nname: A-Lab\nname: B-Lab\n";
    let (p, e, _d) = request_error("request.yaml", text);
    assert_eq!(
        e,
        format!(
            "{}:4:1: key `name` appears twice in this mapping: keep one",
            p.display()
        )
    );

    // Too many values for the reader: which limit, in words.
    let mut text = String::from("version: 1\nkind: request\ntags:\n");
    for _ in 0..260_000 {
        text.push_str("  - t\n");
    }
    let (_, e, _d) = request_error("request.yaml", &text);
    assert!(
        e.contains("more than 250000 values, lists and mappings"),
        "{e}"
    );

    // A NUL (or an escape sequence) in the name or the description.
    for (field, value) in [
        ("name", "\"Lab\\0Image\""),
        ("name", "\"Lab\\e[31mImage\""),
        (
            "description",
            "\"Rocky 9 with the lab's tools\\0 and more of them\"",
        ),
    ] {
        let text = format!("version: 1\nkind: request\n{field}: {value}\n");
        let (p, e, _d) = request_error("request.yaml", &text);
        assert!(
            e.starts_with(&format!("{}:3:{}: ", p.display(), field.len() + 3)),
            "{e}"
        );
        assert!(e.contains("control character"), "{e}");
    }
    // A name is one line.
    let (p, e, _d) = request_error("request.yaml", "version: 1\nname: \"a\\tb\"\n");
    assert!(e.starts_with(&format!("{}:2:7: ", p.display())), "{e}");

    // A description past Glance's 255-character property limit, and a huge
    // one (refused before it is parsed).
    let long = "d".repeat(256);
    let (p, e, _d) = request_error(
        "request.yaml",
        &format!("version: 1\nname: Lab\ndescription: {long}\n"),
    );
    assert!(e.starts_with(&format!("{}:3:14: ", p.display())), "{e}");
    assert!(
        e.contains("256 characters long") && e.contains("at most 255"),
        "{e}"
    );
    let ok = "d".repeat(255);
    let (_, r, _d) = check(
        "request.yaml",
        &format!("version: 1\nname: Lab\ndescription: {ok}\n"),
    );
    r.unwrap();
    let huge = "d".repeat(50 << 20);
    let (p, e, _d) = request_error(
        "request.yaml",
        &format!("version: 1\nname: Lab\ndescription: {huge}\n"),
    );
    assert!(
        e.starts_with(&format!("{}: the file is larger than 4 MiB", p.display())),
        "{e}"
    );

    // An unquoted version is a number (1.10 would be 1.1): refused, with the
    // fix. Quoted, it is kept as written.
    let text =
        "version: 1\nname: Lab\ninstalled_software:\n  - name: samtools\n    version: 1.10\n";
    let (p, e, _d) = request_error("request.yaml", text);
    assert!(e.starts_with(&format!("{}:5:14: ", p.display())), "{e}");
    assert!(e.contains("put it in quotes"), "{e}");
    let rs = RuleSet::embedded().unwrap();
    let req = rs
        .parse_request("r.yaml", &text.replace("1.10", "\"1.10\""))
        .unwrap();
    assert_eq!(
        req.installed_software[0].version.as_ref().unwrap().as_str(),
        "1.10"
    );
    // Numbers and booleans for the name are refused the same way.
    for v in ["2024", "true", "1.5"] {
        let (_, e, _d) = request_error("request.yaml", &format!("version: 1\nname: {v}\n"));
        assert!(e.contains("put it in quotes"), "{v}: {e}");
    }
}
