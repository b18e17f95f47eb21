//! all-MiniLM-L6-v2 on ONNX Runtime: the graph is built in memory from the same
//! safetensors weights the candle encoder reads, so nothing is downloaded or converted
//! ahead of time.
//!
//! The graph uses ONNX Runtime's fused transformer kernels (`com.microsoft` domain),
//! one node per BERT step:
//!
//! ```text
//! EmbedLayerNormalization(ids, type ids, mask) -> x, lengths
//! 6 x [ Attention(x, Wqkv, bqkv, lengths) -> MatMul(Wo) -> SkipLayerNormalization(+x, +bo)
//!       -> MatMul(Wi) -> BiasGelu(bi) -> MatMul(Wo2) -> SkipLayerNormalization(+x, +bo2) ]
//! ```
//!
//! `Attention` takes the unpadded length of each text (right padding), so padded keys
//! get no weight, exactly as BERT's additive mask does. Mean pooling and L2
//! normalisation run in Rust on the last hidden states.
//!
//! ONNX Runtime's matrix kernels (MLAS) pick their code path from the CPU at run time
//! (AVX2/FMA, AVX-512, AVX-512 VNNI, AMX), so one library serves every x86-64 CPU.
//! The library is loaded at run time (`ort`'s `load-dynamic`): a worker without it
//! falls back to the candle encoder instead of failing to start.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_transformers::models::bert::{Config, HiddenAct};
use ort::editor::{Graph, Model, Node, ONNX_DOMAIN, Opset};
use ort::environment::Environment;
use ort::memory::Allocator;
use ort::operator::Attribute;
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::{Outlet, Shape, SymbolicDimensions, Tensor, TensorElementType, ValueType};
use serde::Deserialize;

use super::TokenizedText;

/// Domain of ONNX Runtime's own fused operators.
const MICROSOFT_DOMAIN: &str = "com.microsoft";
/// The ONNX opset the standard nodes (`MatMul`) are declared against.
const ONNX_OPSET: u32 = 17;

/// The process's ONNX Runtime environment (the library allows one per process) and the
/// library it came from; empty until a load succeeds.
static ENVIRONMENT: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

/// The encoder as an ONNX Runtime session.
pub(super) struct OnnxEncoder {
    session: Session,
    hidden: usize,
}

/// What `load` reports for the start-up log.
pub(super) struct OnnxDescription {
    pub(super) library: String,
}

impl OnnxEncoder {
    /// Loads ONNX Runtime from `library` (a path, or a file name the dynamic loader
    /// searches for), builds the graph from `model_dir`'s weights and opens a session
    /// that spreads each batch over `threads` cores.
    pub(super) fn load(
        library: &Path,
        model_dir: &Path,
        config: &Config,
        threads: usize,
    ) -> Result<(Self, OnnxDescription), String> {
        if !matches!(config.hidden_act, HiddenAct::Gelu) {
            return Err("only the erf GELU activation is supported".into());
        }
        let environment = environment(library)?;
        let graph = build_graph(&model_dir.join("model.safetensors"), config)
            .map_err(|error| format!("cannot build the ONNX graph: {error}"))?;
        let mut model = Model::new([
            Opset::new(ONNX_DOMAIN, ONNX_OPSET).map_err(|error| error.to_string())?,
            Opset::new(MICROSOFT_DOMAIN, 1).map_err(|error| error.to_string())?,
        ])
        .map_err(|error| error.to_string())?;
        model.set_graph(graph).map_err(|error| error.to_string())?;
        let builder = session_builder(&environment, threads)
            .map_err(|error| format!("cannot configure the ONNX Runtime session: {error}"))?;
        let session = model
            .into_session(&builder)
            .map_err(|error| format!("cannot create the ONNX Runtime session: {error}"))?;
        Ok((
            Self {
                session,
                hidden: config.hidden_size,
            },
            OnnxDescription {
                library: library.display().to_string(),
            },
        ))
    }

    /// Last hidden states of `batch`, padded to `padded_len`, as `[batch * padded_len * hidden]`.
    pub(super) fn forward(
        &mut self,
        batch: &[&TokenizedText],
        padded_len: usize,
    ) -> Result<Vec<f32>, String> {
        let cells = batch.len() * padded_len;
        let mut ids = Vec::with_capacity(cells);
        let mut type_ids = Vec::with_capacity(cells);
        let mut mask = Vec::with_capacity(cells);
        for text in batch {
            let padding = padded_len - text.ids.len();
            ids.extend(text.ids.iter().map(|&id| id as i32));
            ids.extend(std::iter::repeat_n(0, padding));
            type_ids.extend(text.type_ids.iter().map(|&id| id as i32));
            type_ids.extend(std::iter::repeat_n(0, padding));
            mask.extend(std::iter::repeat_n(1, text.ids.len()));
            mask.extend(std::iter::repeat_n(0, padding));
        }
        let shape = [batch.len() as i64, padded_len as i64];
        let tensor = |values: Vec<i32>| {
            Tensor::from_array((shape, values)).map_err(|error| error.to_string())
        };
        let outputs = self
            .session
            .run(ort::inputs![
                "input_ids" => tensor(ids)?,
                "token_type_ids" => tensor(type_ids)?,
                "attention_mask" => tensor(mask)?,
            ])
            .map_err(|error| error.to_string())?;
        let (output_shape, hidden) = outputs["last_hidden_state"]
            .try_extract_tensor::<f32>()
            .map_err(|error| error.to_string())?;
        let expected = [batch.len() as i64, padded_len as i64, self.hidden as i64];
        if **output_shape != expected {
            return Err(format!(
                "the graph returned shape {output_shape:?}, expected {expected:?}"
            ));
        }
        Ok(hidden.to_vec())
    }
}

/// The process's ONNX Runtime environment, loading the library on first use.
///
/// A process loads one library only: asking for another one later is an error rather
/// than silently using the first. A failed load is not remembered.
fn environment(library: &Path) -> Result<Environment, String> {
    let mut loaded = ENVIRONMENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((loaded_from, environment)) = loaded.as_ref() {
        if loaded_from != library {
            return Err(format!(
                "ONNX Runtime is already loaded from {} in this process, not {}",
                loaded_from.display(),
                library.display()
            ));
        }
        return Ok(environment.clone());
    }
    let environment = ort::init_from(library)
        .map_err(|error| {
            format!(
                "cannot load ONNX Runtime from {}: {error}",
                library.display()
            )
        })?
        .with_name("glassbox")
        .with_telemetry(false)
        .build()
        .map_err(|error| format!("cannot start ONNX Runtime: {error}"))?;
    *loaded = Some((library.to_path_buf(), environment.clone()));
    Ok(environment)
}

fn session_builder(environment: &Environment, threads: usize) -> ort::Result<SessionBuilder> {
    Ok(SessionBuilder::new(environment)?
        .with_optimization_level(GraphOptimizationLevel::All)?
        // One batch at a time, every core on it.
        .with_intra_threads(threads.max(1))?
        .with_inter_threads(1)?
        // Spinning threads would burn the cores the extraction children need between batches.
        .with_intra_op_spinning(false)?
        .with_inter_op_spinning(false)?)
}

/// One tensor's entry in a safetensors header.
#[derive(Deserialize)]
struct TensorEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// Reads f32 tensors out of a safetensors file one at a time, so the whole file is
/// never in memory next to the graph's copy of it.
struct SafetensorsFile {
    file: File,
    data_start: u64,
    entries: HashMap<String, TensorEntry>,
    /// `bert.` when the checkpoint carries the `BertModel` prefix.
    prefix: &'static str,
}

/// Headers above this are not a model we know (all-MiniLM-L6-v2's is about 12 KiB).
const MAX_HEADER_BYTES: u64 = 16 * 1024 * 1024;

impl SafetensorsFile {
    fn open(path: &Path) -> Result<Self, String> {
        let mut file =
            File::open(path).map_err(|error| format!("cannot open {}: {error}", path.display()))?;
        let mut length_bytes = [0u8; 8];
        file.read_exact(&mut length_bytes)
            .map_err(|error| format!("cannot read the safetensors header: {error}"))?;
        let header_length = u64::from_le_bytes(length_bytes);
        if header_length > MAX_HEADER_BYTES {
            return Err(format!("safetensors header of {header_length} bytes"));
        }
        let mut header = vec![0u8; header_length as usize];
        file.read_exact(&mut header)
            .map_err(|error| format!("cannot read the safetensors header: {error}"))?;
        let mut raw: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
            .map_err(|error| format!("cannot parse the safetensors header: {error}"))?;
        raw.remove("__metadata__");
        let entries = raw
            .into_iter()
            .map(|(name, value)| {
                serde_json::from_value::<TensorEntry>(value)
                    .map(|entry| (name.clone(), entry))
                    .map_err(|error| format!("safetensors entry {name}: {error}"))
            })
            .collect::<Result<HashMap<_, _>, _>>()?;
        let prefix = if entries.contains_key("embeddings.word_embeddings.weight") {
            ""
        } else {
            "bert."
        };
        Ok(Self {
            file,
            data_start: 8 + header_length,
            entries,
            prefix,
        })
    }

    /// The tensor `name` (without the `bert.` prefix) as f32s, checked against `shape`.
    fn read(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
        let full_name = format!("{}{name}", self.prefix);
        let entry = self
            .entries
            .get(&full_name)
            .ok_or_else(|| format!("the weights have no tensor {full_name}"))?;
        if entry.dtype != "F32" {
            return Err(format!("{full_name} is {}, expected F32", entry.dtype));
        }
        if entry.shape != shape {
            return Err(format!(
                "{full_name} has shape {:?}, expected {shape:?}",
                entry.shape
            ));
        }
        let (start, end) = entry.data_offsets;
        let floats: usize = shape.iter().product();
        if end.checked_sub(start) != Some(floats as u64 * 4) {
            return Err(format!("{full_name}: data offsets do not match its shape"));
        }
        self.file
            .seek(SeekFrom::Start(self.data_start + start))
            .map_err(|error| format!("cannot read {full_name}: {error}"))?;
        let mut bytes = vec![0u8; floats * 4];
        self.file
            .read_exact(&mut bytes)
            .map_err(|error| format!("cannot read {full_name}: {error}"))?;
        Ok(bytes
            .chunks_exact(4)
            .map(|word| f32::from_le_bytes([word[0], word[1], word[2], word[3]]))
            .collect())
    }
}

/// `[rows, columns]` row-major to `[columns, rows]`.
fn transpose(values: &[f32], rows: usize, columns: usize) -> Vec<f32> {
    let mut transposed = vec![0.0; values.len()];
    for row in 0..rows {
        for column in 0..columns {
            transposed[column * rows + row] = values[row * columns + column];
        }
    }
    transposed
}

/// Below this size an initializer is copied into the graph; at or above it the session
/// uses the tensor's own buffer (ONNX Runtime refuses to reference tiny ones, which
/// shape inference may need inline).
const SHARED_INITIALIZER_BYTES: usize = 1024;

/// Adds `values` (of `shape`) to `graph` as the initializer `name`.
///
/// A weight is handed over as "external" data: the graph keeps the tensor alive and the
/// session reads its buffer in place. Passed inline instead, ONNX Runtime serializes
/// every weight into the graph's protobuf and the session copies it out again: loading
/// peaked 95 MiB higher (269 MiB against 174 MiB resident, measured in a process that
/// loads the model alone), which was the worker's highest point.
fn add_weight(
    graph: &mut Graph,
    name: &str,
    shape: &[usize],
    values: &[f32],
) -> Result<(), String> {
    let mut tensor = Tensor::<f32>::new(
        &Allocator::default(),
        Shape::new(shape.iter().map(|&size| size as i64)),
    )
    .map_err(|error| error.to_string())?;
    let (_, data) = tensor.extract_tensor_mut();
    if data.len() != values.len() {
        return Err(format!(
            "{name}: {} values for {} cells",
            values.len(),
            data.len()
        ));
    }
    data.copy_from_slice(values);
    graph
        .add_initializer(
            name,
            tensor,
            std::mem::size_of_val(values) >= SHARED_INITIALIZER_BYTES,
        )
        .map_err(|error| error.to_string())
}

/// Reads the tensor `name` from `weights` and adds it unchanged.
fn copy_weight(
    graph: &mut Graph,
    weights: &mut SafetensorsFile,
    name: &str,
    shape: &[usize],
) -> Result<(), String> {
    let values = weights.read(name, shape)?;
    add_weight(graph, name, shape, &values)
}

/// Adds a PyTorch `nn.Linear` (`weight` is `[out, in]`) with its weight transposed to
/// `[in, out]`, as MatMul wants it.
fn copy_linear(
    graph: &mut Graph,
    weights: &mut SafetensorsFile,
    name: &str,
    inputs: usize,
    outputs: usize,
) -> Result<(), String> {
    let weight_name = format!("{name}.weight");
    let weight = weights.read(&weight_name, &[outputs, inputs])?;
    add_weight(
        graph,
        &weight_name,
        &[inputs, outputs],
        &transpose(&weight, outputs, inputs),
    )?;
    copy_weight(graph, weights, &format!("{name}.bias"), &[outputs])
}

/// Adds one operator node.
fn add_node(
    graph: &mut Graph,
    operator: &str,
    domain: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attributes: Vec<Attribute>,
) -> Result<(), String> {
    let node = Node::new(operator, domain, name, inputs, outputs, attributes)
        .map_err(|error| format!("{name}: {error}"))?;
    graph.add_node(node).map_err(|error| error.to_string())
}

/// Builds the graph, adding each weight as an initializer as soon as it is read.
fn build_graph(weights_path: &Path, config: &Config) -> Result<Graph, String> {
    let hidden = config.hidden_size;
    let heads = config.num_attention_heads;
    let intermediate = config.intermediate_size;
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err("hidden_size is not a multiple of num_attention_heads".into());
    }
    let epsilon = config.layer_norm_eps as f32;
    let epsilon_attribute =
        || Attribute::new("epsilon", epsilon).map_err(|error| error.to_string());
    let mut weights = SafetensorsFile::open(weights_path)?;
    let mut graph = Graph::new().map_err(|error| error.to_string())?;

    let token_matrix = |element: TensorElementType| ValueType::Tensor {
        ty: element,
        shape: Shape::new([-1, -1]),
        dimension_symbols: SymbolicDimensions::new(["batch".to_string(), "tokens".to_string()]),
    };
    graph
        .set_inputs([
            Outlet::new("input_ids", token_matrix(TensorElementType::Int32)),
            Outlet::new("token_type_ids", token_matrix(TensorElementType::Int32)),
            Outlet::new("attention_mask", token_matrix(TensorElementType::Int32)),
        ])
        .map_err(|error| error.to_string())?;
    graph
        .set_outputs([Outlet::new(
            "last_hidden_state",
            ValueType::Tensor {
                ty: TensorElementType::Float32,
                shape: Shape::new([-1, -1, hidden as i64]),
                dimension_symbols: SymbolicDimensions::new([
                    "batch".to_string(),
                    "tokens".to_string(),
                    String::new(),
                ]),
            },
        )])
        .map_err(|error| error.to_string())?;

    // Embeddings: word + position + token type, then layer norm.
    let embedding_tables = [
        ("embeddings.word_embeddings.weight", config.vocab_size),
        (
            "embeddings.position_embeddings.weight",
            config.max_position_embeddings,
        ),
        (
            "embeddings.token_type_embeddings.weight",
            config.type_vocab_size,
        ),
    ];
    for (name, rows) in embedding_tables {
        copy_weight(&mut graph, &mut weights, name, &[rows, hidden])?;
    }
    for name in ["embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"] {
        copy_weight(&mut graph, &mut weights, name, &[hidden])?;
    }
    add_node(
        &mut graph,
        "EmbedLayerNormalization",
        MICROSOFT_DOMAIN,
        "embeddings",
        &[
            "input_ids",
            "token_type_ids",
            "embeddings.word_embeddings.weight",
            "embeddings.position_embeddings.weight",
            "embeddings.token_type_embeddings.weight",
            "embeddings.LayerNorm.weight",
            "embeddings.LayerNorm.bias",
            "attention_mask",
        ],
        &["hidden.0", "lengths"],
        vec![epsilon_attribute()?],
    )?;

    let layers = config.num_hidden_layers;
    for layer in 0..layers {
        let prefix = format!("encoder.layer.{layer}");
        let input = format!("hidden.{layer}");
        let output = if layer + 1 == layers {
            "last_hidden_state".to_string()
        } else {
            format!("hidden.{}", layer + 1)
        };
        let name = |suffix: &str| format!("{prefix}.{suffix}");

        // Query, key and value side by side: `[hidden, 3 * hidden]`, as Attention wants.
        let mut qkv_weight = vec![0.0f32; hidden * 3 * hidden];
        let mut qkv_bias = Vec::with_capacity(3 * hidden);
        for (part, projection) in ["query", "key", "value"].iter().enumerate() {
            let weight = weights.read(
                &name(&format!("attention.self.{projection}.weight")),
                &[hidden, hidden],
            )?;
            // `weight` is `[out, in]`: it lands in row `in`, column `part * hidden + out`.
            for out in 0..hidden {
                for input_index in 0..hidden {
                    qkv_weight[input_index * 3 * hidden + part * hidden + out] =
                        weight[out * hidden + input_index];
                }
            }
            qkv_bias.extend(weights.read(
                &name(&format!("attention.self.{projection}.bias")),
                &[hidden],
            )?);
        }
        add_weight(
            &mut graph,
            &name("attention.qkv.weight"),
            &[hidden, 3 * hidden],
            &qkv_weight,
        )?;
        add_weight(
            &mut graph,
            &name("attention.qkv.bias"),
            &[3 * hidden],
            &qkv_bias,
        )?;
        copy_linear(
            &mut graph,
            &mut weights,
            &name("attention.output.dense"),
            hidden,
            hidden,
        )?;
        copy_linear(
            &mut graph,
            &mut weights,
            &name("intermediate.dense"),
            hidden,
            intermediate,
        )?;
        copy_linear(
            &mut graph,
            &mut weights,
            &name("output.dense"),
            intermediate,
            hidden,
        )?;
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
            for part in ["weight", "bias"] {
                copy_weight(
                    &mut graph,
                    &mut weights,
                    &name(&format!("{norm}.{part}")),
                    &[hidden],
                )?;
            }
        }

        add_node(
            &mut graph,
            "Attention",
            MICROSOFT_DOMAIN,
            &name("attention"),
            &[
                &input,
                &name("attention.qkv.weight"),
                &name("attention.qkv.bias"),
                "lengths",
            ],
            &[&name("attended")],
            vec![Attribute::new("num_heads", heads as i64).map_err(|error| error.to_string())?],
        )?;
        add_node(
            &mut graph,
            "MatMul",
            ONNX_DOMAIN,
            &name("attention.output.matmul"),
            &[&name("attended"), &name("attention.output.dense.weight")],
            &[&name("projected")],
            Vec::new(),
        )?;
        add_node(
            &mut graph,
            "SkipLayerNormalization",
            MICROSOFT_DOMAIN,
            &name("attention.output.norm"),
            &[
                &name("projected"),
                &input,
                &name("attention.output.LayerNorm.weight"),
                &name("attention.output.LayerNorm.bias"),
                &name("attention.output.dense.bias"),
            ],
            &[&name("attention.normed")],
            vec![epsilon_attribute()?],
        )?;
        add_node(
            &mut graph,
            "MatMul",
            ONNX_DOMAIN,
            &name("intermediate.matmul"),
            &[
                &name("attention.normed"),
                &name("intermediate.dense.weight"),
            ],
            &[&name("expanded")],
            Vec::new(),
        )?;
        add_node(
            &mut graph,
            "BiasGelu",
            MICROSOFT_DOMAIN,
            &name("intermediate.gelu"),
            &[&name("expanded"), &name("intermediate.dense.bias")],
            &[&name("activated")],
            Vec::new(),
        )?;
        add_node(
            &mut graph,
            "MatMul",
            ONNX_DOMAIN,
            &name("output.matmul"),
            &[&name("activated"), &name("output.dense.weight")],
            &[&name("contracted")],
            Vec::new(),
        )?;
        add_node(
            &mut graph,
            "SkipLayerNormalization",
            MICROSOFT_DOMAIN,
            &name("output.norm"),
            &[
                &name("contracted"),
                &name("attention.normed"),
                &name("output.LayerNorm.weight"),
                &name("output.LayerNorm.bias"),
                &name("output.dense.bias"),
            ],
            &[&output],
            vec![epsilon_attribute()?],
        )?;
    }
    Ok(graph)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_swaps_rows_and_columns() {
        // [[1, 2, 3], [4, 5, 6]] -> [[1, 4], [2, 5], [3, 6]]
        assert_eq!(
            transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3),
            vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
    }
}
