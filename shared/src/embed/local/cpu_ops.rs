//! Fused element-wise steps of the encoder as in-place candle CPU ops.
//!
//! candle runs each element-wise op on one thread and allocates a fresh tensor for
//! it; these ops work in place on the matmul output, fuse the steps BERT runs back
//! to back (bias + GELU, bias + residual + layer norm, mask + softmax), and split
//! the rows over the cores with scoped threads. The loops are written so the
//! compiler vectorises them (fixed-width partial sums, branch-free `exp` and `erf`).

use candle_core::{CpuStorage, InplaceOp1, InplaceOp2, Layout, Result};

/// Below this many floats an op runs on the calling thread only.
const PARALLEL_MIN_FLOATS: usize = 1 << 15;
/// Partial sums per reduction, so the compiler can vectorise them.
const LANES: usize = 16;

/// The contiguous f32 data of an op's operand.
fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&data[start..end]),
        _ => candle_core::bail!("{op} needs a contiguous f32 tensor"),
    }
}

fn contiguous_f32_mut<'a>(
    storage: &'a mut CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a mut [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&mut data[start..end]),
        _ => candle_core::bail!("{op} needs a contiguous f32 tensor"),
    }
}

/// Runs `work(first_row, rows)` over `data` split into row-aligned blocks, one
/// block per core when the data is large enough to be worth a thread.
fn for_row_blocks(data: &mut [f32], row_len: usize, work: impl Fn(usize, &mut [f32]) + Sync) {
    let rows = data.len() / row_len.max(1);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = cores
        .min(data.len() / PARALLEL_MIN_FLOATS)
        .clamp(1, rows.max(1));
    if threads == 1 {
        work(0, data);
        return;
    }
    let rows_per_block = rows.div_ceil(threads);
    std::thread::scope(|scope| {
        let work = &work;
        let mut blocks = data.chunks_mut(rows_per_block * row_len).enumerate();
        // The calling thread takes the first block itself.
        let first = blocks.next();
        for (index, block) in blocks {
            scope.spawn(move || work(index * rows_per_block, block));
        }
        if let Some((_, block)) = first {
            work(0, block);
        }
    });
}

/// `e^x` to about 2e-7 relative error, branch-free so loops over it vectorise.
#[inline(always)]
fn exp(x: f32) -> f32 {
    // Adding 1.5 * 2^23 rounds to an integer, which then sits in the low mantissa bits.
    const SHIFTER: f32 = 12_582_912.0;
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + SHIFTER;
    let n = shifted - SHIFTER;
    let r = (x - n * LN2_HIGH) - n * LN2_LOW;
    // Taylor series to r^6 on |r| <= ln(2) / 2.
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // 2^n from n's bits, without a float-to-int conversion: n is in [-126, 127]
    // after the clamp, so the exponent field stays normal.
    let n_bits = shifted.to_bits().wrapping_sub(SHIFTER.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    p * scale
}

/// The error function to about 2e-7 absolute error (Abramowitz and Stegun 7.1.26).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = 1.061_405_4;
    let poly = poly * t - 1.453_152_1;
    let poly = poly * t + 1.421_413_8;
    let poly = poly * t - 0.284_496_73;
    let poly = poly * t + 0.254_829_6;
    let magnitude = 1.0 - poly * t * exp(-z * z);
    magnitude.copysign(x)
}

/// BERT's GELU, `x * Φ(x)` with the exact (erf) normal CDF.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Adds a per-column bias in place, optionally followed by GELU.
pub(super) struct AddBias<'a> {
    pub(super) bias: &'a [f32],
    pub(super) gelu: bool,
}

impl InplaceOp1 for AddBias<'_> {
    fn name(&self) -> &'static str {
        "minilm-add-bias"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let data = contiguous_f32_mut(storage, layout, self.name())?;
        let width = self.bias.len();
        if width == 0 || !data.len().is_multiple_of(width) {
            candle_core::bail!("{}: rows are not {width} wide", self.name());
        }
        for_row_blocks(data, width, |_, block| {
            for row in block.chunks_exact_mut(width) {
                if self.gelu {
                    for (value, bias) in row.iter_mut().zip(self.bias) {
                        *value = gelu(*value + bias);
                    }
                } else {
                    for (value, bias) in row.iter_mut().zip(self.bias) {
                        *value += bias;
                    }
                }
            }
        });
        Ok(())
    }
}

/// `x = layer_norm(x + bias + residual)` in place: the end of both BERT sublayers.
pub(super) struct AddNorm<'a> {
    pub(super) bias: &'a [f32],
    pub(super) gamma: &'a [f32],
    pub(super) beta: &'a [f32],
    pub(super) eps: f32,
}

impl InplaceOp2 for AddNorm<'_> {
    fn name(&self) -> &'static str {
        "minilm-add-norm"
    }

    fn cpu_fwd(
        &self,
        storage: &mut CpuStorage,
        layout: &Layout,
        residual_storage: &CpuStorage,
        residual_layout: &Layout,
    ) -> Result<()> {
        let residual = contiguous_f32(residual_storage, residual_layout, self.name())?;
        let data = contiguous_f32_mut(storage, layout, self.name())?;
        let width = self.bias.len();
        if width == 0
            || !width.is_multiple_of(LANES)
            || !data.len().is_multiple_of(width)
            || residual.len() != data.len()
            || self.gamma.len() != width
            || self.beta.len() != width
        {
            candle_core::bail!("{}: mismatched shapes", self.name());
        }
        for_row_blocks(data, width, |first_row, block| {
            let residual = &residual[first_row * width..];
            for (row, residual_row) in block
                .chunks_exact_mut(width)
                .zip(residual.chunks_exact(width))
            {
                let mut sums = [0.0f32; LANES];
                for ((values, residuals), biases) in row
                    .chunks_exact_mut(LANES)
                    .zip(residual_row.chunks_exact(LANES))
                    .zip(self.bias.chunks_exact(LANES))
                {
                    for lane in 0..LANES {
                        values[lane] += residuals[lane] + biases[lane];
                        sums[lane] += values[lane];
                    }
                }
                let mean = sums.iter().sum::<f32>() / width as f32;
                let mut squares = [0.0f32; LANES];
                for values in row.chunks_exact_mut(LANES) {
                    for lane in 0..LANES {
                        values[lane] -= mean;
                        squares[lane] += values[lane] * values[lane];
                    }
                }
                let variance = squares.iter().sum::<f32>() / width as f32;
                let inverse_std = 1.0 / (variance + self.eps).sqrt();
                for ((value, gamma), beta) in row.iter_mut().zip(self.gamma).zip(self.beta) {
                    *value = *value * inverse_std * gamma + beta;
                }
            }
        });
        Ok(())
    }
}

/// Softmax over the last dimension of attention scores `[batch, heads, queries, keys]`
/// in place, with padding keys (at and after each text's length) given weight 0.
pub(super) struct MaskedSoftmax<'a> {
    /// Unpadded length of each text in the batch.
    pub(super) lengths: &'a [usize],
    pub(super) heads: usize,
    pub(super) tokens: usize,
}

impl InplaceOp1 for MaskedSoftmax<'_> {
    fn name(&self) -> &'static str {
        "minilm-masked-softmax"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let data = contiguous_f32_mut(storage, layout, self.name())?;
        let tokens = self.tokens;
        let rows_per_text = self.heads * tokens;
        if tokens == 0 || data.len() != self.lengths.len() * rows_per_text * tokens {
            candle_core::bail!("{}: mismatched shapes", self.name());
        }
        for_row_blocks(data, tokens, |first_row, block| {
            for (index, row) in block.chunks_exact_mut(tokens).enumerate() {
                let text = (first_row + index) / rows_per_text;
                let length = self.lengths[text].clamp(1, tokens);
                let (kept, padding) = row.split_at_mut(length);
                padding.fill(0.0);
                let max = kept
                    .iter()
                    .fold(f32::NEG_INFINITY, |max, &value| max.max(value));
                for value in kept.iter_mut() {
                    *value = exp(*value - max);
                }
                let sum: f32 = kept.iter().sum();
                let inverse = 1.0 / sum;
                for value in kept.iter_mut() {
                    *value *= inverse;
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_match_the_library_functions() {
        let mut x = -20.0f32;
        while x < 20.0 {
            let expected = f64::from(x).exp();
            let relative = (f64::from(exp(x)) - expected).abs() / expected;
            assert!(relative < 5e-7, "exp({x}): relative error {relative}");
            assert!((erf(x) + erf(-x)).abs() < 1e-7);
            assert!(erf(x).abs() <= 1.0);
            x += 0.01;
        }
        // erf(0.5), erf(1), erf(2) from tables.
        for (input, expected) in [(0.5, 0.520_499_9), (1.0, 0.842_700_8), (2.0, 0.995_322_3)] {
            assert!((erf(input) - expected).abs() < 3e-7, "erf({input})");
        }
        assert_eq!(exp(-1.0e30), exp(-87.0));
    }
}
