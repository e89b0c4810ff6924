//! `imgsan rules check` and `imgsan rules show`: their arguments and exit codes
//! (0 valid, 2 a rules or request file problem).

use std::io::Write;
use std::path::PathBuf;

use imgsan::rules::RuleSet;

use super::{rules_error, EXIT_CLEAN};

#[derive(clap::Subcommand)]
pub enum RulesCommand {
    /// Validate a rules file (policy, eol, denylist, featured-names, sanitize)
    /// or a request file. Every problem is printed as file:line:column: what was
    /// expected. Exit code 0 when valid, 2 otherwise.
    #[command(
        after_help = "Examples:\n  imgsan rules check rules/policy.yaml\n  imgsan rules check request.yaml\n\nThe kind comes from the file's `kind:` key, or else its name (policy.yaml, eol.yaml, denylist.yaml, sanitize.yaml, featured-names.yaml, request*.yaml)."
    )]
    Check {
        /// The file to validate.
        file: PathBuf,
    },
    /// Print the built-in rules as YAML: one kind, or all of them. With --rules,
    /// the effective rules after that directory's files replace the built-in
    /// ones (without comments).
    #[command(
        after_help = "Examples:\n  imgsan rules show                 # every built-in rules file\n  imgsan rules show policy > policy.yaml\n  imgsan rules show request         # an example request file\n  imgsan rules show denylist --rules ./our-cloud-rules"
    )]
    Show {
        /// policy, eol, denylist, featured-names, sanitize or request.
        #[arg(value_name = "KIND", value_parser = ["policy", "eol", "denylist", "featured-names", "sanitize", "request"])]
        kind: Option<String>,
        /// Show the effective rules with this rules directory.
        #[arg(long, value_name = "DIR")]
        rules: Option<PathBuf>,
    },
}

pub fn run(command: &RulesCommand) -> anyhow::Result<u8> {
    match command {
        RulesCommand::Check { file } => match imgsan::rules::check_file(file) {
            Ok(kind) => {
                println!("{}: valid {kind} file", file.display());
                Ok(EXIT_CLEAN)
            }
            Err(e) => Ok(rules_error(&e)),
        },
        RulesCommand::Show { kind, rules } => {
            let kind = kind.as_deref().and_then(imgsan::rules::Kind::from_name);
            let text = match rules {
                None => imgsan::rules::show(kind),
                Some(dir) => {
                    let rs = match RuleSet::load(Some(dir), &[]) {
                        Ok(r) => r,
                        Err(e) => return Ok(rules_error(&e)),
                    };
                    effective_rules(&rs, kind)
                }
            };
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            Ok(EXIT_CLEAN)
        }
    }
}

/// The effective rules as YAML (the request kind has no effective form: the
/// example is shown).
fn effective_rules(rs: &RuleSet, kind: Option<imgsan::rules::Kind>) -> String {
    use imgsan::rules::{to_yaml, Kind};
    let one = |k: Kind| match k {
        Kind::Policy => to_yaml(&rs.policy),
        Kind::Eol => to_yaml(&rs.eol),
        Kind::Denylist => to_yaml(&rs.denylist),
        Kind::Sanitize => to_yaml(&rs.sanitize),
        Kind::FeaturedNames => to_yaml(&rs.featured),
        Kind::Request => imgsan::rules::show(Some(Kind::Request)),
    };
    match kind {
        Some(k) => one(k),
        None => [
            Kind::Policy,
            Kind::Eol,
            Kind::Denylist,
            Kind::FeaturedNames,
            Kind::Sanitize,
        ]
        .into_iter()
        .map(|k| format!("--- # {}\n{}", k.file_name(), one(k)))
        .collect(),
    }
}
