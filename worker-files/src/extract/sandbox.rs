use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::error::human_bytes;
use super::{
    DocumentKind, ExtractError, ExtractLimits, ExtractedDocument, extract_path, panic_message,
};

/// Stack of the extraction thread in the child. Generous, so only truly runaway recursion overflows it.
const CHILD_STACK_BYTES: usize = 16 * 1024 * 1024;
/// The parent keeps this much of the child's stderr to explain crashes.
const STDERR_TAIL_BYTES: usize = 16 * 1024;
/// How long the parent waits for a killed child to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

// Linux signal numbers (no libc dependency for five constants).
const SIGABRT: i32 = 6;
const SIGBUS: i32 = 7;
const SIGKILL: i32 = 9;
const SIGSEGV: i32 = 11;
const SIGXCPU: i32 = 24;

/// Extracts `path` in a child process: `program` with `program_args` (for example the worker binary and
/// `["extract-child"]`), followed by the path, the kind and the limits as JSON; the child calls
/// [`child_main`].
///
/// The child limits its own address space and CPU time; the parent enforces the wall-clock timeout and
/// kills the child after it. Outcomes: a panic becomes `extract_crashed` with the panic message, a death by
/// signal (stack overflow, out of memory) `extract_crashed`, the CPU limit or the wall clock
/// `extract_timeout`. The result travels as one JSON line on the child's stdout, which the parent drains
/// while the child runs, so texts of many MiB work.
pub async fn extract_isolated(
    program: &Path,
    program_args: &[String],
    path: &Path,
    kind: DocumentKind,
    limits: &ExtractLimits,
) -> Result<ExtractedDocument, ExtractError> {
    let limits_json = serde_json::to_string(limits).map_err(|error| ExtractError::Io {
        detail: format!("cannot encode extraction limits: {error}"),
    })?;
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(program_args)
        .arg(path)
        .arg(kind.as_str())
        .arg(limits_json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // glibc reserves 64 MiB of address space per malloc arena; keep RLIMIT_AS for real data.
        .env("MALLOC_ARENA_MAX", "2")
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| {
            ExtractError::io(
                &format!("start extraction child {}", program.display()),
                &error,
            )
        })?;

    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(ExtractError::Io {
            detail: "extraction child has no stdout/stderr pipe".to_owned(),
        });
    };
    // JSON escaping at most doubles normalized text; the rest is envelope.
    let stdout_cap = limits
        .max_text_bytes
        .saturating_mul(2)
        .saturating_add(1024 * 1024);
    let run = async {
        tokio::join!(
            read_capped(stdout, stdout_cap),
            read_tail(stderr, STDERR_TAIL_BYTES),
            child.wait()
        )
    };
    let (stdout_result, stderr_tail, wait_result) =
        match tokio::time::timeout(limits.wall_timeout(), run).await {
            Ok(outputs) => outputs,
            Err(_elapsed) => {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(REAP_TIMEOUT, child.wait()).await;
                return Err(ExtractError::ExtractTimeout {
                    detail: format!(
                        "extraction exceeded the wall-clock limit of {} s and was killed",
                        limits.wall_timeout_secs
                    ),
                });
            }
        };
    let status =
        wait_result.map_err(|error| ExtractError::io("wait for extraction child", &error))?;
    let captured =
        stdout_result.map_err(|error| ExtractError::io("read extraction child output", &error))?;
    if captured.overflowed {
        return Err(ExtractError::TooLarge {
            detail: format!("extraction output exceeds {}", human_bytes(stdout_cap)),
        });
    }
    if let Some(outcome) = parse_outcome(&captured.bytes) {
        return outcome;
    }
    Err(failure_from_status(
        status,
        &stderr_tail,
        started.elapsed(),
        limits,
    ))
}

/// The last non-empty stdout line, as the child's `Result` JSON.
fn parse_outcome(stdout: &[u8]) -> Option<Result<ExtractedDocument, ExtractError>> {
    let text = std::str::from_utf8(stdout).ok()?;
    let last_line = text.lines().rev().find(|line| !line.trim().is_empty())?;
    serde_json::from_str(last_line).ok()
}

/// Explains a child that produced no result.
fn failure_from_status(
    status: ExitStatus,
    stderr_tail: &[u8],
    elapsed: Duration,
    limits: &ExtractLimits,
) -> ExtractError {
    let stderr_text = String::from_utf8_lossy(stderr_tail);
    let stderr_hint = stderr_text
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned();
    let out_of_memory = stderr_text.contains("memory allocation of");
    let memory_note = format!(
        "out of memory (limit {})",
        human_bytes(limits.child_memory_bytes)
    );
    match status.signal() {
        Some(SIGXCPU) => ExtractError::ExtractTimeout {
            detail: format!(
                "extraction exceeded the CPU limit of {} s",
                limits.child_cpu_seconds
            ),
        },
        Some(SIGKILL) if elapsed.as_secs() >= limits.child_cpu_seconds => {
            ExtractError::ExtractTimeout {
                detail: format!(
                    "extraction was killed after the CPU limit of {} s",
                    limits.child_cpu_seconds
                ),
            }
        }
        Some(SIGKILL) => ExtractError::ExtractCrashed {
            detail: format!("extraction child was killed (SIGKILL), probably {memory_note}"),
        },
        Some(signal) => {
            let cause = if stderr_text.contains("has overflowed its stack") {
                "stack overflow".to_owned()
            } else if out_of_memory {
                memory_note
            } else {
                match signal {
                    SIGSEGV => "segmentation fault".to_owned(),
                    SIGBUS => "bus error".to_owned(),
                    SIGABRT => format!("abort: {stderr_hint}"),
                    _ => format!("signal {signal}"),
                }
            };
            ExtractError::ExtractCrashed {
                detail: format!("extraction child died by signal {signal}: {cause}"),
            }
        }
        None => {
            let exit_code = status.code().unwrap_or(-1);
            let cause = if out_of_memory {
                memory_note
            } else {
                stderr_hint
            };
            ExtractError::ExtractCrashed {
                detail: format!(
                    "extraction child exited with code {exit_code} without a result: {cause}"
                ),
            }
        }
    }
}

struct CappedOutput {
    bytes: Vec<u8>,
    /// More than the cap arrived; the rest was drained and dropped so the child never blocks on the pipe.
    overflowed: bool,
}

async fn read_capped(
    mut reader: impl AsyncRead + Unpin,
    cap: u64,
) -> std::io::Result<CappedOutput> {
    let mut bytes = Vec::new();
    let mut overflowed = false;
    let mut buffer = vec![0_u8; 64 * 1024];
    loop {
        let read_count = reader.read(&mut buffer).await?;
        if read_count == 0 {
            return Ok(CappedOutput { bytes, overflowed });
        }
        if overflowed {
            continue;
        }
        if (bytes.len() + read_count) as u64 > cap {
            overflowed = true;
            bytes = Vec::new();
            continue;
        }
        bytes.extend_from_slice(&buffer[..read_count]);
    }
}

/// Keeps the last `keep` bytes; errors end the read with what was collected.
async fn read_tail(mut reader: impl AsyncRead + Unpin, keep: usize) -> Vec<u8> {
    let mut tail = Vec::new();
    let mut buffer = vec![0_u8; 8 * 1024];
    while let Ok(read_count) = reader.read(&mut buffer).await {
        if read_count == 0 {
            break;
        }
        tail.extend_from_slice(&buffer[..read_count]);
        if tail.len() > keep {
            tail.drain(..tail.len() - keep);
        }
    }
    tail
}

/// Entry point of the extraction child. `args` are what follows the leading arguments:
/// `<path> <kind> <limits-json>`.
///
/// Sets RLIMIT_AS and RLIMIT_CPU first, runs [`extract_path`] on a thread with a known stack size, turns a
/// panic into `extract_crashed`, and prints the `Result` as one JSON line on stdout. Exit code 0 means a
/// result (success or typed error) was written; 2 means bad arguments; 3 means the result could not be
/// written.
pub fn child_main(args: Vec<String>) -> ExitCode {
    let [path, kind_name, limits_json] = args.as_slice() else {
        eprintln!(
            "usage: <path> <kind> <limits-json>, got {} argument(s)",
            args.len()
        );
        return ExitCode::from(2);
    };
    let Some(kind) = DocumentKind::parse(kind_name) else {
        eprintln!("unknown document kind {kind_name:?}");
        return ExitCode::from(2);
    };
    let limits: ExtractLimits = match serde_json::from_str(limits_json) {
        Ok(limits) => limits,
        Err(error) => {
            eprintln!("invalid limits json: {error}");
            return ExitCode::from(2);
        }
    };
    let outcome = match apply_rlimits(&limits) {
        Ok(()) => run_extraction(PathBuf::from(path), kind, limits),
        Err(error) => Err(error),
    };
    write_outcome(&outcome)
}

fn apply_rlimits(limits: &ExtractLimits) -> Result<(), ExtractError> {
    set_limit(rlimit::Resource::AS, limits.child_memory_bytes, 0)?;
    // A hard limit one second above the soft one: SIGXCPU first, SIGKILL if that is ignored.
    set_limit(rlimit::Resource::CPU, limits.child_cpu_seconds, 1)
}

/// Sets soft = `soft`, hard = `soft + hard_headroom`, never above the current hard limit (raising it needs
/// privileges).
fn set_limit(
    resource: rlimit::Resource,
    soft: u64,
    hard_headroom: u64,
) -> Result<(), ExtractError> {
    let (_, current_hard) = resource
        .get()
        .map_err(|error| ExtractError::io(&format!("read {} limit", resource.as_name()), &error))?;
    let hard = soft.saturating_add(hard_headroom).min(current_hard);
    let soft = soft.min(hard);
    resource
        .set(soft, hard)
        .map_err(|error| ExtractError::io(&format!("set {} limit", resource.as_name()), &error))
}

fn run_extraction(
    path: PathBuf,
    kind: DocumentKind,
    limits: ExtractLimits,
) -> Result<ExtractedDocument, ExtractError> {
    let limits_memory = limits.child_memory_bytes;
    let worker = std::thread::Builder::new()
        .name("extract".to_owned())
        .stack_size(CHILD_STACK_BYTES)
        .spawn(move || extract_path(&path, kind, &limits))
        .map_err(|error| ExtractError::ExtractCrashed {
            detail: format!(
                "cannot start the extraction thread within the memory limit of {}: {error}",
                human_bytes(limits_memory)
            ),
        })?;
    match worker.join() {
        Ok(outcome) => outcome,
        Err(payload) => Err(ExtractError::ExtractCrashed {
            detail: format!("extractor panicked: {}", panic_message(payload.as_ref())),
        }),
    }
}

fn write_outcome(outcome: &Result<ExtractedDocument, ExtractError>) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    let written = serde_json::to_writer(&mut stdout, outcome)
        .map_err(std::io::Error::from)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cannot write extraction result: {error}");
            ExitCode::from(3)
        }
    }
}
