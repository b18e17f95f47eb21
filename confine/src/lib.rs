//! confine: the system calls that confine worker-files' extraction child before it runs.
//!
//! # Why this crate allows unsafe code
//! The workspace forbids `unsafe`. Confining a child needs four things the standard
//! library has no safe wrapper for, and all of them must happen in the forked child
//! *before* `exec`, inside [`std::os::unix::process::CommandExt::pre_exec`], which is an
//! `unsafe fn` because the closure runs between `fork` and `exec` and may only make
//! async-signal-safe calls:
//! - `setrlimit` of address space, CPU, file size, open files and processes;
//! - `unshare(CLONE_NEWNET)`, so the child starts in an empty network namespace;
//! - `prctl(PR_SET_NO_NEW_PRIVS)` + `seccomp(SECCOMP_SET_MODE_FILTER)` (through
//!   seccompiler), the fallback where namespaces are not allowed;
//! - `prctl(PR_SET_PDEATHSIG)`, so a child never outlives a killed worker.
//!
//! Everything here is kept to those calls, made in one function
//! ([`Confinement::apply_to`]) with no allocation after `fork`; the filter is compiled
//! before. Two more calls live here for the same reason:
//! - [`fork_single_threaded`]: the extraction server (a confined process with pdfium
//!   loaded) forks a fresh child per file, and `fork` is sound only in a process with one
//!   thread, which the function checks;
//! - [`release_free_memory`] (`malloc_trim`), one more bound on what the worker holds.
//!
//! Every other crate of the workspace stays unsafe-free.
//!
//! # Layout
//! - [`ResourceLimits`]: the rlimits a child gets.
//! - [`NetworkConfinement`]: how the child is kept off the network, and
//!   [`detect_network_confinement`], which finds the strongest one the kernel allows.
//! - [`Confinement`]: limits + network, applied to a [`std::process::Command`].

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// Why a confinement cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("cannot compile the seccomp filter: {0}")]
    Seccomp(String),
    #[error("seccomp filters are not supported on this architecture")]
    UnsupportedArchitecture,
}

/// Resource limits set in the child before `exec` (soft = hard, except CPU, see below).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceLimits {
    /// RLIMIT_AS: address space in bytes. Allocations beyond it fail.
    pub address_space_bytes: u64,
    /// RLIMIT_CPU: CPU seconds. SIGXCPU at this limit, SIGKILL one second later.
    pub cpu_seconds: u64,
    /// RLIMIT_FSIZE: largest file the child may write, in bytes (pipes are not files).
    pub file_size_bytes: u64,
    /// RLIMIT_NOFILE: open file descriptors.
    pub open_files: u64,
    /// RLIMIT_NPROC: tasks (processes and threads) of the child's real user id. The kernel
    /// counts every task of that user, so the caller adds its own count to the headroom
    /// the child needs (see `worker-files`' sandbox). Not enforced for root.
    pub processes: u64,
}

/// How the child is kept off the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkConfinement {
    /// A new, empty network namespace (`unshare(CLONE_NEWNET)`): no interface but a
    /// loopback that is down, so every connection fails. Needs CAP_SYS_ADMIN.
    Namespace,
    /// A seccomp filter that fails `socket`, `connect` and `io_uring_setup` with EACCES.
    /// Works for any user where seccomp is available (Linux ≥ 3.5).
    Seccomp,
}

impl NetworkConfinement {
    /// Stable name for logs and docs: `netns` or `seccomp`.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkConfinement::Namespace => "netns",
            NetworkConfinement::Seccomp => "seccomp",
        }
    }
}

impl std::fmt::Display for NetworkConfinement {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Limits plus network confinement, ready to apply to any number of commands.
#[derive(Debug, Clone)]
pub struct Confinement {
    limits: ResourceLimits,
    network: NetworkConfinement,
    /// Compiled once, before any fork: the child may not allocate.
    seccomp_program: Option<Arc<BpfProgram>>,
}

impl Confinement {
    pub fn new(
        limits: ResourceLimits,
        network: NetworkConfinement,
    ) -> Result<Confinement, ConfineError> {
        let seccomp_program = match network {
            NetworkConfinement::Namespace => None,
            NetworkConfinement::Seccomp => Some(Arc::new(network_filter()?)),
        };
        Ok(Confinement {
            limits,
            network,
            seccomp_program,
        })
    }

    pub fn limits(&self) -> ResourceLimits {
        self.limits
    }

    pub fn network(&self) -> NetworkConfinement {
        self.network
    }

    /// Makes `command`'s child confine itself between `fork` and `exec`: it dies with its
    /// parent, leaves the network (namespace or seccomp), then takes its resource limits.
    /// When a step fails, the spawn fails with that step's OS error and nothing runs.
    ///
    /// The environment is the caller's business (`env_clear` plus an allowlist).
    pub fn apply_to(&self, command: &mut Command) {
        use std::os::unix::process::CommandExt;
        let limits = self.limits;
        let network = self.network;
        let seccomp_program = self.seccomp_program.clone();
        #[allow(unsafe_code)]
        // SAFETY: the closure runs in the forked child before exec. It only makes
        // async-signal-safe system calls (prctl, unshare, seccomp, setrlimit) on values
        // captured before the fork; it allocates nothing (seccompiler's apply_filter
        // builds a stack `sock_fprog` pointing at the already compiled program) and
        // touches no lock.
        unsafe {
            command.pre_exec(move || {
                confine_current_process(limits, network, seccomp_program.as_deref())
            });
        }
    }
}

/// The body of the `pre_exec` hook; see [`Confinement::apply_to`].
#[allow(unsafe_code)]
fn confine_current_process(
    limits: ResourceLimits,
    network: NetworkConfinement,
    seccomp_program: Option<&BpfProgram>,
) -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    match (network, seccomp_program) {
        (NetworkConfinement::Namespace, _) => {
            // SAFETY: unshare with a flag constant; affects only this (child) process.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        (NetworkConfinement::Seccomp, Some(program)) => {
            seccompiler::apply_filter(program).map_err(|error| match error {
                seccompiler::Error::Prctl(os_error) | seccompiler::Error::Seccomp(os_error) => {
                    os_error
                }
                _ => std::io::Error::from_raw_os_error(libc::EINVAL),
            })?;
        }
        (NetworkConfinement::Seccomp, None) => {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
    }
    limit_current_process(limits)
}

/// Applies `limits` to the calling process, as [`Confinement::apply_to`] does to a child
/// before `exec`: each limit can only go down (a limit above the current hard one stays
/// at the hard one). The extraction server's forked children call it first thing.
pub fn limit_current_process(limits: ResourceLimits) -> std::io::Result<()> {
    set_limit(libc::RLIMIT_AS, limits.address_space_bytes, 0)?;
    // A hard limit one second above the soft one: SIGXCPU first, SIGKILL if ignored.
    set_limit(libc::RLIMIT_CPU, limits.cpu_seconds, 1)?;
    set_limit(libc::RLIMIT_FSIZE, limits.file_size_bytes, 0)?;
    set_limit(libc::RLIMIT_NOFILE, limits.open_files, 0)?;
    set_limit(libc::RLIMIT_NPROC, limits.processes, 0)?;
    Ok(())
}

/// Which side of a [`fork_single_threaded`] this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// The new process.
    Child,
    /// The calling process; the new one has this process id.
    Parent { child: i32 },
}

/// `fork()`, refused unless the calling process has exactly one thread.
///
/// In a single-threaded process the child is a complete copy: no lock can be held by a
/// thread that does not exist in it, so it may allocate, spawn threads and run any code,
/// which is what the extraction server's children do. A multi-threaded process gets an
/// error (`EBUSY`) and nothing is forked.
#[allow(unsafe_code)]
pub fn fork_single_threaded() -> std::io::Result<Forked> {
    if own_thread_count()? != 1 {
        return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
    }
    // SAFETY: the process has one thread (checked above; only this thread could start
    // another, and it is here), so the child inherits no lock held elsewhere and every
    // Rust object it holds is in a consistent state.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        child => Ok(Forked::Parent { child }),
    }
}

/// Threads of this process (the entries of `/proc/self/task`).
pub fn own_thread_count() -> std::io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Sets soft = `soft` and hard = `soft + hard_headroom`, never above the current hard
/// limit (raising it needs privileges the worker should not have).
#[allow(unsafe_code)]
fn set_limit(
    resource: libc::__rlimit_resource_t,
    soft: u64,
    hard_headroom: u64,
) -> std::io::Result<()> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let hard = soft.saturating_add(hard_headroom).min(current.rlim_max);
    let wanted = libc::rlimit {
        rlim_cur: soft.min(hard),
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(resource, &wanted) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The seccomp filter of [`NetworkConfinement::Seccomp`]: everything is allowed except
/// creating sockets, connecting, and io_uring (which could do both without a syscall of
/// its own), which fail with EACCES.
fn network_filter() -> Result<BpfProgram, ConfineError> {
    let target_arch = if cfg!(target_arch = "x86_64") {
        TargetArch::x86_64
    } else if cfg!(target_arch = "aarch64") {
        TargetArch::aarch64
    } else {
        return Err(ConfineError::UnsupportedArchitecture);
    };
    let denied = [
        libc::SYS_socket,
        libc::SYS_connect,
        libc::SYS_io_uring_setup,
    ];
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = denied
        .into_iter()
        .map(|syscall| (syscall, Vec::new()))
        .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
        target_arch,
    )
    .map_err(|error| ConfineError::Seccomp(error.to_string()))?;
    BpfProgram::try_from(filter).map_err(|error| ConfineError::Seccomp(error.to_string()))
}

/// The strongest network confinement the kernel grants this process: a network namespace
/// when `program args…` starts inside one, otherwise the seccomp filter (checked the same
/// way). `program` should exit 0 quickly and touch nothing (the worker passes itself with
/// its no-op child argument).
pub fn detect_network_confinement(
    program: &Path,
    args: &[&str],
) -> Result<NetworkConfinement, String> {
    let generous = ResourceLimits {
        address_space_bytes: u64::MAX,
        cpu_seconds: 10,
        file_size_bytes: 0,
        open_files: 64,
        processes: u64::MAX,
    };
    let mut failures = Vec::new();
    for network in [NetworkConfinement::Namespace, NetworkConfinement::Seccomp] {
        let confinement = Confinement::new(generous, network).map_err(|error| error.to_string())?;
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        confinement.apply_to(&mut command);
        match command.status() {
            Ok(status) if status.success() => return Ok(network),
            Ok(status) => failures.push(format!("{network}: probe exited with {status}")),
            Err(error) => failures.push(format!("{network}: {error}")),
        }
    }
    Err(format!(
        "no network confinement works here ({})",
        failures.join("; ")
    ))
}

/// Gives the C library's free memory back to the system (`malloc_trim(0)`); a no-op
/// where the C library is not glibc. The worker calls it once, after loading the local
/// model; the extraction server after loading libpdfium or the tokenizer, before it forks.
///
/// Loading the model frees about 44 MiB of buffers (the weights as read and transposed,
/// ONNX Runtime's graph building) that stay in glibc's heaps: glibc raises its mmap
/// threshold after the first large block is freed, so later ones come from the heap, which
/// it rarely shrinks. Measured in a process that loads the model alone: 174 MiB resident
/// before this call, 130 MiB after (bench/README.md, "Where the worker's peak comes from").
#[allow(unsafe_code)]
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointer and only returns free pages of malloc's own
    // heaps to the system; glibc makes it safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn limits() -> ResourceLimits {
        ResourceLimits {
            address_space_bytes: 512 * 1024 * 1024,
            cpu_seconds: 7,
            file_size_bytes: 4096,
            open_files: 32,
            processes: 100_000,
        }
    }

    fn run_shell(confinement: &Confinement, script: &str) -> String {
        let mut command = Command::new("/bin/sh");
        command
            .args(["-c", script])
            .env_clear()
            .stdout(Stdio::piped());
        confinement.apply_to(&mut command);
        let mut child = command.spawn().expect("spawn confined shell");
        let mut output = String::new();
        child
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut output)
            .expect("read");
        child.wait().expect("wait");
        output
    }

    #[test]
    fn limits_are_in_force_when_the_program_starts() {
        for network in [NetworkConfinement::Namespace, NetworkConfinement::Seccomp] {
            let confinement = Confinement::new(limits(), network).unwrap();
            let limits_text = run_shell(&confinement, "cat /proc/self/limits");
            let line = |name: &str| {
                limits_text
                    .lines()
                    .find(|line| line.starts_with(name))
                    .unwrap_or_else(|| panic!("{name} in {limits_text}"))
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            assert!(
                line("Max cpu time").contains("7 8 seconds"),
                "{network}: {}",
                line("Max cpu time")
            );
            assert!(line("Max file size").contains("4096 4096 bytes"));
            assert!(line("Max open files").contains("32 32 files"));
            assert!(line("Max address space").contains("536870912 536870912 bytes"));
        }
    }

    #[test]
    fn seccomp_denies_sockets() {
        let confinement = Confinement::new(limits(), NetworkConfinement::Seccomp).unwrap();
        // Python is on every machine of this project (the stack's venv needs it).
        let mut command = Command::new("python3");
        command.args([
            "-c",
            "import socket\ntry:\n socket.socket()\n print('open')\nexcept OSError as e:\n print('denied', e.errno)",
        ]);
        command.stdout(Stdio::piped());
        confinement.apply_to(&mut command);
        let output = command.output().expect("python3 runs");
        let text = String::from_utf8_lossy(&output.stdout);
        assert_eq!(text.trim(), format!("denied {}", libc::EACCES));
    }

    #[test]
    fn fork_is_refused_while_another_thread_runs() {
        // A second thread that is alive for the whole call.
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || stopped.recv());
        let outcome = fork_single_threaded();
        stop.send(()).unwrap();
        thread.join().unwrap().unwrap();
        let error = outcome.expect_err("no fork with two threads");
        assert_eq!(error.raw_os_error(), Some(libc::EBUSY));
    }

    #[test]
    fn a_failing_step_fails_the_spawn() {
        // RLIMIT_AS of 1 byte: exec itself cannot map the program, so nothing runs.
        let confinement = Confinement::new(
            ResourceLimits {
                address_space_bytes: 1,
                ..limits()
            },
            NetworkConfinement::Seccomp,
        )
        .unwrap();
        let mut command = Command::new("/bin/true");
        confinement.apply_to(&mut command);
        let outcome = command.status();
        assert!(
            outcome.is_err() || !outcome.unwrap().success(),
            "a program cannot start in one byte of address space"
        );
    }
}
