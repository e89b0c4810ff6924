//! Arguments shared by several commands: the policy-check inputs (`check`,
//! `sanitize`) and the output disk size (`repack`, `sanitize`).

use std::path::PathBuf;

use imgsan::check;

fn parse_date(s: &str) -> Result<imgsan::rules::Date, String> {
    imgsan::rules::Date::parse(s)
}

/// What the policy check needs besides the image (shared by `sanitize`).
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// The image name (overrides the request file's `name`).
    #[arg(long, value_name = "N")]
    name: Option<String>,
    /// The image description (overrides the request file's `description`).
    #[arg(long, value_name = "D")]
    description: Option<String>,
    /// An imaging request file (YAML): name, description, files to exclude,
    /// exceptions, ...
    #[arg(long, value_name = "FILE")]
    request: Option<PathBuf>,
    /// More featured image names, one per line (blank lines and # comments
    /// skipped), besides the rules' list.
    #[arg(long, value_name = "FILE")]
    featured_names: Option<PathBuf>,
    /// The user's existing image names, one per line: reusing one is a
    /// warning.
    #[arg(long, value_name = "FILE")]
    existing_names: Option<PathBuf>,
    /// The date end-of-life checks use, YYYY-MM-DD (default: today, UTC). Set
    /// it in CI for reproducible results.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
    today: Option<imgsan::rules::Date>,
    /// A rules directory (policy.yaml, eol.yaml, denylist.yaml, ...) whose
    /// files replace the built-in ones, kind by kind.
    #[arg(long, value_name = "DIR")]
    rules: Option<PathBuf>,
}

impl CheckArgs {
    pub fn options(&self) -> check::CheckOptions {
        check::CheckOptions {
            name: self.name.clone(),
            description: self.description.clone(),
            request: self.request.clone(),
            featured_names: self.featured_names.clone(),
            existing_names: self.existing_names.clone(),
            today: self.today,
            rules_dir: self.rules.clone(),
        }
    }
}

/// How big the output disk is. Only the physically last volume changes size, and
/// only if imgsan rebuilds it (ext2/3/4).
#[derive(clap::Args, Debug, Clone)]
pub struct SizeArgs {
    /// Make the disk as small as its last filesystem allows, plus a margin.
    #[arg(long, conflicts_with = "size")]
    shrink: bool,
    /// Free space kept by --shrink (default: the larger of 10% and 256M).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "shrink")]
    margin: Option<u64>,
    /// Make the disk exactly SIZE bytes (suffixes K, M, G, T: powers of 1024).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    size: Option<u64>,
    /// Give LVM volume groups, PVs and LVs new random UUIDs (filesystem UUIDs
    /// are kept).
    #[arg(long)]
    new_lvm_uuids: bool,
}

impl SizeArgs {
    pub fn disk_size(&self) -> imgsan::repack::DiskSize {
        use imgsan::repack::DiskSize;
        match (self.shrink, self.size) {
            (true, _) => DiskSize::Shrink {
                margin: self.margin,
            },
            (false, Some(n)) => DiskSize::Bytes(n),
            (false, None) => DiskSize::Same,
        }
    }

    pub fn lvm_options(&self) -> imgsan::repack::lvm::LvmOptions {
        imgsan::repack::lvm::LvmOptions {
            new_uuids: self.new_lvm_uuids,
        }
    }
}

/// "10G" -> 10 GiB; plain numbers are bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix in {s:?} (use K, M, G or T)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}
