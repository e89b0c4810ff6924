//! Rules: the typed model of the files in `rules/` (policy, end-of-life table,
//! denylist, featured names, sanitize rule set, file templates, imaging
//! request), their strict validation, and loading.
//!
//! Owns reading and checking rules files; it must not apply them (policy checks
//! live in `policy`, tree edits in the sanitize layer) and must not touch an
//! image.
//!
//! The defaults are compiled in with `include_str!`, so `imgsan` works without
//! the files; an operator's directory or files replace them kind by kind.
//!
//! Strictness: every struct denies unknown keys, every value has one type, and
//! values with a grammar (dates, globs, check ids, octal modes, hashes, release
//! numbers) are checked while they are read, so the YAML reader reports them at
//! their line and column. Checks that need the whole file or several files
//! (duplicate ids, unknown templates, unknown families, allowlist ids) run
//! after, with locations taken from [`serde_saphyr::Spanned`] values.
//!
//! YAML crate: `serde-saphyr`. It is maintained, built to parse untrusted
//! input without panicking (with limits on nesting and alias expansion),
//! honours `#[serde(deny_unknown_fields)]`, rejects duplicate keys, and gives
//! every error a line and column (also errors raised by our own `Deserialize`
//! impls); `Spanned<T>` gives locations for the semantic checks. `serde_yaml`
//! is deprecated and unmaintained, and `serde_yml` is not trustworthy, so
//! neither is used.

pub mod date;
pub mod denylist;
pub mod eol;
pub mod error;
pub mod featured;
pub mod policy;
pub mod request;
pub mod sanitize;
pub mod templates;
pub mod types;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_saphyr::{MessageFormatter, Spanned};

pub use date::Date;
pub use denylist::{Category, DenyEntry, Denylist, KnownFile};
pub use eol::{EolRelease, EolTable};
pub use error::{Problem, RulesError};
pub use featured::{normalize_name, parse_name_list, FeaturedNames};
pub use policy::{Level, OsFamily, Policy};
pub use request::{Exception, Request, Visibility};
pub use sanitize::{Action, Group, SanitizeRule, SanitizeRules, Transform};
pub use templates::Templates;
pub use types::{Base, Kind, OsVersion, PathGlob, Text};

use error::Problems;

/// The default rules files, as shipped in `rules/`.
pub mod embedded {
    pub const POLICY: &str = include_str!("../../rules/policy.yaml");
    pub const EOL: &str = include_str!("../../rules/eol.yaml");
    pub const DENYLIST: &str = include_str!("../../rules/denylist.yaml");
    pub const SANITIZE: &str = include_str!("../../rules/sanitize.yaml");
    pub const FEATURED_NAMES: &str = include_str!("../../rules/featured-names.yaml");
    pub const REQUEST_EXAMPLE: &str = include_str!("../../rules/request.example.yaml");
    pub const BATCH_EXAMPLE: &str = include_str!("../../rules/batch.example.yaml");
}

/// The compiled-in text of a kind's default file (for `request` and `batch`,
/// the example).
pub fn embedded_text(kind: Kind) -> &'static str {
    match kind {
        Kind::Policy => embedded::POLICY,
        Kind::Eol => embedded::EOL,
        Kind::Denylist => embedded::DENYLIST,
        Kind::Sanitize => embedded::SANITIZE,
        Kind::FeaturedNames => embedded::FEATURED_NAMES,
        Kind::Request => embedded::REQUEST_EXAMPLE,
        Kind::Batch => embedded::BATCH_EXAMPLE,
    }
}

/// `imgsan rules show [KIND]`: the built-in defaults as YAML. Without a kind,
/// every rules file (not the request example) as one multi-document stream.
pub fn show(kind: Option<Kind>) -> String {
    match kind {
        Some(k) => embedded_text(k).to_string(),
        None => {
            let mut out = String::new();
            for k in [
                Kind::Policy,
                Kind::Eol,
                Kind::Denylist,
                Kind::FeaturedNames,
                Kind::Sanitize,
            ] {
                out.push_str(&format!("--- # rules/{}\n", k.file_name()));
                out.push_str(embedded_text(k));
                if !out.ends_with('\n') {
                    out.push('\n');
                }
            }
            out
        }
    }
}

/// Serialises any rules document back to YAML (for showing the effective rules
/// after an operator's files were loaded).
pub fn to_yaml<T: serde::Serialize>(doc: &T) -> String {
    serde_saphyr::to_string(doc).unwrap_or_else(|e| format!("# cannot serialise: {e}\n"))
}

fn yaml_options() -> serde_saphyr::Options {
    // YAML 1.1 booleans (yes/no/on/off) are a classic trap in policy files:
    // `enabled: no` meaning false surprises; insist on true/false.
    serde_saphyr::options! { strict_booleans: true }
}

/// Reworded reader messages: say what was expected in the rules' terms.
fn explain(msg: &str) -> String {
    let m = msg.trim();
    let better = if m.starts_with("invalid u32")
        || m.starts_with("invalid u64")
        || m.starts_with("invalid usize")
    {
        "expected a whole number, not negative"
    } else if m.starts_with("invalid boolean") {
        "expected true or false"
    } else if m.starts_with("expected sequence start") {
        "expected a list (`- item` lines or [a, b])"
    } else if m.starts_with("expected mapping start") {
        "expected a mapping (`key: value` lines)"
    } else {
        return m.to_string();
    };
    format!("{better} ({m})")
}

/// The reader's error in plain words. Limits and duplicate keys are worded
/// here: the library's own text names its internals (budget fields, option
/// types) that mean nothing to someone editing a rules file.
fn reader_message(e: &serde_saphyr::Error) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    use serde_saphyr::Error as E;
    let limits = serde_saphyr::Budget::default();
    let too_big = |what: String| {
        format!("the file is too large or too complex to be a rules or request file: {what}; is it the right file?")
    };
    match e.without_snippet() {
        E::Budget { breach, .. } => match breach {
            B::Nodes { .. } => too_big(format!(
                "it holds more than {} values, lists and mappings",
                limits.max_nodes
            )),
            B::Events { .. } => too_big(format!(
                "it holds more than {} YAML elements",
                limits.max_events
            )),
            B::Depth { .. } => too_big(format!(
                "lists and mappings are nested more than {} levels deep",
                limits.max_depth
            )),
            B::Documents { .. } => too_big(format!(
                "it holds more than {} documents (`---` lines)",
                limits.max_documents
            )),
            B::Aliases { .. } | B::Anchors { .. } => {
                too_big("it uses too many anchors and aliases (`&name`, `*name`)".into())
            }
            B::ScalarBytes { .. } => too_big(format!(
                "its values hold more than {} MiB of text",
                limits.max_total_scalar_bytes >> 20
            )),
            _ => too_big("it passes one of the reader's size limits".into()),
        },
        E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. } => {
            too_big("its aliases (`*name`) expand to too much data".into())
        }
        E::DuplicateMappingKey { key, .. } => match key {
            Some(k) => format!("key `{k}` appears twice in this mapping: keep one"),
            None => "a key appears twice in this mapping: keep one".into(),
        },
        E::AliasError { error, .. } => reader_message(error),
        E::InvalidUtf8Input => "the file is not UTF-8 text".into(),
        other => {
            let msg = serde_saphyr::DefaultMessageFormatter.format_message(other);
            explain(&msg)
        }
    }
}

/// A reader error as a [`RulesError`] at its line and column.
fn reader_error(file: &str, e: &serde_saphyr::Error) -> RulesError {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    RulesError::Invalid(vec![Problem {
        file: file.to_string(),
        line,
        column,
        message: reader_message(e),
    }])
}

/// Parses one YAML document of type `T`. `file` names it in errors.
pub fn parse<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, RulesError> {
    serde_saphyr::from_str_with_options::<T>(text, yaml_options())
        .map_err(|e| reader_error(file, &e))
}

fn check_kind(file: &str, found: &Option<Spanned<Kind>>, want: Kind, p: &mut Problems) {
    if let Some(k) = found {
        if k.value != want {
            p.at(
                file,
                k.referenced,
                format!("this is a {} file, but it is read as {}", k.value, want),
            );
        }
    }
}

/// Tells which kind of rules file `text` is: its `kind:` key when it has one,
/// else its file name (policy.yaml, eol.yaml, denylist.yaml, sanitize.yaml,
/// featured-names.yaml, request*.yaml).
pub fn detect_kind(file: &str, text: &str) -> Result<Kind, RulesError> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        kind: Option<Spanned<String>>,
    }
    let invalid = |line, column, message: String| {
        RulesError::Invalid(vec![Problem {
            file: file.to_string(),
            line,
            column,
            message,
        }])
    };
    // A file that is not YAML (or not a mapping) cannot say its kind: its
    // error is the one to report, at its line and column.
    let probe = serde_saphyr::from_str_with_options::<Probe>(text, yaml_options())
        .map_err(|e| reader_error(file, &e))?;
    if let Probe { kind: Some(k) } = probe {
        return Kind::from_name(&k.value).ok_or_else(|| {
            let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            invalid(
                k.referenced.line(),
                k.referenced.column(),
                format!(
                    "unknown kind `{}`: expected one of {}",
                    k.value,
                    known.join(", ")
                ),
            )
        });
    }
    let name = Path::new(file)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    if let Some(k) = Kind::ALL.into_iter().find(|k| k.file_name() == name) {
        return Ok(k);
    }
    if name.starts_with("request") && (name.ends_with(".yaml") || name.ends_with(".yml")) {
        return Ok(Kind::Request);
    }
    if name.starts_with("batch") && (name.ends_with(".yaml") || name.ends_with(".yml")) {
        return Ok(Kind::Batch);
    }
    Err(invalid(0, 0, "cannot tell which kind of rules file this is: add a `kind:` key (policy, eol, denylist, sanitize, featured-names, request, batch)".into()))
}

/// Where each document of a [`RuleSet`] came from (for error messages).
#[derive(Debug, Clone)]
pub struct Sources {
    pub policy: String,
    pub eol: String,
    pub denylist: String,
    pub sanitize: String,
    pub featured: String,
}

/// The complete, validated rules imgsan runs with.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub policy: Policy,
    pub eol: EolTable,
    pub denylist: Denylist,
    pub sanitize: SanitizeRules,
    pub featured: FeaturedNames,
    pub templates: Templates,
    pub sources: Sources,
}

fn builtin(kind: Kind) -> String {
    format!("<built-in>/{}", kind.file_name())
}

/// The largest rules or request file read. The shipped rules are tens of
/// kilobytes; a file past this is a mistake (or an attack), and is refused
/// before it is read.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// Reads a file to a string, naming it in the error; refuses files larger
/// than [`MAX_FILE_BYTES`].
fn read_text(path: &Path) -> Result<String, RulesError> {
    use std::io::Read;
    let io = |source| RulesError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(RulesError::Invalid(vec![Problem {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            message: format!(
                "the file is larger than {} MiB; rules and request files are far smaller: is it the right file?",
                MAX_FILE_BYTES >> 20
            ),
        }]));
    }
    String::from_utf8(bytes).map_err(|e| {
        // Say where: the line and column of the first byte that is not UTF-8.
        let at = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..at];
        let line = before.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        let column = (at
            - before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1)) as u64
            + 1;
        RulesError::Invalid(vec![Problem {
            file: path.display().to_string(),
            line,
            column,
            message: "the file is not UTF-8 text".into(),
        }])
    })
}

impl RuleSet {
    /// The compiled-in defaults. Fails only if the shipped files are broken,
    /// which the test suite rules out.
    pub fn embedded() -> Result<RuleSet, RulesError> {
        let rs = RuleSet {
            policy: parse(&builtin(Kind::Policy), embedded::POLICY)?,
            eol: parse(&builtin(Kind::Eol), embedded::EOL)?,
            denylist: parse(&builtin(Kind::Denylist), embedded::DENYLIST)?,
            sanitize: parse(&builtin(Kind::Sanitize), embedded::SANITIZE)?,
            featured: parse(&builtin(Kind::FeaturedNames), embedded::FEATURED_NAMES)?,
            templates: Templates::embedded(),
            sources: Sources {
                policy: builtin(Kind::Policy),
                eol: builtin(Kind::Eol),
                denylist: builtin(Kind::Denylist),
                sanitize: builtin(Kind::Sanitize),
                featured: builtin(Kind::FeaturedNames),
            },
        };
        rs.validate()?;
        Ok(rs)
    }

    /// The defaults, with every file of `dir` (named as in `rules/`) and its
    /// `templates/` replacing them, then each of `files` (kind detected from
    /// its `kind:` key or name) replacing its kind. Everything is validated,
    /// and every problem of every file is reported at once.
    pub fn load(dir: Option<&Path>, files: &[PathBuf]) -> Result<RuleSet, RulesError> {
        let mut rs = RuleSet::embedded()?;
        let mut chosen: Vec<(Kind, PathBuf)> = Vec::new();
        if let Some(dir) = dir {
            if !dir.is_dir() {
                return Err(RulesError::Io {
                    path: dir.to_path_buf(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
                });
            }
            for k in [
                Kind::Policy,
                Kind::Eol,
                Kind::Denylist,
                Kind::Sanitize,
                Kind::FeaturedNames,
            ] {
                let p = dir.join(k.file_name());
                if p.is_file() {
                    chosen.push((k, p));
                }
            }
            rs.templates.overlay_dir(&dir.join("templates"))?;
        }
        for f in files {
            let text = read_text(f)?;
            let k = detect_kind(&f.display().to_string(), &text)?;
            if matches!(k, Kind::Request | Kind::Batch) {
                let how = if k == Kind::Request {
                    "a request file is not a rules file: pass it with --request"
                } else {
                    "a batch manifest is not a rules file: run it with `imgsan batch`"
                };
                return Err(RulesError::Invalid(vec![Problem {
                    file: f.display().to_string(),
                    line: 0,
                    column: 0,
                    message: how.into(),
                }]));
            }
            chosen.retain(|(kk, _)| *kk != k);
            chosen.push((k, f.clone()));
        }
        let mut problems = Vec::new();
        for (k, path) in chosen {
            if let Err(e) = rs.replace_from_file(k, &path) {
                match e {
                    RulesError::Invalid(p) => problems.extend(p),
                    io => return Err(io),
                }
            }
        }
        if !problems.is_empty() {
            return Err(RulesError::Invalid(problems));
        }
        rs.validate()?;
        Ok(rs)
    }

    fn replace_from_file(&mut self, kind: Kind, path: &Path) -> Result<(), RulesError> {
        let text = read_text(path)?;
        let name = path.display().to_string();
        match kind {
            Kind::Policy => {
                self.policy = parse(&name, &text)?;
                self.sources.policy = name;
            }
            Kind::Eol => {
                self.eol = parse(&name, &text)?;
                self.sources.eol = name;
            }
            Kind::Denylist => {
                self.denylist = parse(&name, &text)?;
                self.sources.denylist = name;
            }
            Kind::Sanitize => {
                self.sanitize = parse(&name, &text)?;
                self.sources.sanitize = name;
            }
            Kind::FeaturedNames => {
                self.featured = parse(&name, &text)?;
                self.sources.featured = name;
            }
            Kind::Request | Kind::Batch => {}
        }
        Ok(())
    }

    /// Checks each document and the references between them.
    pub fn validate(&self) -> Result<(), RulesError> {
        let s = &self.sources;
        let mut p = Problems::default();
        check_kind(&s.policy, &self.policy.kind, Kind::Policy, &mut p);
        check_kind(&s.eol, &self.eol.kind, Kind::Eol, &mut p);
        check_kind(&s.denylist, &self.denylist.kind, Kind::Denylist, &mut p);
        check_kind(&s.sanitize, &self.sanitize.kind, Kind::Sanitize, &mut p);
        check_kind(
            &s.featured,
            &self.featured.kind,
            Kind::FeaturedNames,
            &mut p,
        );
        self.policy.validate(&s.policy, &mut p);
        let families: BTreeSet<String> = self
            .policy
            .os
            .families
            .iter()
            .map(|f| f.id.value.clone())
            .collect();
        self.eol.validate(&s.eol, &families, &mut p);
        self.denylist.validate(&s.denylist, &mut p);
        self.sanitize.validate(&s.sanitize, &self.templates, &mut p);
        self.featured.validate(&s.featured, &mut p);
        p.into_result()
    }

    /// Parses and validates a request file against these rules.
    pub fn parse_request(&self, file: &str, text: &str) -> Result<Request, RulesError> {
        let req: Request = parse(file, text)?;
        let mut p = Problems::default();
        check_kind(file, &req.kind, Kind::Request, &mut p);
        req.validate(file, &self.sanitize.ids(), &self.denylist.ids(), &mut p);
        // The description's cap is the policy's; past it the request cannot be
        // submitted, so the file is refused (`--description` is a finding).
        if let Some(d) = &req.description {
            let max = self.policy.description.max_length as usize;
            let len = d.value.as_str().trim().chars().count();
            if len > max {
                p.at(
                    file,
                    d.referenced,
                    format!("the description is {len} characters long; the image service keeps at most {max}: shorten it"),
                );
            }
        }
        p.into_result()?;
        Ok(req)
    }

    pub fn load_request(&self, path: &Path) -> Result<Request, RulesError> {
        let text = read_text(path)?;
        self.parse_request(&path.display().to_string(), &text)
    }

    /// The ids of denylist entries allowed: the rules' allowlist plus the
    /// request's.
    pub fn allowlist(&self, request: Option<&Request>) -> BTreeSet<String> {
        self.denylist
            .allowlist
            .iter()
            .chain(request.into_iter().flat_map(|r| r.allowlist.iter()))
            .map(|s| s.value.clone())
            .collect()
    }
}

/// `imgsan rules check FILE`: detects the file's kind, parses it strictly and
/// validates it (against the built-in rules for references to other files; a
/// `templates/` directory beside a sanitize file is used for its templates).
pub fn check_file(path: &Path) -> Result<Kind, RulesError> {
    let text = read_text(path)?;
    check_text(path, &text)
}

/// [`check_file`] on text already read; `path` names it and locates a sibling
/// `templates/` directory.
pub fn check_text(path: &Path, text: &str) -> Result<Kind, RulesError> {
    let name = path.display().to_string();
    let kind = detect_kind(&name, text)?;
    let mut rs = RuleSet::embedded()?;
    match kind {
        Kind::Request => {
            rs.parse_request(&name, text)?;
        }
        Kind::Batch => {
            crate::batch::manifest::check_text(path, text)?;
        }
        Kind::Sanitize => {
            if let Some(dir) = path.parent() {
                rs.templates.overlay_dir(&dir.join("templates"))?;
            }
            rs.sanitize = parse(&name, text)?;
            rs.sources.sanitize = name;
            rs.validate()?;
        }
        Kind::Policy => {
            rs.policy = parse(&name, text)?;
            rs.sources.policy = name;
            // The built-in EOL table names the built-in families; a policy that
            // drops a family needs its own EOL table, which is checked with it.
            // Alone, only the policy's own consistency is checked.
            let mut p = Problems::default();
            check_kind(&rs.sources.policy, &rs.policy.kind, Kind::Policy, &mut p);
            rs.policy.validate(&rs.sources.policy, &mut p);
            p.into_result()?;
        }
        Kind::Eol => {
            rs.eol = parse(&name, text)?;
            rs.sources.eol = name;
            rs.validate()?;
        }
        Kind::Denylist => {
            rs.denylist = parse(&name, text)?;
            rs.sources.denylist = name;
            rs.validate()?;
        }
        Kind::FeaturedNames => {
            rs.featured = parse(&name, text)?;
            rs.sources.featured = name;
            rs.validate()?;
        }
    }
    Ok(kind)
}
