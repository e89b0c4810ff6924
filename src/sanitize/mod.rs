//! Sanitize: applies the rule set (rules/sanitize.yaml, and an imaging request's
//! exclusions and exceptions) to a guest's volume trees, and reports what each
//! rule did.
//!
//! Owns: rule selection (enabled, `--disable`, `--no-hygiene`, request
//! exceptions, distribution base), the generic actions (empty-dir, delete,
//! truncate, replace), the built-in transforms (accounts, fstab, ssh host keys,
//! /var/log, resolv.conf) and the [`SanitizeReport`].
//!
//! How: for each rule, a [`Namespace`](crate::guest::Namespace) is built over the
//! trees as they are now, the rule's paths are resolved into targets (directory
//! entries, found with mounts and symlinks honoured and never leaving the guest),
//! the namespace is dropped, and the edits are applied to the trees. Targets are
//! sorted by path, so the same guest and rules give the same edits and report.
//!
//! Must not: read or write images or know on-disk formats; load file data other
//! than the small configuration files a transform rewrites or consults (each
//! read is bounded); follow a symlink at the final component of a path it edits
//! (a link is deleted or left alone, never its target).

mod accounts;
pub mod edit;
mod fstab;
pub mod report;
pub mod resolve;
mod ssh;
mod varlog;

use std::collections::BTreeSet;

use crate::error::Result;
use crate::guest::Namespace;
use crate::inspect::os::{Family, OsInfo};
use crate::rules::{
    Action, Base, Group, PathGlob, Policy, Request, RuleSet, SanitizeRule, SanitizeRules,
    Templates, Transform,
};
use crate::tree::{Kind, NodeId, Tree};

pub use edit::{Editor, Tally};
pub use report::{
    AccountsDetails, FstabDetails, FstabLineFate, Regeneration, RuleReport, SanitizeReport,
    Skipped, SshDetails, Status, Totals,
};
pub use resolve::{Layout, Target};

use report::Bounded;
use resolve::{expand, is_below, join, show};

/// How many paths (and notes) a rule's report lists; the count covers all.
pub const DEFAULT_MAX_LISTED_PATHS: usize = 200;

/// The id the request's exclusions are reported under.
pub const REQUEST_EXCLUDE: &str = "request-exclude";

/// Largest configuration file a transform reads whole (fstab, units, cloud.cfg).
const CONFIG_LIMIT: u64 = 1 << 20;

/// Run-time switches (the CLI's `--disable RULE`, `--no-hygiene`).
#[derive(Debug, Clone)]
pub struct Options {
    /// Rule ids not to run.
    pub disabled: BTreeSet<String>,
    /// Skip the whole hygiene group.
    pub no_hygiene: bool,
    /// Human accounts the accounts transform keeps anyway.
    pub keep_users: BTreeSet<String>,
    /// Bound on each rule's listed paths and notes.
    pub max_listed_paths: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            disabled: BTreeSet::new(),
            no_hygiene: false,
            keep_users: BTreeSet::new(),
            max_listed_paths: DEFAULT_MAX_LISTED_PATHS,
        }
    }
}

impl Options {
    /// Ids in `disabled` that name no rule (a usage error for the CLI).
    pub fn unknown_rules(&self, rules: &SanitizeRules) -> Vec<String> {
        let ids = rules.ids();
        self.disabled
            .iter()
            .filter(|d| !ids.contains(*d))
            .cloned()
            .collect()
    }
}

/// Everything a run needs besides the trees.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub rules: &'a SanitizeRules,
    pub templates: &'a Templates,
    /// The guest's distribution base; `None` when unknown (rules limited to a
    /// base do not run, and templates that differ by base are not used).
    pub base: Option<Base>,
    pub request: Option<&'a Request>,
    pub options: &'a Options,
}

impl<'a> Context<'a> {
    pub fn new(
        rules: &'a RuleSet,
        base: Option<Base>,
        request: Option<&'a Request>,
        options: &'a Options,
    ) -> Self {
        Context {
            rules: &rules.sanitize,
            templates: &rules.templates,
            base,
            request,
            options,
        }
    }

    /// The template `name` for this guest: its base's own, else common. With
    /// the base unknown, only a template every base shares.
    fn template(&self, name: &str) -> Option<&'a [u8]> {
        match self.base {
            Some(b) => self.templates.get(b, name),
            None => {
                let d = self.templates.get(Base::Debian, name)?;
                (self.templates.get(Base::Rhel, name) == Some(d)).then_some(d)
            }
        }
    }
}

/// The distribution base of a guest: the policy family listing its os-release
/// id, else its inspected family.
pub fn base_for(policy: &Policy, os: &OsInfo) -> Option<Base> {
    policy
        .os
        .families
        .iter()
        .find(|f| {
            f.os_release_ids
                .iter()
                .any(|i| i.eq_ignore_ascii_case(&os.id))
        })
        .map(|f| f.base)
        .or(match os.family {
            Family::Debian => Some(Base::Debian),
            Family::Rhel => Some(Base::Rhel),
            Family::Other => None,
        })
}

/// Whether `rule` runs, and if not why. An exception is reported first, so the
/// report names every rule the request skipped.
pub fn status(rule: &SanitizeRule, cx: &Context<'_>) -> (Status, Option<String>) {
    let id = rule.id.value.as_str();
    if let Some(e) = cx.request.and_then(|r| r.excepts(id)) {
        return (Status::Excepted, Some(e.reason.clone()));
    }
    if !rule.enabled {
        return (Status::Disabled, Some("enabled: false in the rules".into()));
    }
    if cx.options.disabled.contains(id) {
        return (Status::DisabledByOption, Some(format!("--disable {id}")));
    }
    if rule.group == Group::Hygiene && cx.options.no_hygiene {
        return (Status::HygieneOff, Some("--no-hygiene".into()));
    }
    if !rule.bases.is_empty() {
        match cx.base {
            None => {
                return (
                    Status::NotForBase,
                    Some("the guest's distribution base is unknown".into()),
                )
            }
            Some(b) if !rule.applies_to(b) => {
                return (
                    Status::NotForBase,
                    Some(format!("only for {} guests", bases_text(&rule.bases))),
                )
            }
            Some(_) => {}
        }
    }
    (Status::Applied, None)
}

fn bases_text(bases: &[Base]) -> String {
    bases
        .iter()
        .map(|b| b.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether rule `id` would run (for [`crate::policy::Report::resolve_fixers`]
/// before the rules are applied).
pub fn will_run(id: &str, cx: &Context<'_>) -> bool {
    cx.rules.rule(id).is_some_and(|r| status(r, cx).0.ran())
}

fn group_name(g: Group) -> &'static str {
    match g {
        Group::Required => "required",
        Group::Hygiene => "hygiene",
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

fn transform_name(t: Transform) -> &'static str {
    match t {
        Transform::Accounts => "accounts",
        Transform::Fstab => "fstab",
        Transform::SshHostKeys => "ssh-host-keys",
        Transform::VarLog => "var-log",
        Transform::ResolvConf => "resolv-conf",
    }
}

/// A rule as the engine runs it (a rules-file rule, or the request's
/// exclusions).
struct Spec<'a> {
    action: Action,
    transform: Option<Transform>,
    template: Option<&'a str>,
    paths: Vec<&'a PathGlob>,
    only_regular: bool,
    create: bool,
}

/// Applies the rules to the guest's trees (`trees[i]` is volume i's tree, as
/// `layout` numbers them) and reports what each did. Errors are failures to
/// read the guest or edits that cannot be made; a path that does not exist is
/// not an error.
pub fn apply(
    trees: &mut [Option<Tree>],
    layout: &Layout,
    cx: &Context<'_>,
) -> Result<SanitizeReport> {
    let mut ed = Editor::new(trees);
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for rule in &cx.rules.rules {
        let (st, reason) = status(rule, cx);
        let mut rr = RuleReport::new(
            &rule.id.value,
            group_name(rule.group),
            action_name(rule.action),
            rule.transform.map(transform_name),
            st,
        );
        if st == Status::Excepted {
            skipped.push(Skipped {
                rule: rule.id.value.clone(),
                reason: reason.clone().unwrap_or_default(),
            });
        }
        rr.reason = reason;
        if st.ran() {
            let spec = Spec {
                action: rule.action,
                transform: rule.transform,
                template: rule.template.as_ref().map(|t| t.value.as_str()),
                paths: rule.paths.iter().collect(),
                only_regular: rule.only_regular_files,
                create: rule.create,
            };
            Run::new(&mut ed, layout, cx, &mut rr).run(&spec)?;
        }
        out.push(rr);
    }
    if let Some(req) = cx.request.filter(|r| !r.exclude.is_empty()) {
        let mut rr = RuleReport::new(REQUEST_EXCLUDE, "request", "delete", None, Status::Applied);
        let mut paths = Vec::new();
        for g in &req.exclude {
            // A pattern that names the whole guest is refused, not obeyed.
            if matches!(g.as_str(), "/" | "/*" | "/**") {
                rr.notes.push(format!(
                    "{}: refused: it would delete the whole guest",
                    g.as_str()
                ));
            } else {
                paths.push(g);
            }
        }
        let spec = Spec {
            action: Action::Delete,
            transform: None,
            template: None,
            paths,
            only_regular: false,
            create: false,
        };
        Run::new(&mut ed, layout, cx, &mut rr).run(&spec)?;
        out.push(rr);
    }
    let mut report = SanitizeReport {
        base: cx.base.map(|b| b.as_str().to_string()),
        rules: out,
        totals: Totals::default(),
        skipped_by_exception: skipped,
        added_files: Vec::new(),
    };
    report.compute_totals();
    Ok(report)
}

/// Directories a literal empty-dir path may not be redirected to by a symlink
/// (a guest whose /tmp links to /usr must not lose /usr).
const PROTECTED: [&[u8]; 16] = [
    b"/", b"/bin", b"/boot", b"/dev", b"/etc", b"/home", b"/lib", b"/lib64", b"/opt", b"/proc",
    b"/run", b"/sbin", b"/srv", b"/sys", b"/usr", b"/var",
];

/// One rule being applied: the editor, and what the rule did so far.
pub(crate) struct Run<'r, 't> {
    ed: &'r mut Editor<'t>,
    layout: &'r Layout,
    cx: &'r Context<'r>,
    rr: &'r mut RuleReport,
    tally: Tally,
    paths: Bounded,
    notes: Bounded,
}

impl<'r, 't> Run<'r, 't> {
    fn new(
        ed: &'r mut Editor<'t>,
        layout: &'r Layout,
        cx: &'r Context<'r>,
        rr: &'r mut RuleReport,
    ) -> Self {
        let max = cx.options.max_listed_paths;
        let mut notes = Bounded::new(max);
        for n in std::mem::take(&mut rr.notes) {
            notes.push(n);
        }
        Run {
            ed,
            layout,
            cx,
            rr,
            tally: Tally::default(),
            paths: Bounded::new(max),
            notes,
        }
    }

    fn run(mut self, spec: &Spec<'_>) -> Result<()> {
        match spec.action {
            Action::EmptyDir => self.empty_dirs(spec)?,
            Action::Delete => self.delete(spec)?,
            Action::Truncate => self.truncate(spec)?,
            Action::Replace => self.replace(spec)?,
            Action::Transform => match spec.transform {
                Some(Transform::Accounts) => accounts::run(&mut self)?,
                Some(Transform::Fstab) => fstab::run(&mut self)?,
                Some(Transform::SshHostKeys) => ssh::run(&mut self, spec)?,
                Some(Transform::VarLog) => varlog::run(&mut self, spec)?,
                Some(Transform::ResolvConf) => self.resolv_conf(spec)?,
                None => self.note("no transform named".into()),
            },
        }
        let mut paths = std::mem::take(&mut self.paths.items);
        paths.sort();
        self.rr.paths = paths;
        self.rr.paths_count = self.paths.count;
        self.rr.notes = std::mem::take(&mut self.notes.items);
        self.rr.set_tally(&self.tally);
        Ok(())
    }

    fn ns(&self) -> Result<Namespace<'_>> {
        self.layout.namespace(self.ed.trees())
    }

    fn note(&mut self, s: String) {
        self.notes.push(s);
    }

    fn changed(&mut self, path: &[u8]) {
        self.paths.push(show(path));
    }

    fn targets(&self, globs: &[&PathGlob]) -> Result<Vec<Target>> {
        let ns = self.ns()?;
        Ok(expand(&ns, self.layout, globs))
    }

    fn kind_of(&self, t: &Target) -> Result<&'static str> {
        Ok(self.ed.tree(t.vol)?.node(t.node).kind.name())
    }

    fn is_file(&self, t: &Target) -> Result<bool> {
        Ok(matches!(
            self.ed.tree(t.vol)?.node(t.node).kind,
            Kind::File(_)
        ))
    }

    fn link_target(&self, t: &Target) -> Result<Option<String>> {
        Ok(match &self.ed.tree(t.vol)?.node(t.node).kind {
            Kind::Symlink(to) => Some(show(to)),
            _ => None,
        })
    }

    fn live(&self, t: &Target) -> bool {
        self.ed.still_there(t.vol, t.parent, &t.name, t.node)
    }

    /// Deletes one target: the entry and what it holds. A mount point, or a
    /// directory with mount points below, is emptied instead (the mounted
    /// volumes too), so the guest's fstab still finds its mount points.
    fn delete_target(&mut self, t: &Target) -> Result<()> {
        if let Some(vol) = t.mounted {
            let root = self.ed.tree(vol)?.root;
            self.note(format!(
                "{}: a mount point: its volume was emptied, the directory kept",
                show(&t.path)
            ));
            return self.empty_keeping_mounts(vol, root, &t.canonical);
        }
        if !self.layout.mounts_below(&t.canonical).is_empty()
            && self.ed.tree(t.vol)?.node(t.node).is_dir()
        {
            self.note(format!(
                "{}: holds mount points: emptied, the mount point directories kept",
                show(&t.path)
            ));
            return self.empty_keeping_mounts(t.vol, t.node, &t.canonical);
        }
        self.ed.remove(t.vol, t.parent, &t.name, &mut self.tally)?;
        self.changed(&t.path);
        Ok(())
    }

    /// Removes everything in directory `dir` (at canonical guest path `canon`)
    /// except the directories leading to mount points below it; mounted
    /// volumes there are emptied the same way.
    fn empty_keeping_mounts(&mut self, vol: usize, dir: NodeId, canon: &[u8]) -> Result<()> {
        let below = self.layout.mounts_below(canon);
        let entries: Vec<(Vec<u8>, NodeId, bool)> = {
            let t = self.ed.tree(vol)?;
            t.entries(dir)
                .iter()
                .map(|e| (t.name(e.name).to_vec(), e.node, t.node(e.node).is_dir()))
                .collect()
        };
        for (name, node, is_dir) in entries {
            let child = join(canon, &name);
            let leads_to_mount = below
                .iter()
                .any(|(m, _)| m.as_slice() == child.as_slice() || is_below(m, &child));
            if leads_to_mount && is_dir {
                match self.layout.mounted_at(&child) {
                    Some(mvol) => {
                        let root = self.ed.tree(mvol)?.root;
                        self.empty_keeping_mounts(mvol, root, &child)?;
                    }
                    None => self.empty_keeping_mounts(vol, node, &child)?,
                }
                continue;
            }
            self.ed.remove(vol, dir, &name, &mut self.tally)?;
            self.changed(&child);
        }
        Ok(())
    }

    fn empty_dirs(&mut self, spec: &Spec<'_>) -> Result<()> {
        for g in &spec.paths {
            if g.is_literal() {
                let found = {
                    let ns = self.ns()?;
                    ns.resolve_with_path(g.as_str().as_bytes(), true)
                        .ok()
                        .map(|(pos, canon)| (pos, canon, ns.node(pos).is_dir()))
                };
                let Some((pos, canon, is_dir)) = found else {
                    continue;
                };
                let written = g.as_str().as_bytes();
                if !is_dir {
                    self.note(format!("{}: not a directory, left alone", g.as_str()));
                    continue;
                }
                if canon.as_slice() != written {
                    if PROTECTED.contains(&canon.as_slice()) {
                        self.note(format!(
                            "{}: leads to {} through a symlink: refused",
                            g.as_str(),
                            show(&canon)
                        ));
                        continue;
                    }
                    self.note(format!("{}: a symlink to {}", g.as_str(), show(&canon)));
                }
                self.empty_keeping_mounts(pos.vol, pos.node, &canon)?;
            } else {
                for t in self.targets(&[g])? {
                    if !self.live(&t) {
                        continue;
                    }
                    let seen = t.seen(self.ed.trees());
                    if !self.ed.tree(seen.vol)?.node(seen.node).is_dir() {
                        continue;
                    }
                    self.empty_keeping_mounts(seen.vol, seen.node, &t.canonical)?;
                }
            }
        }
        Ok(())
    }

    fn delete(&mut self, spec: &Spec<'_>) -> Result<()> {
        for t in self.targets(&spec.paths)? {
            if !self.live(&t) {
                continue;
            }
            if spec.only_regular && !self.is_file(&t)? {
                let what = match self.link_target(&t)? {
                    Some(to) => format!("a symlink to {to}"),
                    None => format!("a {}", self.kind_of(&t)?),
                };
                self.note(format!("{}: {what}, left alone", show(&t.path)));
                continue;
            }
            self.delete_target(&t)?;
        }
        Ok(())
    }

    fn truncate(&mut self, spec: &Spec<'_>) -> Result<()> {
        for t in self.targets(&spec.paths)? {
            if !self.live(&t) {
                continue;
            }
            if !self.is_file(&t)? {
                let what = match self.link_target(&t)? {
                    Some(to) => format!("a symlink to {to}"),
                    None => format!("a {}", self.kind_of(&t)?),
                };
                self.note(format!("{}: {what}, left alone", show(&t.path)));
                continue;
            }
            if self.ed.truncate(t.vol, t.node, &mut self.tally)? {
                self.changed(&t.path);
            }
        }
        Ok(())
    }

    /// Overwrites each existing regular file of `spec.paths` with `bytes`;
    /// symlinks and other kinds are left alone. With `create`, a missing
    /// literal path whose directory exists is created (root, 0644).
    fn overwrite(&mut self, spec: &Spec<'_>, bytes: &[u8]) -> Result<()> {
        let targets = self.targets(&spec.paths)?;
        for t in &targets {
            if !self.live(t) {
                continue;
            }
            if !self.is_file(t)? {
                let what = match self.link_target(t)? {
                    Some(to) => format!("a symlink to {to}"),
                    None => format!("a {}", self.kind_of(t)?),
                };
                self.note(format!("{}: {what}, left alone", show(&t.path)));
                continue;
            }
            if self.ed.replace(t.vol, t.node, bytes, &mut self.tally)? {
                self.changed(&t.path);
            } else {
                self.note(format!("{}: already the template", show(&t.path)));
            }
        }
        if !spec.create {
            return Ok(());
        }
        for g in spec.paths.iter().filter(|g| g.is_literal()) {
            let path = g.as_str().as_bytes();
            if targets.iter().any(|t| t.path == path) {
                continue;
            }
            let Some((parent, name)) = path.rsplit_once_slash() else {
                continue;
            };
            let dir = {
                let ns = self.ns()?;
                ns.resolve(parent, true)
                    .ok()
                    .filter(|p| ns.node(*p).is_dir())
                    .filter(|p| ns.tree(p.vol).lookup(p.node, name).is_none())
            };
            match dir {
                Some(p) => {
                    self.ed
                        .create_file(p.vol, p.node, name, bytes, 0o644, &mut self.tally)?;
                    self.changed(path);
                }
                None => self.note(format!(
                    "{}: its directory is missing, not created",
                    g.as_str()
                )),
            }
        }
        Ok(())
    }

    fn replace(&mut self, spec: &Spec<'_>) -> Result<()> {
        let name = spec.template.unwrap_or_default();
        let Some(bytes) = self.cx.template(name) else {
            self.note(format!("no template `{name}` for this guest's base"));
            return Ok(());
        };
        self.overwrite(spec, bytes)
    }

    /// resolv.conf: a symlink (systemd-resolved's stub, resolvconf's file) is
    /// kept as it is; a regular file is reset from the template. A missing file
    /// is not created: the DHCP client or cloud-init writes it at boot.
    fn resolv_conf(&mut self, spec: &Spec<'_>) -> Result<()> {
        let name = spec.template.unwrap_or("resolv.conf");
        let Some(bytes) = self.cx.template(name) else {
            self.note(format!("no template `{name}` for this guest's base"));
            return Ok(());
        };
        let plain = Spec {
            action: spec.action,
            transform: spec.transform,
            template: spec.template,
            paths: spec.paths.clone(),
            only_regular: spec.only_regular,
            create: false,
        };
        self.overwrite(&plain, bytes)
    }
}

/// `rsplit_once('/')` for guest paths: ("/etc", "hosts") from "/etc/hosts".
trait SplitSlash {
    fn rsplit_once_slash(&self) -> Option<(&[u8], &[u8])>;
}

impl SplitSlash for [u8] {
    fn rsplit_once_slash(&self) -> Option<(&[u8], &[u8])> {
        let i = self.iter().rposition(|&b| b == b'/')?;
        let name = &self[i + 1..];
        if name.is_empty() {
            return None;
        }
        Some((if i == 0 { &self[..1] } else { &self[..i] }, name))
    }
}
