//! Q/K row order. GGUF converters reorder each attention head's rows of
//! Llama's Q and K projections from Hugging Face's "halves" layout (first
//! half of the head's dimensions, then the second) to interleaved pairs, so
//! that llama.cpp can rotate adjacent elements. Both orders are row
//! permutations within a head, so they apply to quantized rows unchanged.

use super::{Metadata, QkRowOrder};

/// True if tensor `name` (canonical) has its rows reordered by GGUF converters.
pub fn is_permuted_tensor(architecture: &str, name: &str) -> bool {
    architecture == "llama" && (name.ends_with(".attn_q.weight") || name.ends_with(".attn_k.weight"))
}

/// The number of heads a Q (`head_count`) or K (`head_count_kv`) tensor's rows are grouped by.
pub fn heads_of(meta: &Metadata, name: &str) -> usize {
    let q_heads = meta.arch_u64("attention.head_count").unwrap_or(1);
    let heads = if name.ends_with(".attn_k.weight") {
        meta.arch_u64("attention.head_count_kv").unwrap_or(q_heads)
    } else {
        q_heads
    };
    heads as usize
}

/// Reorders the rows of a Q or K projection from `from` to `to`. `bytes` holds
/// `n_heads * head_dim` rows of `row_bytes` each.
pub fn reorder_rows(bytes: &[u8], row_bytes: usize, n_heads: usize, from: QkRowOrder, to: QkRowOrder) -> Vec<u8> {
    reorder(bytes, row_bytes, n_heads, from, to)
}

/// Reorders the values of Q or K activations (`n_heads * head_dim` per token,
/// any number of tokens) from `from` to `to`: the projection's output follows
/// its rows, so activations from files of two row orders compare element by
/// element once one side is brought into the other's order.
pub fn reorder_activations(values: &[f32], head_dim: usize, from: QkRowOrder, to: QkRowOrder) -> Vec<f32> {
    let heads = values.len().checked_div(head_dim).unwrap_or(0);
    reorder(values, 1, heads, from, to)
}

/// Moves items in runs of `per_row`: within each of `n_heads` heads, row
/// `s * half + i` (Hugging Face) is row `2 * i + s` (GGUF).
fn reorder<T: Copy + Default>(items: &[T], per_row: usize, n_heads: usize, from: QkRowOrder, to: QkRowOrder) -> Vec<T> {
    if from == to || n_heads == 0 || per_row == 0 {
        return items.to_vec();
    }
    let rows = items.len() / per_row;
    let head_dim = rows / n_heads;
    let half = head_dim / 2;
    let mut out = vec![T::default(); items.len()];
    for head in 0..n_heads {
        for i in 0..half {
            for s in 0..2 {
                let hf_row = head * head_dim + s * half + i;
                let gguf_row = head * head_dim + 2 * i + s;
                let (src, dst) = match to {
                    QkRowOrder::Gguf => (hf_row, gguf_row),
                    QkRowOrder::HuggingFace => (gguf_row, hf_row),
                };
                out[dst * per_row..(dst + 1) * per_row].copy_from_slice(&items[src * per_row..(src + 1) * per_row]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_to_pairs_and_back() {
        // 2 heads of 4 rows, one byte per row: HF rows [a0 a1 b0 b1] -> GGUF [a0 b0 a1 b1].
        let hf: Vec<u8> = vec![0, 1, 2, 3, 10, 11, 12, 13];
        let gguf = reorder_rows(&hf, 1, 2, QkRowOrder::HuggingFace, QkRowOrder::Gguf);
        assert_eq!(gguf, vec![0, 2, 1, 3, 10, 12, 11, 13]);
        assert_eq!(reorder_rows(&gguf, 1, 2, QkRowOrder::Gguf, QkRowOrder::HuggingFace), hf);
    }

    #[test]
    fn activations_follow_the_rows() {
        // Two tokens of one head of 4: each token's values move as the rows do.
        let hf = [0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0];
        let gguf = reorder_activations(&hf, 4, QkRowOrder::HuggingFace, QkRowOrder::Gguf);
        assert_eq!(gguf, [0.0, 2.0, 1.0, 3.0, 10.0, 12.0, 11.0, 13.0]);
    }
}
