//! How many entries run at once, and what each gets, from the machine's cores
//! and memory. The same rule sizes local runs and the array tasks of
//! `--emit slurm` / `--emit k8s`.
//!
//! The rule: jobs = min(entries, cores, memory / MEMORY_PER_JOB), at least 1.
//! Memory is what the kernel says is available (MemAvailable), capped by the
//! cgroup's limit when there is one (a container or a Slurm allocation). Each
//! job gets about threads / jobs worker threads.

use std::path::Path;

/// The memory one sanitize run is budgeted: the reader keeps metadata, not
/// data, in memory, and the writer streams (a 1.5 GB qcow2 peaked at 0.44 GB
/// RSS), so 1 GiB leaves room for large trees.
pub const MEMORY_PER_JOB: u64 = 1 << 30;

/// What the sizing rule saw and decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    pub cores: usize,
    /// Bytes available, when known.
    pub memory: Option<u64>,
    pub jobs: usize,
    /// Threads for each job.
    pub threads_per_job: usize,
}

/// The rule itself, on given figures.
pub fn decide(entries: usize, cores: usize, memory: Option<u64>) -> Sizing {
    let cores = cores.max(1);
    let by_memory = memory.map_or(usize::MAX, |m| {
        usize::try_from(m / MEMORY_PER_JOB).unwrap_or(usize::MAX)
    });
    let jobs = entries.min(cores).min(by_memory).max(1);
    Sizing {
        cores,
        memory,
        jobs,
        threads_per_job: (cores / jobs).max(1),
    }
}

/// The rule on this machine: `threads` (the `--threads` option) stands for the
/// cores when given.
pub fn this_machine(entries: usize, threads: Option<usize>) -> Sizing {
    let cores = threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    decide(entries, cores, available_memory())
}

/// MemAvailable, capped by a cgroup v2 or v1 memory limit.
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib.saturating_mul(1024))
    });
    let limit = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| read_limit(Path::new(p)));
    match (meminfo, limit) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn read_limit(p: &Path) -> Option<u64> {
    let t = std::fs::read_to_string(p).ok()?;
    // "max" (v2) or a huge number (v1) mean no limit.
    t.trim().parse::<u64>().ok().filter(|&n| n < (1 << 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        let g = 1u64 << 30;
        assert_eq!(decide(5, 2, Some(24 * g)).jobs, 2);
        assert_eq!(decide(5, 16, Some(3 * g + 5)).jobs, 3);
        assert_eq!(decide(1, 16, None).jobs, 1);
        assert_eq!(decide(0, 4, Some(g / 2)).jobs, 1);
        let s = decide(8, 8, Some(2 * g));
        assert_eq!((s.jobs, s.threads_per_job), (2, 4));
    }
}
