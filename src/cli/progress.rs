//! How progress is shown: bars on a terminal, one line per phase in a log,
//! nothing with --quiet.

use std::io::IsTerminal;
use std::sync::Mutex;

use imgsan::check::text::human;
use imgsan::progress::{Progress, Silent, Unit};

use super::Cli;

/// Progress bars on a terminal, nothing otherwise (CI, pipes, --quiet).
/// Bars on a terminal; one plain line per finished phase when standard error is
/// a log (CI, a pipe); nothing with --quiet.
pub fn progress_for(cli: &Cli) -> Box<dyn Progress> {
    let ci = std::env::var_os("CI").is_some();
    if cli.quiet {
        Box::new(Silent)
    } else if ci || !std::io::stderr().is_terminal() {
        Box::new(Lines::default())
    } else {
        Box::new(Bars::default())
    }
}

/// Plain progress for logs: "imgsan: write: 1.2 GiB in 3.4 s" when a phase ends.
#[derive(Default)]
struct Lines {
    phase: Mutex<Option<(String, std::time::Instant, u64, Unit)>>,
}

impl Progress for Lines {
    fn start(&self, phase: &str, total: u64, unit: Unit) {
        if let Ok(mut p) = self.phase.lock() {
            *p = Some((phase.to_string(), std::time::Instant::now(), total, unit));
        }
    }

    fn advance(&self, _: u64) {}

    fn finish(&self) {
        if let Some((phase, t0, total, unit)) = self.phase.lock().ok().and_then(|mut p| p.take()) {
            let what = match unit {
                _ if total == 0 => "done".to_string(),
                Unit::Bytes => human(total),
                Unit::Items => format!("{total} items"),
            };
            eprintln!(
                "imgsan: {phase}: {what} in {:.1} s",
                t0.elapsed().as_secs_f64()
            );
        }
    }

    fn note(&self, line: &str) {
        eprintln!("{line}");
    }
}

/// indicatif bars, one per phase.
#[derive(Default)]
struct Bars {
    bar: Mutex<Option<indicatif::ProgressBar>>,
}

impl Progress for Bars {
    fn start(&self, phase: &str, total: u64, unit: Unit) {
        let bar = indicatif::ProgressBar::new(total);
        let template = match unit {
            Unit::Bytes => {
                "{prefix:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
            }
            Unit::Items => "{prefix:>12} [{bar:40}] {pos}/{len} eta {eta}",
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(phase.to_string());
        if let Ok(mut b) = self.bar.lock() {
            *b = Some(bar);
        }
    }

    fn advance(&self, n: u64) {
        if let Ok(b) = self.bar.lock() {
            if let Some(b) = b.as_ref() {
                b.inc(n);
            }
        }
    }

    fn finish(&self) {
        if let Ok(mut b) = self.bar.lock() {
            if let Some(b) = b.take() {
                b.finish_and_clear();
            }
        }
    }

    fn note(&self, line: &str) {
        if let Ok(b) = self.bar.lock() {
            match b.as_ref() {
                Some(b) => b.println(line),
                None => eprintln!("{line}"),
            }
        }
    }
}
