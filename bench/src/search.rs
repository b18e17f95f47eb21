//! Section: search quality and latency, vector against text against hybrid, and the same
//! questions against LlamaIndex's retrievers over the same chunks and model.
//!
//! - **Index:** the 30 corpus PDFs (pdftotext's text, page by page) are the documents
//!   that answer; more PDFs of the same Debian package (sorted by path, pdftotext'd and
//!   cached under `OUT/search/`) are added as distractors until the index holds at least
//!   `--chunks` chunks. Chunked by the fleet's `Chunker` (200/20 tokens), embedded once by
//!   the local all-MiniLM-L6-v2 (vectors cached under `OUT/search/`), stored in a fresh
//!   database with migration 0008's trigger and the online indexes, one org.
//! - **Questions** (deterministic, see bench/README.md): from each answering PDF,
//!   [`SENTENCES_PER_FILE`] sentences spread over the text, each asked three ways: the
//!   sentence; its key phrase (its four rarest content words across the index's
//!   documents, in sentence order); and that key phrase paraphrased (each word replaced
//!   by the first other single-word lemma of its most frequent WordNet sense, from
//!   Debian's `wordnet-base` data, downloaded like the corpus and never installed).
//! - **Scoring:** the top [`TOP_K`] chunks; a chunk is right when it belongs to the
//!   question's document. hit@1, hit@5, MRR@10 (1 / rank of the first right chunk, 0
//!   past 10), and the latency of each call (`shared::search::search_chunks`, query
//!   embedding included; the peer's `retrieve()`, likewise).

use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use shared::config::{ChunkingSettings, EmbeddingSettings};
use shared::embed::Embedder;
use shared::file_filter::FileFilter;
use shared::search::{SearchMode, SearchQuery, search_chunks};
use uuid::Uuid;
use worker_files::chunk::Chunker;
use worker_files::extract::{Page, normalize_text};

use crate::Paths;
use crate::corpus::Corpus;
use crate::database::FreshDatabase;
use crate::report::{Finding, Table, heading};

/// Sentences taken from each answering PDF (each asked three ways).
pub const SENTENCES_PER_FILE: usize = 10;
/// Chunks each search returns; hit@k and MRR are read from them.
pub const TOP_K: usize = 10;
/// Words in a key phrase.
const KEY_PHRASE_WORDS: usize = 4;
/// The latency goal for 10k chunks, and the retrieval targets (bench/README.md).
const P95_TARGET_MS: f64 = 50.0;
const FIRST_TARGET: f64 = 0.85;
const TOP5_TARGET: f64 = 0.95;
const WORDNET_PACKAGE: &str = "wordnet-base";
const DOC_ROOT: &str = "usr/share/doc/texlive-doc";

const STOP_WORDS: &[&str] = &[
    "a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any",
    "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both",
    "but", "by", "can", "cannot", "could", "did", "do", "does", "doing", "down", "during", "each",
    "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers",
    "him", "his", "how", "however", "i", "if", "in", "into", "is", "it", "its", "itself", "just",
    "may", "me", "might", "more", "most", "must", "my", "no", "nor", "not", "now", "of", "off",
    "on", "once", "one", "only", "or", "other", "our", "out", "over", "own", "same", "she",
    "should", "so", "some", "such", "than", "that", "the", "their", "them", "then", "there",
    "these", "they", "this", "those", "through", "thus", "to", "too", "under", "until", "up",
    "use", "used", "using", "very", "was", "we", "were", "what", "when", "where", "which", "while",
    "who", "whom", "why", "will", "with", "would", "you", "your",
];

/// One document of the index.
struct Document {
    /// Unique in the index: the corpus name for answering PDFs, the package path for
    /// distractors.
    name: String,
    answers: bool,
    pages: Vec<String>,
}

struct IndexedChunk {
    document: usize,
    index: u32,
    page: Option<u32>,
    byte_start: usize,
    byte_end: usize,
    token_count: usize,
    text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Question {
    kind: String,
    query: String,
    /// The document that answers it.
    answer: String,
}

/// How one retriever did on one question.
struct Answer {
    /// 1-based position of the first right chunk in the top [`TOP_K`].
    rank: Option<usize>,
    seconds: f64,
}

pub async fn run(
    paths: &Paths,
    corpus: &Corpus,
    minimum_chunks: usize,
    skip_peer: bool,
) -> anyhow::Result<Vec<Finding>> {
    heading(&format!(
        "Search: vector, text and hybrid over >= {minimum_chunks} chunks; the LlamaIndex retrievers on the same chunks"
    ));
    let work_dir = paths.out_dir.join("search");
    std::fs::create_dir_all(work_dir.join("text"))?;
    let settings = EmbeddingSettings {
        model_dir: testkit::model_dir(),
        ..EmbeddingSettings::default()
    };
    let chunking = ChunkingSettings::default();
    let tokenizer = shared::embedders::chunk_tokenizer(&settings).map_err(anyhow::Error::msg)?;
    let chunker = Chunker::new(tokenizer, chunking.max_tokens, chunking.overlap_tokens)?;

    let mut documents = answering_documents(corpus)?;
    let mut chunks = Vec::new();
    for (position, document) in documents.iter().enumerate() {
        chunks.extend(chunk_document(&chunker, position, document));
    }
    let answering_chunks = chunks.len();
    for (name, pages) in distractors(&paths.out_dir, corpus, &work_dir)? {
        if chunks.len() >= minimum_chunks {
            break;
        }
        documents.push(Document {
            name,
            answers: false,
            pages,
        });
        let position = documents.len() - 1;
        chunks.extend(chunk_document(&chunker, position, &documents[position]));
    }
    println!(
        "index: {} documents ({} answering, {} distractors), {} chunks ({answering_chunks} from answering documents)",
        documents.len(),
        documents.iter().filter(|document| document.answers).count(),
        documents
            .iter()
            .filter(|document| !document.answers)
            .count(),
        chunks.len()
    );

    let embedder = shared::embedders::from_settings(&settings).await?;
    let vectors = embed_cached(&work_dir, embedder.as_ref(), &chunks).await?;

    let questions = build_questions(&paths.out_dir, &documents)?;
    std::fs::write(
        work_dir.join("questions.json"),
        serde_json::to_vec_pretty(&questions)?,
    )?;
    let kinds: Vec<String> = questions
        .iter()
        .map(|question| question.kind.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    println!(
        "questions: {} ({})",
        questions.len(),
        kinds
            .iter()
            .map(|kind| format!(
                "{} {kind}",
                questions
                    .iter()
                    .filter(|question| &question.kind == kind)
                    .count()
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let database = FreshDatabase::create("search", 4).await?;
    shared::online_migrations::run(&database.pool).await?;
    let org_id = Uuid::now_v7();
    let file_ids = store(
        &database,
        org_id,
        embedder.model_id(),
        &documents,
        &chunks,
        &vectors,
    )
    .await?;
    let name_of: HashMap<Uuid, String> = file_ids
        .iter()
        .zip(&documents)
        .map(|(id, document)| (*id, document.name.clone()))
        .collect();

    // Context for the latency figures: the query embedding alone.
    let mut embed_seconds = Vec::new();
    for question in questions.iter().take(200) {
        let started = Instant::now();
        embedder
            .embed(std::slice::from_ref(&question.query))
            .await?;
        embed_seconds.push(started.elapsed().as_secs_f64());
    }

    let embedders: Vec<Arc<dyn Embedder>> = vec![embedder.clone()];
    let everything = FileFilter::default();
    let mut results: Vec<(String, Vec<Answer>)> = Vec::new();
    for mode in [SearchMode::Vector, SearchMode::Text, SearchMode::Hybrid] {
        let search = |text| query_for(text, mode, &everything);
        // One untimed search: connections and caches warm.
        search_chunks(
            &database.pool,
            &embedders,
            org_id,
            &search(&questions[0].query),
        )
        .await?;
        let mut answers = Vec::new();
        for question in &questions {
            let started = Instant::now();
            let outcome =
                search_chunks(&database.pool, &embedders, org_id, &search(&question.query)).await?;
            let seconds = started.elapsed().as_secs_f64();
            let files: Vec<&str> = outcome
                .hits
                .iter()
                .map(|hit| name_of.get(&hit.file_id).map_or("", String::as_str))
                .collect();
            answers.push(Answer {
                rank: rank_of(&files, &question.answer),
                seconds,
            });
        }
        results.push((format!("ours, {}", mode_name(mode)), answers));
    }

    let peer = if skip_peer {
        println!("peer: skipped (--skip-peer)");
        None
    } else {
        run_peer(&work_dir, &documents, &chunks, &vectors, &questions).await?
    };
    if let Some(peer) = peer {
        results.extend(peer);
    }
    database.drop_now().await?;

    let mut quality = Table::new(
        &format!(
            "Quality over {} chunks: hit@1, hit@5, MRR@{TOP_K} by question kind (the document is the answer)",
            chunks.len()
        ),
        &["retriever", "kind", "questions", "hit@1", "hit@5", "MRR"],
    );
    let mut summary: HashMap<String, Scores> = HashMap::new();
    for (retriever, answers) in &results {
        for kind in kinds.iter().map(String::as_str).chain(["all"]) {
            let selected: Vec<&Answer> = answers
                .iter()
                .zip(&questions)
                .filter(|(_, question)| kind == "all" || question.kind == kind)
                .map(|(answer, _)| answer)
                .collect();
            let scores = Scores::of(&selected);
            quality.row(vec![
                retriever.clone(),
                kind.to_string(),
                selected.len().to_string(),
                percent(scores.hit_at_1),
                percent(scores.hit_at_5),
                format!("{:.3}", scores.mrr),
            ]);
            summary.insert(format!("{retriever}/{kind}"), scores);
        }
    }
    quality.print();

    let mut latency = Table::new(
        "Latency per search call (ms), every question, one at a time",
        &["retriever", "p50", "p95", "max"],
    );
    let mut percentiles: HashMap<String, (f64, f64)> = HashMap::new();
    for (retriever, answers) in &results {
        let mut seconds: Vec<f64> = answers.iter().map(|answer| answer.seconds).collect();
        let (p50, p95, max) = (
            percentile(&mut seconds, 0.50),
            percentile(&mut seconds, 0.95),
            percentile(&mut seconds, 1.0),
        );
        percentiles.insert(retriever.clone(), (p50, p95));
        latency.row(vec![
            retriever.clone(),
            format!("{:.1}", p50 * 1000.0),
            format!("{:.1}", p95 * 1000.0),
            format!("{:.1}", max * 1000.0),
        ]);
    }
    latency.row(vec![
        "(query embedding alone, ours)".into(),
        format!("{:.1}", percentile(&mut embed_seconds, 0.50) * 1000.0),
        format!("{:.1}", percentile(&mut embed_seconds, 0.95) * 1000.0),
        format!("{:.1}", percentile(&mut embed_seconds, 1.0) * 1000.0),
    ]);
    latency.print();

    Ok(findings(&summary, &percentiles, chunks.len()))
}

fn mode_name(mode: SearchMode) -> &'static str {
    match mode {
        SearchMode::Vector => "vector",
        SearchMode::Text => "text",
        SearchMode::Hybrid => "hybrid",
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Scores {
    hit_at_1: f64,
    hit_at_5: f64,
    mrr: f64,
}

impl Scores {
    fn of(answers: &[&Answer]) -> Scores {
        let count = answers.len().max(1) as f64;
        let hits_within = |k: usize| {
            answers
                .iter()
                .filter(|answer| answer.rank.is_some_and(|rank| rank <= k))
                .count() as f64
                / count
        };
        Scores {
            hit_at_1: hits_within(1),
            hit_at_5: hits_within(5),
            mrr: answers
                .iter()
                .map(|answer| answer.rank.map_or(0.0, |rank| 1.0 / rank as f64))
                .sum::<f64>()
                / count,
        }
    }
}

fn rank_of(files: &[&str], answer: &str) -> Option<usize> {
    files
        .iter()
        .take(TOP_K)
        .position(|file| *file == answer)
        .map(|position| position + 1)
}

fn percent(value: f64) -> String {
    format!("{:.1}%", 100.0 * value)
}

/// The `quantile` of `values` (nearest rank); sorts them.
fn percentile(values: &mut [f64], quantile: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((quantile * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

fn findings(
    summary: &HashMap<String, Scores>,
    percentiles: &HashMap<String, (f64, f64)>,
    chunk_count: usize,
) -> Vec<Finding> {
    let scores = |key: &str| summary.get(key).copied().unwrap_or_default();
    let hybrid = scores("ours, hybrid/all");
    let vector = scores("ours, vector/all");
    let text = scores("ours, text/all");
    let mut findings = vec![Finding {
        what: "Search: hybrid hit@5 against vector only (all questions)".into(),
        ours: percent(hybrid.hit_at_5),
        reference: format!("vector {}", percent(vector.hit_at_5)),
        comparison: format!(
            "text {}; MRR hybrid {:.3}, vector {:.3}",
            percent(text.hit_at_5),
            hybrid.mrr,
            vector.mrr
        ),
        target: "hybrid > vector".into(),
        met: Some(hybrid.hit_at_5 > vector.hit_at_5),
    }];
    let peers: Vec<(&str, Scores)> = ["vector", "text", "hybrid"]
        .into_iter()
        .filter_map(|name| {
            summary
                .get(&format!("LlamaIndex, {name}/all"))
                .map(|scores| (name, *scores))
        })
        .collect();
    if let Some((best_name, best)) = peers
        .iter()
        .max_by(|left, right| left.1.hit_at_5.total_cmp(&right.1.hit_at_5))
    {
        findings.push(Finding {
            what: "Search: hybrid hit@5 against LlamaIndex's best retriever (same chunks, model)"
                .into(),
            ours: percent(hybrid.hit_at_5),
            reference: format!(
                "LlamaIndex {best_name} {} (this run)",
                percent(best.hit_at_5)
            ),
            comparison: peers
                .iter()
                .map(|(name, scores)| format!("{name} {}", percent(scores.hit_at_5)))
                .collect::<Vec<_>>()
                .join(", "),
            target: "ours > peer".into(),
            met: Some(hybrid.hit_at_5 > best.hit_at_5),
        });
    }
    let (hybrid_p50, hybrid_p95) = percentiles.get("ours, hybrid").copied().unwrap_or_default();
    let peer_latency = percentiles
        .get("LlamaIndex, hybrid")
        .map(|(_, p95)| format!("LlamaIndex hybrid p95 {:.1} ms", p95 * 1000.0))
        .unwrap_or_else(|| "-".into());
    findings.push(Finding {
        what: format!("Search: hybrid latency over {chunk_count} chunks (embedding included)"),
        ours: format!("p95 {:.1} ms", hybrid_p95 * 1000.0),
        reference: peer_latency,
        comparison: format!("p50 {:.1} ms", hybrid_p50 * 1000.0),
        target: format!("p95 < {P95_TARGET_MS:.0} ms"),
        met: Some(hybrid_p95 * 1000.0 < P95_TARGET_MS),
    });
    let sentences = scores("ours, hybrid/sentence");
    findings.push(Finding {
        what: "Search: sentences searched back, hybrid (the retrieval target)".into(),
        ours: format!(
            "first {}, top 5 {}",
            percent(sentences.hit_at_1),
            percent(sentences.hit_at_5)
        ),
        reference: "-".into(),
        comparison: "-".into(),
        target: format!(
            "first >= {:.0}%, top 5 >= {:.0}%",
            FIRST_TARGET * 100.0,
            TOP5_TARGET * 100.0
        ),
        met: Some(sentences.hit_at_1 >= FIRST_TARGET && sentences.hit_at_5 >= TOP5_TARGET),
    });
    findings
}

/// The search the benchmark runs for one question.
fn query_for<'a>(text: &'a str, mode: SearchMode, filter: &'a FileFilter) -> SearchQuery<'a> {
    SearchQuery {
        text,
        top_k: TOP_K as i64,
        mode: Some(mode),
        filter,
    }
}

/// A page of body text (a constructor, so the page type can grow fields).
fn body_page(number: u32, text: String) -> Page {
    Page::new(Some(number), text)
}

/// pdftotext's pages of a text (form feeds between pages), normalized as the fleet does.
fn pages_of(text: &str) -> Vec<String> {
    text.split('\u{c}')
        .map(|page| {
            normalize_text(page)
                .chars()
                .filter(|character| !character.is_control() || *character == '\n')
                .collect()
        })
        .collect()
}

fn answering_documents(corpus: &Corpus) -> anyhow::Result<Vec<Document>> {
    corpus
        .pdfs()
        .map(|file| {
            Ok(Document {
                name: file.name.clone(),
                answers: true,
                pages: pages_of(&corpus.text_of(&file.stem)?),
            })
        })
        .collect()
}

fn chunk_document(chunker: &Chunker, position: usize, document: &Document) -> Vec<IndexedChunk> {
    let pages: Vec<Page> = document
        .pages
        .iter()
        .enumerate()
        .filter(|(_, text)| !text.trim().is_empty())
        .map(|(number, text)| body_page(number as u32 + 1, text.clone()))
        .collect();
    chunker
        .chunk(&pages)
        .into_iter()
        .map(|chunk| IndexedChunk {
            document: position,
            index: chunk.index,
            page: chunk.page,
            byte_start: chunk.byte_start,
            byte_end: chunk.byte_end,
            token_count: chunk.token_count,
            text: chunk.text,
        })
        .collect()
}

/// Every other PDF of the corpus package, sorted by path, as (name, pages); pdftotext's
/// text is cached under `work_dir/text`. PDFs pdftotext cannot read are left out.
fn distractors(
    out_dir: &Path,
    corpus: &Corpus,
    work_dir: &Path,
) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let root = out_dir.join("pkg").join(DOC_ROOT);
    let mut pdfs = Vec::new();
    collect_pdfs(&root, &mut pdfs)?;
    pdfs.sort();
    let answering: BTreeSet<&str> = corpus.pdfs().map(|file| file.name.as_str()).collect();
    let mut documents = Vec::new();
    for pdf in pdfs {
        let relative = pdf.strip_prefix(&root)?.to_string_lossy().into_owned();
        let file_name = pdf
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        if answering.contains(file_name.as_str()) {
            continue;
        }
        let cached = work_dir
            .join("text")
            .join(format!("{}.txt", relative.replace('/', "__")));
        if !cached.exists() {
            let output = Command::new("pdftotext")
                .arg(&pdf)
                .arg("-")
                .output()
                .context("running pdftotext")?;
            if !output.status.success() {
                continue;
            }
            std::fs::write(&cached, &output.stdout)?;
        }
        let text = std::fs::read_to_string(&cached).unwrap_or_default();
        documents.push((format!("distractor/{relative}"), pages_of(&text)));
    }
    Ok(documents)
}

fn collect_pdfs(folder: &Path, pdfs: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(folder)
        .with_context(|| format!("reading {} (run `glassbox-bench corpus`)", folder.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            collect_pdfs(&path, pdfs)?;
        } else if path.extension().is_some_and(|extension| extension == "pdf") {
            pdfs.push(path);
        }
    }
    Ok(())
}

/// The chunks' vectors, from `work_dir` when the same chunks were embedded by the same
/// model before, else embedded now (and cached).
async fn embed_cached(
    work_dir: &Path,
    embedder: &dyn Embedder,
    chunks: &[IndexedChunk],
) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut hasher = DefaultHasher::new();
    embedder.model_id().hash(&mut hasher);
    for chunk in chunks {
        chunk.text.hash(&mut hasher);
    }
    let dimensions = embedder.dimensions();
    let cache = work_dir.join(format!("vectors-{:016x}.f32", hasher.finish()));
    if let Ok(bytes) = std::fs::read(&cache)
        && bytes.len() == chunks.len() * dimensions * 4
    {
        println!("vectors: cached in {}", cache.display());
        return Ok(bytes
            .chunks_exact(dimensions * 4)
            .map(|vector| {
                vector
                    .chunks_exact(4)
                    .map(|value| f32::from_le_bytes([value[0], value[1], value[2], value[3]]))
                    .collect()
            })
            .collect());
    }
    println!(
        "vectors: embedding {} chunks with {} (cached afterwards)",
        chunks.len(),
        embedder.model_id()
    );
    let started = Instant::now();
    let mut vectors = Vec::with_capacity(chunks.len());
    for batch in chunks.chunks(256) {
        let texts: Vec<String> = batch.iter().map(|chunk| chunk.text.clone()).collect();
        vectors.extend(embedder.embed(&texts).await?);
        println!(
            "  {} / {} chunks, {:.0} s",
            vectors.len(),
            chunks.len(),
            started.elapsed().as_secs_f64()
        );
    }
    let mut bytes = Vec::with_capacity(chunks.len() * dimensions * 4);
    for vector in &vectors {
        for value in vector {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
    }
    std::fs::write(&cache, bytes)?;
    Ok(vectors)
}

/// One ready file per document and its chunks (the trigger fills `search_vector`);
/// returns the file ids in document order.
async fn store(
    database: &FreshDatabase,
    org_id: Uuid,
    model_id: &str,
    documents: &[Document],
    chunks: &[IndexedChunk],
    vectors: &[Vec<f32>],
) -> anyhow::Result<Vec<Uuid>> {
    let started = Instant::now();
    let file_ids: Vec<Uuid> = documents.iter().map(|_| Uuid::now_v7()).collect();
    for (document, file_id) in documents.iter().zip(&file_ids) {
        let chunk_count = chunks
            .iter()
            .filter(|chunk| documents[chunk.document].name == document.name)
            .count();
        sqlx::query(
            "INSERT INTO files (id, org_id, name, content_type, size_bytes, object_key, status, embedding_model, chunk_count, pages) \
             VALUES ($1, $2, $3, 'application/pdf', 0, $4, 'ready', $5, $6, $7)",
        )
        .bind(file_id)
        .bind(org_id)
        .bind(&document.name)
        .bind(format!("bench/{file_id}"))
        .bind(model_id)
        .bind(chunk_count as i32)
        .bind(document.pages.len() as i32)
        .execute(&database.pool)
        .await?;
    }
    for (batch, batch_vectors) in chunks.chunks(1000).zip(vectors.chunks(1000)) {
        let vector_texts: Vec<String> = batch_vectors
            .iter()
            .map(|vector| {
                let values: Vec<String> = vector.iter().map(f32::to_string).collect();
                format!("[{}]", values.join(","))
            })
            .collect();
        sqlx::query(
            "INSERT INTO chunks (org_id, file_id, model_id, chunk_index, page, byte_start, byte_end, token_count, text_sha256, text, embedding) \
             SELECT $1, u.file_id, $2, u.chunk_index, u.page, u.byte_start, u.byte_end, u.token_count, \
                    sha256(convert_to(u.text, 'UTF8')), u.text, u.embedding::vector \
             FROM UNNEST($3::uuid[], $4::int4[], $5::int4[], $6::int4[], $7::int4[], $8::int4[], $9::text[], $10::text[]) \
                  AS u(file_id, chunk_index, page, byte_start, byte_end, token_count, text, embedding)",
        )
        .bind(org_id)
        .bind(model_id)
        .bind(batch.iter().map(|chunk| file_ids[chunk.document]).collect::<Vec<_>>())
        .bind(batch.iter().map(|chunk| chunk.index as i32).collect::<Vec<_>>())
        .bind(batch.iter().map(|chunk| chunk.page.map(|page| page as i32)).collect::<Vec<_>>())
        .bind(batch.iter().map(|chunk| chunk.byte_start as i32).collect::<Vec<_>>())
        .bind(batch.iter().map(|chunk| chunk.byte_end as i32).collect::<Vec<_>>())
        .bind(batch.iter().map(|chunk| chunk.token_count as i32).collect::<Vec<_>>())
        .bind(batch.iter().map(|chunk| chunk.text.clone()).collect::<Vec<_>>())
        .bind(vector_texts)
        .execute(&database.pool)
        .await?;
    }
    sqlx::query("ANALYZE files").execute(&database.pool).await?;
    sqlx::query("ANALYZE chunks")
        .execute(&database.pool)
        .await?;
    println!(
        "stored {} chunks of {} files in {:.1} s",
        chunks.len(),
        documents.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(file_ids)
}

/// Sentences of 8 to 40 words, mostly letters, `count` of them spread evenly.
fn pick_sentences(pages: &[String], count: usize) -> Vec<String> {
    let text = pages.join(" ").replace('\n', " ");
    let candidates: Vec<String> = text
        .split_inclusive(['.', '?', '!'])
        .map(|sentence| sentence.split_whitespace().collect::<Vec<_>>().join(" "))
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

/// Lowercase words of letters only, at least 3 long, not stop words.
fn content_words(text: &str) -> Vec<String> {
    text.split(|character: char| !character.is_alphanumeric())
        .filter(|word| {
            word.len() >= 3
                && word
                    .chars()
                    .all(|character| character.is_ascii_alphabetic())
        })
        .map(str::to_ascii_lowercase)
        .filter(|word| !STOP_WORDS.contains(&word.as_str()))
        .collect()
}

fn build_questions(out_dir: &Path, documents: &[Document]) -> anyhow::Result<Vec<Question>> {
    // In how many documents of the index each word appears.
    let mut document_frequency: HashMap<String, usize> = HashMap::new();
    for document in documents {
        let words: BTreeSet<String> = content_words(&document.pages.join(" "))
            .into_iter()
            .collect();
        for word in words {
            *document_frequency.entry(word).or_default() += 1;
        }
    }
    let wordnet = match WordNet::load(out_dir) {
        Ok(wordnet) => Some(wordnet),
        Err(error) => {
            println!("paraphrases: skipped, no WordNet ({error:#})");
            None
        }
    };
    let mut questions = Vec::new();
    for document in documents.iter().filter(|document| document.answers) {
        for sentence in pick_sentences(&document.pages, SENTENCES_PER_FILE) {
            questions.push(Question {
                kind: "sentence".into(),
                query: sentence.clone(),
                answer: document.name.clone(),
            });
            let words = content_words(&sentence);
            let mut unique: Vec<(usize, String)> = Vec::new();
            for (position, word) in words.into_iter().enumerate() {
                if !unique.iter().any(|(_, seen)| *seen == word) {
                    unique.push((position, word));
                }
            }
            if unique.len() < 3 {
                continue;
            }
            let mut rarest = unique.clone();
            rarest.sort_by_key(|(position, word)| {
                (
                    document_frequency.get(word).copied().unwrap_or(0),
                    *position,
                )
            });
            rarest.truncate(KEY_PHRASE_WORDS);
            rarest.sort_by_key(|(position, _)| *position);
            let key_words: Vec<String> = rarest.into_iter().map(|(_, word)| word).collect();
            questions.push(Question {
                kind: "key phrase".into(),
                query: key_words.join(" "),
                answer: document.name.clone(),
            });
            if let Some(wordnet) = &wordnet {
                let paraphrased: Vec<String> = key_words
                    .iter()
                    .map(|word| wordnet.synonym(word).unwrap_or_else(|| word.clone()))
                    .collect();
                questions.push(Question {
                    kind: "paraphrase".into(),
                    query: paraphrased.join(" "),
                    answer: document.name.clone(),
                });
            }
        }
    }
    if questions.is_empty() {
        bail!("no questions could be built from the corpus");
    }
    Ok(questions)
}

/// The few parts of WordNet 3.0's database the paraphrases need: each lemma's synsets in
/// frequency order, per part of speech, and each synset's words.
struct WordNet {
    /// (part of speech, lemma) -> (tagged sense count, synset offsets, most frequent first)
    index: HashMap<(usize, String), (usize, Vec<usize>)>,
    /// The `data.*` files, by part of speech.
    data: Vec<Vec<u8>>,
}

const PARTS_OF_SPEECH: [&str; 4] = ["noun", "verb", "adj", "adv"];

impl WordNet {
    /// Downloads Debian's `wordnet-base` into `OUT/debs` (never installed) and unpacks it
    /// into `OUT/wordnet`, unless that is done.
    fn load(out_dir: &Path) -> anyhow::Result<WordNet> {
        let unpacked = out_dir.join("wordnet");
        let folder = unpacked.join("usr/share/wordnet");
        if !folder.join("data.noun").exists() {
            let debs = out_dir.join("debs");
            std::fs::create_dir_all(&debs)?;
            let find = || -> anyhow::Result<Option<PathBuf>> {
                for entry in std::fs::read_dir(&debs)? {
                    let path = entry?.path();
                    let name = path
                        .file_name()
                        .map(|name| name.to_string_lossy().into_owned());
                    if name.is_some_and(|name| {
                        name.starts_with(&format!("{WORDNET_PACKAGE}_")) && name.ends_with(".deb")
                    }) {
                        return Ok(Some(path));
                    }
                }
                Ok(None)
            };
            let deb = match find()? {
                Some(deb) => deb,
                None => {
                    println!(
                        "downloading {WORDNET_PACKAGE} with apt-get download into {}",
                        debs.display()
                    );
                    let status = Command::new("apt-get")
                        .args(["download", WORDNET_PACKAGE])
                        .current_dir(&debs)
                        .status()
                        .context("running apt-get")?;
                    if !status.success() {
                        bail!("apt-get download {WORDNET_PACKAGE} failed ({status})");
                    }
                    find()?.context("apt-get download left no .deb behind")?
                }
            };
            let status = Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(&unpacked)
                .status()?;
            if !status.success() {
                bail!("dpkg-deb -x {} failed", deb.display());
            }
        }
        let mut index = HashMap::new();
        let mut data = Vec::new();
        for (part, name) in PARTS_OF_SPEECH.iter().enumerate() {
            let index_text = std::fs::read_to_string(folder.join(format!("index.{name}")))?;
            for line in index_text.lines().filter(|line| !line.starts_with(' ')) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt offsets...
                let (Some(synsets), Some(pointers)) = (
                    fields.get(2).and_then(|field| field.parse::<usize>().ok()),
                    fields.get(3).and_then(|field| field.parse::<usize>().ok()),
                ) else {
                    continue;
                };
                let tagged = fields
                    .get(5 + pointers)
                    .and_then(|field| field.parse::<usize>().ok())
                    .unwrap_or(0);
                let offsets: Vec<usize> = fields
                    .iter()
                    .skip(6 + pointers)
                    .take(synsets)
                    .filter_map(|field| field.parse().ok())
                    .collect();
                index.insert((part, fields[0].to_string()), (tagged, offsets));
            }
            data.push(std::fs::read(folder.join(format!("data.{name}")))?);
        }
        Ok(WordNet { index, data })
    }

    /// The lemma's entries, trying WordNet's base forms of a few regular inflections.
    fn entries(&self, word: &str) -> Vec<(usize, &(usize, Vec<usize>))> {
        let mut forms = vec![word.to_string()];
        for (suffix, replacement) in [
            ("ies", "y"),
            ("es", ""),
            ("s", ""),
            ("ed", ""),
            ("ed", "e"),
            ("ing", ""),
            ("ing", "e"),
        ] {
            if let Some(stem) = word.strip_suffix(suffix)
                && stem.len() >= 3
            {
                forms.push(format!("{stem}{replacement}"));
            }
        }
        for form in forms {
            let found: Vec<_> = (0..PARTS_OF_SPEECH.len())
                .filter_map(|part| {
                    self.index
                        .get(&(part, form.clone()))
                        .map(|entry| (part, entry))
                })
                .collect();
            if !found.is_empty() {
                return found;
            }
        }
        Vec::new()
    }

    /// The first other single-word lemma of the word's most frequent sense (the part of
    /// speech with the most tagged senses, then its first synsets).
    fn synonym(&self, word: &str) -> Option<String> {
        let mut entries = self.entries(word);
        entries.sort_by_key(|(part, (tagged, _))| (std::cmp::Reverse(*tagged), *part));
        let (part, (_, offsets)) = entries.first()?;
        for offset in offsets.iter().take(2) {
            for lemma in self.synset_words(*part, *offset) {
                let lemma = lemma.to_ascii_lowercase();
                if lemma != word
                    && !lemma.contains(['_', '-', '.'])
                    && !word.starts_with(&lemma)
                    && !lemma.starts_with(word)
                    && lemma
                        .chars()
                        .all(|character| character.is_ascii_alphabetic())
                {
                    return Some(lemma);
                }
            }
        }
        None
    }

    /// The words of the synset at `offset` in `data.<part>`:
    /// `offset lex_filenum ss_type w_cnt(hex) word lex_id [word lex_id]...`.
    fn synset_words(&self, part: usize, offset: usize) -> Vec<String> {
        let data = &self.data[part];
        let Some(rest) = data.get(offset..) else {
            return Vec::new();
        };
        let end = rest
            .iter()
            .position(|byte| *byte == b'\n')
            .unwrap_or(rest.len());
        let line = String::from_utf8_lossy(&rest[..end]);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let count = fields
            .get(3)
            .and_then(|field| usize::from_str_radix(field, 16).ok())
            .unwrap_or(0);
        (0..count)
            .filter_map(|position| fields.get(4 + 2 * position))
            // Adjectives may carry a syntactic marker: `word(a)`.
            .map(|word| word.split('(').next().unwrap_or(word).to_string())
            .collect()
    }
}

/// The python of the bench-only venv that holds LlamaIndex with HuggingFaceEmbedding
/// (`~/.cache/glassbox/bench-peers/sentence-transformers`, outside the clone, installed
/// by `BENCH_PEERS=1 bench/peers-model.sh`).
fn model_peer_python() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("glassbox/bench-peers/sentence-transformers/bin/python")
}

/// LlamaIndex's retrievers over the same chunks and vectors, when the peer venv is there.
async fn run_peer(
    work_dir: &Path,
    documents: &[Document],
    chunks: &[IndexedChunk],
    vectors: &[Vec<f32>],
    questions: &[Question],
) -> anyhow::Result<Option<Vec<(String, Vec<Answer>)>>> {
    let python = model_peer_python();
    let check = Command::new(&python)
        .args(["-c", "import llama_index.core, llama_index.embeddings.huggingface, llama_index.vector_stores.postgres"])
        .output();
    if !check.is_ok_and(|output| output.status.success()) {
        println!(
            "peer: LlamaIndex + HuggingFaceEmbedding not installed at {} (BENCH_PEERS=1 bench/peers-model.sh installs it); reporting ours only",
            python.display()
        );
        return Ok(None);
    }
    let chunks_path = work_dir.join("peer-chunks.jsonl");
    let mut lines = String::new();
    for (chunk, vector) in chunks.iter().zip(vectors) {
        lines.push_str(&serde_json::to_string(&serde_json::json!({
            "file_name": documents[chunk.document].name,
            "text": chunk.text,
            "embedding": vector,
        }))?);
        lines.push('\n');
    }
    std::fs::write(&chunks_path, lines)?;
    let questions_path = work_dir.join("questions.json");
    let (database_name, database_url) = FreshDatabase::create_empty("search_peer").await?;
    println!("peer: LlamaIndex retrievers ({})", python.display());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("llamaindex/retrieve.py");
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .arg("--chunks")
        .arg(&chunks_path)
        .arg("--questions")
        .arg(&questions_path)
        .arg("--model-dir")
        .arg(testkit::model_dir())
        .arg("--database-url")
        .arg(&database_url)
        .arg("--top-k")
        .arg(TOP_K.to_string())
        .arg("--threads")
        .arg("2")
        .output()
        .await?;
    crate::database::drop_database(&database_name).await.ok();
    if !output.status.success() {
        println!(
            "peer failed ({}); reporting ours only:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        return Ok(None);
    }
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("the peer printed no JSON report")?;
    println!(
        "peer: {} nodes loaded in {:.1} s",
        report["nodes"],
        report["load_seconds"].as_f64().unwrap_or(0.0)
    );
    let mut results = Vec::new();
    for name in ["vector", "text", "hybrid"] {
        let Some(answers) = report["retrievers"][name].as_array() else {
            continue;
        };
        let scored = answers
            .iter()
            .zip(questions)
            .map(|(answer, question)| {
                let files: Vec<&str> = answer["files"]
                    .as_array()
                    .map(|files| {
                        files
                            .iter()
                            .map(|file| file.as_str().unwrap_or(""))
                            .collect()
                    })
                    .unwrap_or_default();
                Answer {
                    rank: rank_of(&files, &question.answer),
                    seconds: answer["seconds"].as_f64().unwrap_or(0.0),
                }
            })
            .collect();
        results.push((format!("LlamaIndex, {name}"), scored));
    }
    Ok(Some(results))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_count_the_first_right_chunk_within_the_top_k() {
        assert_eq!(rank_of(&["a", "b", "b"], "b"), Some(2));
        assert_eq!(rank_of(&["a"; 12], "b"), None);
        let answers = [
            Answer {
                rank: Some(1),
                seconds: 0.0,
            },
            Answer {
                rank: Some(4),
                seconds: 0.0,
            },
            Answer {
                rank: None,
                seconds: 0.0,
            },
            Answer {
                rank: Some(7),
                seconds: 0.0,
            },
        ];
        let scores = Scores::of(&answers.iter().collect::<Vec<_>>());
        assert_eq!(scores.hit_at_1, 0.25);
        assert_eq!(scores.hit_at_5, 0.5);
        assert!((scores.mrr - (1.0 + 0.25 + 1.0 / 7.0) / 4.0).abs() < 1e-12);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut values, 0.5), 50.0);
        assert_eq!(percentile(&mut values, 0.95), 95.0);
        assert_eq!(percentile(&mut values, 1.0), 100.0);
    }

    #[test]
    fn content_words_drop_stop_words_short_words_and_symbols() {
        assert_eq!(
            content_words("The \\section command uses 2 arguments, e.g. {title}."),
            ["section", "command", "uses", "arguments", "title"]
        );
    }
}
