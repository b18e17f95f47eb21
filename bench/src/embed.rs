//! Section 4: the local all-MiniLM-L6-v2 encoder against sentence-transformers, side by
//! side in one run: the same chunks (about 55 and about 200 tokens, cut from the
//! corpus), the same thread count, batch 32 and batch 64. Our runs and the peer's
//! alternate, two rounds each, and each side keeps its best round, so a burst of
//! load on the shared machine does not favour either.
//!
//! The peer (`sentence_transformers/embed.py`) runs in the bench-only venv that
//! `bench/peers-model.sh` installs when asked (`BENCH_PEERS=1`); it also reports the
//! cosine between its vectors and ours for every chunk. Context rows: the encoder
//! with the worker's defaults (token budget per batch) and the candle fallback engine.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Deserialize;
use shared::config::EmbeddingSettings;
use shared::embed::{Embedder, LocalEngine, LocalMiniLm, LocalOptions};
use worker_files::chunk::Chunker;
use worker_files::extract::{Page, normalize_text};

use crate::Paths;
use crate::corpus::Corpus;
use crate::report::{self, Finding, Table, heading};

/// The reference (bench/README.md, Targets) when the peer cannot run: sentence-transformers, ~60-token chunks.
const REFERENCE_CHUNKS_PER_SECOND: f64 = 182.0;
const BATCH_SIZES: [usize; 2] = [32, 64];
const ROUNDS: usize = 2;
/// sentence-transformers' `max_seq_length` for this model; a batch of `b` texts never
/// pads past `b * MAX_TOKENS`, so this budget makes our batch exactly the peer's.
const MAX_TOKENS: usize = 256;

/// One set of chunks: token counts (without [CLS]/[SEP]) between `floor` and `ceiling`.
struct ChunkSet {
    label: &'static str,
    floor: usize,
    ceiling: usize,
    count: usize,
}

pub async fn run(
    paths: &Paths,
    corpus: &Corpus,
    chunk_count: usize,
) -> anyhow::Result<Vec<Finding>> {
    heading("Local embeddings: all-MiniLM-L6-v2, ours against sentence-transformers");
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let model_dir = testkit::model_dir();
    let settings = EmbeddingSettings {
        model_dir: model_dir.clone(),
        ..EmbeddingSettings::default()
    };
    let tokenizer = shared::embedders::chunk_tokenizer(&settings).map_err(anyhow::Error::msg)?;
    let sets = [
        ChunkSet {
            label: "~55 tokens",
            floor: 48,
            ceiling: 64,
            count: chunk_count,
        },
        ChunkSet {
            label: "~200 tokens",
            floor: 190,
            ceiling: 210,
            count: chunk_count / 4,
        },
    ];
    let work_dir = paths.out_dir.join("embed");
    std::fs::create_dir_all(&work_dir)?;

    let mut peer = match model_peer_python() {
        Some(python) => match Peer::start(&python, &model_dir, threads) {
            Ok(peer) => Some(peer),
            Err(error) => {
                println!("the sentence-transformers peer could not start: {error:#}");
                None
            }
        },
        None => {
            println!(
                "the sentence-transformers peer is not installed (BENCH_PEERS=1 bench/run.sh embed installs it); \
                 comparing against the reference (bench/README.md) of {REFERENCE_CHUNKS_PER_SECOND} chunks/s instead"
            );
            None
        }
    };
    if let Some(peer) = &peer {
        println!("peer: {}", peer.description);
    }

    let mut table = Table::new(
        &format!(
            "{threads} threads on both sides; best of {ROUNDS} alternating rounds; tokens counted without [CLS]/[SEP]"
        ),
        &[
            "chunks",
            "count",
            "mean tokens",
            "batch",
            "ours chunks/s",
            "peer chunks/s",
            "ours / peer",
            "min cosine",
        ],
    );
    let mut findings = Vec::new();
    let mut engine_name = String::new();
    for set in &sets {
        let chunker = Chunker::new(tokenizer.clone(), set.ceiling, 0)?;
        let (texts, mean_tokens) = corpus_chunks(corpus, &chunker, set)?;
        let texts_path = work_dir.join(format!("chunks-{}.json", set.ceiling));
        std::fs::write(&texts_path, serde_json::to_vec(&texts)?)?;
        for batch_size in BATCH_SIZES {
            let embedder = load(LocalOptions {
                batch_size,
                max_batch_tokens: batch_size * MAX_TOKENS,
                threads,
                engine: LocalEngine::Onnxruntime,
                ..LocalOptions::default()
            })
            .await?;
            engine_name = embedder.engine_name().to_string();
            warm_up(&embedder, &texts).await?;
            let vectors_path = work_dir.join("ours.json");
            let mut ours_best = f64::MAX;
            let mut peer_best: Option<f64> = None;
            let mut cosine: Option<f64> = None;
            for round in 0..ROUNDS {
                let (seconds, vectors) = time_ours(&embedder, &texts).await?;
                ours_best = ours_best.min(seconds);
                if let Some(running) = peer.as_mut() {
                    let compare = round == 0;
                    if compare {
                        std::fs::write(&vectors_path, serde_json::to_vec(&vectors)?)?;
                    }
                    let answer =
                        running.embed(&texts_path, batch_size, compare.then_some(&vectors_path))?;
                    if answer.chunks != texts.len() {
                        bail!(
                            "the peer embedded {} chunks, not {}",
                            answer.chunks,
                            texts.len()
                        );
                    }
                    peer_best =
                        Some(peer_best.map_or(answer.seconds, |best| best.min(answer.seconds)));
                    if let Some(min_cosine) = answer.min_cosine {
                        cosine = Some(min_cosine);
                    }
                }
            }
            let ours_rate = texts.len() as f64 / ours_best;
            let peer_rate = peer_best.map(|seconds| texts.len() as f64 / seconds);
            let reference_rate = peer_rate.unwrap_or(REFERENCE_CHUNKS_PER_SECOND);
            table.row(vec![
                set.label.to_string(),
                texts.len().to_string(),
                format!("{mean_tokens:.1}"),
                batch_size.to_string(),
                format!("{ours_rate:.1}"),
                peer_rate.map_or_else(|| "-".into(), |rate| format!("{rate:.1}")),
                report::ratio(ours_rate / reference_rate),
                cosine.map_or_else(|| "-".into(), |value| format!("{value:.6}")),
            ]);
            findings.push(Finding {
                what: format!(
                    "Local embeddings, {}, batch {batch_size} (chunks/s)",
                    set.label
                ),
                ours: format!("{ours_rate:.1}"),
                reference: match peer_rate {
                    Some(rate) => format!("sentence-transformers {rate:.1} (this run)"),
                    None => {
                        format!("sentence-transformers {REFERENCE_CHUNKS_PER_SECOND} (reference)")
                    }
                },
                comparison: report::ratio(ours_rate / reference_rate),
                target: ">= 1.00x".into(),
                met: Some(ours_rate >= reference_rate),
            });
        }

        // Context: the worker's defaults (token budget per batch), and the fallback engine.
        let defaults = LocalOptions::default();
        let worker_defaults = format!(
            "ours, worker defaults (batch {}, <= {} padded tokens)",
            defaults.batch_size, defaults.max_batch_tokens
        );
        for (label, options) in [
            (
                worker_defaults.as_str(),
                LocalOptions {
                    threads,
                    engine: LocalEngine::Onnxruntime,
                    ..LocalOptions::default()
                },
            ),
            (
                "candle fallback engine, batch 32",
                LocalOptions {
                    threads,
                    engine: LocalEngine::Candle,
                    max_batch_tokens: 32 * MAX_TOKENS,
                    ..LocalOptions::default()
                },
            ),
        ] {
            let embedder = load(options).await?;
            warm_up(&embedder, &texts).await?;
            let (seconds, _) = time_ours(&embedder, &texts).await?;
            table.row(vec![
                set.label.to_string(),
                texts.len().to_string(),
                format!("{mean_tokens:.1}"),
                label.to_string(),
                format!("{:.1}", texts.len() as f64 / seconds),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
    }
    table.print();
    println!();
    println!("ours: {engine_name}, kernels {}", cpu_kernels_line());
    if let Some(peer) = peer.take() {
        peer.stop();
    }
    Ok(findings)
}

/// The CPU's vector units, as the engine's start-up log names them.
fn cpu_kernels_line() -> String {
    let mut features = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        for (name, present) in [
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            (
                "avx512vnni",
                std::arch::is_x86_feature_detected!("avx512vnni"),
            ),
        ] {
            if present {
                features.push(name);
            }
        }
    }
    if features.is_empty() {
        "baseline".into()
    } else {
        features.join(", ")
    }
}

async fn load(options: LocalOptions) -> anyhow::Result<LocalMiniLm> {
    let model_dir = testkit::model_dir();
    Ok(tokio::task::spawn_blocking(move || LocalMiniLm::load(&model_dir, options)).await??)
}

/// One untimed pass over a few batches: first-touch allocations and thread pool start.
async fn warm_up(embedder: &LocalMiniLm, texts: &[String]) -> anyhow::Result<()> {
    embedder.embed(&texts[..texts.len().min(64)]).await?;
    Ok(())
}

async fn time_ours(
    embedder: &LocalMiniLm,
    texts: &[String],
) -> anyhow::Result<(f64, Vec<Vec<f32>>)> {
    let started = Instant::now();
    let vectors = embedder.embed(texts).await?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(vectors.len() == texts.len(), "one vector per text");
    Ok((seconds, vectors))
}

/// The python of the model peers' venv (`bench/peers-model.sh`), when installed.
pub fn model_peer_python() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))?;
    let python = cache.join("glassbox/bench-peers/sentence-transformers/bin/python");
    python.exists().then_some(python)
}

/// `count` chunks whose token counts lie in `[floor, ceiling]`, cut by `chunker` (of
/// `ceiling` tokens) from the corpus text round-robin across the documents; returns them
/// with their mean token count.
fn corpus_chunks(
    corpus: &Corpus,
    chunker: &Chunker,
    set: &ChunkSet,
) -> anyhow::Result<(Vec<String>, f64)> {
    let mut per_document = Vec::new();
    for file in corpus.pdfs() {
        let page = Page::new(None, normalize_text(&corpus.text_of(&file.stem)?));
        per_document.push(chunker.chunk(&[page]).into_iter());
    }
    let mut texts = Vec::new();
    let mut tokens = 0_usize;
    while texts.len() < set.count {
        let before = texts.len();
        let mut any_left = false;
        for chunks in &mut per_document {
            if texts.len() == set.count {
                break;
            }
            for chunk in chunks.by_ref() {
                any_left = true;
                if chunk.token_count >= set.floor {
                    tokens += chunk.token_count;
                    texts.push(chunk.text);
                    break;
                }
            }
        }
        anyhow::ensure!(
            any_left || texts.len() > before,
            "the corpus has fewer than {} chunks of {}-{} tokens",
            set.count,
            set.floor,
            set.ceiling
        );
    }
    let mean = tokens as f64 / texts.len().max(1) as f64;
    Ok((texts, mean))
}

/// The sentence-transformers peer, kept running between requests.
struct Peer {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    description: String,
}

#[derive(Deserialize)]
struct PeerAnswer {
    chunks: usize,
    seconds: f64,
    min_cosine: Option<f64>,
}

impl Peer {
    fn start(python: &Path, model_dir: &Path, threads: usize) -> anyhow::Result<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("sentence_transformers/embed.py");
        let mut child = Command::new(python)
            .arg(&script)
            .arg("--model-dir")
            .arg(model_dir)
            .arg("--threads")
            .arg(threads.to_string())
            // Everything is local: never ask a hub for the model.
            .env("HF_HUB_OFFLINE", "1")
            .env("TRANSFORMERS_OFFLINE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", script.display()))?;
        let input = child.stdin.take().context("peer stdin")?;
        let mut output = BufReader::new(child.stdout.take().context("peer stdout")?);
        let mut ready = String::new();
        output.read_line(&mut ready)?;
        if ready.trim().is_empty() {
            let _ = child.kill();
            bail!("the peer exited before it was ready");
        }
        Ok(Self {
            child,
            input,
            output,
            description: ready.trim().to_string(),
        })
    }

    fn embed(
        &mut self,
        texts_path: &Path,
        batch_size: usize,
        vectors_path: Option<&PathBuf>,
    ) -> anyhow::Result<PeerAnswer> {
        let request = serde_json::json!({
            "texts": texts_path,
            "batch_size": batch_size,
            "vectors": vectors_path,
        });
        writeln!(self.input, "{request}")?;
        self.input.flush()?;
        let mut line = String::new();
        self.output.read_line(&mut line)?;
        serde_json::from_str(&line).with_context(|| format!("the peer answered {line:?}"))
    }

    fn stop(mut self) {
        drop(self.input);
        let _ = self.child.wait();
    }
}
