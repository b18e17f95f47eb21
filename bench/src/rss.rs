//! Resident set sizes from `/proc/<pid>/status` (Linux only, like the fleet).

use std::collections::HashMap;

pub use testkit::processes::{children_of, descendants_of};

/// `VmRSS` (now) and `VmHWM` (peak) of a process, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub peak_kib: u64,
}

pub fn memory_of(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut memory = Memory::default();
    for line in status.lines() {
        if let Some(value) = line.strip_prefix("VmRSS:") {
            memory.rss_kib = parse_kib(value)?;
        } else if let Some(value) = line.strip_prefix("VmHWM:") {
            memory.peak_kib = parse_kib(value)?;
        }
    }
    Some(memory)
}

/// Proportional set size of a process in KiB (`Pss` of `/proc/<pid>/smaps_rollup`): its
/// private pages plus its share of pages it maps with others (the worker binary's code, which
/// every extraction child maps too, libpdfium). The sum over processes is what they use together.
pub fn proportional_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find_map(|line| line.strip_prefix("Pss:"))
        .and_then(parse_kib)
}

pub fn own_memory() -> Option<Memory> {
    memory_of(std::process::id())
}

fn parse_kib(value: &str) -> Option<u64> {
    value.trim().trim_end_matches("kB").trim().parse().ok()
}

/// The processes below `parent` whose memory is their own: its children that have run their own
/// program (see [`exec_ed`]) and every process below those (the extraction server's children, forked
/// per file, share the server's pages copy-on-write, as any forked process does).
pub fn own_program_descendants(parent: u32) -> Vec<u32> {
    let mut found = exec_ed(parent, &children_of(parent));
    let below: Vec<u32> = found
        .iter()
        .flat_map(|&child| descendants_of(child))
        .collect();
    found.extend(below);
    found
}

/// Those of `children` (of `parent`) that have run their own program. Between fork and exec (while
/// the worker confines it) a child still maps every page of its parent, copy-on-write, so its
/// `VmRSS` and `VmHWM` are the parent's memory, not its own; until exec its command line is the
/// parent's too.
pub fn exec_ed(parent: u32, children: &[u32]) -> Vec<u32> {
    let command_line = |pid: u32| std::fs::read(format!("/proc/{pid}/cmdline")).ok();
    let Some(parent_line) = command_line(parent) else {
        return Vec::new();
    };
    children
        .iter()
        .copied()
        .filter(|&child| command_line(child).is_some_and(|line| line != parent_line))
        .collect()
}

/// Peak memory seen per process while sampling.
#[derive(Debug, Default)]
pub struct PeakTracker {
    peaks: HashMap<u32, u64>,
}

impl PeakTracker {
    /// Records the current `VmHWM` of every process below `parent` (see [`own_program_descendants`]).
    pub fn sample_children(&mut self, parent: u32) {
        for child in own_program_descendants(parent) {
            if let Some(memory) = memory_of(child) {
                let peak = self.peaks.entry(child).or_default();
                *peak = (*peak).max(memory.peak_kib);
            }
        }
    }

    pub fn sampled_processes(&self) -> usize {
        self.peaks.len()
    }

    pub fn highest_kib(&self) -> u64 {
        self.peaks.values().copied().max().unwrap_or(0)
    }

    pub fn median_kib(&self) -> u64 {
        let mut values: Vec<u64> = self.peaks.values().copied().collect();
        values.sort_unstable();
        values.get(values.len() / 2).copied().unwrap_or(0)
    }
}
