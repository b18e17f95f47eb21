//! Section: retrieval quality and memory, with the local model, through the real API.
//!
//! api-lite runs in this process (`testkit::TestApp`), a release `worker-files` process ingests every
//! corpus PDF (defaults: concurrency 4, pdfium, the local all-MiniLM-L6-v2), and then:
//! - **Retrieval check**: sentences taken from pdftotext's text of each PDF (up to
//!   [`SENTENCES_PER_FILE`], 8 to 40 words, spread over the document) are searched through
//!   `POST /v1/search` (top 5); we count how often the file they came from ranks first and how often it
//!   is among the top 5 files.
//! - **Memory**: while the worker ingests, every 20 ms, the memory of the worker plus all its
//!   extraction children at that moment (the children are the sandbox, so they count); the peak of
//!   that sum is the figure. It is summed as PSS (each process's private pages plus its share of
//!   pages it maps with others): a sum of RSS counts shared pages once per process, and a child
//!   between fork and exec (while its network namespace is made) maps all of the worker's memory,
//!   so it would count the worker twice. The RSS sum (children counted once they have exec'd) is
//!   printed beside it, and the worker's own peak (VmHWM).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures::StreamExt;
use serde_json::json;
use testkit::{TestApp, TestOptions};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use worker_files::extract::normalize_text;

use crate::Paths;
use crate::corpus::Corpus;
use crate::database;
use crate::report::{Finding, Table, heading};
use crate::rss;

const SENTENCES_PER_FILE: usize = 10;
const WAIT_PER_FILE: Duration = Duration::from_secs(900);
const FIRST_TARGET: f64 = 0.85;
const TOP5_TARGET: f64 = 0.95;
const MEMORY_TARGET_MIB: f64 = 250.0;

pub async fn run(paths: &Paths, corpus: &Corpus) -> anyhow::Result<Vec<Finding>> {
    heading("Retrieval check and peak memory: every corpus PDF through the API, local model");
    let worker_binary = paths.worker_binary();
    if !worker_binary.exists() {
        bail!(
            "{} is missing: cargo build --release --bins",
            worker_binary.display()
        );
    }
    let app = TestApp::spawn_with(TestOptions {
        max_receive_count: 3,
        visibility_timeout_secs: 600,
        configure: Some(database::unthrottled()),
        ..TestOptions::default()
    })
    .await?;
    let library = crate::pdfium_library()?;
    let library_text = library.display().to_string();
    let mut worker = app.spawn_worker(
        &worker_binary.to_string_lossy(),
        &[
            ("GLASSBOX_FILES_WORKER__LEASE_SECS", "120"),
            (
                "GLASSBOX_FILES_WORKER__PDFIUM_LIBRARY",
                library_text.as_str(),
            ),
            ("GLASSBOX_FILES_WORKER__PDF_ENGINE", "pdfium"),
        ],
    )?;
    let worker_pid = worker.pid();

    let sampling = CancellationToken::new();
    let peaks = Arc::new(Mutex::new(GroupPeaks::default()));
    let sampler = tokio::spawn({
        let sampling = sampling.clone();
        let peaks = Arc::clone(&peaks);
        async move {
            while !sampling.is_cancelled() {
                let sample = GroupSample::take(worker_pid);
                if let Ok(mut peaks) = peaks.lock() {
                    peaks.record(sample);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    let pdfs: Vec<_> = corpus.pdfs().collect();
    let started = Instant::now();
    let uploads: Vec<anyhow::Result<Uuid>> = futures::stream::iter(pdfs.iter())
        .map(|file| async {
            let bytes = tokio::fs::read(&file.path).await?;
            app.upload(&file.name, file.content_type(), bytes).await
        })
        .buffered(4)
        .collect()
        .await;
    let mut file_ids = Vec::new();
    for upload in uploads {
        file_ids.push(upload?);
    }
    for file_id in &file_ids {
        let file = app
            .wait_for_file(
                *file_id,
                &["ready", "failed", "dead_lettered"],
                WAIT_PER_FILE,
            )
            .await?;
        if file["status"] != "ready" {
            bail!("a corpus file did not become ready: {file}");
        }
    }
    let ingest_seconds = started.elapsed().as_secs_f64();
    sampling.cancel();
    sampler.await.ok();
    let peaks = peaks
        .lock()
        .map_err(|_| anyhow::anyhow!("sampler lock"))?
        .clone();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let peak_sum_mib = mib(peaks.resident.total_kib());
    let peak_pss_mib = mib(peaks.proportional.total_kib());
    let worker_peak_mib = rss::memory_of(worker_pid).map_or(0.0, |memory| mib(memory.peak_kib));
    println!(
        "ingested {} PDFs in {ingest_seconds:.1} s; peak RSS worker + children {peak_sum_mib:.1} MiB \
         (worker {:.1} + {} children {:.1}), worker alone (VmHWM) {worker_peak_mib:.1} MiB; \
         peak PSS worker + children {:.1} MiB (worker {:.1} + {} children {:.1})",
        pdfs.len(),
        mib(peaks.resident.worker_kib),
        peaks.resident.children,
        mib(peaks.resident.children_kib),
        peak_pss_mib,
        mib(peaks.proportional.worker_kib),
        peaks.proportional.children,
        mib(peaks.proportional.children_kib),
    );

    let name_of: HashMap<Uuid, String> = file_ids
        .iter()
        .zip(&pdfs)
        .map(|(id, file)| (*id, file.name.clone()))
        .collect();
    let mut queries = 0_usize;
    let mut first = 0_usize;
    let mut top5 = 0_usize;
    let mut per_file = Table::new(
        "Per PDF: sentences from pdftotext's text searched through the API",
        &["file", "sentences", "right file first", "in top 5"],
    );
    for (file_id, file) in file_ids.iter().zip(&pdfs) {
        let sentences = pick_sentences(&corpus.text_of(&file.stem)?, SENTENCES_PER_FILE);
        let mut file_first = 0;
        let mut file_top5 = 0;
        for sentence in &sentences {
            let (status, found) = app
                .post("/v1/search", json!({ "query": sentence, "top_k": 20 }))
                .await?;
            if status != 200 {
                bail!("search answered {status}: {found}");
            }
            let mut ranked_files: Vec<Uuid> = Vec::new();
            for hit in found["hits"].as_array().cloned().unwrap_or_default() {
                let Some(hit_file) = hit["file_id"]
                    .as_str()
                    .and_then(|id| id.parse::<Uuid>().ok())
                else {
                    continue;
                };
                if !ranked_files.contains(&hit_file) {
                    ranked_files.push(hit_file);
                }
            }
            let rank = ranked_files.iter().position(|id| id == file_id);
            if rank == Some(0) {
                file_first += 1;
            }
            if rank.is_some_and(|rank| rank < 5) {
                file_top5 += 1;
            }
        }
        queries += sentences.len();
        first += file_first;
        top5 += file_top5;
        per_file.row(vec![
            name_of[file_id].clone(),
            sentences.len().to_string(),
            file_first.to_string(),
            file_top5.to_string(),
        ]);
    }
    per_file.print();
    let first_rate = first as f64 / queries.max(1) as f64;
    let top5_rate = top5 as f64 / queries.max(1) as f64;
    println!(
        "{queries} sentences: right file first {:.1}%, in the top 5 {:.1}%",
        100.0 * first_rate,
        100.0 * top5_rate
    );

    worker.terminate(Duration::from_secs(60)).await.ok();
    // Its database goes with it (testkit's `TestApp` drops it).
    drop(app);

    Ok(vec![
        Finding {
            what: "Retrieval: right file first (pdftotext sentences via API)".into(),
            ours: format!("{:.1}% of {queries}", 100.0 * first_rate),
            reference: "-".into(),
            comparison: format!("top 5: {:.1}%", 100.0 * top5_rate),
            target: format!(">= {:.0}%", 100.0 * FIRST_TARGET),
            met: Some(first_rate >= FIRST_TARGET),
        },
        Finding {
            what: "Retrieval: right file in the top 5".into(),
            ours: format!("{:.1}% of {queries}", 100.0 * top5_rate),
            reference: "-".into(),
            comparison: "-".into(),
            target: format!(">= {:.0}%", 100.0 * TOP5_TARGET),
            met: Some(top5_rate >= TOP5_TARGET),
        },
        Finding {
            what: "Peak memory (PSS), worker + extraction children, local model".into(),
            ours: format!("{peak_pss_mib:.1} MiB"),
            reference: "Python peers 1-1.9 GB (reference)".into(),
            comparison: format!(
                "RSS summed {peak_sum_mib:.1} MiB; worker alone peak {worker_peak_mib:.1} MiB"
            ),
            target: format!("<= {MEMORY_TARGET_MIB:.0} MiB"),
            met: Some(peak_pss_mib <= MEMORY_TARGET_MIB),
        },
    ])
}

/// The worker and its extraction children at one moment, in KiB.
#[derive(Debug, Clone, Copy, Default)]
struct GroupSample {
    worker_kib: u64,
    children: usize,
    children_kib: u64,
}

impl GroupSample {
    fn total_kib(&self) -> u64 {
        self.worker_kib + self.children_kib
    }

    /// Resident and proportional sizes of `worker_pid` and the processes below it (the extraction
    /// server and the children it forks), now.
    fn take(worker_pid: u32) -> (GroupSample, GroupSample) {
        let children = rss::descendants_of(worker_pid);
        // A child that has not reached exec yet maps the worker's pages: its RSS is not its own.
        let exec_ed = rss::own_program_descendants(worker_pid);
        let resident = GroupSample {
            worker_kib: rss::memory_of(worker_pid).map_or(0, |memory| memory.rss_kib),
            children: exec_ed.len(),
            children_kib: exec_ed
                .iter()
                .filter_map(|&child| rss::memory_of(child))
                .map(|memory| memory.rss_kib)
                .sum(),
        };
        let proportional = GroupSample {
            worker_kib: rss::proportional_kib(worker_pid).unwrap_or(0),
            children: children.len(),
            children_kib: children
                .iter()
                .filter_map(|&child| rss::proportional_kib(child))
                .sum(),
        };
        (resident, proportional)
    }
}

/// The samples with the highest resident and proportional totals.
#[derive(Debug, Clone, Default)]
struct GroupPeaks {
    resident: GroupSample,
    proportional: GroupSample,
}

impl GroupPeaks {
    fn record(&mut self, (resident, proportional): (GroupSample, GroupSample)) {
        if resident.total_kib() > self.resident.total_kib() {
            self.resident = resident;
        }
        if proportional.total_kib() > self.proportional.total_kib() {
            self.proportional = proportional;
        }
    }
}

/// Up to `count` sentences of 8 to 40 words, mostly letters, spread evenly over the text.
fn pick_sentences(text: &str, count: usize) -> Vec<String> {
    let normalized = normalize_text(text).replace('\n', " ");
    let candidates: Vec<String> = normalized
        .split_inclusive(['.', '?', '!'])
        .map(|sentence| sentence.trim().to_owned())
        .filter(|sentence| {
            let words = sentence.split_whitespace().count();
            let letters = sentence
                .chars()
                .filter(|character| character.is_alphabetic())
                .count();
            (8..=40).contains(&words) && letters * 10 >= sentence.len() * 7
        })
        .collect();
    if candidates.len() <= count {
        return candidates;
    }
    (0..count)
        .map(|index| candidates[index * candidates.len() / count].clone())
        .collect()
}
