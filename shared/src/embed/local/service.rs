//! The engine thread: one per embedder, it runs every forward pass.
//!
//! Requests (the tokenized texts of one `embed` call, usually one file) arrive over a
//! channel. Each round the thread takes every request waiting at that moment, sorts
//! all their texts by length, cuts them into batches (at most `batch_size` texts and
//! `max_batch_tokens` padded tokens each), and runs the batches one after another,
//! each spread over every core by the encoder. A request is answered as soon as its
//! last text is done, and its texts are skipped once its caller has gone (a cancelled
//! job). A new request waits at most for the round in progress.
//!
//! So concurrent files share batches (the tail of one file fills a batch with the
//! next file's texts), padding stays small, and the worker's other tasks (downloads,
//! extraction children, COPY) keep running while the engine computes.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::super::batch::{padded_batches, shortest_first};
use super::super::{EmbedError, record_batch};
use super::{Encoder, MODEL_ID, TokenizedText, mean_pool};

/// What the engine thread needs besides the encoder.
pub(super) struct EngineSettings {
    pub(super) batch_size: usize,
    pub(super) max_batch_tokens: usize,
    pub(super) hidden: usize,
    pub(super) engine_name: String,
}

type Reply = oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>;

/// One `embed` call's texts and where its answer goes.
struct Request {
    texts: Vec<TokenizedText>,
    reply: Reply,
}

/// The callers' side of the engine thread. Dropping it stops the thread after the
/// round in progress.
pub(super) struct EngineHandle {
    requests: mpsc::Sender<Request>,
    name: String,
}

impl EngineHandle {
    pub(super) fn start(encoder: Encoder, settings: EngineSettings) -> std::io::Result<Self> {
        let (requests, receiver) = mpsc::channel();
        let name = settings.engine_name.clone();
        std::thread::Builder::new()
            .name("minilm-engine".into())
            .spawn(move || run(encoder, &settings, &receiver))?;
        Ok(Self { requests, name })
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Embeds `texts` (already tokenized); one unit vector per text, in order.
    pub(super) async fn embed(
        &self,
        texts: Vec<TokenizedText>,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { texts, reply })
            .map_err(|_| engine_stopped())?;
        answer.await.map_err(|_| engine_stopped())?
    }
}

fn engine_stopped() -> EmbedError {
    EmbedError::permanent(
        "embedding_inference_failed",
        "the local embedding engine thread stopped",
    )
}

/// The engine thread's loop: a round per wake-up, until every handle is gone.
fn run(mut encoder: Encoder, settings: &EngineSettings, receiver: &mpsc::Receiver<Request>) {
    while let Ok(first) = receiver.recv() {
        let mut round = vec![first];
        round.extend(receiver.try_iter());
        run_round(&mut encoder, settings, round);
    }
    tracing::debug!("local embedding engine stopped");
}

/// A request's progress within a round.
struct Pending {
    reply: Option<Reply>,
    vectors: Vec<Vec<f32>>,
    remaining: usize,
}

impl Pending {
    /// Still wanted: not answered yet and its caller still waiting.
    fn wanted(&self) -> bool {
        self.reply.as_ref().is_some_and(|reply| !reply.is_closed())
    }

    fn answer(&mut self, result: Result<Vec<Vec<f32>>, EmbedError>) {
        if let Some(reply) = self.reply.take() {
            // The caller may have gone meanwhile; nothing to do then.
            let _ = reply.send(result);
        }
    }
}

fn run_round(encoder: &mut Encoder, settings: &EngineSettings, round: Vec<Request>) {
    // Every text of the round as (request, index within it), shortest first.
    let mut texts: Vec<TokenizedText> = Vec::new();
    let mut owners: Vec<(usize, usize)> = Vec::new();
    let mut pending: Vec<Pending> = Vec::with_capacity(round.len());
    for (request_index, request) in round.into_iter().enumerate() {
        let count = request.texts.len();
        for (text_index, text) in request.texts.into_iter().enumerate() {
            texts.push(text);
            owners.push((request_index, text_index));
        }
        let mut entry = Pending {
            reply: Some(request.reply),
            vectors: vec![Vec::new(); count],
            remaining: count,
        };
        if count == 0 {
            entry.answer(Ok(Vec::new()));
        }
        pending.push(entry);
    }
    let lengths: Vec<usize> = texts.iter().map(TokenizedText::len).collect();
    let order = shortest_first(&lengths);
    let sorted_lengths: Vec<usize> = order.iter().map(|&index| lengths[index]).collect();

    for range in padded_batches(
        &sorted_lengths,
        settings.batch_size,
        settings.max_batch_tokens,
    ) {
        let members: Vec<usize> = order[range]
            .iter()
            .copied()
            .filter(|&text| pending[owners[text].0].wanted())
            .collect();
        if members.is_empty() {
            continue;
        }
        let batch: Vec<&TokenizedText> = members.iter().map(|&text| &texts[text]).collect();
        let padded_len = batch.iter().map(|text| text.len()).max().unwrap_or(0);
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            encoder.hidden_states(&batch, padded_len)
        }));
        let hidden_states = match outcome {
            Ok(Ok(hidden_states)) => hidden_states,
            Ok(Err(message)) => {
                fail_members(&mut pending, &owners, &members, &message);
                continue;
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                    .unwrap_or_else(|| "the encoder panicked".into());
                fail_members(&mut pending, &owners, &members, &message);
                continue;
            }
        };
        record_batch(MODEL_ID, started.elapsed());
        let vectors = mean_pool(&hidden_states, &batch, padded_len, settings.hidden);
        for (&text, vector) in members.iter().zip(vectors) {
            let (request_index, text_index) = owners[text];
            let entry = &mut pending[request_index];
            entry.vectors[text_index] = vector;
            entry.remaining -= 1;
            if entry.remaining == 0 {
                let vectors = std::mem::take(&mut entry.vectors);
                entry.answer(Ok(vectors));
            }
        }
    }
}

/// Answers every request with a text in the failed batch with the error.
fn fail_members(
    pending: &mut [Pending],
    owners: &[(usize, usize)],
    members: &[usize],
    message: &str,
) {
    tracing::error!(
        error = message,
        texts = members.len(),
        "local embedding batch failed"
    );
    for &text in members {
        pending[owners[text].0].answer(Err(EmbedError::permanent(
            "embedding_inference_failed",
            message.to_string(),
        )));
    }
}
