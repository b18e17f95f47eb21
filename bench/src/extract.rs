//! Section 2: PDF extraction, each engine against pdftotext on the same files, one file at a time:
//! `pdftotext <pdf> -` (a process per file), and for each of our engines (pdfium, pdf-extract) the
//! confined child as the worker runs it (`Sandbox::run`: a child forked per file by the extraction
//! server, no chunking), a confined child exec'd per file (`Launch::Exec`, how the worker ran
//! before the server), and the same engine in process (`extract_path`).
//!
//! pdftotext reads the text layer only, so these runs do too (`ocr_max_pages = 0`). What the
//! worker adds by default, OCR of pages without a text layer, is timed in a row of its own
//! (pdfium, sandboxed, default limits). Similarity to pdftotext's text: see [`crate::similarity`].

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use worker_files::EXTRACT_CHILD_ARG;
use worker_files::extract::sandbox::{ChildRequest, Launch};
use worker_files::extract::{
    DocumentKind, ExtractLimits, PdfEngine, Sandbox, extract_path, normalize_text,
};

use crate::Paths;
use crate::corpus::Corpus;
use crate::report::{self, Finding, Table, heading};
use crate::similarity::{self, Overlap};

const PDFTOTEXT_REFERENCE_PAGES_PER_SECOND: f64 = 335.0;
const SIMILARITY_TARGET: f64 = 0.95;
/// The goal for the pdfium engine, sandboxed.
const PDFIUM_SPEEDUP_TARGET: f64 = 2.0;

/// One engine's totals over the corpus.
#[derive(Default)]
struct EngineTotals {
    sandboxed_seconds: f64,
    exec_seconds: f64,
    in_process_seconds: f64,
    ordered: Overlap,
    bag: Overlap,
    lowest_ordered: Option<(f64, String)>,
    failures: Vec<String>,
}

pub async fn run(paths: &Paths, corpus: &Corpus) -> anyhow::Result<Vec<Finding>> {
    heading("PDF extraction: pdfium and pdf-extract vs pdftotext (PDFs, one file at a time)");
    let worker = paths.worker_binary();
    if !worker.exists() {
        bail!(
            "{} is missing: cargo build --release --bins",
            worker.display()
        );
    }
    let library = crate::pdfium_library()?;
    let scratch = tempfile::tempdir()?;
    let sandbox = Sandbox::new(
        worker.clone(),
        vec![EXTRACT_CHILD_ARG.to_string()],
        scratch.path().to_path_buf(),
    )
    .map_err(anyhow::Error::msg)?;
    let exec_sandbox = Sandbox {
        launch: Launch::Exec,
        ..sandbox.clone()
    };
    println!(
        "sandbox: network confinement {}, libpdfium {}",
        sandbox.network,
        library.display()
    );
    // Like for like with pdftotext: text layers only.
    let limits = ExtractLimits {
        ocr_max_pages: 0,
        ..ExtractLimits::default()
    };
    let mut with_ocr_seconds = 0.0;
    let engines = [
        ("pdfium", PdfEngine::Pdfium { library }),
        ("pdf-extract", PdfEngine::PdfExtract),
    ];
    // Warm the page cache so no side pays for the first read.
    for file in corpus.pdfs() {
        std::fs::read(&file.path)?;
    }

    let mut table = Table::new(
        "Per file (ms; similarity to pdftotext's text, ordered words)",
        &[
            "file",
            "pages",
            "pdftotext",
            "pdfium",
            "pdf-extract",
            "pdfium sim",
            "pdf-extract sim",
        ],
    );
    let mut pages_total = 0_u64;
    let mut pdftotext_seconds = 0.0;
    let mut totals: Vec<EngineTotals> = engines.iter().map(|_| EngineTotals::default()).collect();

    for file in corpus.pdfs() {
        let started = Instant::now();
        let output = Command::new("pdftotext")
            .arg(&file.path)
            .arg("-")
            .output()
            .context("running pdftotext (poppler-utils)")?;
        let pdftotext_elapsed = started.elapsed().as_secs_f64();
        if !output.status.success() {
            bail!("pdftotext failed on {}", file.name);
        }
        let reference_text = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut reference_pages: Vec<String> =
            reference_text.split('\u{c}').map(normalize_text).collect();
        // pdftotext ends every page with a form feed, so the last piece is empty.
        if reference_pages.last().is_some_and(String::is_empty) {
            reference_pages.pop();
        }
        pages_total += reference_pages.len() as u64;
        pdftotext_seconds += pdftotext_elapsed;

        let mut row = vec![
            file.name.clone(),
            reference_pages.len().to_string(),
            report::millis(pdftotext_elapsed),
        ];
        let mut similarity_cells = Vec::new();
        for ((name, engine), engine_totals) in engines.iter().zip(totals.iter_mut()) {
            let request = ChildRequest {
                path: file.path.clone(),
                kind: Some(DocumentKind::Pdf),
                content_type: None,
                name: None,
                pdf_engine: engine.clone(),
                limits: limits.clone(),
                chunking: None,
                include_texts: true,
            };
            let started = Instant::now();
            let sandboxed = sandbox.run(&request).await;
            let sandboxed_elapsed = started.elapsed().as_secs_f64();
            if *name == "pdfium" {
                let with_ocr = ChildRequest {
                    limits: ExtractLimits::default(),
                    ..request.clone()
                };
                let started = Instant::now();
                let _ = sandbox.run(&with_ocr).await;
                with_ocr_seconds += started.elapsed().as_secs_f64();
            }
            let started = Instant::now();
            let exec = exec_sandbox.run(&request).await;
            let exec_elapsed = started.elapsed().as_secs_f64();
            let started = Instant::now();
            let in_process = extract_path(&file.path, DocumentKind::Pdf, engine, &limits);
            let in_process_elapsed = started.elapsed().as_secs_f64();
            let document = match (sandboxed, exec, in_process) {
                (Ok(extraction), Ok(_), Ok(_)) => extraction.document,
                (Err(error), _, _) | (_, Err(error), _) | (_, _, Err(error)) => {
                    engine_totals
                        .failures
                        .push(format!("{}: {error}", file.name));
                    row.push("failed".into());
                    similarity_cells.push("-".into());
                    continue;
                }
            };
            engine_totals.sandboxed_seconds += sandboxed_elapsed;
            engine_totals.exec_seconds += exec_elapsed;
            engine_totals.in_process_seconds += in_process_elapsed;
            let ours_pages: Vec<String> = document
                .pages
                .iter()
                .map(|page| page.text.clone())
                .collect();
            let ordered = similarity::ordered(&ours_pages, &reference_pages);
            let bag = similarity::bag_of_words(&ours_pages, &reference_pages);
            engine_totals.ordered.add(ordered);
            engine_totals.bag.add(bag);
            if engine_totals
                .lowest_ordered
                .as_ref()
                .is_none_or(|(lowest, _)| ordered.ratio() < *lowest)
            {
                engine_totals.lowest_ordered = Some((ordered.ratio(), file.name.clone()));
            }
            row.push(report::millis(sandboxed_elapsed));
            similarity_cells.push(format!("{:.3}", ordered.ratio()));
        }
        row.extend(similarity_cells);
        table.row(row);
    }
    table.print();

    let pages = pages_total as f64;
    let pdftotext_rate = pages / pdftotext_seconds;
    let mut summary = Table::new(
        &format!(
            "Totals over {} PDFs, {pages_total} pages (one run, same files)",
            corpus.pdfs().count()
        ),
        &[
            "extractor",
            "seconds",
            "pages/s",
            "speed vs pdftotext",
            "ordered sim",
            "bag-of-words sim",
            "lowest ordered",
        ],
    );
    summary.row(vec![
        "pdftotext".into(),
        report::seconds(pdftotext_seconds),
        report::rate(pages, pdftotext_seconds),
        "1.00x".into(),
        "1.000".into(),
        "1.000".into(),
        "-".into(),
    ]);
    for ((name, _), engine_totals) in engines.iter().zip(&totals) {
        let (lowest_ratio, lowest_name) = engine_totals
            .lowest_ordered
            .clone()
            .unwrap_or((0.0, "-".into()));
        for (mode, seconds) in [
            ("sandboxed child", engine_totals.sandboxed_seconds),
            ("exec'd child", engine_totals.exec_seconds),
            ("in process", engine_totals.in_process_seconds),
        ] {
            summary.row(vec![
                format!("{name}, {mode}"),
                report::seconds(seconds),
                report::rate(pages, seconds),
                report::ratio(pages / seconds / pdftotext_rate),
                format!("{:.3}", engine_totals.ordered.ratio()),
                format!("{:.3}", engine_totals.bag.ratio()),
                format!("{lowest_ratio:.3} ({lowest_name})"),
            ]);
        }
    }
    summary.row(vec![
        "pdfium, sandboxed, + OCR of pages without text (the worker's default)".into(),
        report::seconds(with_ocr_seconds),
        report::rate(pages, with_ocr_seconds),
        report::ratio(pages / with_ocr_seconds / pdftotext_rate),
        "-".into(),
        "-".into(),
        "-".into(),
    ]);
    summary.print();
    for ((name, _), engine_totals) in engines.iter().zip(&totals) {
        for failure in &engine_totals.failures {
            println!("FAILED ({name}): {failure}");
        }
    }
    println!(
        "reference: pdftotext about {PDFTOTEXT_REFERENCE_PAGES_PER_SECOND} pages/s; goal: pdfium >= {PDFIUM_SPEEDUP_TARGET}x pdftotext, similarity >= {SIMILARITY_TARGET}"
    );

    let mut findings = Vec::new();
    for ((name, _), engine_totals) in engines.iter().zip(&totals) {
        let rate = pages / engine_totals.sandboxed_seconds;
        let target = if *name == "pdfium" {
            PDFIUM_SPEEDUP_TARGET
        } else {
            1.0
        };
        findings.push(Finding {
            what: format!("PDF extraction, {name}, sandboxed (pages/s)"),
            ours: report::rate(pages, engine_totals.sandboxed_seconds),
            reference: format!(
                "pdftotext {} (this run)",
                report::rate(pages, pdftotext_seconds)
            ),
            comparison: format!("{} its speed", report::ratio(rate / pdftotext_rate)),
            target: format!(">= {target:.2}x"),
            met: Some(rate >= target * pdftotext_rate && engine_totals.failures.is_empty()),
        });
        findings.push(Finding {
            what: format!("Text similarity to pdftotext, {name} (ordered words)"),
            ours: format!("{:.3}", engine_totals.ordered.ratio()),
            reference: format!("bag of words {:.3}", engine_totals.bag.ratio()),
            comparison: engine_totals
                .lowest_ordered
                .as_ref()
                .map(|(ratio, file)| format!("lowest {ratio:.3} ({file})"))
                .unwrap_or_default(),
            target: format!(">= {SIMILARITY_TARGET}"),
            met: Some(engine_totals.ordered.ratio() >= SIMILARITY_TARGET),
        });
    }
    Ok(findings)
}
