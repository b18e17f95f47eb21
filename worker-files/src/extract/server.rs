//! The extraction server: one confined process per worker that keeps pdfium and the tokenizer
//! loaded, and forks a fresh child for each file.
//!
//! A child `exec`'d per file pays, every time, for mapping and relocating the worker binary, loading
//! libpdfium, pdfium's first-use set-up and the tokenizer's load (bench/README.md, "PDF
//! extraction"). The server pays them once; each file still gets its own process, forked from the
//! server, so one file can never see or change another's state, and a crash takes down only that
//! file's child.
//!
//! **Confinement.** The server starts as an exec'd child would (`Sandbox`): cleared environment,
//! no network (namespace or seccomp, inherited by every fork), death with the worker, its own
//! scratch folder. Each forked child then, before it touches the request: dies with the server,
//! drops the server's descriptors, takes its pipes as stdout and stderr and `/dev/null` as stdin,
//! moves into its own scratch folder, and lowers its limits to the request's (address space, CPU
//! time counted from the fork, file size, open files).
//!
//! **Protocol**, over a `SOCK_SEQPACKET` socket pair (one JSON message per packet):
//! - worker → server: [`Command::Start`], carrying the write ends of the child's stdout and stderr
//!   pipes as `SCM_RIGHTS`; [`Command::Kill`];
//! - server → worker: [`Event::Exited`] with the raw wait status, or [`Event::Failed`].
//!
//! The worker reads the child's pipes itself, exactly as for an exec'd child: the result is the
//! last stdout line, the stderr tail explains a crash, end of file comes when the child exits.
//! If the server dies, its children die with it, every waiting file gets a transient `io_error`,
//! and the next file starts a new server.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};
use serde::{Deserialize, Serialize};
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use super::sandbox::{ChildRequest, Sandbox};
use super::{ExtractError, ExtractLimits};
use crate::chunk::Chunker;

/// The largest message either side sends (a request is a few hundred bytes).
const MESSAGE_BYTES: usize = 64 * 1024;
/// Descriptors a [`Command::Start`] carries: the child's stdout and stderr.
const START_DESCRIPTORS: usize = 2;
/// How long [`ServerSlot::stop`] gives the server to reap its children and exit.
const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Open files the server itself may hold: its socket, a pidfd per running child, the pipes in
/// flight, libraries. The children lower this to their request's limit.
const SERVER_OPEN_FILES: u64 = 1024;

/// What a forked child does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Job {
    /// Detect, extract, chunk; print the `Result<Extraction, ExtractError>`.
    Extract(Box<ChildRequest>),
    /// Print a `ProbeReport` (its environment, its limits, whether `connect_to` answers).
    Probe {
        connect_to: String,
        limits: ExtractLimits,
    },
}

impl Job {
    fn limits(&self) -> &ExtractLimits {
        match self {
            Job::Extract(request) => &request.limits,
            Job::Probe { limits, .. } => limits,
        }
    }
}

/// Worker → server.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
enum Command {
    /// Fork a child for `job`, working in `scratch`; the packet carries its stdout and stderr.
    Start { id: u64, scratch: PathBuf, job: Job },
    /// SIGKILL child `id` if it still runs.
    Kill { id: u64 },
}

/// Server → worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
enum Event {
    /// Child `id` ended with this raw wait status.
    Exited { id: u64, status: i32 },
    /// No child could be started for `id`.
    Failed { id: u64, detail: String },
}

impl Event {
    fn id(&self) -> u64 {
        match self {
            Event::Exited { id, .. } | Event::Failed { id, .. } => *id,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Worker side
// ---------------------------------------------------------------------------------------------

/// The worker's handle on its server, shared by the clones of a [`Sandbox`]; started on first use
/// and again after the server died.
#[derive(Debug, Default)]
pub struct ServerSlot {
    current: tokio::sync::Mutex<Option<Arc<Server>>>,
}

impl ServerSlot {
    /// The running server, or a new one.
    pub(super) async fn get(
        &self,
        sandbox: &Sandbox,
        limits: &ExtractLimits,
    ) -> Result<Arc<Server>, ExtractError> {
        let mut current = self.current.lock().await;
        if let Some(server) = current.as_ref().filter(|server| server.is_alive()) {
            return Ok(Arc::clone(server));
        }
        let server = Arc::new(Server::start(sandbox, limits)?);
        *current = Some(Arc::clone(&server));
        Ok(server)
    }

    /// Stops the server, if one runs, and waits until it is gone: its children die with it. The
    /// worker calls this last, so that nothing it started outlives it.
    pub(super) async fn stop(&self) {
        let Some(server) = self.current.lock().await.take() else {
            return;
        };
        // Hanging up asks the server to kill and reap its children, then exit; SIGKILL if it
        // does not within the timeout (its children then die with it, by PDEATHSIG).
        let _ = rustix::net::shutdown(&*server.socket, rustix::net::Shutdown::Both);
        let mut process = server.process.lock().await;
        if tokio::time::timeout(STOP_TIMEOUT, process.wait())
            .await
            .is_err()
            && let Err(error) = process.kill().await
        {
            tracing::warn!(%error, "cannot stop the extraction server");
        }
    }
}

/// A running server: the process, the tasks that talk to it, and the children waiting for their end.
#[derive(Debug)]
pub(super) struct Server {
    commands: mpsc::UnboundedSender<Outgoing>,
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Event>>>>,
    alive: Arc<AtomicBool>,
    next_id: AtomicU64,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Killed when dropped; its children die with it (PDEATHSIG).
    process: tokio::sync::Mutex<tokio::process::Child>,
    /// The worker's end of the socket (the tasks hold it too); shut down to stop the server.
    socket: Arc<UnixStream>,
    folder: PathBuf,
}

#[derive(Debug)]
struct Outgoing {
    command: Command,
    descriptors: Vec<OwnedFd>,
}

/// One child started through the server: kill it with [`StartedChild::kill`] (or by dropping it
/// before it ended), await its end with [`StartedChild::exited`].
pub(super) struct StartedChild {
    id: u64,
    ended: Option<oneshot::Receiver<Event>>,
    commands: mpsc::UnboundedSender<Outgoing>,
    finished: bool,
}

impl StartedChild {
    pub(super) fn kill(&self) {
        let _ = self.commands.send(Outgoing {
            command: Command::Kill { id: self.id },
            descriptors: Vec::new(),
        });
    }

    /// The child's exit status; an error when it could not be started or the server died.
    pub(super) async fn exited(&mut self) -> Result<ExitStatus, ExtractError> {
        let Some(ended) = self.ended.take() else {
            return Err(server_gone());
        };
        let event = ended.await.map_err(|_closed| server_gone())?;
        self.finished = true;
        match event {
            Event::Exited { status, .. } => Ok(ExitStatus::from_raw(status)),
            Event::Failed { detail, .. } => Err(ExtractError::Io {
                detail: format!("the extraction server could not start a child: {detail}"),
            }),
        }
    }
}

impl Drop for StartedChild {
    /// A file abandoned mid-way (cancel, shutdown, timeout) does not leave its child running.
    fn drop(&mut self) {
        if !self.finished {
            self.kill();
        }
    }
}

fn server_gone() -> ExtractError {
    ExtractError::Io {
        detail: "the extraction server exited while a child was running".to_owned(),
    }
}

impl Server {
    fn start(sandbox: &Sandbox, limits: &ExtractLimits) -> Result<Server, ExtractError> {
        let folder = sandbox
            .scratch_root
            .join(format!("server-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&folder)
            .map_err(|error| ExtractError::io("create the extraction server's folder", &error))?;
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|error| {
            ExtractError::io("create the extraction server's socket", &error.into())
        })?;
        // The server reads only the worker's commands; the limits on untrusted work are the
        // children's, which each sets for itself after the fork: its own CPU time (counted from
        // the fork) and address space.
        let server_limits = ExtractLimits {
            child_cpu_seconds: u64::MAX,
            child_memory_bytes: u64::MAX,
            child_open_files: SERVER_OPEN_FILES.max(limits.child_open_files),
            ..limits.clone()
        };
        // Spawned from a runtime thread, which lives as long as the runtime: PDEATHSIG follows the
        // thread that spawned a process, not its whole parent process.
        let mut command = sandbox.command(&folder, &server_limits)?;
        command
            .arg(super::sandbox::SERVER_ARG)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let process = command.spawn().map_err(|error| {
            ExtractError::io(
                &format!("start the extraction server {}", sandbox.program.display()),
                &error,
            )
        })?;
        // tokio has no type for a SOCK_SEQPACKET socket; its `UnixStream` serves as the readiness
        // wrapper (`async_io`), and every send and receive goes through rustix.
        let socket = std::os::unix::net::UnixStream::from(ours);
        let socket = socket
            .set_nonblocking(true)
            .and_then(|()| UnixStream::from_std(socket))
            .map(Arc::new)
            .map_err(|error| ExtractError::io("register the extraction server's socket", &error))?;
        let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Event>>>> = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let (commands, outgoing) = mpsc::unbounded_channel();
        let tasks = vec![
            tokio::spawn(send_commands(
                Arc::clone(&socket),
                outgoing,
                Arc::clone(&alive),
            )),
            tokio::spawn(receive_events(
                Arc::clone(&socket),
                Arc::clone(&waiting),
                Arc::clone(&alive),
            )),
        ];
        tracing::debug!(folder = %folder.display(), "extraction server started");
        Ok(Server {
            commands,
            waiting,
            alive,
            next_id: AtomicU64::new(1),
            tasks,
            process: tokio::sync::Mutex::new(process),
            socket,
            folder,
        })
    }

    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Asks the server to fork a child for `job` in `scratch`, writing to `stdout` and `stderr`.
    pub(super) fn start_child(
        &self,
        scratch: &Path,
        job: Job,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<StartedChild, ExtractError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (ended_sender, ended) = oneshot::channel();
        lock(&self.waiting).insert(id, ended_sender);
        let sent = self.commands.send(Outgoing {
            command: Command::Start {
                id,
                scratch: scratch.to_path_buf(),
                job,
            },
            descriptors: vec![stdout, stderr],
        });
        if sent.is_err() || !self.is_alive() {
            lock(&self.waiting).remove(&id);
            return Err(server_gone());
        }
        Ok(StartedChild {
            id,
            ended: Some(ended),
            commands: self.commands.clone(),
            finished: false,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Err(error) = std::fs::remove_dir_all(&self.folder) {
            tracing::debug!(folder = %self.folder.display(), %error, "cannot remove the extraction server's folder");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn send_commands(
    socket: Arc<UnixStream>,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    alive: Arc<AtomicBool>,
) {
    while let Some(message) = outgoing.recv().await {
        let bytes = match serde_json::to_vec(&message.command) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(%error, "cannot encode a command for the extraction server");
                continue;
            }
        };
        let borrowed: Vec<_> = message.descriptors.iter().map(AsFd::as_fd).collect();
        let sent = socket
            .async_io(Interest::WRITABLE, || {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
                let mut control = SendAncillaryBuffer::new(&mut space);
                if !borrowed.is_empty() {
                    control.push(SendAncillaryMessage::ScmRights(&borrowed));
                }
                rustix::net::sendmsg(
                    &*socket,
                    &[IoSlice::new(&bytes)],
                    &mut control,
                    SendFlags::NOSIGNAL,
                )
                .map_err(std::io::Error::from)
            })
            .await;
        if let Err(error) = sent {
            tracing::warn!(%error, "the extraction server stopped taking commands");
            alive.store(false, Ordering::Release);
            return;
        }
        // `message.descriptors` drop here: the child holds its own copies now.
    }
}

async fn receive_events(
    socket: Arc<UnixStream>,
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Event>>>>,
    alive: Arc<AtomicBool>,
) {
    let mut buffer = vec![0_u8; MESSAGE_BYTES];
    loop {
        let received = socket
            .async_io(Interest::READABLE, || {
                rustix::net::recv(&*socket, &mut buffer[..], RecvFlags::empty())
                    .map(|(length, _)| length)
                    .map_err(std::io::Error::from)
            })
            .await;
        match received {
            Ok(0) => break,
            Ok(length) => match serde_json::from_slice::<Event>(&buffer[..length]) {
                Ok(event) => {
                    if let Some(sender) = lock(&waiting).remove(&event.id()) {
                        let _ = sender.send(event);
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "the extraction server sent an unreadable event")
                }
            },
            Err(error) => {
                tracing::warn!(%error, "cannot read from the extraction server");
                break;
            }
        }
    }
    alive.store(false, Ordering::Release);
    // Dropping the senders tells every waiting file that its child is gone.
    lock(&waiting).clear();
    tracing::warn!("the extraction server exited; the next file starts a new one");
}

// ---------------------------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------------------------

/// A running child of the server.
struct Running {
    pid: Pid,
    pidfd: OwnedFd,
}

/// A one-page PDF of our own: the server reads it once with pdfium, so that pdfium's first-use
/// set-up (its font engine, its built-in fonts, the text page machinery) is done before the forks.
/// pdfium finds the objects without a cross-reference table.
const WARM_UP_PDF: &[u8] = b"%PDF-1.4
1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj
2 0 obj <</Type /Pages /Kids [3 0 R] /Count 1>> endobj
3 0 obj <</Type /Page /Parent 2 0 R /MediaBox [0 0 300 100] /Resources <</Font <</F1 4 0 R>>>> /Contents 5 0 R>> endobj
4 0 obj <</Type /Font /Subtype /Type1 /BaseFont /Times-Roman>> endobj
5 0 obj <</Length 38>> stream
BT /F1 12 Tf 10 50 Td (Warm up.) Tj ET
endstream endobj
trailer <</Root 1 0 R>>
%%EOF
";

/// What the server keeps warm for its children.
#[derive(Default)]
struct Warm {
    /// The library pdfium was loaded and warmed up from.
    pdfium: Option<PathBuf>,
    /// The chunker of the last chunking request (the worker sends the same one every time).
    chunker: Option<(super::sandbox::ChunkingRequest, Arc<Chunker>)>,
}

impl Warm {
    /// Loads, before the fork, what `job` will need: libpdfium and the tokenizer. A load that fails
    /// here is left to the child, which reports it as that file's error. After a load, the memory
    /// it freed goes back to the system, so that no child inherits it.
    fn prepare(&mut self, job: &Job) {
        let Job::Extract(request) = job else {
            return;
        };
        let mut loaded = false;
        if let engine @ super::PdfEngine::Pdfium { library } = &request.pdf_engine
            && self.pdfium.as_ref() != Some(library)
        {
            self.pdfium = Some(library.clone());
            loaded = true;
            let warm_up = Path::new("warm-up.pdf");
            let outcome = std::fs::write(warm_up, WARM_UP_PDF)
                .map_err(|error| ExtractError::io("write the warm-up PDF", &error))
                .and_then(|()| {
                    super::extract_path(
                        warm_up,
                        super::DocumentKind::Pdf,
                        engine,
                        &ExtractLimits::default(),
                    )
                });
            // A failure here (libpdfium missing, say) is each child's to report for its file.
            if let Err(error) = outcome {
                eprintln!("extraction server: pdfium's warm-up failed: {error}");
            }
            let _ = std::fs::remove_file(warm_up);
        }
        if let Some(chunking) = &request.chunking {
            let cached = self
                .chunker
                .as_ref()
                .is_some_and(|(cached, _)| cached == chunking);
            if !cached {
                loaded = true;
                self.chunker = Chunker::from_tokenizer_file(
                    &chunking.tokenizer,
                    chunking.max_tokens,
                    chunking.overlap_tokens,
                )
                .ok()
                .map(|chunker| (chunking.clone(), Arc::new(chunker)));
            }
        }
        if loaded {
            confine::release_free_memory();
        }
    }

    fn chunker_for(&self, job: &Job) -> Option<Arc<Chunker>> {
        let Job::Extract(request) = job else {
            return None;
        };
        let chunking = request.chunking.as_ref()?;
        self.chunker
            .as_ref()
            .filter(|(cached, _)| cached == chunking)
            .map(|(_, chunker)| Arc::clone(chunker))
    }
}

/// Entry point of the server ([`super::sandbox::SERVER_ARG`]): the socket is its stdin. Serves
/// until the worker closes the socket, then kills its children and exits.
pub(super) fn serve() -> ExitCode {
    let control = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(control) => control,
        Err(error) => {
            eprintln!("extraction server: no socket on stdin: {error}");
            return ExitCode::from(2);
        }
    };
    // Children must not inherit the socket as their stdin.
    if let Err(error) = std::fs::File::open("/dev/null")
        .and_then(|null| rustix::stdio::dup2_stdin(&null).map_err(std::io::Error::from))
    {
        eprintln!("extraction server: cannot detach stdin: {error}");
        return ExitCode::from(2);
    }
    let mut server = ServerState {
        control: Some(control),
        running: HashMap::new(),
        warm: Warm::default(),
    };
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("extraction server: {error}");
            server.kill_all();
            ExitCode::FAILURE
        }
    }
}

struct ServerState {
    /// `None` only in a forked child, which drops it first thing.
    control: Option<OwnedFd>,
    running: HashMap<u64, Running>,
    warm: Warm,
}

impl ServerState {
    fn control(&self) -> std::io::Result<&OwnedFd> {
        self.control
            .as_ref()
            .ok_or_else(|| std::io::Error::other("the server's socket is closed"))
    }

    fn run(&mut self) -> std::io::Result<()> {
        loop {
            let (command_ready, ended) = self.wait()?;
            for id in ended {
                self.reap(id)?;
            }
            if command_ready && !self.receive()? {
                self.kill_all();
                return Ok(());
            }
        }
    }

    /// Blocks until a command arrives or a child ends; says which.
    fn wait(&self) -> std::io::Result<(bool, Vec<u64>)> {
        let control = self.control()?;
        let ids: Vec<u64> = self.running.keys().copied().collect();
        let mut descriptors = Vec::with_capacity(ids.len() + 1);
        descriptors.push(PollFd::new(control, PollFlags::IN));
        for id in &ids {
            descriptors.push(PollFd::new(&self.running[id].pidfd, PollFlags::IN));
        }
        loop {
            match poll(&mut descriptors, None) {
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        let command_ready = !descriptors[0].revents().is_empty();
        let ended = ids
            .iter()
            .zip(&descriptors[1..])
            .filter(|(_, descriptor)| !descriptor.revents().is_empty())
            .map(|(id, _)| *id)
            .collect();
        Ok((command_ready, ended))
    }

    fn reap(&mut self, id: u64) -> std::io::Result<()> {
        let Some(child) = self.running.remove(&id) else {
            return Ok(());
        };
        let status = match rustix::process::waitpid(Some(child.pid), WaitOptions::empty()) {
            Ok(Some((_, status))) => status.as_raw(),
            Ok(None) => 0,
            Err(error) => return Err(error.into()),
        };
        self.send(&Event::Exited { id, status })
    }

    /// Reads one command; `false` when the worker closed the socket.
    fn receive(&mut self) -> std::io::Result<bool> {
        let mut bytes = vec![0_u8; MESSAGE_BYTES];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(START_DESCRIPTORS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = loop {
            match rustix::net::recvmsg(
                self.control()?,
                &mut [IoSliceMut::new(&mut bytes)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Ok(received) => break received,
                Err(rustix::io::Errno::INTR) => continue,
                Err(error) => return Err(error.into()),
            }
        };
        let mut descriptors: Vec<OwnedFd> = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                descriptors.extend(fds);
            }
        }
        if received.bytes == 0 {
            return Ok(false);
        }
        match serde_json::from_slice::<Command>(&bytes[..received.bytes]) {
            Ok(Command::Kill { id }) => {
                if let Some(child) = self.running.get(&id) {
                    let _ = rustix::process::pidfd_send_signal(&child.pidfd, Signal::KILL);
                }
            }
            Ok(Command::Start { id, scratch, job }) => {
                let Ok::<[OwnedFd; START_DESCRIPTORS], _>([stdout, stderr]) =
                    descriptors.try_into()
                else {
                    return self
                        .send(&Event::Failed {
                            id,
                            detail: "the command did not carry the child's stdout and stderr"
                                .into(),
                        })
                        .map(|()| true);
                };
                self.start(id, &scratch, job, stdout, stderr)?;
            }
            Err(error) => {
                // A worker and a server of different builds (a binary replaced on disk while the
                // worker runs) may not agree on a command: fail that child at once rather than
                // leave its file waiting for the wall clock.
                eprintln!("extraction server: unreadable command: {error}");
                let id = serde_json::from_slice::<serde_json::Value>(&bytes[..received.bytes])
                    .ok()
                    .and_then(|command| command.get("id")?.as_u64());
                if let Some(id) = id {
                    self.send(&Event::Failed {
                        id,
                        detail: format!("the server cannot read the command: {error}"),
                    })?;
                }
            }
        }
        Ok(true)
    }

    fn start(
        &mut self,
        id: u64,
        scratch: &Path,
        job: Job,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> std::io::Result<()> {
        self.warm.prepare(&job);
        let chunker = self.warm.chunker_for(&job);
        let server_pid = rustix::process::getpid();
        match confine::fork_single_threaded() {
            Ok(confine::Forked::Child) => {
                // Nothing of the server's may stay reachable from here.
                self.control = None;
                self.running.clear();
                std::process::exit(child_after_fork(
                    server_pid, scratch, &job, stdout, stderr, chunker,
                ))
            }
            Ok(confine::Forked::Parent { child }) => {
                let pid = Pid::from_raw(child).ok_or_else(|| {
                    std::io::Error::other(format!("fork returned process id {child}"))
                })?;
                let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty())?;
                self.running.insert(id, Running { pid, pidfd });
                Ok(())
            }
            Err(error) => self.send(&Event::Failed {
                id,
                detail: format!("fork: {error}"),
            }),
        }
    }

    fn send(&self, event: &Event) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(event).map_err(std::io::Error::from)?;
        rustix::net::send(self.control()?, &bytes, SendFlags::NOSIGNAL)?;
        Ok(())
    }

    fn kill_all(&mut self) {
        for child in self.running.values() {
            let _ = rustix::process::pidfd_send_signal(&child.pidfd, Signal::KILL);
        }
        for child in self.running.values() {
            let _ = rustix::process::waitpid(Some(child.pid), WaitOptions::empty());
        }
        self.running.clear();
    }
}

/// The forked child: confine, then do the job. Returns the exit code.
fn child_after_fork(
    server_pid: Pid,
    scratch: &Path,
    job: &Job,
    stdout: OwnedFd,
    stderr: OwnedFd,
    chunker: Option<Arc<Chunker>>,
) -> i32 {
    let confined = (|| -> std::io::Result<()> {
        rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
        if rustix::process::getppid() != Some(server_pid) {
            return Err(std::io::Error::other("the extraction server is gone"));
        }
        rustix::stdio::dup2_stdout(&stdout)?;
        rustix::stdio::dup2_stderr(&stderr)?;
        drop((stdout, stderr));
        std::env::set_current_dir(scratch)?;
        let limits = job.limits();
        confine::limit_current_process(confine::ResourceLimits {
            address_space_bytes: limits.child_memory_bytes,
            cpu_seconds: limits.child_cpu_seconds,
            file_size_bytes: limits.child_file_bytes,
            open_files: limits.child_open_files,
            processes: u64::MAX,
        })
    })();
    if let Err(error) = confined {
        eprintln!("extraction child: cannot confine itself: {error}");
        return 4;
    }
    let code = match job {
        Job::Extract(request) => {
            super::sandbox::write_json(&super::sandbox::run_request((**request).clone(), chunker))
        }
        Job::Probe { connect_to, .. } => {
            let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
            super::sandbox::write_json(&super::sandbox::probe_report(limits, connect_to))
        }
    };
    // The answer is complete: close the pipes now, so the worker has it without waiting for this
    // process's memory to be torn down.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&null);
    }
    i32::from(code)
}
