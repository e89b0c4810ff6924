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
//! Beyond the mounted guest, the rules also run on what the guest cannot see:
//! the directory a mount point covers in the filesystem below it (files left in
//! the root filesystem's /home before /home got its own volume), and, when the
//! operator keeps them, volumes the guest never mounts (the "anywhere" rules
//! only). Warnings name what a rule left alone for a reason the operator should
//! know: a symlinked target, a hard link that keeps deleted data alive.
//!
//! Must not: read or write images or know on-disk formats; load file data other
//! than the small configuration files a transform rewrites or consults (each
//! read is bounded); follow a symlink in any component of a path it edits (a
//! link is deleted or left alone, never its target, and a path that passes
//! through a link is left alone with a warning).

mod accounts;
pub mod edit;
mod fstab;
pub mod report;
pub mod resolve;
pub(crate) mod ssh;
mod varlog;

use std::collections::{BTreeSet, HashMap, HashSet};

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
use resolve::{expand, is_below, join, literal_prefix, parent_of, show, symlink_on};

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
    let before = multi_named(&ed);
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
    covered_and_unmounted(&mut ed, layout, cx, &mut out)?;
    let mut warnings = std::mem::take(&mut ed.warnings);
    warnings.extend(hard_link_warnings(&ed, layout, &before)?);
    warnings.sort();
    warnings.dedup();
    let mut report = SanitizeReport {
        base: cx.base.map(|b| b.as_str().to_string()),
        rules: out,
        totals: Totals::default(),
        skipped_by_exception: skipped,
        added_files: Vec::new(),
        warnings,
    };
    report.compute_totals();
    Ok(report)
}

/// The rules again, on what the guest does not see: for each mount point, the
/// directory it covers in the filesystem below (with the mount taken away), the
/// rules acting only inside it; and each kept unmounted volume as its own root,
/// with the rules' "anywhere" paths (`/**/...`) only. Transforms other than
/// var-log edit the guest's own configuration and do not run here.
fn covered_and_unmounted(
    ed: &mut Editor<'_>,
    layout: &Layout,
    cx: &Context<'_>,
    out: &mut [RuleReport],
) -> Result<()> {
    let rules: Vec<&SanitizeRule> = cx.rules.rules.iter().collect();
    let runs_here = |rule: &SanitizeRule| {
        !matches!(rule.action, Action::Transform) || rule.transform == Some(Transform::VarLog)
    };
    for (mp, _) in &layout.mounts {
        let uncovered = layout.uncovering(mp);
        let holds_something = {
            let ns = uncovered.namespace(ed.trees())?;
            ns.resolve(mp, false)
                .ok()
                .filter(|p| ns.node(*p).is_dir())
                .is_some_and(|p| !ns.tree(p.vol).entries(p.node).is_empty())
        };
        if !holds_something {
            continue;
        }
        for (rule, rr) in rules.iter().zip(out.iter_mut()) {
            if !rr.status.ran() || !runs_here(rule) {
                continue;
            }
            let spec = Spec {
                action: rule.action,
                transform: rule.transform,
                template: rule.template.as_ref().map(|t| t.value.as_str()),
                paths: rule.paths.iter().collect(),
                only_regular: rule.only_regular_files,
                create: false,
            };
            let mut run = Run::new(ed, &uncovered, cx, rr);
            run.within = Some(mp.clone());
            run.run(&spec)?;
        }
    }
    for &vol in &layout.unmounted {
        let alone = Layout::alone(vol);
        for (rule, rr) in rules.iter().zip(out.iter_mut()) {
            if !rr.status.ran() || matches!(rule.action, Action::Transform) {
                continue;
            }
            let paths: Vec<&PathGlob> = rule
                .paths
                .iter()
                .filter(|g| g.as_str().starts_with("/**/"))
                .collect();
            if paths.is_empty() {
                continue;
            }
            let spec = Spec {
                action: rule.action,
                transform: None,
                template: rule.template.as_ref().map(|t| t.value.as_str()),
                paths,
                only_regular: rule.only_regular_files,
                create: false,
            };
            let mut run = Run::new(ed, &alone, cx, rr);
            run.volume_label = Some(layout.volume_name(vol));
            run.run(&spec)?;
        }
    }
    Ok(())
}

/// Every name of each regular file that has several (hard links), per volume,
/// before any edit.
type Names = HashMap<(usize, NodeId), Vec<Vec<u8>>>;

fn multi_named(ed: &Editor<'_>) -> Names {
    let mut out = Names::new();
    for (vol, t) in ed.trees().iter().enumerate() {
        let Some(t) = t else { continue };
        let linked = (0..t.nodes.len() as NodeId)
            .any(|n| ed.names_of(vol, n) > 1 && matches!(t.node(n).kind, Kind::File(_)));
        if !linked {
            continue;
        }
        for (path, id) in t.paths() {
            if ed.names_of(vol, id) > 1 && matches!(t.node(id).kind, Kind::File(_)) {
                out.entry((vol, id)).or_default().push(path);
            }
        }
    }
    out
}

/// A warning for each file a rule removed by one name while another name keeps
/// it: its data stays in the output, under the kept name.
fn hard_link_warnings(ed: &Editor<'_>, layout: &Layout, before: &Names) -> Result<Vec<String>> {
    let mut nodes: Vec<(usize, NodeId)> = ed
        .lost_a_name
        .iter()
        .copied()
        .filter(|&(v, n)| ed.alive(v, n))
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let mut now: Names = Names::new();
    let vols: HashSet<usize> = nodes.iter().map(|&(v, _)| v).collect();
    for &vol in &vols {
        let t = ed.tree(vol)?;
        for (path, id) in t.paths() {
            if nodes.binary_search(&(vol, id)).is_ok() {
                now.entry((vol, id)).or_default().push(path);
            }
        }
    }
    let mut out = Vec::new();
    for key in nodes {
        let kept = now.get(&key).cloned().unwrap_or_default();
        let removed: Vec<String> = before
            .get(&key)
            .map(|old| {
                old.iter()
                    .filter(|p| !kept.contains(p))
                    .map(|p| layout.guest_path(key.0, p))
                    .collect()
            })
            .unwrap_or_default();
        let kept: Vec<String> = kept.iter().map(|p| layout.guest_path(key.0, p)).collect();
        if removed.is_empty() || kept.is_empty() {
            continue;
        }
        out.push(format!(
            "{}: removed, but it is a hard link of {}, which is kept: the file's data stays in the image",
            removed.join(", "),
            kept.join(", ")
        ));
    }
    Ok(out)
}

/// One rule being applied: the editor, and what the rule did so far.
pub(crate) struct Run<'r, 't> {
    ed: &'r mut Editor<'t>,
    layout: &'r Layout,
    cx: &'r Context<'r>,
    rr: &'r mut RuleReport,
    tally: Tally,
    paths: Bounded,
    notes: Bounded,
    /// When set, the rule acts only at or below this canonical path (the
    /// directory a mount point covers).
    within: Option<Vec<u8>>,
    /// When set, the run is on a volume the guest does not mount: reported paths
    /// are prefixed with its name.
    volume_label: Option<String>,
}

impl<'r, 't> Run<'r, 't> {
    fn new(
        ed: &'r mut Editor<'t>,
        layout: &'r Layout,
        cx: &'r Context<'r>,
        rr: &'r mut RuleReport,
    ) -> Self {
        // A rule may run more than once (the covered directories, unmounted
        // volumes): each run adds to what the report already holds.
        let max = cx.options.max_listed_paths;
        let mut notes = Bounded::new(max);
        for n in std::mem::take(&mut rr.notes) {
            notes.push(n);
        }
        let mut paths = Bounded::new(max);
        paths.items = std::mem::take(&mut rr.paths);
        paths.count = rr.paths_count;
        Run {
            ed,
            layout,
            cx,
            tally: rr.tally(),
            rr,
            paths,
            notes,
            within: None,
            volume_label: None,
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
        paths.dedup();
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

    fn warn(&mut self, s: String) {
        self.ed.warnings.push(s);
    }

    /// A guest path as reports show it: the covered directory or the unmounted
    /// volume it lies in said.
    fn shown(&self, path: &[u8]) -> String {
        match (&self.volume_label, &self.within) {
            (Some(v), _) => format!("{v}:{}", show(path)),
            (None, Some(m)) => format!("{} (under the {} mount)", show(path), show(m)),
            (None, None) => show(path),
        }
    }

    fn changed(&mut self, path: &[u8]) {
        let s = self.shown(path);
        self.paths.push(s);
    }

    /// Whether a canonical path is one this run may act on.
    pub(crate) fn within(&self, canon: &[u8]) -> bool {
        self.within
            .as_ref()
            .is_none_or(|m| canon == m.as_slice() || is_below(canon, m))
    }

    /// Warn about a rule path that passes through a symlink (it names no
    /// target: the rule leaves it alone).
    fn symlinked_warning(&self, ns: &Namespace<'_>, g: &PathGlob) -> Option<String> {
        let p = g.as_str().as_bytes();
        let dir = if g.is_literal() {
            parent_of(p)?.to_vec()
        } else {
            literal_prefix(g.as_str()).0.into_bytes()
        };
        let (link, to) = symlink_on(ns, &dir)?;
        if !self.within(&link) {
            return None;
        }
        Some(format!(
            "{}: not followed: {} is a symlink to {}; a rule never changes what lies outside its own path",
            g.as_str(),
            self.shown(&link),
            show(&to)
        ))
    }

    fn targets(&mut self, globs: &[&PathGlob]) -> Result<Vec<Target>> {
        let (mut v, warnings) = {
            let ns = self.ns()?;
            let v = expand(&ns, self.layout, globs);
            let w: Vec<String> = globs
                .iter()
                .filter_map(|g| self.symlinked_warning(&ns, g))
                .collect();
            (v, w)
        };
        for w in warnings {
            self.warn(w);
        }
        v.retain(|t| self.within(&t.canonical));
        Ok(v)
    }

    /// A symlinked target that is left alone: a note for the rule, a warning
    /// for the report.
    fn link_left_alone(&mut self, t: &Target, to: &str) {
        let what = format!("{}: a symlink to {to}, left alone", self.shown(&t.path));
        self.warn(format!("{what} (rules never follow symlinks)"));
        self.note(what);
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

    /// A truncated or rewritten file changes under every name it has.
    fn note_hard_links(&mut self, t: &Target) {
        let n = self.ed.names_of(t.vol, t.node);
        if n > 1 {
            self.note(format!(
                "{}: has {n} names (hard links); each shows the change",
                show(&t.path)
            ));
        }
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
        // Directories on the way to a mount point stay, and are emptied in turn.
        let mut descend = Vec::new();
        if !below.is_empty() {
            let t = self.ed.tree(vol)?;
            for e in t.entries(dir) {
                let name = t.name(e.name);
                let child = join(canon, name);
                let leads_to_mount = below
                    .iter()
                    .any(|(m, _)| m.as_slice() == child.as_slice() || is_below(m, &child));
                if leads_to_mount && t.node(e.node).is_dir() {
                    descend.push((name.to_vec(), e.node, child));
                }
            }
        }
        let removed = self.ed.empty_dir(
            vol,
            dir,
            |n| descend.iter().any(|(d, _, _)| d.as_slice() == n),
            &mut self.tally,
        )?;
        for name in removed {
            self.changed(&join(canon, &name));
        }
        for (_, node, child) in descend {
            match self.layout.mounted_at(&child) {
                Some(mvol) => {
                    let root = self.ed.tree(mvol)?.root;
                    self.empty_keeping_mounts(mvol, root, &child)?;
                }
                None => self.empty_keeping_mounts(vol, node, &child)?,
            }
        }
        Ok(())
    }

    fn empty_dirs(&mut self, spec: &Spec<'_>) -> Result<()> {
        for g in &spec.paths {
            if g.is_literal() {
                let written = g.as_str().as_bytes();
                let found = {
                    let ns = self.ns()?;
                    match symlink_on(&ns, written) {
                        Some(link) => Err(link),
                        None => Ok(ns
                            .resolve_with_path(written, false)
                            .ok()
                            .map(|(pos, canon)| (pos, canon, ns.node(pos).is_dir()))),
                    }
                };
                let (pos, canon, is_dir) = match found {
                    Ok(Some(f)) => f,
                    Ok(None) => continue,
                    Err((link, to)) => {
                        if self.within(&link) {
                            let what = if link.as_slice() == written {
                                format!("{} is a symlink to {}", self.shown(&link), show(&to))
                            } else {
                                format!(
                                    "{} leads through {}, a symlink to {}",
                                    g.as_str(),
                                    self.shown(&link),
                                    show(&to)
                                )
                            };
                            self.warn(format!(
                                "{what}: kept, not followed (rules never follow symlinks)"
                            ));
                            self.note(format!("{what}: left alone"));
                        }
                        continue;
                    }
                };
                if !self.within(&canon) {
                    continue;
                }
                if !is_dir {
                    self.note(format!("{}: not a directory, left alone", g.as_str()));
                    continue;
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
                match self.link_target(&t)? {
                    Some(to) => self.link_left_alone(&t, &to),
                    None => {
                        let what = format!("a {}", self.kind_of(&t)?);
                        self.note(format!("{}: {what}, left alone", self.shown(&t.path)));
                    }
                }
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
                match self.link_target(&t)? {
                    Some(to) => self.link_left_alone(&t, &to),
                    None => {
                        let what = format!("a {}", self.kind_of(&t)?);
                        self.note(format!("{}: {what}, left alone", self.shown(&t.path)));
                    }
                }
                continue;
            }
            if self.ed.truncate(t.vol, t.node, &mut self.tally)? {
                self.changed(&t.path);
                self.note_hard_links(&t);
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
                match self.link_target(t)? {
                    // resolv.conf is a link on most systems (systemd-resolved's
                    // stub): nothing to warn about.
                    Some(to) if spec.transform == Some(Transform::ResolvConf) => {
                        self.note(format!("{}: a symlink to {to}, left alone", show(&t.path)));
                    }
                    Some(to) => self.link_left_alone(t, &to),
                    None => {
                        let what = format!("a {}", self.kind_of(t)?);
                        self.note(format!("{}: {what}, left alone", self.shown(&t.path)));
                    }
                }
                continue;
            }
            if self.ed.replace(t.vol, t.node, bytes, &mut self.tally)? {
                self.changed(&t.path);
                self.note_hard_links(t);
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

/// Empties a volume the guest never mounts: every entry of its root goes,
/// except `lost+found`, which is kept empty (as mke2fs makes it). The root keeps
/// its metadata; the volume keeps its identity when rebuilt.
pub fn empty_volume(tree: &mut Tree) -> Result<()> {
    let root = tree.root;
    let lost_found = tree
        .lookup(root, b"lost+found")
        .filter(|&n| tree.node(n).is_dir());
    if let Kind::Dir(entries) = &mut tree.node_mut(root).kind {
        entries.retain(|e| Some(e.node) == lost_found);
    }
    if let Some(lf) = lost_found {
        if let Kind::Dir(entries) = &mut tree.node_mut(lf).kind {
            entries.clear();
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Flavor, Node};

    fn dir(t: &mut Tree, parent: NodeId, name: &str) -> NodeId {
        let mut n = Node::new(Kind::Dir(vec![]));
        n.perm = 0o755;
        let d = t.add_node(n);
        t.link(parent, name.as_bytes(), d).unwrap();
        d
    }

    fn file(t: &mut Tree, parent: NodeId, name: &str, body: &str) -> NodeId {
        let mut n = Node::new(Kind::File(vec![]));
        n.perm = 0o600;
        let f = t.add_node(n);
        t.link(parent, name.as_bytes(), f).unwrap();
        t.set_content(f, body.as_bytes().to_vec());
        f
    }

    fn link(t: &mut Tree, parent: NodeId, name: &str, target: &str) {
        let l = t.add_node(Node::new(Kind::Symlink(target.as_bytes().into())));
        t.link(parent, name.as_bytes(), l).unwrap();
    }

    /// A small guest whose paths try to lead rules astray.
    fn guest() -> Tree {
        let mut t = Tree::new(Flavor::Synthetic, None);
        let r = t.root;
        let etc = dir(&mut t, r, "etc");
        file(&mut t, etc, "os-release", "ID=debian\n");
        file(&mut t, etc, "shadow", "root:$6$SECRET:1::::::\n");
        file(&mut t, etc, "hosts.real", "10.1.2.3 labdb\n");
        link(&mut t, etc, "hosts", "hosts.real");
        let app = dir(&mut t, etc, "app");
        file(&mut t, app, ".bash_history", "history\n");
        let root = dir(&mut t, r, "root");
        link(&mut t, root, ".bash_history", "/etc/shadow");
        let usr = dir(&mut t, r, "usr");
        let bin = dir(&mut t, usr, "bin");
        file(&mut t, bin, "ls", "ELF");
        link(&mut t, r, "tmp", "usr");
        let data = dir(&mut t, r, "data");
        let home = dir(&mut t, data, "home");
        let alice = dir(&mut t, home, "alice");
        file(&mut t, alice, "notes", "secret");
        link(&mut t, r, "home", "/data/home");
        let srv = dir(&mut t, r, "srv");
        link(&mut t, srv, "link", "/etc");
        link(&mut t, srv, "loop", "loop");
        t.finish().unwrap();
        t
    }

    fn rules(yaml: &str) -> SanitizeRules {
        crate::rules::parse(
            "test.yaml",
            &format!("version: 1\nkind: sanitize\nrules:\n{yaml}"),
        )
        .unwrap()
    }

    fn apply_rules(t: Tree, yaml: &str) -> (Vec<Option<Tree>>, SanitizeReport) {
        let mut trees = vec![Some(t)];
        let rules = rules(yaml);
        let templates = Templates::embedded();
        let options = Options::default();
        let cx = Context {
            rules: &rules,
            templates: &templates,
            base: Some(Base::Debian),
            request: None,
            options: &options,
        };
        let report = apply(&mut trees, &Layout::default(), &cx).unwrap();
        (trees, report)
    }

    fn read(trees: &[Option<Tree>], path: &str) -> Option<Vec<u8>> {
        Layout::default()
            .namespace(trees)
            .unwrap()
            .read(path.as_bytes(), 1 << 20)
            .ok()
    }

    fn is_link(trees: &[Option<Tree>], path: &str) -> bool {
        let t = trees[0].as_ref().unwrap();
        t.resolve(path.as_bytes(), false)
            .is_ok_and(|n| matches!(t.node(n).kind, Kind::Symlink(_)))
    }

    const RULE: &str = "    group: required\n    enabled: true\n    description: x\n";

    #[test]
    fn final_symlinks_are_never_followed() {
        let yaml = format!(
            "  - id: hist\n{RULE}    action: delete\n    only_regular_files: true\n    paths: [\"/**/.bash_history\"]\n\
             \x20 - id: del\n{RULE}    action: delete\n    paths: [/root/.bash_history]\n\
             \x20 - id: hosts\n{RULE}    action: replace\n    template: hosts\n    paths: [/etc/hosts]\n\
             \x20 - id: trunc\n{RULE}    action: truncate\n    paths: [/root/.bash_history]\n"
        );
        let (trees, report) = apply_rules(guest(), &yaml);
        // The history rule deleted the real file and left the link to /etc/shadow.
        let hist = report.rule("hist").unwrap();
        assert_eq!(hist.paths, ["/etc/app/.bash_history"]);
        assert!(hist.notes[0].contains("/root/.bash_history: a symlink to /etc/shadow"));
        // Deleting the link removed the link only.
        assert_eq!(report.rule("del").unwrap().paths, ["/root/.bash_history"]);
        assert!(read(&trees, "/etc/shadow")
            .unwrap()
            .starts_with(b"root:$6$SECRET"));
        // A replace rule does not write through a symlink.
        assert!(is_link(&trees, "/etc/hosts"));
        assert_eq!(
            read(&trees, "/etc/hosts.real").unwrap(),
            b"10.1.2.3 labdb\n"
        );
        assert!(report.rule("hosts").unwrap().notes[0].contains("a symlink to hosts.real"));
        assert_eq!(report.rule("trunc").unwrap().paths_count, 0);
    }

    #[test]
    fn empty_dir_never_follows_a_symlink() {
        let yaml = format!(
            "  - id: tmp\n{RULE}    action: empty-dir\n    paths: [/tmp]\n\
             \x20 - id: home\n{RULE}    action: empty-dir\n    paths: [/home]\n\
             \x20 - id: deep\n{RULE}    action: delete\n    paths: [/home/alice/notes, \"/srv/link/*\"]\n"
        );
        let (trees, report) = apply_rules(guest(), &yaml);
        // /tmp -> usr and /home -> /data/home: both kept, their targets intact.
        assert_eq!(read(&trees, "/usr/bin/ls").unwrap(), b"ELF");
        assert_eq!(read(&trees, "/data/home/alice/notes").unwrap(), b"secret");
        assert!(is_link(&trees, "/home") && is_link(&trees, "/tmp"));
        for id in ["tmp", "home", "deep"] {
            assert_eq!(report.rule(id).unwrap().paths_count, 0, "{id}");
        }
        // Paths through a link name nothing either; every case is a warning
        // naming the link and its target.
        assert!(read(&trees, "/etc/shadow")
            .unwrap()
            .starts_with(b"root:$6$SECRET"));
        let w = &report.warnings;
        for (link, to) in [
            ("/tmp", "usr"),
            ("/home", "/data/home"),
            ("/srv/link", "/etc"),
        ] {
            assert!(
                w.iter().any(|x| x.contains(link) && x.contains(to)),
                "{link}: {w:?}"
            );
        }
    }

    #[test]
    fn glob_walks_do_not_follow_symlinks_and_survive_loops() {
        let yaml = format!(
            "  - id: hist\n{RULE}    action: delete\n    paths: [\"/srv/**/.bash_history\", \"/srv/loop/x/*\"]\n\
             \x20 - id: all\n{RULE}    action: delete\n    paths: [\"/**/.bash_history\"]\n"
        );
        let (trees, report) = apply_rules(guest(), &yaml);
        // /srv/link -> /etc is not walked: nothing under /srv matched.
        assert_eq!(report.rule("hist").unwrap().paths_count, 0);
        // From /, the file is found once, by its own path; the link named
        // .bash_history is deleted as a link.
        assert_eq!(
            report.rule("all").unwrap().paths,
            ["/etc/app/.bash_history", "/root/.bash_history"]
        );
        assert!(read(&trees, "/etc/shadow").is_some());
    }

    #[test]
    fn create_true_makes_a_labelled_file_and_the_same_input_gives_the_same_report() {
        let with_label = || {
            let mut t = guest();
            let x = t.xattr(b"security.selinux", b"system_u:object_r:etc_t:s0\0");
            let etc = t.resolve(b"/etc", false).unwrap();
            t.node_mut(etc).xattrs.push(x);
            t
        };
        let yaml = format!(
            "  - id: hc\n{RULE}    action: replace\n    template: host.conf\n    create: true\n    paths: [/etc/host.conf, /nodir/host.conf]\n"
        );
        let (trees, report) = apply_rules(with_label(), &yaml);
        let t = trees[0].as_ref().unwrap();
        let f = t.resolve(b"/etc/host.conf", false).unwrap();
        let n = t.node(f);
        assert_eq!((n.perm, n.uid, n.gid), (0o644, 0, 0));
        assert_eq!(t.xattr_value(&n.xattrs[0]), b"system_u:object_r:etc_t:s0\0");
        let hc = report.rule("hc").unwrap();
        assert_eq!(
            (hc.files_created, hc.paths.as_slice()),
            (1, &["/etc/host.conf".to_string()][..])
        );
        assert!(hc.notes[0].contains("/nodir/host.conf: its directory is missing"));
        let (_, again) = apply_rules(with_label(), &yaml);
        assert_eq!(again, report);
    }
}
