#![no_main]
//! The whole load path on a model file's bytes: reader by magic, tokenizer
//! and chat prompt, configuration, weights, `Model::load` on the CPU backend
//! and two forward steps (see `src/load.rs`). Errors are fine; panics, hangs
//! and running out of memory are not.

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: apr_fuzz::load::single_threaded(),
    |input: &[u8]| {
        apr_fuzz::load::load_and_run(input);
    }
);
