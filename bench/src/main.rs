//! `glassbox-bench`: benchmarks of the ingestion pipeline on a corpus of real LaTeX
//! manuals (PDF) and DOCX files made from the same text. See `bench/README.md`.
//!
//! # Layout
//! - [`corpus`]: downloads the Debian package, picks the PDFs, writes the DOCX twins.
//! - [`extract`]: both PDF engines (in process and sandboxed) against pdftotext: speed and text similarity.
//! - [`chunking`]: chunking alone against LlamaIndex's SentenceSplitter on the same texts.
//! - [`longline`]: 1, 5 and 20 MB single-line texts through the child: time and peak RSS per MB.
//! - [`retrieval`]: sentences of each PDF searched back through the API; peak RSS of worker + children.
//! - [`similarity`]: the word-level similarity measures the extraction section reports.
//! - [`pipeline`]: extract + chunk + store without the model, and the LlamaIndex peer on the same corpus.
//! - [`embed`]: local all-MiniLM-L6-v2 throughput against sentence-transformers.
//! - [`e2e`]: api-lite and a real worker-files process, uploads through the API, RSS sampling.
//! - [`copy`]: binary COPY against row-by-row INSERT for the store stage.
//! - [`search`]: search quality (hit@1, hit@5, MRR) and latency, vector, text and hybrid,
//!   against LlamaIndex's retrievers over the same chunks and model.
//! - [`scaleout`]: files/s against 1, 2 and 4 worker-files processes, and what binds.
//! - [`database`]: a fresh, migrated database per section.
//! - [`rss`]: resident set sizes from `/proc`.
//! - [`report`]: aligned tables and the findings every section hands to `all`.

/// Chunking alone against SentenceSplitter.
mod chunking;
/// Binary COPY against row-by-row INSERT.
mod copy;
/// The benchmark corpus.
mod corpus;
/// Fresh databases per section.
mod database;
/// End to end with real processes.
mod e2e;
/// Local embedding throughput, against sentence-transformers.
mod embed;
/// Extraction against pdftotext.
mod extract;
/// One long line in linear time and memory.
mod longline;
/// The pipeline without the model, and the LlamaIndex peer.
mod pipeline;
/// Tables and findings.
mod report;
/// Retrieval quality and peak memory through the API.
mod retrieval;
/// Memory figures from `/proc`.
mod rss;
/// Files/s against the number of worker processes.
mod scaleout;
/// Search quality and latency by mode, and the LlamaIndex retrievers.
mod search;
/// Word-level text similarity.
mod similarity;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::report::Finding;

#[derive(Debug, Parser)]
#[command(
    name = "glassbox-bench",
    about = "Ingestion benchmarks: extraction, pipeline, embeddings, end to end, COPY"
)]
struct Cli {
    /// Where the corpus, the peer's venv and the results live (ignored by git).
    #[arg(long, global = true, default_value_os_t = default_out_dir())]
    out: PathBuf,
    /// Folder with the release binaries (worker-files); defaults to this binary's folder.
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Section,
}

#[derive(Debug, Clone, Subcommand)]
enum Section {
    /// Build the corpus under OUT/corpus unless it is already there.
    Corpus,
    /// Extraction speed and text similarity against pdftotext (PDFs only), for each engine.
    Extract,
    /// Chunking alone against LlamaIndex's SentenceSplitter, same texts.
    Chunk,
    /// 1, 5 and 20 MB single-line text files through the confined child: time and peak RSS per MB.
    Longline,
    /// Sentences of each PDF searched back through the API (local model); peak RSS of the worker and its children.
    Retrieval,
    /// Extract + chunk + store with binary COPY, stand-in vectors; the LlamaIndex peer if installed.
    Pipeline {
        /// Files in flight at once for the second run (the worker's default is 4).
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Skip the LlamaIndex peer even when its venv exists.
        #[arg(long)]
        skip_peer: bool,
    },
    /// all-MiniLM-L6-v2 chunks/s against sentence-transformers: ~55 and ~200-token chunks, batch 32 and 64.
    Embed {
        /// How many ~55-token chunks to embed (a quarter as many ~200-token ones).
        #[arg(long, default_value_t = 1024)]
        chunks: usize,
    },
    /// api-lite in process + a release worker-files process: upload the corpus, wait, measure.
    E2e {
        /// Upload the first N files of the corpus (a PDF, its DOCX, the next PDF, ...); the
        /// default keeps the run to a few minutes, since every chunk goes through the model.
        #[arg(long, default_value_t = 12)]
        files: usize,
    },
    /// Store N chunks with binary COPY and with row-by-row INSERT.
    Copy {
        /// Chunks per run.
        #[arg(long, default_value_t = 2000)]
        rows: usize,
    },
    /// Search quality (hit@1, hit@5, MRR) and latency, vector / text / hybrid, and LlamaIndex's retrievers.
    Search {
        /// Add distractor PDFs of the corpus package until the index holds this many chunks.
        #[arg(long, default_value_t = 10_000)]
        chunks: usize,
        /// Skip the LlamaIndex peer even when its venv exists.
        #[arg(long)]
        skip_peer: bool,
    },
    /// Files/s with 1, 2 and 4 worker-files processes, zero-cost embeddings; what binds.
    Scaleout {
        /// Files per phase.
        #[arg(long, default_value_t = 200)]
        files: usize,
        /// Worker process counts, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
        workers: Vec<usize>,
    },
    /// Every section, each in its own process, then a summary against the targets (bench/README.md).
    All,
}

impl Section {
    fn name(&self) -> &'static str {
        match self {
            Section::Corpus => "corpus",
            Section::Extract => "extract",
            Section::Chunk => "chunk",
            Section::Longline => "longline",
            Section::Retrieval => "retrieval",
            Section::Pipeline { .. } => "pipeline",
            Section::Embed { .. } => "embed",
            Section::E2e { .. } => "e2e",
            Section::Copy { .. } => "copy",
            Section::Search { .. } => "search",
            Section::Scaleout { .. } => "scaleout",
            Section::All => "all",
        }
    }
}

/// Shared by every section.
pub struct Paths {
    pub out_dir: PathBuf,
    pub bin_dir: PathBuf,
}

impl Paths {
    pub fn worker_binary(&self) -> PathBuf {
        self.bin_dir.join("worker-files")
    }
}

/// libpdfium as `scripts/stack.sh` installs it (`GLASSBOX_FILES_WORKER__PDFIUM_LIBRARY` from
/// `.stack/env`), else `.stack/pdfium/libpdfium.so` of this checkout.
pub fn pdfium_library() -> anyhow::Result<PathBuf> {
    let library = std::env::var_os("GLASSBOX_FILES_WORKER__PDFIUM_LIBRARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| testkit::workspace_root().join(".stack/pdfium/libpdfium.so"));
    if !library.is_file() {
        bail!(
            "{} is missing: run scripts/stack.sh deps",
            library.display()
        );
    }
    Ok(library)
}

/// Where the Python peers live: a venv per peer under `~/.cache/glassbox/bench-peers/`, outside the
/// clone, installed by `bench/peers.sh` only when `BENCH_PEERS=1`.
pub fn peer_python(peer: &str) -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    cache
        .join("glassbox/bench-peers")
        .join(peer)
        .join("bin/python")
}

fn default_out_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("out")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let bin_dir = match cli.bin_dir.clone() {
        Some(folder) => folder,
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no parent folder")?
            .to_path_buf(),
    };
    let paths = Paths {
        out_dir: cli.out.clone(),
        bin_dir,
    };
    if let Section::All = cli.command {
        return run_all(&paths);
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let findings = runtime.block_on(run_section(&paths, &cli.command))?;
    if !findings.is_empty() {
        report::save_findings(&paths.out_dir, cli.command.name(), &findings)?;
    }
    Ok(())
}

async fn run_section(paths: &Paths, section: &Section) -> anyhow::Result<Vec<Finding>> {
    match section {
        Section::Corpus => {
            let corpus = corpus::ensure(&paths.out_dir)?;
            corpus.print_overview();
            Ok(Vec::new())
        }
        Section::Extract => extract::run(paths, &corpus::load(&paths.out_dir)?).await,
        Section::Chunk => chunking::run(paths, &corpus::load(&paths.out_dir)?).await,
        Section::Longline => longline::run(paths).await,
        Section::Retrieval => retrieval::run(paths, &corpus::load(&paths.out_dir)?).await,
        Section::Pipeline {
            concurrency,
            skip_peer,
        } => {
            let corpus = corpus::load(&paths.out_dir)?;
            pipeline::run(paths, &corpus, *concurrency, *skip_peer).await
        }
        Section::Embed { chunks } => {
            embed::run(paths, &corpus::load(&paths.out_dir)?, *chunks).await
        }
        Section::E2e { files } => e2e::run(paths, &corpus::load(&paths.out_dir)?, *files).await,
        Section::Copy { rows } => copy::run(&corpus::load(&paths.out_dir)?, *rows).await,
        Section::Search { chunks, skip_peer } => {
            search::run(paths, &corpus::load(&paths.out_dir)?, *chunks, *skip_peer).await
        }
        Section::Scaleout { files, workers } => scaleout::run(paths, *files, workers).await,
        Section::All => bail!("`all` is not a single section"),
    }
}

/// Runs every section in its own process, so each peak RSS belongs to one section only,
/// then prints the findings side by side.
fn run_all(paths: &Paths) -> anyhow::Result<()> {
    let corpus = corpus::ensure(&paths.out_dir)?;
    corpus.print_overview();
    report::clear_findings(&paths.out_dir)?;
    let executable = std::env::current_exe()?;
    let sections = [
        "extract",
        "chunk",
        "longline",
        "pipeline",
        "embed",
        "e2e",
        "copy",
        "retrieval",
        "search",
    ];
    let mut failed = Vec::new();
    for section in sections {
        let status = Command::new(&executable)
            .arg("--out")
            .arg(&paths.out_dir)
            .arg("--bin-dir")
            .arg(&paths.bin_dir)
            .arg(section)
            .status()
            .with_context(|| format!("starting section {section}"))?;
        if !status.success() {
            eprintln!("section {section} failed: {status}");
            failed.push(section);
        }
    }
    let mut findings = Vec::new();
    for section in sections {
        findings.extend(report::load_findings(&paths.out_dir, section)?);
    }
    report::print_summary(&findings);
    if !failed.is_empty() {
        bail!("sections failed: {}", failed.join(", "));
    }
    Ok(())
}
