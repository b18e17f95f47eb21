//! Section 2: our PDF extraction against pdftotext on the same files, one file at a
//! time: in process (`extract_path`), sandboxed through the worker binary
//! (`extract_isolated`, a child process per file, as the worker runs it), and
//! `pdftotext <pdf> -` (a process per file too). Similarity: see [`crate::similarity`].

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use worker_files::EXTRACT_CHILD_ARG;
use worker_files::extract::{
    DocumentKind, ExtractLimits, extract_isolated, extract_path, normalize_text,
};

use crate::Paths;
use crate::corpus::Corpus;
use crate::report::{self, Finding, Table, heading};
use crate::similarity::{self, Overlap};

const PDFTOTEXT_REFERENCE_PAGES_PER_SECOND: f64 = 335.0;
const SIMILARITY_TARGET: f64 = 0.95;

pub async fn run(paths: &Paths, corpus: &Corpus) -> anyhow::Result<Vec<Finding>> {
    heading("Extraction: ours vs pdftotext (PDFs, one file at a time)");
    let worker = paths.worker_binary();
    if !worker.exists() {
        bail!(
            "{} is missing: cargo build --release --bins",
            worker.display()
        );
    }
    let limits = ExtractLimits::default();
    // Warm the page cache so no side pays for the first read.
    for file in corpus.pdfs() {
        std::fs::read(&file.path)?;
    }

    let mut table = Table::new(
        "Per file (ms; similarity to pdftotext's text)",
        &[
            "file",
            "pages",
            "pdftotext",
            "in-process",
            "sandboxed",
            "ordered",
            "bag",
        ],
    );
    let mut pages_total = 0_u64;
    let mut pdftotext_seconds = 0.0;
    let mut in_process_seconds = 0.0;
    let mut isolated_seconds = 0.0;
    let mut ordered_total = Overlap::default();
    let mut bag_total = Overlap::default();
    let mut lowest_ordered: Option<(f64, String)> = None;
    let mut failures = Vec::new();

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

        let started = Instant::now();
        let in_process = extract_path(&file.path, DocumentKind::Pdf, &limits);
        let in_process_elapsed = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let isolated = extract_isolated(
            &worker,
            &[EXTRACT_CHILD_ARG.to_string()],
            &file.path,
            DocumentKind::Pdf,
            &limits,
        )
        .await;
        let isolated_elapsed = started.elapsed().as_secs_f64();

        let document = match (in_process, isolated) {
            (Ok(document), Ok(_)) => document,
            (Err(error), _) | (_, Err(error)) => {
                failures.push(format!("{}: {error}", file.name));
                table.row(vec![
                    file.name.clone(),
                    file.source_pages.to_string(),
                    "failed".into(),
                ]);
                continue;
            }
        };
        let ours_pages: Vec<String> = document
            .pages
            .iter()
            .map(|page| page.text.clone())
            .collect();
        let ordered = similarity::ordered(&ours_pages, &reference_pages);
        let bag = similarity::bag_of_words(&ours_pages, &reference_pages);
        ordered_total.add(ordered);
        bag_total.add(bag);
        if lowest_ordered
            .as_ref()
            .is_none_or(|(lowest, _)| ordered.ratio() < *lowest)
        {
            lowest_ordered = Some((ordered.ratio(), file.name.clone()));
        }
        let pages = document.pages.len() as u64;
        pages_total += pages;
        pdftotext_seconds += pdftotext_elapsed;
        in_process_seconds += in_process_elapsed;
        isolated_seconds += isolated_elapsed;
        table.row(vec![
            file.name.clone(),
            pages.to_string(),
            report::millis(pdftotext_elapsed),
            report::millis(in_process_elapsed),
            report::millis(isolated_elapsed),
            format!("{:.3}", ordered.ratio()),
            format!("{:.3}", bag.ratio()),
        ]);
    }
    table.print();
    for failure in &failures {
        println!("FAILED: {failure}");
    }

    let pages = pages_total as f64;
    let mut totals = Table::new(
        &format!(
            "Totals over {} PDFs, {pages_total} pages",
            corpus.pdfs().count() - failures.len()
        ),
        &["extractor", "seconds", "pages/s", "time vs pdftotext"],
    );
    for (name, elapsed) in [
        ("pdftotext", pdftotext_seconds),
        ("ours, in process", in_process_seconds),
        ("ours, sandboxed child", isolated_seconds),
    ] {
        totals.row(vec![
            name.to_string(),
            report::seconds(elapsed),
            report::rate(pages, elapsed),
            report::ratio(elapsed / pdftotext_seconds),
        ]);
    }
    totals.print();
    let (lowest_ratio, lowest_name) = lowest_ordered.unwrap_or((0.0, "-".into()));
    println!();
    println!(
        "Similarity to pdftotext (word-weighted over all pages): ordered {:.3}, bag of words {:.3}; lowest file: {lowest_name} ({lowest_ratio:.3})",
        ordered_total.ratio(),
        bag_total.ratio()
    );
    println!(
        "DESIGN reference: pdftotext about {PDFTOTEXT_REFERENCE_PAGES_PER_SECOND} pages/s; target: as fast, similarity >= {SIMILARITY_TARGET}"
    );

    let ours_rate = pages / isolated_seconds;
    let pdftotext_rate = pages / pdftotext_seconds;
    Ok(vec![
        Finding {
            what: "PDF extraction, sandboxed (pages/s)".into(),
            ours: report::rate(pages, isolated_seconds),
            reference: format!(
                "pdftotext {} (this run)",
                report::rate(pages, pdftotext_seconds)
            ),
            comparison: format!("{} of its speed", report::ratio(ours_rate / pdftotext_rate)),
            target: "as fast (>= 1.00x)".into(),
            met: Some(ours_rate >= pdftotext_rate),
        },
        Finding {
            what: "PDF extraction, in process (pages/s)".into(),
            ours: report::rate(pages, in_process_seconds),
            reference: format!(
                "pdftotext {} (this run)",
                report::rate(pages, pdftotext_seconds)
            ),
            comparison: format!(
                "{} of its speed",
                report::ratio((pages / in_process_seconds) / pdftotext_rate)
            ),
            target: "as fast (>= 1.00x)".into(),
            met: Some(pages / in_process_seconds >= pdftotext_rate),
        },
        Finding {
            what: "Text similarity to pdftotext (ordered words)".into(),
            ours: format!("{:.3}", ordered_total.ratio()),
            reference: format!("bag of words {:.3}", bag_total.ratio()),
            comparison: format!("lowest {lowest_ratio:.3} ({lowest_name})"),
            target: format!(">= {SIMILARITY_TARGET}"),
            met: Some(ordered_total.ratio() >= SIMILARITY_TARGET && failures.is_empty()),
        },
    ])
}
