//! `cargo apr serve`'s flags (llama-server's names where it has them).

use apr_engine::trace::TraceLevel;

use super::scheduler;
use super::tracing::{parse_level, ServerTracing};
use crate::cmd::common_args::{BackendArg, ModelArg};
use crate::cmd::values;
use crate::cmd::UsageError;

/// Positions per sequence when `--ctx-size` is not given and the model allows more.
const DEFAULT_CTX: usize = 4096;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub backend: BackendArg,
    /// Address to listen on (loopback by default: the server has no TLS).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 picks a free one (the address is printed on stderr).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Sequences decoded together, one batched forward per step.
    #[arg(long, default_value_t = 4, value_parser = values::at_least_one)]
    pub parallel: usize,
    /// KV-cache positions per sequence (prompt + generated) [default: the model's context, at most 4096].
    #[arg(long, short = 'c', value_parser = values::at_least_one)]
    pub ctx_size: Option<usize>,
    /// Requests waiting for a free sequence at most; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = 64, value_parser = values::at_least_one)]
    pub queue: usize,
    /// Require `Authorization: Bearer KEY` on the /v1 routes.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Largest request body in bytes; a larger one is answered 413.
    #[arg(long, default_value_t = 4 << 20, value_parser = values::at_least_one)]
    pub body_limit: usize,
    /// Worker threads (default: all cores).
    #[arg(long, short = 't', value_parser = values::at_least_one)]
    pub threads: Option<usize>,
    /// Log one line per request: tokens, time, tok/s.
    #[arg(long)]
    pub trace: bool,
    /// Trace every request at this level (none, basic, layer, payload); layer and payload
    /// log each request's per-layer table.
    #[arg(long, value_name = "LEVEL", value_parser = level_arg)]
    pub trace_level: Option<LevelArg>,
    /// Add the roofline to every trace a response returns.
    #[arg(long)]
    pub profile: bool,
}

/// A parsed `--trace-level` (`none` is `None`).
#[derive(Debug, Clone, Copy)]
pub struct LevelArg(Option<TraceLevel>);

fn level_arg(text: &str) -> Result<LevelArg, String> {
    parse_level(text).map(LevelArg)
}

impl Args {
    pub fn check(&self) -> Result<(), UsageError> {
        if self.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
            return Err(UsageError("--api-key is empty".into()));
        }
        Ok(())
    }

    fn level(&self) -> Option<TraceLevel> {
        self.trace_level.as_ref().and_then(|l| l.0)
    }

    pub fn server_tracing(&self) -> ServerTracing {
        ServerTracing { level: self.level(), profile: self.profile }
    }

    /// `--ctx-size`, capped at the model's context length (said on stderr).
    pub fn ctx_size(&self, model_context: usize) -> usize {
        match self.ctx_size {
            Some(asked) if asked > model_context => {
                eprintln!("note: --ctx-size {asked} capped at the model's context length {model_context}");
                model_context
            }
            Some(asked) => asked,
            None => model_context.min(DEFAULT_CTX),
        }
    }

    pub fn scheduler_config(&self, ctx_size: usize) -> scheduler::Config {
        scheduler::Config {
            parallel: self.parallel,
            ctx_size,
            log_requests: self.trace || self.level().is_some(),
            log_layers: self.level() >= Some(TraceLevel::Layer),
        }
    }
}
