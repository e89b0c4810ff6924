//! `imgsan ls` and `imgsan cat`: their arguments, and the mapping of a missing
//! guest path (exit 2) and an unreadable image (exit 3).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use imgsan::check;
use imgsan::disk;

use super::{EXIT_CLEAN, EXIT_USAGE};

/// List a directory of the guest, as `ls -A` would.
///
/// PATH is a path in the guest: the root filesystem with the others mounted
/// where its /etc/fstab says. Symlinks (absolute ones too) and ".." resolve
/// inside the guest, never on the host. An image without a guest root (a
/// bare data filesystem) is browsed from its one readable filesystem; with
/// several, --volume chooses. Names that are not printable are escaped
/// (\xHH, and \\ for a backslash); times are UTC.
///
/// Exit codes: 0 listed; 2 no such path in the guest (or a bad option);
/// 3 image unreadable or unsupported.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  imgsan ls disk.qcow2\n  imgsan ls disk.qcow2 /etc -l\n  imgsan ls disk.raw /boot -R\n  imgsan ls data.raw / --volume 2 -lR"
)]
pub struct LsArgs {
    /// The image (RAW or QCOW2).
    input: PathBuf,
    /// A path in the guest (default: /).
    #[arg(default_value = "/")]
    path: PathBuf,
    /// Long format: mode, links, uid, gid, size (major, minor for
    /// devices), mtime, name (and "-> target" for symlinks). A symlink given
    /// as PATH is shown itself, not followed, unless PATH ends in "/".
    #[arg(short, long)]
    long: bool,
    /// List subdirectories too (not through symlinks, across mounts), each
    /// headed by its guest path and a colon.
    #[arg(short = 'R', long)]
    recursive: bool,
    /// Browse partition N alone as / (its number as `imgsan inspect` shows).
    #[arg(long, value_name = "N")]
    volume: Option<u32>,
    /// Force the input format instead of detecting it.
    #[arg(long, value_parser = ["raw", "qcow2"])]
    format: Option<String>,
}

/// Write a guest file's bytes to standard output.
///
/// PATH resolves as for `imgsan ls`; symlinks are followed inside the guest.
/// The content is streamed in chunks of at most 1 MiB; holes read as zeros.
///
/// Exit codes: 0 written; 2 no such path in the guest, or a path that is a
/// directory or special file, not a regular file; 3 image unreadable or
/// unsupported; 4 standard output could not be written.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  imgsan cat disk.qcow2 /etc/os-release\n  imgsan cat disk.raw /etc/fstab | grep -v '^#'\n  imgsan cat disk.raw /var/log/syslog --volume 1 > syslog"
)]
pub struct CatArgs {
    /// The image (RAW or QCOW2).
    input: PathBuf,
    /// A path in the guest.
    path: PathBuf,
    /// Browse partition N alone as / (its number as `imgsan inspect` shows).
    #[arg(long, value_name = "N")]
    volume: Option<u32>,
    /// Force the input format instead of detecting it.
    #[arg(long, value_parser = ["raw", "qcow2"])]
    format: Option<String>,
}

pub fn ls(args: &LsArgs) -> anyhow::Result<u8> {
    let LsArgs {
        input,
        path,
        long,
        recursive,
        volume,
        format,
    } = args;
    browse(input, format, *volume, |view, out| {
        let opts = imgsan::browse::LsOptions {
            long: *long,
            recursive: *recursive,
        };
        imgsan::browse::ls(view, path.as_os_str().as_encoded_bytes(), opts, out)
    })
}

pub fn cat(args: &CatArgs) -> anyhow::Result<u8> {
    let CatArgs {
        input,
        path,
        volume,
        format,
    } = args;
    browse(input, format, *volume, |view, out| {
        imgsan::browse::cat(view, path.as_os_str().as_encoded_bytes(), out).map(|_| ())
    })
}

/// Opens the image, reads its filesystems and runs `ls` or `cat` over the guest.
/// A path or volume the guest does not have is a usage error (exit 2).
fn browse(
    input: &std::path::Path,
    format: &Option<String>,
    volume: Option<u32>,
    f: impl FnOnce(&imgsan::browse::View<'_>, &mut dyn Write) -> Result<(), imgsan::browse::BrowseError>,
) -> anyhow::Result<u8> {
    use imgsan::browse::BrowseError;
    let opts = disk::OpenOptions {
        format: format.clone(),
    };
    let image =
        imgsan::image::Image::open(input, &opts).with_context(|| input.display().to_string())?;
    let (volumes, errors) = check::read_volumes(&image);
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let res = imgsan::browse::view(&volumes, errors, volume).and_then(|view| {
        for w in &view.warnings {
            eprintln!("imgsan: warning: {w}");
        }
        f(&view, &mut out)
    });
    match res {
        Ok(()) => {
            out.flush()
                .map_err(|e| imgsan::Error::output("standard output", e))?;
            Ok(EXIT_CLEAN)
        }
        Err(BrowseError::Request(msg)) => {
            let _ = out.flush();
            eprintln!("imgsan: {msg}");
            Ok(EXIT_USAGE)
        }
        Err(BrowseError::Failed(e)) => {
            let _ = out.flush();
            Err(anyhow::Error::new(e).context(input.display().to_string()))
        }
    }
}
