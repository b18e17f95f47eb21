//! CPU time of the processes a benchmark involves, read from `/proc`, so a scale-out
//! benchmark can say which resource binds: the workers, Postgres (the backends of the
//! benchmark's own database), the SQS endpoint (the moto server), or the benchmark
//! process itself (api-lite and the stand-in model or embedding server).
//!
//! Figures are CPU-seconds between two snapshots, divided by the wall time between them:
//! cores in use. The machine's busy cores come from `/proc/stat`, so a machine shared
//! with other work shows up as busy cores no listed part accounts for.

use std::collections::HashMap;
use std::time::Instant;

use sqlx::PgPool;

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`; 100 on Linux).
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// User + system CPU ticks of a process (its threads included), if it still exists.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after it.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

/// Busy and total ticks of the whole machine.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|value| value.parse().ok())
        .collect();
    let total: u64 = values.iter().sum();
    // idle and iowait.
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The pid of the moto server listening on `port`, found by its command line.
pub fn moto_pid(port: u16) -> Option<u32> {
    let port_text = port.to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(command_line) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let arguments: Vec<String> = command_line
            .split(|byte| *byte == 0)
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect();
        let is_moto = arguments
            .iter()
            .any(|argument| argument.contains("moto_server"));
        let on_port = arguments
            .windows(2)
            .any(|pair| pair[0] == "-p" && pair[1] == port_text)
            || arguments
                .iter()
                .any(|argument| argument == &format!("--port={port}"));
        if is_moto && on_port {
            return Some(pid);
        }
    }
    None
}

/// The backends serving the database `pool` is connected to.
pub async fn database_backends(pool: &PgPool) -> sqlx::Result<Vec<u32>> {
    let pids: Vec<(i32,)> = sqlx::query_as(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(pool)
    .await?;
    Ok(pids.into_iter().map(|(pid,)| pid as u32).collect())
}

/// A labelled set of processes and their CPU ticks at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    taken: Instant,
    machine: Option<(u64, u64)>,
    processes: HashMap<(String, u32), u64>,
}

impl Snapshot {
    /// CPU ticks now of each `(label, pid)`.
    pub fn take(processes: &[(String, u32)]) -> Self {
        Self {
            taken: Instant::now(),
            machine: machine_ticks(),
            processes: processes
                .iter()
                .filter_map(|(label, pid)| {
                    process_ticks(*pid).map(|ticks| ((label.clone(), *pid), ticks))
                })
                .collect(),
        }
    }
}

/// Cores in use per label between two snapshots, and the machine's busy cores.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub wall_secs: f64,
    /// Label → cores in use (CPU-seconds per second) over the interval.
    pub cores_by_label: Vec<(String, f64)>,
    /// Busy cores of the whole machine (every process, other work included).
    pub machine_busy_cores: f64,
    pub machine_cores: usize,
}

impl Usage {
    /// The change between `before` and `after`. A process missing from `before` (it
    /// started in between) counts from zero; one gone by `after` is left out.
    pub fn between(before: &Snapshot, after: &Snapshot) -> Self {
        let ticks = ticks_per_second();
        let wall_secs = after
            .taken
            .duration_since(before.taken)
            .as_secs_f64()
            .max(1e-9);
        let mut by_label: Vec<(String, f64)> = Vec::new();
        for ((label, pid), end) in &after.processes {
            let start = before
                .processes
                .get(&(label.clone(), *pid))
                .copied()
                .unwrap_or(0);
            let cores = end.saturating_sub(start) as f64 / ticks / wall_secs;
            match by_label.iter_mut().find(|(known, _)| known == label) {
                Some((_, sum)) => *sum += cores,
                None => by_label.push((label.clone(), cores)),
            }
        }
        by_label.sort_by(|left, right| right.1.total_cmp(&left.1));
        let machine_cores = std::thread::available_parallelism().map_or(1, usize::from);
        let machine_busy_cores = match (before.machine, after.machine) {
            (Some((busy_before, total_before)), Some((busy_after, total_after)))
                if total_after > total_before =>
            {
                (busy_after - busy_before) as f64 / (total_after - total_before) as f64
                    * machine_cores as f64
            }
            _ => f64::NAN,
        };
        Self {
            wall_secs,
            cores_by_label: by_label,
            machine_busy_cores,
            machine_cores,
        }
    }

    /// Cores `label` used.
    pub fn cores(&self, label: &str) -> f64 {
        self.cores_by_label
            .iter()
            .find(|(known, _)| known == label)
            .map_or(0.0, |(_, cores)| *cores)
    }

    /// Which resource binds, by these rules: a single-threaded part (`single_threaded`
    /// labels, e.g. the moto server) at ≥ 0.9 of a core is saturated; otherwise, when the
    /// machine is ≥ 90% busy, its CPU binds and the part using most of it is named;
    /// otherwise nothing listed is saturated (the limit is latency: round trips,
    /// concurrency).
    pub fn binding(&self, single_threaded: &[&str]) -> String {
        for label in single_threaded {
            let cores = self.cores(label);
            if cores >= 0.9 {
                return format!("{label} (single-threaded, {cores:.2} cores)");
            }
        }
        let busy_fraction = self.machine_busy_cores / self.machine_cores as f64;
        if busy_fraction >= 0.9 {
            let (top, cores) = self
                .cores_by_label
                .first()
                .cloned()
                .unwrap_or_else(|| ("unknown".into(), 0.0));
            return format!(
                "machine CPU ({:.2} of {} cores busy; most by {top}: {cores:.2} cores)",
                self.machine_busy_cores, self.machine_cores
            );
        }
        format!(
            "none saturated ({:.2} of {} cores busy): latency-bound",
            self.machine_busy_cores, self.machine_cores
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_cpu_that_the_snapshots_see() {
        let me = std::process::id();
        let before = Snapshot::take(&[("me".into(), me)]);
        // Spin until the snapshots see 0.2 s of this process's CPU time: on a machine busy
        // with other work a fixed wall time may get only a fraction of a core, but the CPU
        // time must show up, and soon.
        let started = Instant::now();
        let mut spin = 0_u64;
        let usage = loop {
            let slice = Instant::now();
            while slice.elapsed().as_millis() < 20 {
                spin = spin.wrapping_add(1);
            }
            let usage = Usage::between(&before, &Snapshot::take(&[("me".into(), me)]));
            if usage.cores("me") * usage.wall_secs >= 0.2 || started.elapsed().as_secs() >= 20 {
                break usage;
            }
        };
        std::hint::black_box(spin);
        assert!(usage.cores("me") * usage.wall_secs >= 0.2, "{usage:?}");
        assert_eq!(usage.cores("someone else"), 0.0);
    }

    #[test]
    fn a_saturated_single_threaded_part_is_named_first() {
        let usage = Usage {
            wall_secs: 1.0,
            cores_by_label: vec![("postgres".into(), 1.0), ("moto".into(), 0.95)],
            machine_busy_cores: 2.0,
            machine_cores: 2,
        };
        assert!(usage.binding(&["moto"]).starts_with("moto"));
        assert!(usage.binding(&[]).starts_with("machine CPU"));
    }
}
