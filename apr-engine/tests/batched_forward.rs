//! `Model::forward_batch`: several sequences, each in its own KV cache at its
//! own position, in one pass (what a server decodes its requests with). Each
//! sequence's logits must be what it gets alone.

use apr_engine::generate::argmax;
use apr_engine::model::{Logits, Sequence};
use apr_engine::pipeline::Pipeline;
use apr_engine::testing::models::QWEN_0_5B;

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn a_batch_of_sequences_at_different_positions_equals_each_alone() {
    let pipeline = Pipeline::open(QWEN_0_5B.require()).unwrap();
    let model = &pipeline.model;
    let first = pipeline.tokenizer.encode_with_special("fn main() { println!(\"hi\"); }", false);
    let second = pipeline.tokenizer.encode_with_special("The capital of France is", false);
    let (next_first, next_second) = (&[11_u32][..], &[12_u32, 13, 14][..]);

    // Alone: each sequence's prefill, then its next tokens.
    let alone = |prompt: &[u32], next: &[u32]| {
        let mut cache = model.new_cache(64);
        model.forward(prompt, &mut cache, Logits::Last).unwrap();
        model.forward(next, &mut cache, Logits::All).unwrap()
    };
    let (want_first, want_second) = (alone(&first, next_first), alone(&second, next_second));

    // Batched: the same prefills, then both sequences' next tokens in one pass,
    // at positions first.len() and second.len() of their own caches.
    let (mut cache_first, mut cache_second) = (model.new_cache(64), model.new_cache(64));
    model.forward(&first, &mut cache_first, Logits::Last).unwrap();
    model.forward(&second, &mut cache_second, Logits::Last).unwrap();
    let got = model
        .forward_batch(&mut [
            Sequence { tokens: next_first, cache: &mut cache_first, logits: Logits::All },
            Sequence { tokens: next_second, cache: &mut cache_second, logits: Logits::All },
        ])
        .unwrap();
    assert_eq!((cache_first.len(), cache_second.len()), (first.len() + 1, second.len() + 3));
    assert_eq!(got[0].len(), want_first.len());
    assert_eq!(got[1].len(), want_second.len());
    // The projections see 4 rows instead of 1 or 3: only the order of f32 sums may differ.
    let vocab = model.config.vocab;
    for (got, want) in [(&got[0], &want_first), (&got[1], &want_second)] {
        for (g, w) in got.chunks(vocab).zip(want.chunks(vocab)) {
            assert_eq!(argmax(g), argmax(w));
            assert!(max_abs_diff(g, w) < 1e-2, "{}", max_abs_diff(g, w));
        }
    }

    // A cache goes on from where the batch left it.
    let after = model.forward(&[15], &mut cache_first, Logits::Last).unwrap();
    let mut cache = model.new_cache(64);
    model.forward(&first, &mut cache, Logits::Last).unwrap();
    model.forward(next_first, &mut cache, Logits::Last).unwrap();
    let want = model.forward(&[15], &mut cache, Logits::Last).unwrap();
    assert!(max_abs_diff(&after, &want) < 1e-2);
}

#[test]
fn a_batch_refuses_an_empty_sequence_and_a_full_cache() {
    let pipeline = Pipeline::open(QWEN_0_5B.require()).unwrap();
    let model = &pipeline.model;
    let (mut a, mut b) = (model.new_cache(4), model.new_cache(2));
    let empty = model.forward_batch(&mut [
        Sequence { tokens: &[1], cache: &mut a, logits: Logits::Last },
        Sequence { tokens: &[], cache: &mut b, logits: Logits::Last },
    ]);
    assert!(empty.unwrap_err().to_string().contains("no tokens"));
    let full = model.forward_batch(&mut [Sequence { tokens: &[1, 2, 3], cache: &mut b, logits: Logits::Last }]);
    assert!(matches!(full, Err(apr_engine::Error::ContextFull { used: 0, requested: 3, capacity: 2 })), "{full:?}");
    assert_eq!((a.len(), b.len()), (0, 0), "a refused batch touches no cache");
}
