//! A BERT encoder for all-MiniLM-L6-v2, laid out for CPU throughput.
//!
//! Same maths as `candle_transformers::models::bert::BertModel` (post-norm BERT,
//! erf GELU, masked softmax attention), arranged for the CPU:
//!
//! - every linear layer is one 2D matmul over `[batch * tokens, hidden]` against a
//!   weight transposed once at load time to `[in, out]`;
//! - query, key and value are one fused `[hidden, 3 * hidden]` matmul, with the
//!   attention scale `1 / sqrt(head_dim)` folded into the query weights;
//! - biases, GELU, residuals, layer norms and the masked softmax run in place on
//!   the matmul outputs, fused and spread over the cores (see [`super::cpu_ops`]).

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};

use super::TokenizedText;
use super::cpu_ops::{AddBias, AddNorm, MaskedSoftmax};

/// A linear layer `x @ weight + bias` with `weight` stored `[in, out]`; the bias is
/// added by the op that follows the matmul.
struct Dense {
    weight: Tensor,
    bias: Vec<f32>,
}

impl Dense {
    /// Loads a PyTorch `nn.Linear` (`weight` is `[out, in]`), transposed once.
    fn load(variables: VarBuilder<'_>, inputs: usize, outputs: usize) -> Result<Self> {
        let weight = variables.get((outputs, inputs), "weight")?;
        let bias = variables.get(outputs, "bias")?;
        Ok(Self {
            weight: weight.t()?.contiguous()?,
            bias: bias.to_vec1()?,
        })
    }

    /// `[rows, in]` to `[rows, out]`, without the bias.
    fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight)
    }
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl Norm {
    fn load(variables: VarBuilder<'_>, size: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            gamma: variables.get(size, "weight")?.to_vec1()?,
            beta: variables.get(size, "bias")?.to_vec1()?,
            eps: eps as f32,
        })
    }

    /// `output = layer_norm(output + dense.bias + residual)`, in place.
    fn add_norm(&self, output: &Tensor, dense: &Dense, residual: &Tensor) -> Result<()> {
        output.inplace_op2(
            residual,
            &AddNorm {
                bias: &dense.bias,
                gamma: &self.gamma,
                beta: &self.beta,
                eps: self.eps,
            },
        )
    }
}

struct Layer {
    /// Query (pre-scaled), key and value side by side: `[hidden, 3 * hidden]`.
    qkv: Dense,
    attention_out: Dense,
    attention_norm: Norm,
    intermediate: Dense,
    output: Dense,
    output_norm: Norm,
}

impl Layer {
    fn load(variables: VarBuilder<'_>, config: &Config) -> Result<Self> {
        let hidden = config.hidden_size;
        let head_dim = hidden / config.num_attention_heads;
        let scale = 1.0 / (head_dim as f64).sqrt();
        let attention = variables.pp("attention");
        let self_attention = attention.pp("self");
        let linear = |name: &str| {
            let variables = self_attention.pp(name);
            Ok::<_, candle_core::Error>((
                variables.get((hidden, hidden), "weight")?.t()?,
                variables.get(hidden, "bias")?,
            ))
        };
        let (query_weight, query_bias) = linear("query")?;
        let (key_weight, key_bias) = linear("key")?;
        let (value_weight, value_bias) = linear("value")?;
        let qkv = Dense {
            weight: Tensor::cat(&[&(query_weight * scale)?, &key_weight, &value_weight], 1)?
                .contiguous()?,
            bias: Tensor::cat(&[&(query_bias * scale)?, &key_bias, &value_bias], 0)?.to_vec1()?,
        };
        let eps = config.layer_norm_eps;
        let intermediate = config.intermediate_size;
        Ok(Self {
            qkv,
            attention_out: Dense::load(attention.pp("output.dense"), hidden, hidden)?,
            attention_norm: Norm::load(attention.pp("output.LayerNorm"), hidden, eps)?,
            intermediate: Dense::load(variables.pp("intermediate.dense"), hidden, intermediate)?,
            output: Dense::load(variables.pp("output.dense"), intermediate, hidden)?,
            output_norm: Norm::load(variables.pp("output.LayerNorm"), hidden, eps)?,
        })
    }

    /// `x` is `[batch * tokens, hidden]`; returns the same shape.
    fn forward(&self, x: &Tensor, lengths: &[usize], shape: Shape) -> Result<Tensor> {
        let Shape {
            batch,
            tokens,
            heads,
            head_dim,
        } = shape;
        let hidden = heads * head_dim;

        let qkv = self.qkv.matmul(x)?;
        qkv.inplace_op1(&AddBias {
            bias: &self.qkv.bias,
            gelu: false,
        })?;
        // [batch, tokens, 3, heads, head_dim] -> [3, batch, heads, tokens, head_dim]
        let qkv = qkv
            .reshape((batch, tokens, 3, heads, head_dim))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let query = qkv.get(0)?;
        let key = qkv.get(1)?;
        let value = qkv.get(2)?;
        let scores = query.matmul(&key.t()?)?;
        scores.inplace_op1(&MaskedSoftmax {
            lengths,
            heads,
            tokens,
        })?;
        let context = scores
            .matmul(&value)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch * tokens, hidden))?;

        let attended = self.attention_out.matmul(&context)?;
        self.attention_norm
            .add_norm(&attended, &self.attention_out, x)?;
        let intermediate = self.intermediate.matmul(&attended)?;
        intermediate.inplace_op1(&AddBias {
            bias: &self.intermediate.bias,
            gelu: true,
        })?;
        let output = self.output.matmul(&intermediate)?;
        self.output_norm
            .add_norm(&output, &self.output, &attended)?;
        Ok(output)
    }
}

#[derive(Clone, Copy)]
struct Shape {
    batch: usize,
    tokens: usize,
    heads: usize,
    head_dim: usize,
}

/// The BERT encoder without its pooler: token ids in, last hidden states out.
pub(super) struct MiniLmEncoder {
    word_embeddings: candle_nn::Embedding,
    position_embeddings: Tensor,
    token_type_embeddings: candle_nn::Embedding,
    embedding_norm: candle_nn::LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
}

impl MiniLmEncoder {
    /// Loads a `BertModel` checkpoint; accepts names with or without a `bert.` prefix.
    pub(super) fn load(variables: VarBuilder<'_>, config: &Config) -> Result<Self> {
        if !matches!(config.hidden_act, HiddenAct::Gelu) {
            candle_core::bail!("only the erf GELU activation is supported");
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            candle_core::bail!("hidden_size is not a multiple of num_attention_heads");
        }
        let variables = if variables.contains_tensor("embeddings.word_embeddings.weight") {
            variables
        } else {
            variables.pp("bert")
        };
        let hidden = config.hidden_size;
        let embeddings = variables.pp("embeddings");
        Ok(Self {
            word_embeddings: candle_nn::embedding(
                config.vocab_size,
                hidden,
                embeddings.pp("word_embeddings"),
            )?,
            position_embeddings: embeddings.get(
                (config.max_position_embeddings, hidden),
                "position_embeddings.weight",
            )?,
            token_type_embeddings: candle_nn::embedding(
                config.type_vocab_size,
                hidden,
                embeddings.pp("token_type_embeddings"),
            )?,
            embedding_norm: candle_nn::layer_norm(
                hidden,
                config.layer_norm_eps,
                embeddings.pp("LayerNorm"),
            )?,
            layers: (0..config.num_hidden_layers)
                .map(|index| Layer::load(variables.pp(format!("encoder.layer.{index}")), config))
                .collect::<Result<Vec<_>>>()?,
            heads: config.num_attention_heads,
            hidden,
        })
    }

    /// Last hidden states of `batch`, each text padded at the end to `padded_len`, as
    /// `[batch * padded_len * hidden]`.
    pub(super) fn forward_padded(
        &self,
        batch: &[&TokenizedText],
        padded_len: usize,
    ) -> Result<Vec<f32>> {
        let cells = batch.len() * padded_len;
        let mut ids = Vec::with_capacity(cells);
        let mut type_ids = Vec::with_capacity(cells);
        for text in batch {
            let padding = padded_len - text.ids.len();
            ids.extend_from_slice(&text.ids);
            // Pad id 0 is `[PAD]`; the masked softmax gives these positions no weight.
            ids.extend(std::iter::repeat_n(0u32, padding));
            type_ids.extend_from_slice(&text.type_ids);
            type_ids.extend(std::iter::repeat_n(0u32, padding));
        }
        let shape = (batch.len(), padded_len);
        let ids = Tensor::from_vec(ids, shape, &Device::Cpu)?;
        let type_ids = Tensor::from_vec(type_ids, shape, &Device::Cpu)?;
        let lengths: Vec<usize> = batch.iter().map(|text| text.ids.len()).collect();
        self.forward(&ids, &type_ids, &lengths)?
            .flatten_all()?
            .to_vec1::<f32>()
    }

    /// `ids` and `type_ids` are `[batch, tokens]` u32, padded at the end; `lengths`
    /// holds each text's unpadded length. Returns `[batch, tokens, hidden]`.
    fn forward(&self, ids: &Tensor, type_ids: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let (batch, tokens) = ids.dims2()?;
        let positions = self.position_embeddings.dim(0)?;
        if tokens > positions {
            candle_core::bail!("{tokens} tokens exceed the model's {positions} positions");
        }
        if lengths.len() != batch {
            candle_core::bail!("{} lengths for a batch of {batch}", lengths.len());
        }
        let shape = Shape {
            batch,
            tokens,
            heads: self.heads,
            head_dim: self.hidden / self.heads,
        };
        let embedded = self
            .word_embeddings
            .forward(ids)?
            .add(&self.token_type_embeddings.forward(type_ids)?)?
            .broadcast_add(&self.position_embeddings.narrow(0, 0, tokens)?)?
            .reshape((batch * tokens, self.hidden))?;
        let mut x = self.embedding_norm.forward(&embedded)?;
        for layer in &self.layers {
            x = layer.forward(&x, lengths, shape)?;
        }
        x.reshape((batch, tokens, self.hidden))
    }
}
