//! `worker-files extract FILE [--engine auto|pdfium|pdf-extract] [--json]`: runs one file through the
//! same confined child as the worker (detection, extraction, chunking, with the worker's limits from
//! the same `GLASSBOX_*` settings) and prints the detected type, the engine, the pages and chunks and the
//! text per page, or the typed error code and message. Ops use it to see why a file failed.
//!
//! Exit codes: 0 extracted, 1 the file failed with a typed error, 2 the command could not run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shared::config::{PdfEngineChoice, Settings};

use crate::ExtractionSetup;
use crate::extract::sandbox::{ChildRequest, Extraction};
use crate::extract::{ExtractError, TextPart};
use crate::scratch::WorkerFolder;

#[derive(Debug, Parser)]
#[command(
    name = "worker-files extract",
    about = "Extract and chunk one file in the worker's sandbox, and show the result or the error"
)]
pub struct ExtractArgs {
    /// The file to extract.
    #[arg(required_unless_present = "probe")]
    pub file: Option<PathBuf>,
    /// The PDF engine; defaults to GLASSBOX_FILES_WORKER__PDF_ENGINE (auto).
    #[arg(long, value_parser = parse_engine)]
    pub engine: Option<PdfEngineChoice>,
    /// Print the whole result as JSON (`{"error": {"code", "message"}}` on failure).
    #[arg(long)]
    pub json: bool,
    /// Declared content type, as an upload would give it (breaks ties between text kinds).
    #[arg(long)]
    pub content_type: Option<String>,
    /// Instead of a file: start a confined child that prints, as JSON, its environment, its limits
    /// and whether it can open a TCP connection to HOST:PORT (how the tests check the sandbox).
    #[arg(long, value_name = "HOST:PORT", hide = true)]
    pub probe: Option<String>,
}

fn parse_engine(value: &str) -> Result<PdfEngineChoice, String> {
    match value {
        "auto" => Ok(PdfEngineChoice::Auto),
        "pdfium" => Ok(PdfEngineChoice::Pdfium),
        "pdf-extract" => Ok(PdfEngineChoice::PdfExtract),
        other => Err(format!(
            "unknown engine {other:?}; use auto, pdfium or pdf-extract"
        )),
    }
}

/// Entry point of `worker-files extract`; `arguments` start with the subcommand's own name.
pub fn main(arguments: Vec<String>) -> ExitCode {
    let args = match ExtractArgs::try_parse_from(arguments) {
        Ok(args) => args,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(2);
        }
    };
    let mut settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("worker-files extract: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(engine) = args.engine {
        settings.files_worker.pdf_engine = engine;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("worker-files extract: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&args, &settings)) {
        Ok(outcome) => report(&args, outcome),
        Err(error) => {
            eprintln!("worker-files extract: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(
    args: &ExtractArgs,
    settings: &Settings,
) -> anyhow::Result<Result<Extraction, ExtractError>> {
    let spool_parent = settings
        .files_worker
        .spool_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let (folder, _) = WorkerFolder::create(&spool_parent)?;
    let setup = ExtractionSetup::prepare(
        &settings.files_worker,
        &settings.embedding,
        &settings.chunking,
        folder.path(),
    )?;
    if let Some(address) = &args.probe {
        let report = setup.sandbox.probe(address).await?;
        println!("{}", serde_json::to_string(&report)?);
        drop(folder);
        std::process::exit(0);
    }
    let Some(file) = &args.file else {
        anyhow::bail!("no file given");
    };
    anyhow::ensure!(file.is_file(), "{} is not a file", file.display());
    let request = ChildRequest {
        path: std::path::absolute(file)?,
        kind: None,
        content_type: args.content_type.clone(),
        name: file
            .file_name()
            .map(|name| name.to_string_lossy().into_owned()),
        pdf_engine: setup.pdf_engine.clone(),
        limits: setup.limits.clone(),
        chunking: Some(setup.chunking.clone()),
        include_texts: true,
    };
    if !args.json {
        println!(
            "sandbox: network confinement {}, pdf engine {}",
            setup.network(),
            setup.pdf_engine.name()
        );
    }
    Ok(setup.sandbox.run(&request).await)
}

fn report(args: &ExtractArgs, outcome: Result<Extraction, ExtractError>) -> ExitCode {
    match (outcome, args.json) {
        (Ok(extraction), true) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&extraction).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        (Err(error), true) => {
            let body =
                serde_json::json!({"error": {"code": error.code(), "message": error.to_string()}});
            println!("{body}");
            ExitCode::from(1)
        }
        (Ok(extraction), false) => {
            print_human(&extraction);
            ExitCode::SUCCESS
        }
        (Err(error), false) => {
            println!("error: {}", error.code());
            println!("message: {error}");
            ExitCode::from(1)
        }
    }
}

fn print_human(extraction: &Extraction) {
    use std::fmt::Write as _;
    let document = &extraction.document;
    let token_counts: Vec<usize> = extraction
        .chunks
        .iter()
        .map(|chunk| chunk.token_count)
        .collect();
    let total_tokens: usize = token_counts.iter().sum();
    let mut out = String::new();
    let _ = writeln!(out, "type: {}", document.kind);
    let _ = writeln!(
        out,
        "engine: {} (extractor version {})",
        document.engine, document.extractor_version
    );
    let _ = writeln!(out, "pages: {}", document.page_count());
    let _ = writeln!(
        out,
        "chunks: {} ({} tokens; per chunk min {}, max {})",
        extraction.chunks.len(),
        total_tokens,
        token_counts.iter().min().copied().unwrap_or(0),
        token_counts.iter().max().copied().unwrap_or(0)
    );
    let _ = writeln!(
        out,
        "text: {} bytes; extract {} ms, chunk {} ms in the child",
        extraction.text_bytes, extraction.extract_ms, extraction.chunk_ms
    );
    for page in &document.pages {
        let label = match (page.number, page.part) {
            (Some(number), _) => format!("page {number}"),
            (None, Some(part)) if part != TextPart::Body => part.as_str().to_owned(),
            (None, _) => "text".to_owned(),
        };
        let _ = writeln!(out, "\n--- {label} ---\n{}", page.text);
    }
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
}
