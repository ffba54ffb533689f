//! Where each weight of the decoder lives in the opened file. Weights are not
//! copied here: a backend prepares each from its [`HostMatrix`] (the mapped
//! bytes, in their file dtype) once, at load.

use std::collections::BTreeSet;

use crate::backend::RopeStyle;
use crate::container::names::layer_of;
use crate::container::{ModelFile, QkRowOrder};
use crate::error::{Error, Result};
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
        let need = |name: String| find(&name).ok_or_else(|| Error::MissingTensor { path: file.path.clone(), name });
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
        weights.check_dtypes(file)?;
        weights.check_nothing_left_over(file, config)?;
        Ok(weights)
    }

    /// Every tensor must have the shape the configuration implies (`[out, in]`
    /// for a matrix, `[len]` for a norm gain or a bias): a transposed or
    /// mis-sized tensor is an error here, not garbage later.
    fn check_shapes(&self, file: &ModelFile, c: &ModelConfig) -> Result<()> {
        for (index, shape) in self.expected_shapes(c) {
            let info = &file.tensors()[index];
            if info.shape != shape {
                return Err(Error::ShapeMismatch {
                    path: file.path.clone(),
                    name: info.name.clone(),
                    actual: info.shape.clone(),
                    expected: shape,
                });
            }
        }
        Ok(())
    }

    fn expected_shapes(&self, c: &ModelConfig) -> Vec<(TensorIndex, Vec<u64>)> {
        // Saturating: absurd sizes from a hostile file then fail the comparison.
        let width = |heads: usize| (heads as u64).saturating_mul(c.head_dim as u64);
        let (q, kv) = (width(c.heads), width(c.kv_heads));
        let (hidden, ffn, vocab) = (c.hidden as u64, c.ffn as u64, c.vocab as u64);
        let mut expected = vec![
            (self.embedding, vec![vocab, hidden]),
            (self.output, vec![vocab, hidden]),
            (self.output_norm, vec![hidden]),
        ];
        for l in &self.layers {
            expected.extend([
                (l.attn_norm, vec![hidden]),
                (l.q, vec![q, hidden]),
                (l.k, vec![kv, hidden]),
                (l.v, vec![kv, hidden]),
                (l.o, vec![hidden, q]),
                (l.ffn_norm, vec![hidden]),
                (l.gate, vec![ffn, hidden]),
                (l.up, vec![ffn, hidden]),
                (l.down, vec![hidden, ffn]),
            ]);
            let biases = [(l.q_bias, q), (l.k_bias, kv), (l.v_bias, kv)];
            expected.extend(biases.into_iter().filter_map(|(index, len)| Some((index?, vec![len]))));
        }
        expected
    }

    /// Weights are real numbers: float or block-quantized dtypes. An integer
    /// dtype (I8..I64) would be read as whole numbers and give garbage, so it
    /// is refused. (Every float and block dtype is computed exactly as stored,
    /// F16 or BF16 norm gains included.)
    fn check_dtypes(&self, file: &ModelFile) -> Result<()> {
        let used = self.used_indices();
        for info in used.iter().map(|&i| &file.tensors()[i]) {
            if !(info.dtype.is_float() || info.dtype.is_quantized()) {
                return Err(Error::Unsupported(format!(
                    "{}: tensor {} is stored as {}, an integer dtype; model weights must be float or block-quantized",
                    file.path.display(),
                    info.name,
                    info.dtype
                )));
            }
        }
        Ok(())
    }

    /// Every tensor of the file must be one the decoder uses. A tensor the
    /// engine would ignore means the file is not what the configuration says
    /// (a layer beyond `block_count`, an architecture feature the engine does
    /// not implement), so loading refuses rather than run a different model.
    fn check_nothing_left_over(&self, file: &ModelFile, c: &ModelConfig) -> Result<()> {
        let used = self.used_indices();
        let Some(extra) = (0..file.tensors().len()).find(|i| !used.contains(i)) else { return Ok(()) };
        let name = &file.tensors()[extra].name;
        let reason = match layer_of(name) {
            Some(layer) if layer >= c.layers => format!(
                "belongs to layer {layer}, but {}.block_count says the model has {} layers (0..{})",
                c.architecture,
                c.layers,
                c.layers - 1
            ),
            _ => format!(
                "is not a tensor the {} decoder uses; apr refuses files with tensors it would silently ignore",
                c.architecture
            ),
        };
        Err(Error::Invalid(format!("{}: tensor {name} {reason}", file.path.display())))
    }

    /// The tensor-table indices of every weight the decoder reads.
    pub fn used_indices(&self) -> BTreeSet<TensorIndex> {
        let mut used: BTreeSet<TensorIndex> = [self.embedding, self.output, self.output_norm].into();
        for l in &self.layers {
            used.extend([l.attn_norm, l.q, l.k, l.v, l.o, l.ffn_norm, l.gate, l.up, l.down]);
            used.extend([l.q_bias, l.k_bias, l.v_bias].into_iter().flatten());
        }
        used
    }
}
