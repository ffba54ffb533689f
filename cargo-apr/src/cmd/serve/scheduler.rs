//! Continuous batching. One thread owns the forward pass: every step it runs
//! all active sequences through one `Model::forward_batch` call (prompts in
//! chunks, decoding sequences one token each), samples each sequence's next
//! token and sends it to the request's handler. Waiting requests join between
//! steps, up to `--parallel` sequences; each has its own KV cache, taken from
//! a pool of at most `--parallel` caches of `--ctx-size` positions (the memory
//! budget), and given back when it finishes or its client goes away.
//!
//! A request traced per request runs its own forward calls beside the batch,
//! observed by its own `Tracer`: its trace is its own work, and the batch of
//! untraced requests runs with no observer at all.

use std::sync::mpsc::{Receiver, RecvError, SyncSender, TryRecvError, TrySendError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use apr_engine::generate::{top_k, Sampler, SamplingParams};
use apr_engine::model::{KvCache, Logits, Model, Sequence};
use apr_engine::pipeline::Pipeline;
use apr_engine::trace::{render, Trace, TraceLevel, Tracer};
use tokio::sync::mpsc::UnboundedSender;

use super::errors::ApiError;
use super::openai::{ChatLogprob, TopLogprob, Usage};
use super::stop::StopMatcher;
use crate::cmd::stream::TextStream;

/// Prompt tokens run per step at most, so that a long prompt joining the batch
/// delays the decoding sequences by a bounded amount.
const PREFILL_CHUNK: usize = 512;

/// A validated request, ready to run.
pub struct Job {
    pub id: u64,
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// Log-probabilities of each token with this many alternatives.
    pub logprobs: Option<usize>,
    pub trace: Option<TraceLevel>,
    pub received: Instant,
    pub events: UnboundedSender<Event>,
}

/// What the scheduler tells a request's handler.
pub enum Event {
    Token(TokenOut),
    Done(Box<Finish>),
    Failed(String),
}

pub struct TokenOut {
    pub text: String,
    pub logprob: Option<ChatLogprob>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

pub struct Finish {
    pub reason: FinishReason,
    pub usage: Usage,
    pub total_ms: f64,
    pub first_token_ms: f64,
    pub decode_tok_s: f64,
    pub trace: Option<Trace>,
}

/// How the scheduler runs and what it logs.
pub struct Config {
    pub parallel: usize,
    pub ctx_size: usize,
    /// `--trace`: one line per finished request.
    pub log_requests: bool,
    /// `--trace-level layer` or more: every request traced, its per-layer table logged.
    pub log_layers: bool,
}

/// The handlers' side: a bounded queue into the scheduler thread.
pub struct Queue {
    sender: Mutex<Option<SyncSender<Job>>>,
    capacity: usize,
}

impl Queue {
    pub fn new(capacity: usize) -> (Queue, Receiver<Job>) {
        let (sender, receiver) = std::sync::mpsc::sync_channel(capacity);
        (Queue { sender: Mutex::new(Some(sender)), capacity }, receiver)
    }

    /// Queues `job`, or says why not (503 when full or closed).
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        let guard = self.sender.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(sender) = guard.as_ref() else {
            return Err(ApiError::unavailable("the server is shutting down"));
        };
        match sender.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(ApiError::unavailable(format!(
                "the server is busy: {} requests are already waiting; retry later",
                self.capacity
            ))),
            Err(TrySendError::Disconnected(_)) => Err(ApiError::internal("the scheduler has stopped")),
        }
    }

    /// Refuses new jobs; the scheduler finishes the queued and active ones, then returns.
    pub fn close(&self) {
        self.sender.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
    }
}

/// One request being decoded.
struct Active<'p> {
    job: Job,
    cache: KvCache,
    /// Tokens still to run: the prompt (a chunk per step), then the last sampled token.
    input: Vec<u32>,
    sampler: Sampler,
    text: TextStream<'p>,
    stop: StopMatcher,
    generated: usize,
    tracer: Option<Tracer>,
    first_token: Option<Instant>,
    finished: bool,
    /// `--trace`: a hang-up is logged too.
    log_requests: bool,
}

impl Active<'_> {
    /// Tokens this step runs.
    fn chunk(&self) -> &[u32] {
        &self.input[..self.input.len().min(PREFILL_CHUNK)]
    }

    fn send(&mut self, event: Event) {
        if self.job.events.send(event).is_err() {
            self.abandon();
        }
    }

    /// The client went away: the sequence ends at this step.
    fn abandon(&mut self) {
        if self.log_requests && !self.finished {
            eprintln!(
                "[serve] request {}: client went away after {} tokens; sequence freed",
                self.job.id, self.generated
            );
        }
        self.finished = true;
    }
}

/// Runs the scheduler until the queue is closed and every request is done.
pub fn run(pipeline: &Pipeline, config: &Config, jobs: Receiver<Job>) {
    let mut active: Vec<Active> = Vec::new();
    let mut caches: Vec<KvCache> = Vec::new();
    let mut open = true;
    loop {
        if active.is_empty() {
            match jobs.recv() {
                Ok(job) => active.push(admit(pipeline, config, job, &mut caches)),
                Err(RecvError) => return,
            }
        }
        while open && active.len() < config.parallel {
            match jobs.try_recv() {
                Ok(job) => active.push(admit(pipeline, config, job, &mut caches)),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        // A client that disconnected frees its sequence here, before any work for it.
        active.iter_mut().filter(|a| a.job.events.is_closed()).for_each(Active::abandon);
        release_finished(&mut active, &mut caches);
        step(pipeline, config, &mut active);
        release_finished(&mut active, &mut caches);
        if !open && active.is_empty() {
            return;
        }
    }
}

fn admit<'p>(pipeline: &'p Pipeline, config: &Config, job: Job, caches: &mut Vec<KvCache>) -> Active<'p> {
    let cache = caches.pop().unwrap_or_else(|| pipeline.model.new_cache(config.ctx_size));
    let tracer = job.trace.map(|level| Tracer::new(level, &pipeline.model.config));
    Active {
        input: job.prompt.clone(),
        cache,
        sampler: Sampler::new(job.sampling),
        text: TextStream::new(&pipeline.tokenizer),
        stop: StopMatcher::new(job.stop.clone()),
        generated: 0,
        tracer,
        first_token: None,
        finished: false,
        log_requests: config.log_requests,
        job,
    }
}

/// Gives the caches of finished sequences back to the pool, emptied.
fn release_finished(active: &mut Vec<Active>, caches: &mut Vec<KvCache>) {
    let mut i = 0;
    while i < active.len() {
        if active[i].finished {
            let mut done = active.swap_remove(i);
            done.cache.truncate(0);
            caches.push(done.cache);
        } else {
            i += 1;
        }
    }
}

/// One forward step for every active sequence, then their next tokens.
fn step(pipeline: &Pipeline, config: &Config, active: &mut [Active]) {
    let model = &pipeline.model;
    let (mut traced, mut plain): (Vec<&mut Active>, Vec<&mut Active>) =
        active.iter_mut().partition(|a| a.tracer.is_some());
    if !plain.is_empty() {
        match forward_batch(model, &mut plain) {
            Ok(logits) => plain.iter_mut().zip(logits).for_each(|(a, l)| advance(pipeline, config, a, &l)),
            Err(e) => plain.iter_mut().for_each(|a| fail(a, &e)),
        }
    }
    for a in traced.iter_mut() {
        match forward_traced(model, a) {
            Ok(logits) => advance(pipeline, config, a, &logits),
            Err(e) => fail(a, &e),
        }
    }
}

fn forward_batch(model: &Model, batch: &mut [&mut Active]) -> apr_engine::Result<Vec<Vec<f32>>> {
    let mut sequences: Vec<Sequence> = batch
        .iter_mut()
        .map(|a| {
            let n = a.chunk().len();
            Sequence { tokens: &a.input[..n], cache: &mut a.cache, logits: Logits::Last }
        })
        .collect();
    model.forward_batch(&mut sequences)
}

fn forward_traced(model: &Model, a: &mut Active) -> apr_engine::Result<Vec<f32>> {
    let n = a.chunk().len();
    let tracer = a.tracer.as_mut().expect("partitioned on having a tracer");
    model.forward_observed(&a.input[..n], &mut a.cache, Logits::Last, tracer)
}

fn fail(a: &mut Active, error: &apr_engine::Error) {
    eprintln!("[serve] request {}: error: {error}", a.job.id);
    a.send(Event::Failed(error.to_string()));
    a.finished = true;
}

/// After a forward call: drops the tokens it ran; once the prompt is done,
/// samples the next token, sends its text and decides whether to go on.
fn advance(pipeline: &Pipeline, config: &Config, a: &mut Active, logits: &[f32]) {
    let ran = a.chunk().len();
    a.input.drain(..ran);
    if !a.input.is_empty() {
        return; // more of the prompt to run
    }
    let tokenizer = &pipeline.tokenizer;
    let token = a.sampler.sample(logits);
    a.generated += 1;
    a.first_token.get_or_insert_with(Instant::now);
    let eog = tokenizer.is_eog(token);
    let released = a.stop.push(&a.text.push(token));
    if !eog {
        let logprob = a.job.logprobs.map(|k| logprob_entry(pipeline, logits, token, k));
        a.send(Event::Token(TokenOut { text: released.text, logprob }));
    }
    let reason = if released.stopped || eog {
        FinishReason::Stop
    } else if a.generated >= a.job.max_tokens {
        FinishReason::Length
    } else {
        a.input.push(token);
        return;
    };
    if !released.stopped {
        // The end: text held back for a possible stop sequence is text after all.
        let rest = a.stop.push(&a.text.finish()).text + &a.stop.finish();
        if !rest.is_empty() {
            a.send(Event::Token(TokenOut { text: rest, logprob: None }));
        }
    }
    finish(pipeline, config, a, reason);
}

fn finish(pipeline: &Pipeline, config: &Config, a: &mut Active, reason: FinishReason) {
    let now = Instant::now();
    let first = a.first_token.unwrap_or(now);
    let decode = now.duration_since(first);
    let decode_tok_s = rate(a.generated.saturating_sub(1), decode);
    let total_ms = ms(now.duration_since(a.job.received));
    let usage = Usage::new(a.job.prompt.len(), a.generated);
    if config.log_requests {
        eprintln!(
            "[serve] request {}: {} prompt + {} tokens in {total_ms:.0} ms (first token {:.0} ms, {decode_tok_s:.1} tok/s)",
            a.job.id,
            usage.prompt_tokens,
            usage.completion_tokens,
            ms(first.duration_since(a.job.received)),
        );
    }
    let trace = a.tracer.take().map(|t| t.finish(&pipeline.model));
    if let (true, Some(t)) = (config.log_layers, &trace) {
        eprint!("[serve] request {} per-layer table:\n{}", a.job.id, render::layer_table(&t.steps));
    }
    let first_token_ms = ms(first.duration_since(a.job.received));
    a.send(Event::Done(Box::new(Finish { reason, usage, total_ms, first_token_ms, decode_tok_s, trace })));
    a.finished = true;
}

/// The chosen token's log-probability and the `top` most likely alternatives.
fn logprob_entry(pipeline: &Pipeline, logits: &[f32], token: u32, top: usize) -> ChatLogprob {
    let log_total = log_sum_exp(logits);
    let tokenizer = &pipeline.tokenizer;
    let describe = |id: u32| {
        let bytes = tokenizer.token_bytes(id).to_vec();
        (String::from_utf8_lossy(&bytes).into_owned(), logits[id as usize] - log_total, bytes)
    };
    let (text, logprob, bytes) = describe(token);
    let top_logprobs = top_k(logits, top)
        .into_iter()
        .map(|(id, _)| {
            let (token, logprob, bytes) = describe(id);
            TopLogprob { token, logprob, bytes }
        })
        .collect();
    ChatLogprob { token: text, logprob, bytes, top_logprobs }
}

fn log_sum_exp(values: &[f32]) -> f32 {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = values.iter().map(|&v| ((v - max) as f64).exp()).sum();
    max + sum.ln() as f32
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn rate(n: usize, d: Duration) -> f64 {
    if d.as_secs_f64() > 0.0 {
        n as f64 / d.as_secs_f64()
    } else {
        0.0
    }
}
