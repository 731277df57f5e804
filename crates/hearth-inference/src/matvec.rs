//! One-row products straight from GGUF weight blocks, for decoding on the CPU.
//!
//! A decoding step multiplies one activation row by every weight matrix: it is bound by how
//! many bytes of weights are read, not by arithmetic. Read as dequantised f32 (what BLAS
//! needs) SmolLM2-135M is 540 MB per token; read in its stored Q4_1 blocks it is 85 MB.
//! [`BlockMatrix`] keeps a matrix's blocks where the GGUF file maps them (no copy) and computes
//! `W x` block by block in f32, so the result is the product with the dequantised weights up to
//! the order of additions — the model's numbers do not change, only how fast they are read.
//!
//! Kernels: F32, F16, Q4_0, Q4_1 and Q8_0 multiplied in their stored form, and Q5_0, Q5_1 and
//! the K-quants (Q2_K … Q6_K, Q8_K) decoded one block at a time into a buffer on the stack and
//! multiplied from there, with AVX2 + FMA + F16C where the CPU has them (any x86-64 CPU since
//! 2013) and portable code elsewhere; rows are split across rayon's threads. Other block types
//! are not read here: the caller keeps BLAS for those matrices.

use std::sync::Arc;

use half::f16;
use memmap2::Mmap;
use rayon::prelude::*;

use crate::gguf::{BlockDecoder, GgmlType, GgufFile, block_decoder};

/// Values per quantisation block of the 32-value types; the K-quants' super-blocks hold 256.
const BLOCK: usize = 32;
/// The most values one block of any type here holds.
const MAX_BLOCK: usize = 256;
/// Work below this many weights runs on the calling thread; splitting costs more than it saves.
const PARALLEL_MIN_WEIGHTS: usize = 1 << 18;
/// Output rows per parallel task.
const ROWS_PER_TASK: usize = 64;

/// The stored formats this module multiplies.
#[derive(Clone, Copy, Debug)]
enum Format {
    F32,
    F16,
    /// 32 values: f16 scale `d`, 16 bytes of 4-bit `q`; value `d * (q - 8)`.
    Q4_0,
    /// 32 values: f16 scale `d`, f16 minimum `m`, 16 bytes of 4-bit `q`; value `d * q + m`.
    Q4_1,
    /// 32 values: f16 scale `d`, 32 signed bytes `q`; value `d * q`.
    Q8_0,
    /// Decoded block by block into f32 (`values` per block), then multiplied: Q5_0, Q5_1 and
    /// the K-quants.
    Decoded {
        ggml_type: GgmlType,
        values: usize,
        decode: BlockDecoder,
    },
}

impl Format {
    fn of(ggml_type: GgmlType) -> Option<Self> {
        Some(match ggml_type {
            GgmlType::F32 => Self::F32,
            GgmlType::F16 => Self::F16,
            GgmlType::Q4_0 => Self::Q4_0,
            GgmlType::Q4_1 => Self::Q4_1,
            GgmlType::Q8_0 => Self::Q8_0,
            other => Self::Decoded {
                ggml_type: other,
                values: other.layout()?.0 as usize,
                decode: block_decoder(other)?,
            },
        })
    }

    /// Values per block: 1 (F32, F16), 32, or 256 (the K-quants).
    fn block_values(self) -> usize {
        self.ggml_type()
            .layout()
            .map_or(1, |(values, _)| values as usize)
    }

    fn ggml_type(self) -> GgmlType {
        match self {
            Self::F32 => GgmlType::F32,
            Self::F16 => GgmlType::F16,
            Self::Q4_0 => GgmlType::Q4_0,
            Self::Q4_1 => GgmlType::Q4_1,
            Self::Q8_0 => GgmlType::Q8_0,
            Self::Decoded { ggml_type, .. } => ggml_type,
        }
    }

    /// Bytes holding one row of `cols` values (a multiple of the block), from the GGUF
    /// reader's table of block sizes.
    fn row_bytes(self, cols: usize) -> usize {
        let (block, block_bytes) = self.ggml_type().layout().unwrap_or((1, 0));
        cols / block as usize * block_bytes as usize
    }

    fn is_blocked(self) -> bool {
        !matches!(self, Self::F32 | Self::F16)
    }
}

/// One stored tensor `[rows, cols]` (ggml's `[out, in]`) inside the mapped file.
#[derive(Debug)]
struct Part {
    format: Format,
    rows: usize,
    /// Byte offset of the first row in the map.
    start: usize,
}

/// A weight matrix `[out, in]` made of one or more GGUF tensors stacked along `out` (Q, K and V
/// as one matrix), multiplied by a vector without dequantising it.
pub struct BlockMatrix {
    map: Arc<Mmap>,
    parts: Vec<Part>,
    cols: usize,
    rows: usize,
}

impl std::fmt::Debug for BlockMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockMatrix")
            .field("parts", &self.parts)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

impl BlockMatrix {
    /// The tensors `names`, each `[rows_i, cols]`, stacked. `None` when one of them is stored in
    /// a format this module does not read (the caller then uses dequantised weights), or its
    /// shape is not `[_, cols]`.
    pub fn from_gguf(file: &GgufFile, names: &[&str], cols: usize) -> Option<Self> {
        if cols == 0 || !cols.is_multiple_of(BLOCK) {
            return None;
        }
        let mut parts = Vec::with_capacity(names.len());
        let mut rows = 0;
        for name in names {
            let info = file.tensor_info(name).ok()?;
            let format = Format::of(info.ggml_type)?;
            let [out, inp] = info.shape()[..] else {
                return None;
            };
            if inp != cols || !cols.is_multiple_of(format.block_values()) {
                return None;
            }
            // Checked against the file's size, with the length the format and shape give.
            let (start, _) = file.tensor_range(info).ok()?;
            parts.push(Part {
                format,
                rows: out,
                start,
            });
            rows += out;
        }
        Some(Self {
            map: file.shared_map(),
            parts,
            cols,
            rows,
        })
    }

    /// `W x`, a vector of `rows` values.
    ///
    /// # Panics
    /// When `x.len()` is not [`BlockMatrix::cols`] (a programming error, never input data).
    pub fn matvec(&self, x: &[f32]) -> Vec<f32> {
        assert_eq!(x.len(), self.cols, "input length");
        // Per block of x, the sum of its values: a block's offset or minimum multiplies it.
        let block_sums: Vec<f32> = x.chunks_exact(BLOCK).map(|b| b.iter().sum()).collect();
        let kernels = Kernels::detect();
        let mut out = vec![0.0f32; self.rows];
        let mut rest = &mut out[..];
        for part in &self.parts {
            let (mine, after) = rest.split_at_mut(part.rows);
            rest = after;
            let row_bytes = part.format.row_bytes(self.cols);
            let bytes = &self.map[part.start..part.start + part.rows * row_bytes];
            let run = |(chunk, rows): (&mut [f32], &[u8])| {
                for (y, row) in chunk.iter_mut().zip(rows.chunks_exact(row_bytes)) {
                    *y = kernels.row_dot(part.format, row, x, &block_sums);
                }
            };
            let per_task = ROWS_PER_TASK * row_bytes;
            if part.rows * self.cols >= PARALLEL_MIN_WEIGHTS {
                mine.par_chunks_mut(ROWS_PER_TASK)
                    .zip(bytes.par_chunks(per_task))
                    .for_each(run);
            } else {
                run((mine, bytes));
            }
        }
        out
    }
}

/// Which row kernels this CPU runs.
#[derive(Clone, Copy)]
struct Kernels {
    avx2: bool,
}

impl Kernels {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            Self {
                avx2: std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Self { avx2: false }
        }
    }

    /// One row (`row` holds exactly one row of `format`) times `x`.
    fn row_dot(self, format: Format, row: &[u8], x: &[f32], block_sums: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            return avx2::row_dot(format, row, x, block_sums);
        }
        portable_row_dot(format, row, x, block_sums)
    }
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// The reference kernels: plain Rust, any CPU.
fn portable_row_dot(format: Format, row: &[u8], x: &[f32], block_sums: &[f32]) -> f32 {
    let blocks = || row.chunks_exact(row.len() / block_sums.len().max(1));
    match format {
        Format::F32 => row
            .chunks_exact(4)
            .zip(x)
            .map(|(b, x)| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * x)
            .sum(),
        Format::F16 => row
            .chunks_exact(2)
            .zip(x)
            .map(|(b, x)| f16_at(b, 0) * x)
            .sum(),
        Format::Q4_0 | Format::Q4_1 => {
            let with_min = matches!(format, Format::Q4_1);
            let header = if with_min { 4 } else { 2 };
            blocks()
                .zip(x.chunks_exact(BLOCK))
                .zip(block_sums)
                .map(|((b, xs), &sum)| {
                    let d = f16_at(b, 0);
                    let min = if with_min { f16_at(b, 2) } else { -8.0 * d };
                    let qs = &b[header..header + 16];
                    let dot: f32 = qs
                        .iter()
                        .zip(&xs[..16])
                        .map(|(&q, x)| (q & 0x0f) as f32 * x)
                        .chain(qs.iter().zip(&xs[16..]).map(|(&q, x)| (q >> 4) as f32 * x))
                        .sum();
                    d * dot + min * sum
                })
                .sum()
        }
        Format::Q8_0 => blocks()
            .zip(x.chunks_exact(BLOCK))
            .map(|(b, xs)| {
                let dot: f32 = b[2..34]
                    .iter()
                    .zip(xs)
                    .map(|(&q, x)| q as i8 as f32 * x)
                    .sum();
                f16_at(b, 0) * dot
            })
            .sum(),
        Format::Decoded { values, decode, .. } => {
            let mut buffer = [0f32; MAX_BLOCK];
            let buffer = &mut buffer[..values];
            row.chunks_exact(row.len() / (x.len() / values))
                .zip(x.chunks_exact(values))
                .map(|(b, xs)| {
                    decode(b, buffer);
                    buffer.iter().zip(xs).map(|(w, x)| w * x).sum::<f32>()
                })
                .sum()
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code, unsafe_op_in_unsafe_fn)] // each function's contract is stated once below
mod avx2 {
    //! The same kernels with 256-bit vectors. Every function here is only called after
    //! [`super::Kernels::detect`] found AVX2, FMA and F16C; slices are read with bounds taken
    //! from their lengths, checked on entry.
    use std::arch::x86_64::*;

    use super::{BLOCK, Format};

    pub(super) fn row_dot(format: Format, row: &[u8], x: &[f32], block_sums: &[f32]) -> f32 {
        let blocks = x.len() / BLOCK;
        assert!(format.row_bytes(x.len()) == row.len());
        assert!(!format.is_blocked() || block_sums.len() == blocks);
        // SAFETY: the caller checked the CPU features; the asserts above bound every read:
        // `row` holds exactly one row of `format` for `x.len()` values, `x.len()` is a multiple
        // of 32 (checked when the matrix was built) and `block_sums` has one value per block.
        unsafe {
            match format {
                Format::F32 => dot_f32(row.as_ptr(), x),
                Format::F16 => dot_f16(row.as_ptr(), x),
                Format::Q4_0 => dot_q4(row.as_ptr(), 18, false, x, block_sums),
                Format::Q4_1 => dot_q4(row.as_ptr(), 20, true, x, block_sums),
                Format::Q8_0 => dot_q8_0(row.as_ptr(), x),
                Format::Decoded { values, decode, .. } => dot_decoded(row, values, decode, x),
            }
        }
    }

    /// Each block decoded into a buffer by `decode` (plain Rust, which the compiler
    /// vectorises), then multiplied with FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_decoded(
        row: &[u8],
        values: usize,
        decode: super::BlockDecoder,
        x: &[f32],
    ) -> f32 {
        let mut buffer = [0f32; super::MAX_BLOCK];
        let buffer = &mut buffer[..values];
        let block_bytes = row.len() / (x.len() / values);
        let mut acc = _mm256_setzero_ps();
        for (block, xs) in row.chunks_exact(block_bytes).zip(x.chunks_exact(values)) {
            decode(block, buffer);
            for i in (0..values).step_by(8) {
                acc = _mm256_fmadd_ps(
                    _mm256_loadu_ps(buffer.as_ptr().add(i)),
                    _mm256_loadu_ps(xs.as_ptr().add(i)),
                    acc,
                );
            }
        }
        sum8(acc)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn sum8(v: __m256) -> f32 {
        let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)))
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_f32(row: *const u8, x: &[f32]) -> f32 {
        let w = row.cast::<f32>();
        let mut acc = _mm256_setzero_ps();
        for i in (0..x.len()).step_by(8) {
            acc = _mm256_fmadd_ps(
                _mm256_loadu_ps(w.add(i)),
                _mm256_loadu_ps(x.as_ptr().add(i)),
                acc,
            );
        }
        sum8(acc)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_f16(row: *const u8, x: &[f32]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for i in (0..x.len()).step_by(8) {
            let w = _mm256_cvtph_ps(_mm_loadu_si128(row.add(2 * i).cast()));
            acc = _mm256_fmadd_ps(w, _mm256_loadu_ps(x.as_ptr().add(i)), acc);
        }
        sum8(acc)
    }

    /// A block's f16 scale and (for Q4_1) minimum, as f32.
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn scale_and_min(block: *const u8) -> (f32, f32) {
        let halves = _mm_cvtph_ps(_mm_cvtsi32_si128(block.cast::<i32>().read_unaligned()));
        (
            _mm_cvtss_f32(halves),
            _mm_cvtss_f32(_mm_movehdup_ps(halves)),
        )
    }

    /// Eight unsigned bytes as eight f32.
    #[target_feature(enable = "avx2")]
    unsafe fn u8x8_to_f32(bytes: __m128i) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_q4(
        row: *const u8,
        block_bytes: usize,
        with_min: bool,
        x: &[f32],
        block_sums: &[f32],
    ) -> f32 {
        let low_nibbles = _mm_set1_epi8(0x0f);
        let header = if with_min { 4 } else { 2 };
        let mut acc = _mm256_setzero_ps();
        let mut offsets = 0.0f32;
        for (b, &sum) in block_sums.iter().enumerate() {
            let block = row.add(b * block_bytes);
            let (d, min) = scale_and_min(block);
            let min = if with_min { min } else { -8.0 * d };
            let qs = _mm_loadu_si128(block.add(header).cast());
            // Low nibbles are values 0..16 of the block, high nibbles 16..32.
            let lo = _mm_and_si128(qs, low_nibbles);
            let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), low_nibbles);
            let xs = x.as_ptr().add(b * BLOCK);
            let mut t = _mm256_mul_ps(u8x8_to_f32(lo), _mm256_loadu_ps(xs));
            t = _mm256_fmadd_ps(
                u8x8_to_f32(_mm_srli_si128(lo, 8)),
                _mm256_loadu_ps(xs.add(8)),
                t,
            );
            t = _mm256_fmadd_ps(u8x8_to_f32(hi), _mm256_loadu_ps(xs.add(16)), t);
            t = _mm256_fmadd_ps(
                u8x8_to_f32(_mm_srli_si128(hi, 8)),
                _mm256_loadu_ps(xs.add(24)),
                t,
            );
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), t, acc);
            offsets += min * sum;
        }
        sum8(acc) + offsets
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_q8_0(row: *const u8, x: &[f32]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for b in 0..x.len() / BLOCK {
            let block = row.add(b * 34);
            let (d, _) = scale_and_min(block);
            let xs = x.as_ptr().add(b * BLOCK);
            let mut t = _mm256_setzero_ps();
            for i in 0..4 {
                let q = _mm_loadl_epi64(block.add(2 + 8 * i).cast());
                let w = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                t = _mm256_fmadd_ps(w, _mm256_loadu_ps(xs.add(8 * i)), t);
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), t, acc);
        }
        sum8(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{dequantize, write};

    use crate::test_values as values;

    /// Random bytes of one format: scales kept small and finite so sums are comparable.
    fn random_blocks(format: Format, rows: usize, cols: usize, seed: u32) -> Vec<u8> {
        let raw = values(rows * format.row_bytes(cols), seed);
        let mut bytes: Vec<u8> = raw.iter().map(|v| ((v + 1.0) * 127.0) as u8).collect();
        let half = |v: f32| f16::from_f32(v).to_le_bytes();
        match format {
            Format::F16 => {
                return values(rows * cols, seed)
                    .iter()
                    .flat_map(|&v| half(v))
                    .collect();
            }
            Format::F32 => {
                return values(rows * cols, seed)
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
            }
            _ => {}
        }
        // Where each format keeps its f16 scales (Q8_K: one f32 at 0).
        let (_, block_bytes) = format.ggml_type().layout().unwrap();
        let scales: &[usize] = match format.ggml_type() {
            GgmlType::Q4_0 | GgmlType::Q8_0 | GgmlType::Q5_0 => &[0],
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
            GgmlType::Q2_K => &[80, 82],
            GgmlType::Q3_K => &[108],
            GgmlType::Q6_K => &[208],
            GgmlType::Q8_K => &[],
            other => panic!("no test blocks for {other}"),
        };
        let scale_values = values(bytes.len() / block_bytes as usize * 2, seed + 1);
        for (i, block) in bytes.chunks_exact_mut(block_bytes as usize).enumerate() {
            for (k, &at) in scales.iter().enumerate() {
                block[at..at + 2].copy_from_slice(&half(scale_values[2 * i + k] * 0.05));
            }
            if format.ggml_type() == GgmlType::Q8_K {
                block[..4].copy_from_slice(&(scale_values[2 * i] * 0.01).to_le_bytes());
            }
        }
        bytes
    }

    /// `W x` with `W` dequantised by the GGUF reader, in f64.
    fn reference(format: Format, bytes: &[u8], rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
        let w = dequantize(format.ggml_type(), bytes, rows * cols).unwrap();
        w.chunks_exact(cols)
            .map(|row| {
                row.iter()
                    .zip(x)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>() as f32
            })
            .collect()
    }

    /// Every format this module reads.
    fn formats() -> Vec<Format> {
        [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q8_0,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q2_K,
            GgmlType::Q3_K,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
            GgmlType::Q8_K,
        ]
        .into_iter()
        .map(|t| Format::of(t).unwrap())
        .collect()
    }

    #[test]
    fn every_kernel_matches_the_dequantised_product() {
        let rows = 70;
        for format in formats() {
            // Three blocks a row (the K-quants' super-blocks hold 256 values).
            let cols = 3 * format.block_values().max(BLOCK);
            let x = values(cols, 7);
            let sums: Vec<f32> = x.chunks_exact(BLOCK).map(|b| b.iter().sum()).collect();
            let bytes = random_blocks(format, rows, cols, 3);
            let want = reference(format, &bytes, rows, cols, &x);
            let row_bytes = format.row_bytes(cols);
            for (kernels, name) in [
                (Kernels { avx2: false }, "portable"),
                (Kernels::detect(), "detected"),
            ] {
                for (r, want) in want.iter().enumerate() {
                    let row = &bytes[r * row_bytes..(r + 1) * row_bytes];
                    let got = kernels.row_dot(format, row, &x, &sums);
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{format:?} {name} row {r}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn stacked_tensors_from_a_file_multiply_like_one_matrix() {
        let cols = 64;
        let a = random_blocks(Format::Q4_1, 300, cols, 11);
        let b = random_blocks(Format::Q8_0, 5000, cols, 12);
        let c = random_blocks(Format::F32, 2, cols, 13);
        let mut file = write::Builder::default();
        file.tensor_raw("a", &[cols as u64, 300], GgmlType::Q4_1, &a);
        file.tensor_raw("b", &[cols as u64, 5000], GgmlType::Q8_0, &b);
        file.tensor_raw("c", &[cols as u64, 2], GgmlType::F32, &c);
        file.tensor_raw("bf", &[cols as u64, 2], GgmlType::BF16, &[0; 2 * 128]);
        let k = random_blocks(Format::of(GgmlType::Q4_K).unwrap(), 3, 256, 14);
        file.tensor_raw("k", &[256, 3], GgmlType::Q4_K, &k);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, file.finish()).unwrap();
        let gguf = GgufFile::open(&path).unwrap();

        let matrix = BlockMatrix::from_gguf(&gguf, &["a", "b", "c"], cols).unwrap();
        assert_eq!((matrix.rows, matrix.cols), (5302, cols));
        let x = values(cols, 5);
        let got = matrix.matvec(&x);
        let mut want = reference(Format::Q4_1, &a, 300, cols, &x);
        want.extend(reference(Format::Q8_0, &b, 5000, cols, &x));
        want.extend(reference(Format::F32, &c, 2, cols, &x));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "row {i}: {g} vs {w}"
            );
        }
        // Formats it does not read, wrong widths and unknown names leave the caller on BLAS.
        assert!(BlockMatrix::from_gguf(&gguf, &["a", "bf"], cols).is_none());
        let k_quant = BlockMatrix::from_gguf(&gguf, &["k"], 256).unwrap();
        let x = values(256, 6);
        let want = reference(Format::of(GgmlType::Q4_K).unwrap(), &k, 3, 256, &x);
        for (g, w) in k_quant.matvec(&x).iter().zip(&want) {
            assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{g} vs {w}");
        }
        assert!(BlockMatrix::from_gguf(&gguf, &["a"], 32).is_none());
        assert!(BlockMatrix::from_gguf(&gguf, &["missing"], cols).is_none());
    }
}
