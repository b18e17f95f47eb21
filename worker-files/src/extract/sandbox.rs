//! The confined child that does every CPU cycle of work on an untrusted file: type detection,
//! extraction (pdfium, pdf-extract, the DOCX, PPTX, XLSX, EPUB, HTML, CSV and text readers,
//! Tesseract OCR) and chunking.
//!
//! **Worker side** ([`Sandbox::run`]): each file gets its own confined child. How it starts is the
//! sandbox's [`Launch`]:
//! - [`Launch::Server`] (what the worker uses): forked from the extraction server, one confined
//!   process per worker that keeps pdfium and the tokenizer loaded ([`super::server`]), so a file
//!   does not pay for a process start, library loads and warm-up;
//! - [`Launch::Exec`]: `program program_args… <request-json>` exec'd per file (any program: tests
//!   stand misbehaving scripts in for the extractor).
//!
//! Either way the child (or the server it forks from) starts as `program program_args…` (the worker
//! binary itself with [`crate::EXTRACT_CHILD_ARG`]) with
//! - a cleared environment plus an allowlist ([`CHILD_ENVIRONMENT`], [`INHERITED_ENVIRONMENT`], `TMPDIR`/`HOME` = its scratch
//!   folder): no database URL, JWT secret or AWS credentials can leak into it;
//! - limits set between fork and exec by the `confine` crate: address space, CPU, file size, open
//!   files, processes; it dies with the worker (PDEATHSIG); a child forked by the server sets the
//!   request's limits on itself, and dies with the server, before it reads its file;
//! - no network: a new network namespace where the kernel allows it, a seccomp filter otherwise;
//! - a private scratch folder as its working directory, removed when it exits;
//! - a wall-clock timeout, after which it is killed, and a cap on its output.
//!
//! The result travels as one JSON line on the child's stdout, a pipe the worker drains while the
//! child runs; the tail of its stderr explains a crash.
//!
//! **Child side** ([`child_main`]): runs on a thread with a known stack size, turns a panic into
//! `extract_crashed`, and prints the `Result`.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::pipe;
use tokio::process::Command;

use super::error::human_bytes;
use super::server::{Job, ServerSlot};
use super::{
    DocumentKind, ExtractError, ExtractLimits, ExtractedDocument, PdfEngine, detect_kind,
    extract_path, panic_message,
};
use crate::chunk::{Chunk, Chunker};

pub use confine::NetworkConfinement;

/// Stack of the extraction thread in the child. Generous, so only truly runaway recursion overflows it.
const CHILD_STACK_BYTES: usize = 16 * 1024 * 1024;
/// The parent keeps this much of the child's stderr to explain crashes.
const STDERR_TAIL_BYTES: usize = 16 * 1024;
/// How long the parent waits for a killed child to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);
/// Tasks (processes and threads) the child may add to its user's count: its own two threads and slack.
const CHILD_TASK_HEADROOM: u64 = 64;
/// The only environment a child gets, besides `TMPDIR` and `HOME` (its scratch folder).
pub const CHILD_ENVIRONMENT: [(&str, &str); 4] = [
    // glibc reserves 64 MiB of address space per malloc arena; keep RLIMIT_AS for real data.
    ("MALLOC_ARENA_MAX", "2"),
    // Tesseract's OpenMP would start a thread per core: one is enough, and the child's
    // process limit and CPU budget stay predictable.
    ("OMP_THREAD_LIMIT", "1"),
    ("TOKENIZERS_PARALLELISM", "false"),
    ("RUST_BACKTRACE", "0"),
];
/// Variables a child gets from the worker when set there: where the runtime image keeps the
/// shared libraries the child opens (libtesseract and its dependencies) and Tesseract's
/// language data. Paths only, never secrets.
pub const INHERITED_ENVIRONMENT: [&str; 2] = ["LD_LIBRARY_PATH", "TESSDATA_PREFIX"];
/// The child argument that exits at once (used to find which network confinement works).
pub const NOOP_ARG: &str = "--noop";
/// The child argument that reports what the child sees (tests and `worker-files extract --probe`).
pub const PROBE_ARG: &str = "--probe";
/// The child argument that loads libpdfium and exits (the worker checks it at start).
pub const PDFIUM_CHECK_ARG: &str = "--pdfium-check";
/// The child argument that runs the extraction server ([`super::server`]), its socket on stdin.
pub const SERVER_ARG: &str = "--server";

// Linux signal numbers (no libc dependency for five constants).
const SIGABRT: i32 = 6;
const SIGBUS: i32 = 7;
const SIGKILL: i32 = 9;
const SIGSEGV: i32 = 11;
const SIGXCPU: i32 = 24;

/// What the child is asked to do with one file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildRequest {
    pub path: PathBuf,
    /// The kind, when the caller knows it; otherwise the child detects it from the content,
    /// with the declared content type and name as tie-breakers.
    pub kind: Option<DocumentKind>,
    pub content_type: Option<String>,
    pub name: Option<String>,
    pub pdf_engine: PdfEngine,
    pub limits: ExtractLimits,
    /// Chunk the text too (the worker always does).
    pub chunking: Option<ChunkingRequest>,
    /// Send the page texts back (the worker only needs the chunks).
    pub include_texts: bool,
}

/// How the child chunks: the tokenizer file and the sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkingRequest {
    pub tokenizer: PathBuf,
    pub max_tokens: usize,
    pub overlap_tokens: usize,
}

/// What the child sends back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extraction {
    /// Without [`ChildRequest::include_texts`], every page's text is empty (the count and numbers stay).
    pub document: ExtractedDocument,
    /// Size of the normalized text, whether or not it was sent.
    pub text_bytes: u64,
    pub chunks: Vec<Chunk>,
    /// Milliseconds the child spent extracting and chunking.
    pub extract_ms: u64,
    pub chunk_ms: u64,
    /// The child's peak resident set (`VmHWM`) when its work was done, in KiB; 0 when unknown.
    #[serde(default)]
    pub peak_rss_kib: u64,
}

/// What a child reports with [`PROBE_ARG`]: its environment, its limits as the kernel shows them, and
/// whether a TCP connection to a given address works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub environment: Vec<(String, String)>,
    /// `/proc/self/limits`, as read first thing in `main`.
    pub limits: String,
    /// `Ok` when the connection opened, else the error.
    pub connect: Result<(), String>,
}

/// How to start confined children.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The program (the worker binary) and its leading arguments (`extract-child`).
    pub program: PathBuf,
    pub program_args: Vec<String>,
    pub network: NetworkConfinement,
    /// Each child gets a fresh folder under this one (the worker's private spool folder).
    pub scratch_root: PathBuf,
    pub launch: Launch,
}

/// How each file's child process comes to be.
#[derive(Debug, Clone)]
pub enum Launch {
    /// Forked from the extraction server (started on first use, and again if it dies). The clones of
    /// a sandbox share one server.
    Server(Arc<ServerSlot>),
    /// `program program_args… <request-json>`, exec'd per file.
    Exec,
}

/// A child's own scratch folder, removed on drop: also when the extraction is cancelled
/// mid-way (a shutdown, a lease lost), which a removal after the `await` would miss.
struct ScratchFolder(PathBuf);

impl ScratchFolder {
    fn create(root: &Path) -> Result<Self, ExtractError> {
        let path = root.join(format!("child-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path)
            .map_err(|error| ExtractError::io("create the child's scratch folder", &error))?;
        Ok(Self(path))
    }
}

impl Drop for ScratchFolder {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(scratch = %self.0.display(), %error, "cannot remove the child's scratch folder");
        }
    }
}

impl Sandbox {
    /// A sandbox for `program program_args…` with the strongest network confinement the kernel allows
    /// here (found by starting `program program_args… --noop` under each).
    pub fn new(
        program: PathBuf,
        program_args: Vec<String>,
        scratch_root: PathBuf,
    ) -> Result<Sandbox, String> {
        let probe_args: Vec<&str> = program_args
            .iter()
            .map(String::as_str)
            .chain([NOOP_ARG])
            .collect();
        let network = confine::detect_network_confinement(&program, &probe_args)?;
        Ok(Sandbox {
            program,
            program_args,
            network,
            scratch_root,
            launch: Launch::Server(Arc::default()),
        })
    }

    /// Runs one request in a confined child.
    ///
    /// Outcomes: the child's own typed error; a panic becomes `extract_crashed` with the panic message; a
    /// death by signal (stack overflow, out of memory) `extract_crashed`; the CPU limit or the wall clock
    /// `extract_timeout`; too much output `too_large`; a child that cannot start `io_error` (transient).
    pub async fn run(&self, request: &ChildRequest) -> Result<Extraction, ExtractError> {
        let request_json = serde_json::to_string(request).map_err(|error| ExtractError::Io {
            detail: format!("cannot encode the extraction request: {error}"),
        })?;
        let scratch = ScratchFolder::create(&self.scratch_root)?;
        self.run_in(&scratch.0, request, request_json).await
    }

    /// Stops the extraction server, if this sandbox started one, and waits until it and its
    /// children are gone. A later [`Sandbox::run`] starts a new one.
    pub async fn stop(&self) {
        if let Launch::Server(slot) = &self.launch {
            slot.stop().await;
        }
    }

    /// Runs the child with `arguments` after the program's own, confined like an extraction, and
    /// returns its stdout (for [`PROBE_ARG`]).
    pub async fn probe(&self, connect_to: &str) -> Result<ProbeReport, ExtractError> {
        let limits = ExtractLimits::default();
        let (stdout, stderr) = match &self.launch {
            Launch::Exec => {
                let mut command = self.command(&self.scratch_root, &limits)?;
                command.arg(PROBE_ARG).arg(connect_to);
                let output = command
                    .output()
                    .await
                    .map_err(|error| ExtractError::io("run the probe child", &error))?;
                (output.stdout, output.stderr)
            }
            Launch::Server(slot) => {
                let job = Job::Probe {
                    connect_to: connect_to.to_owned(),
                    limits: limits.clone(),
                };
                let cap = output_cap(&limits, false);
                match self
                    .fork_child(slot, &self.scratch_root, job, &limits, cap)
                    .await?
                {
                    Some(finished) => (finished.stdout.bytes, finished.stderr_tail),
                    None => (Vec::new(), b"the probe child timed out".to_vec()),
                }
            }
        };
        serde_json::from_slice(&stdout).map_err(|error| ExtractError::Io {
            detail: format!(
                "the probe child answered no report ({error}): {}",
                String::from_utf8_lossy(&stderr)
            ),
        })
    }

    /// The confined command, before the request argument.
    pub(super) fn command(
        &self,
        scratch: &Path,
        limits: &ExtractLimits,
    ) -> Result<Command, ExtractError> {
        let confinement = confine::Confinement::new(
            confine::ResourceLimits {
                address_space_bytes: limits.child_memory_bytes,
                cpu_seconds: limits.child_cpu_seconds,
                file_size_bytes: limits.child_file_bytes,
                open_files: limits.child_open_files,
                // RLIMIT_NPROC counts every task of the user: this process's threads count too.
                processes: confine::own_thread_count()
                    .map_or(256, |threads| threads as u64)
                    .saturating_add(CHILD_TASK_HEADROOM),
            },
            self.network,
        )
        .map_err(|error| ExtractError::Io {
            detail: format!("cannot build the child's confinement: {error}"),
        })?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.program_args)
            .env_clear()
            .envs(CHILD_ENVIRONMENT)
            .env("TMPDIR", scratch)
            .env("HOME", scratch)
            .envs(
                INHERITED_ENVIRONMENT
                    .iter()
                    .filter_map(|name| Some((*name, std::env::var_os(name)?))),
            )
            .current_dir(scratch)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        confinement.apply_to(command.as_std_mut());
        Ok(command)
    }

    async fn run_in(
        &self,
        scratch: &Path,
        request: &ChildRequest,
        request_json: String,
    ) -> Result<Extraction, ExtractError> {
        let started = Instant::now();
        let limits = &request.limits;
        let stdout_cap = output_cap(limits, request.include_texts);
        let ended = match &self.launch {
            Launch::Exec => {
                self.exec_child(scratch, request_json, limits, stdout_cap)
                    .await?
            }
            Launch::Server(slot) => {
                let job = Job::Extract(Box::new(request.clone()));
                self.fork_child(slot, scratch, job, limits, stdout_cap)
                    .await?
            }
        };
        let Some(finished) = ended else {
            return Err(ExtractError::ExtractTimeout {
                detail: format!(
                    "extraction exceeded the wall-clock limit of {} s and was killed",
                    limits.wall_timeout_secs
                ),
            });
        };
        if finished.stdout.overflowed {
            return Err(ExtractError::TooLarge {
                detail: format!("extraction output exceeds {}", human_bytes(stdout_cap)),
            });
        }
        if let Some(outcome) = parse_outcome(&finished.stdout.bytes) {
            return outcome;
        }
        Err(failure_from_status(
            finished.status,
            &finished.stderr_tail,
            started.elapsed(),
            limits,
        ))
    }

    /// Runs `program program_args… <request-json>` to its end; `None` when the wall clock ran out
    /// (the child is killed).
    async fn exec_child(
        &self,
        scratch: &Path,
        request_json: String,
        limits: &ExtractLimits,
        stdout_cap: u64,
    ) -> Result<Option<Finished>, ExtractError> {
        let mut command = self.command(scratch, limits)?;
        command.arg(request_json);
        let mut child = command.spawn().map_err(|error| {
            ExtractError::io(
                &format!("start extraction child {}", self.program.display()),
                &error,
            )
        })?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(ExtractError::Io {
                detail: "extraction child has no stdout/stderr pipe".to_owned(),
            });
        };
        let run = async {
            tokio::join!(
                read_capped(stdout, stdout_cap),
                read_tail(stderr, STDERR_TAIL_BYTES),
                child.wait()
            )
        };
        let Ok((stdout_result, stderr_tail, wait_result)) =
            tokio::time::timeout(limits.wall_timeout(), run).await
        else {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(REAP_TIMEOUT, child.wait()).await;
            return Ok(None);
        };
        Ok(Some(Finished {
            status: wait_result
                .map_err(|error| ExtractError::io("wait for extraction child", &error))?,
            stdout: stdout_result
                .map_err(|error| ExtractError::io("read extraction child output", &error))?,
            stderr_tail,
        }))
    }

    /// Has the extraction server fork a child for `job` and runs it to its end; `None` when the wall
    /// clock ran out (the child is killed).
    async fn fork_child(
        &self,
        slot: &ServerSlot,
        scratch: &Path,
        job: Job,
        limits: &ExtractLimits,
        stdout_cap: u64,
    ) -> Result<Option<Finished>, ExtractError> {
        let server = slot.get(self, limits).await?;
        let pipe_error =
            |error: std::io::Error| ExtractError::io("create the child's pipes", &error);
        let (stdout_reader, stdout_writer) = std::io::pipe().map_err(pipe_error)?;
        let (stderr_reader, stderr_writer) = std::io::pipe().map_err(pipe_error)?;
        let mut child =
            server.start_child(scratch, job, stdout_writer.into(), stderr_writer.into())?;
        let stdout = pipe::Receiver::from_owned_fd(OwnedFd::from(stdout_reader))
            .map_err(|error| ExtractError::io("read the child's stdout", &error))?;
        let stderr = pipe::Receiver::from_owned_fd(OwnedFd::from(stderr_reader))
            .map_err(|error| ExtractError::io("read the child's stderr", &error))?;
        let run = async {
            let (stdout_result, stderr_tail) = tokio::join!(
                read_capped(stdout, stdout_cap),
                read_tail(stderr, STDERR_TAIL_BYTES)
            );
            let stdout = stdout_result
                .map_err(|error| ExtractError::io("read extraction child output", &error))?;
            // A child that answered closes its pipes before it exits; its exit status only
            // matters when it did not answer. (Dropping `child` kills it if it still runs.)
            let answered = stdout.overflowed || parse_outcome(&stdout.bytes).is_some();
            let status = if answered {
                ExitStatus::from_raw(0)
            } else {
                child.exited().await?
            };
            Ok(Finished {
                status,
                stdout,
                stderr_tail,
            })
        };
        match tokio::time::timeout(limits.wall_timeout(), run).await {
            Ok(finished) => finished.map(Some),
            Err(_elapsed) => {
                child.kill();
                Ok(None)
            }
        }
    }
}

/// A child that ran to its end.
struct Finished {
    status: ExitStatus,
    stdout: CappedOutput,
    stderr_tail: Vec<u8>,
}

/// The most the child may print: the text (when asked for), the chunks (overlap included) and their
/// JSON escaping, plus the envelope.
fn output_cap(limits: &ExtractLimits, include_texts: bool) -> u64 {
    let text_copies = if include_texts { 3 } else { 2 };
    limits
        .max_text_bytes
        .saturating_mul(2 * text_copies)
        .saturating_add(16 * 1024 * 1024)
}

/// The last non-empty stdout line, as the child's `Result` JSON.
fn parse_outcome(stdout: &[u8]) -> Option<Result<Extraction, ExtractError>> {
    let end = stdout
        .iter()
        .rposition(|byte| !byte.is_ascii_whitespace())?
        + 1;
    let start = stdout[..end]
        .iter()
        .rposition(|byte| *byte == b'\n')
        .map_or(0, |position| position + 1);
    serde_json::from_slice(&stdout[start..end]).ok()
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

/// Entry point of the extraction child. `args` are what follows the leading arguments: one request as
/// JSON, or [`NOOP_ARG`], or [`PROBE_ARG`] and an address.
///
/// Limits are already in force (set before exec). Runs the request on a thread with a known stack size,
/// turns a panic into `extract_crashed`, and prints the `Result` as one JSON line on stdout. Exit code 0
/// means a result (success or typed error) was written; 2 means bad arguments; 3 means the result could
/// not be written.
pub fn child_main(args: Vec<String>) -> ExitCode {
    // First thing, before any allocation of ours: what the kernel says our limits are.
    let limits_at_start = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    match args.as_slice() {
        [flag] if flag == NOOP_ARG => ExitCode::SUCCESS,
        [flag] if flag == SERVER_ARG => super::server::serve(),
        [flag, library] if flag == PDFIUM_CHECK_ARG => {
            match super::pdf::load_pdfium(Path::new(library)) {
                Ok(_) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::FAILURE
                }
            }
        }
        [flag, address] if flag == PROBE_ARG => {
            let report = probe_report(limits_at_start, address);
            ExitCode::from(write_json(&report))
        }
        [request_json] => {
            let request: ChildRequest = match serde_json::from_str(request_json) {
                Ok(request) => request,
                Err(error) => {
                    eprintln!("invalid extraction request: {error}");
                    return ExitCode::from(2);
                }
            };
            ExitCode::from(write_json(&run_request(request, None)))
        }
        _ => {
            eprintln!(
                "usage: <request-json> | {NOOP_ARG} | {PROBE_ARG} <host:port>, got {} argument(s)",
                args.len()
            );
            ExitCode::from(2)
        }
    }
}

pub(super) fn probe_report(limits: String, address: &str) -> ProbeReport {
    use std::net::ToSocketAddrs;
    let connect = address
        .to_socket_addrs()
        .map_err(|error| format!("resolve {address}: {error}"))
        .and_then(|mut addresses| {
            let socket_address = addresses
                .next()
                .ok_or_else(|| format!("{address} resolves to nothing"))?;
            std::net::TcpStream::connect_timeout(&socket_address, Duration::from_secs(3))
                .map(drop)
                .map_err(|error| format!("connect {socket_address}: {error}"))
        });
    ProbeReport {
        environment: std::env::vars().collect(),
        limits,
        connect,
    }
}

/// Runs `process` on a thread with [`CHILD_STACK_BYTES`] of stack; a panic becomes `extract_crashed`.
pub(super) fn run_request(
    request: ChildRequest,
    chunker: Option<Arc<Chunker>>,
) -> Result<Extraction, ExtractError> {
    let memory_limit = request.limits.child_memory_bytes;
    let worker = std::thread::Builder::new()
        .name("extract".to_owned())
        .stack_size(CHILD_STACK_BYTES)
        .spawn(move || process(&request, chunker.as_deref()))
        .map_err(|error| ExtractError::ExtractCrashed {
            detail: format!(
                "cannot start the extraction thread within the memory limit of {}: {error}",
                human_bytes(memory_limit)
            ),
        })?;
    match worker.join() {
        Ok(outcome) => outcome,
        Err(payload) => Err(ExtractError::ExtractCrashed {
            detail: format!("extractor panicked: {}", panic_message(payload.as_ref())),
        }),
    }
}

/// Detect, extract, chunk: the child's whole job. `chunker`, when given, was built for
/// `request.chunking` (the extraction server keeps one loaded); otherwise the tokenizer is loaded here.
pub fn process(
    request: &ChildRequest,
    chunker: Option<&Chunker>,
) -> Result<Extraction, ExtractError> {
    let started = Instant::now();
    let kind = match request.kind {
        Some(kind) => kind,
        None => detect_kind(
            &request.path,
            request.content_type.as_deref(),
            request.name.as_deref(),
        )?,
    };
    let mut document = extract_path(&request.path, kind, &request.pdf_engine, &request.limits)?;
    let extract_ms = started.elapsed().as_millis() as u64;
    let started = Instant::now();
    let chunks = match (&request.chunking, chunker) {
        (Some(_), Some(chunker)) => chunker.chunk(&document.pages),
        (Some(chunking), None) => Chunker::from_tokenizer_file(
            &chunking.tokenizer,
            chunking.max_tokens,
            chunking.overlap_tokens,
        )
        .map_err(|error| ExtractError::Io {
            detail: error.to_string(),
        })?
        .chunk(&document.pages),
        (None, _) => Vec::new(),
    };
    let chunk_ms = started.elapsed().as_millis() as u64;
    let text_bytes = document.text_bytes();
    if !request.include_texts {
        for page in &mut document.pages {
            page.text = String::new();
        }
    }
    Ok(Extraction {
        document,
        text_bytes,
        chunks,
        extract_ms,
        chunk_ms,
        peak_rss_kib: own_peak_rss_kib(),
    })
}

/// `VmHWM` of this process in KiB (0 when `/proc` does not say).
fn own_peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Prints `value` as one JSON line on stdout; the exit code: 0, or 3 when it could not be written.
pub(super) fn write_json(value: &impl Serialize) -> u8 {
    let mut stdout = std::io::stdout().lock();
    let written = serde_json::to_writer(&mut stdout, value)
        .map_err(std::io::Error::from)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("cannot write the extraction result: {error}");
            3
        }
    }
}
