#![no_main]
//! The whole load path on a model file's bytes: reader by magic, tokenizer
//! and chat prompt, configuration, weights, `Model::load` on the CPU backend
//! and two forward steps (see `src/load.rs`). Errors are fine; panics, hangs
//! and running out of memory are not.

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // One thread: libFuzzer runs one process per job, and a rayon pool per
        // process on a tiny model only adds scheduling noise.
        std::env::set_var("RAYON_NUM_THREADS", "1");
    },
    |input: &[u8]| {
        apr_fuzz::load::load_and_run(input);
    }
);
