//! Where each weight of the decoder lives in the opened file. Weights are not
//! copied: a [`WeightMatrix`] borrows the mapped bytes in their file dtype.

use crate::container::{ModelFile, QkRowOrder, TensorInfo};
use crate::error::{Error, Result};
use crate::kernels::WeightMatrix;
use crate::model::config::{Architecture, ModelConfig};

/// Index of a tensor in the file's tensor table.
pub type TensorIndex = usize;

#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub attn_norm: TensorIndex,
    pub q: TensorIndex,
    pub k: TensorIndex,
    pub v: TensorIndex,
    pub q_bias: Option<TensorIndex>,
    pub k_bias: Option<TensorIndex>,
    pub v_bias: Option<TensorIndex>,
    pub o: TensorIndex,
    pub ffn_norm: TensorIndex,
    pub gate: TensorIndex,
    pub up: TensorIndex,
    pub down: TensorIndex,
}

/// How RoPE pairs a head's dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs (i, i + d/2): Qwen2 everywhere, Llama in Hugging Face row order.
    Halves,
    /// Pairs (2i, 2i + 1): Llama in GGUF row order.
    Interleaved,
}

#[derive(Debug, Clone)]
pub struct ModelWeights {
    pub embedding: TensorIndex,
    pub output_norm: TensorIndex,
    /// `output.weight`, or the embedding when tied.
    pub output: TensorIndex,
    pub layers: Vec<LayerWeights>,
    pub rope: RopeStyle,
}

impl ModelWeights {
    /// Finds every weight the decoder needs; a missing one is an error naming it.
    pub fn locate(file: &ModelFile, config: &ModelConfig) -> Result<ModelWeights> {
        let arch = config.known_architecture().ok_or_else(|| {
            Error::Unsupported(format!("architecture '{}' is not supported (qwen2, llama are)", config.architecture))
        })?;
        let tensors = file.tensors();
        let find = |name: &str| tensors.iter().position(|t| t.name == name);
        let need = |name: String| {
            find(&name).ok_or_else(|| Error::Invalid(format!("{}: tensor {name} is missing", file.path.display())))
        };
        let layers = (0..config.layers)
            .map(|i| {
                let n = |s: &str| format!("blk.{i}.{s}");
                Ok(LayerWeights {
                    attn_norm: need(n("attn_norm.weight"))?,
                    q: need(n("attn_q.weight"))?,
                    k: need(n("attn_k.weight"))?,
                    v: need(n("attn_v.weight"))?,
                    q_bias: find(&n("attn_q.bias")),
                    k_bias: find(&n("attn_k.bias")),
                    v_bias: find(&n("attn_v.bias")),
                    o: need(n("attn_output.weight"))?,
                    ffn_norm: need(n("ffn_norm.weight"))?,
                    gate: need(n("ffn_gate.weight"))?,
                    up: need(n("ffn_up.weight"))?,
                    down: need(n("ffn_down.weight"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let embedding = need("token_embd.weight".into())?;
        let rope = match (arch, file.parsed.qk_row_order) {
            (Architecture::Llama, QkRowOrder::Gguf) => RopeStyle::Interleaved,
            _ => RopeStyle::Halves,
        };
        let weights = ModelWeights {
            embedding,
            output_norm: need("output_norm.weight".into())?,
            output: find("output.weight").unwrap_or(embedding),
            layers,
            rope,
        };
        weights.check_shapes(file, config)?;
        Ok(weights)
    }

    /// Every matrix must have the `[out, in]` shape the configuration implies:
    /// a transposed or mis-sized tensor is an error here, not garbage later.
    fn check_shapes(&self, file: &ModelFile, c: &ModelConfig) -> Result<()> {
        let (q, kv) = ((c.heads * c.head_dim) as u64, (c.kv_heads * c.head_dim) as u64);
        let (hidden, ffn, vocab) = (c.hidden as u64, c.ffn as u64, c.vocab as u64);
        let mut expected = vec![(self.embedding, [vocab, hidden]), (self.output, [vocab, hidden])];
        for l in &self.layers {
            expected.extend([
                (l.q, [q, hidden]),
                (l.k, [kv, hidden]),
                (l.v, [kv, hidden]),
                (l.o, [hidden, q]),
                (l.gate, [ffn, hidden]),
                (l.up, [ffn, hidden]),
                (l.down, [hidden, ffn]),
            ]);
        }
        for (index, shape) in expected {
            let info = &file.tensors()[index];
            if info.shape != shape {
                let hint = if info.shape.iter().rev().eq(shape.iter()) { " (transposed)" } else { "" };
                return Err(Error::Invalid(format!(
                    "{}: tensor {} has shape {:?}, the configuration needs {:?}{hint}",
                    file.path.display(),
                    info.name,
                    info.shape,
                    shape
                )));
            }
        }
        Ok(())
    }
}

/// A 2-D weight as a matrix view (shape `[rows, cols]`, outermost first).
pub fn matrix<'a>(file: &'a ModelFile, index: TensorIndex) -> WeightMatrix<'a> {
    let info: &TensorInfo = &file.tensors()[index];
    let (rows, cols) = match info.shape.as_slice() {
        [rows, cols] => (*rows as usize, *cols as usize),
        [cols] => (1, *cols as usize),
        _ => (1, info.shape.iter().product::<u64>() as usize),
    };
    WeightMatrix::new(info.dtype, rows, cols, file.view(info).bytes).expect("parser checked sizes")
}
