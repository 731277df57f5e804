//! Kernels for the models' own CPU paths: matrix products through the `gemm` crate on rayon's
//! pool, and the row-wise steps around them fused into single passes (bias + residual +
//! LayerNorm, bias + GELU, softmax), written in fixed-width lanes so the compiler vectorises
//! them; on x86-64 an AVX2+FMA copy of each is chosen at run time.
//!
//! One thread pool does everything (rayon's), so no two pools spin against each other for the
//! same cores.

use rayon::prelude::*;

/// Lanes the row kernels work in: two AVX2 registers, one AVX-512 register.
const LANES: usize = 16;

/// A matrix inside a slice: `rows × cols`, element `(r, c)` at `r * row_stride + c * col_stride`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A dense row-major `rows × cols` matrix at the start of `data`.
    pub(crate) fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols)
    }

    /// Row-major with `row_stride` elements between rows (a block of columns of a wider matrix).
    pub(crate) fn strided(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        let view = Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        };
        assert!(view.fits(), "matrix view runs past its slice");
        view
    }

    /// The same elements read as the transpose.
    pub(crate) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// Whether a product may use every thread of rayon's pool (large products) or must stay on the
/// calling thread (small ones inside tasks that are already parallel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Threads {
    Pool,
    Caller,
}

/// `out = a · b`, `out` row-major with `out_row_stride` (so it may be a block of columns of a
/// wider matrix). Panics if the shapes disagree or a view runs past its slice.
#[allow(unsafe_code)] // `gemm` takes raw pointers; the views are bounds-checked
pub(crate) fn matmul(
    out: &mut [f32],
    out_row_stride: usize,
    a: MatRef,
    b: MatRef,
    threads: Threads,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions differ");
    assert!(
        m == 0 || n == 0 || (m - 1) * out_row_stride + n <= out.len(),
        "product runs past its output"
    );
    if m == 0 || n == 0 {
        return;
    }
    let parallelism = match threads {
        Threads::Pool => gemm::Parallelism::Rayon(rayon::current_num_threads()),
        Threads::Caller => gemm::Parallelism::None,
    };
    // SAFETY: every element each view addresses lies inside its slice (checked by `MatRef`
    // and above), the output does not alias the inputs (it is borrowed mutably), and `gemm`
    // reads and writes nothing else.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            out_row_stride as isize,
            false,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Define `pub(crate) fn $name` running `$body` (an `#[inline(always)]` function of the same
/// arguments) with AVX2+FMA where the CPU has them, else as portable code.
macro_rules! vectorised {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) = $body:ident) => {
        $(#[$doc])*
        #[allow(unsafe_code)] // the AVX2 copy is called only where the CPU has AVX2
        pub(crate) fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn wide($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if has_avx2() {
                    // SAFETY: the CPU has AVX2 and FMA (checked at run time).
                    return unsafe { wide($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    static DETECTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DETECTED.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    })
}

/// Rows per rayon task for row-wise passes: enough work to pay for the task.
fn rows_per_task(width: usize) -> usize {
    (16_384 / width.max(1)).max(1)
}

/// `x = LayerNorm(x + y + bias) · gamma + beta`, row by row (`x` and `y` are `rows × width`):
/// a residual connection, the bias of the product that made `y`, and the norm in one pass.
pub(crate) fn residual_layer_norm(
    x: &mut [f32],
    y: &[f32],
    bias: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    let width = gamma.len();
    assert!(bias.len() == width && beta.len() == width && x.len() == y.len());
    assert!(x.len().is_multiple_of(width));
    let chunk = rows_per_task(width) * width;
    x.par_chunks_mut(chunk)
        .zip(y.par_chunks(chunk))
        .for_each(|(x, y)| residual_layer_norm_rows(x, y, bias, gamma, beta, eps));
}

vectorised! {
    /// [`residual_layer_norm`] on one thread.
    fn residual_layer_norm_rows(x: &mut [f32], y: &[f32], bias: &[f32], gamma: &[f32], beta: &[f32], eps: f32) = residual_layer_norm_body
}

#[inline(always)]
fn residual_layer_norm_body(
    x: &mut [f32],
    y: &[f32],
    bias: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    let width = gamma.len();
    for (row, y) in x.chunks_exact_mut(width).zip(y.chunks_exact(width)) {
        for ((v, y), b) in row.iter_mut().zip(y).zip(bias) {
            *v += y + b;
        }
        layer_norm_row(row, gamma, beta, eps);
    }
}

/// `x = LayerNorm(x) · gamma + beta` for each row of `x`.
pub(crate) fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let width = gamma.len();
    assert!(beta.len() == width && x.len().is_multiple_of(width));
    x.par_chunks_mut(rows_per_task(width) * width)
        .for_each(|rows| layer_norm_rows(rows, gamma, beta, eps));
}

vectorised! {
    /// [`layer_norm`] on one thread.
    fn layer_norm_rows(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) = layer_norm_body
}

#[inline(always)]
fn layer_norm_body(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(gamma.len()) {
        layer_norm_row(row, gamma, beta, eps);
    }
}

vectorised! {
    /// `out = x / rms(x) · weight` for each row of `x` (RMSNorm), on one thread.
    fn rms_norm_rows(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) = rms_norm_body
}

#[inline(always)]
fn rms_norm_body(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let width = weight.len();
    assert_eq!(out.len(), x.len());
    for (out, x) in out.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
        let inv = 1.0 / (lane_sum(x, |v| v * v) / width as f32 + eps).sqrt();
        for ((o, v), w) in out.iter_mut().zip(x).zip(weight) {
            *o = v * inv * w;
        }
    }
}

vectorised! {
    /// `out = SiLU(gate) · up` for each row of `gate_up` (`[gate | up]`, each `width` wide:
    /// a SwiGLU feed-forward's two halves), on one thread.
    fn silu_mul_rows(out: &mut [f32], gate_up: &[f32], width: usize) = silu_mul_body
}

#[inline(always)]
fn silu_mul_body(out: &mut [f32], gate_up: &[f32], width: usize) {
    assert_eq!(gate_up.len(), 2 * out.len());
    for (out, row) in out
        .chunks_exact_mut(width)
        .zip(gate_up.chunks_exact(2 * width))
    {
        let (gate, up) = row.split_at(width);
        for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
            *o = g / (1.0 + exp(-g)) * u;
        }
    }
}

/// Where one attention head's keys and values sit in a position-major cache: position `j`'s
/// vector starts at `j * stride + offset` and is `width` long.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeadLayout {
    pub stride: usize,
    pub offset: usize,
    pub width: usize,
}

vectorised! {
    /// One query's attention over the first `scores.len()` cached positions:
    /// `out = softmax(scale · query · keysᵀ) · values`. `scores` is scratch space.
    fn attend(out: &mut [f32], query: &[f32], keys: &[f32], values: &[f32], layout: HeadLayout, scale: f32, scores: &mut [f32]) = attend_body
}

#[inline(always)]
fn attend_body(
    out: &mut [f32],
    query: &[f32],
    keys: &[f32],
    values: &[f32],
    layout: HeadLayout,
    scale: f32,
    scores: &mut [f32],
) {
    let HeadLayout {
        stride,
        offset,
        width,
    } = layout;
    for (j, score) in scores.iter_mut().enumerate() {
        let key = &keys[j * stride + offset..][..width];
        let mut lanes = [0f32; LANES];
        for (chunk_q, chunk_k) in query.chunks(LANES).zip(key.chunks(LANES)) {
            for ((lane, a), b) in lanes.iter_mut().zip(chunk_q).zip(chunk_k) {
                *lane += a * b;
            }
        }
        *score = lanes.iter().sum::<f32>() * scale;
    }
    softmax_body(scores, scores.len());
    out.fill(0.0);
    for (j, p) in scores.iter().enumerate() {
        let value = &values[j * stride + offset..][..width];
        for (o, v) in out.iter_mut().zip(value) {
            *o += p * v;
        }
    }
}

/// Mean and variance in two passes over the row (as PyTorch does; one pass loses digits when
/// the mean is large), then scale and shift.
#[inline(always)]
fn layer_norm_row(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = lane_sum(row, |v| v) / n;
    let variance = lane_sum(row, |v| (v - mean) * (v - mean)) / n;
    let inv = 1.0 / (variance + eps).sqrt();
    for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

/// Σ f(v) over `values`, in [`LANES`] independent sums so the additions vectorise.
#[inline(always)]
fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    lanes.iter().sum::<f32>() + tail
}

/// The largest of `values` (at least one), in [`LANES`] independent maxima so it vectorises.
#[inline(always)]
fn lane_max(values: &[f32]) -> f32 {
    let mut lanes = [values[0]; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = if v > *lane { v } else { *lane };
        }
    }
    let tail = chunks.remainder().iter().copied();
    lanes.into_iter().chain(tail).fold(values[0], f32::max)
}

/// Run a row kernel taking a bias over all rows of `x`, split over the pool if `threads` allows.
fn with_bias(x: &mut [f32], bias: &[f32], threads: Threads, rows: fn(&mut [f32], &[f32])) {
    let width = bias.len();
    assert!(x.len().is_multiple_of(width));
    match threads {
        Threads::Pool => x
            .par_chunks_mut(rows_per_task(width) * width)
            .for_each(|chunk| rows(chunk, bias)),
        Threads::Caller => rows(x, bias),
    }
}

/// `x = GELU(x + bias)` for each row of `x` (the exact, erf-based GELU that BERT uses).
pub(crate) fn bias_gelu(x: &mut [f32], bias: &[f32]) {
    with_bias(x, bias, Threads::Pool, bias_gelu_rows);
}

vectorised! {
    /// [`bias_gelu`] on one thread.
    fn bias_gelu_rows(x: &mut [f32], bias: &[f32]) = bias_gelu_body
}

#[inline(always)]
fn bias_gelu_body(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            let u = *v + b;
            *v = 0.5 * u * (1.0 + erf(u * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

/// `x = min(max(x + bias, 0), 6)` for each row of `x` (ReLU6 after a folded BatchNorm).
pub(crate) fn bias_relu6(x: &mut [f32], bias: &[f32], threads: Threads) {
    with_bias(x, bias, threads, bias_relu6_rows);
}

vectorised! {
    /// [`bias_relu6`] on one thread.
    fn bias_relu6_rows(x: &mut [f32], bias: &[f32]) = bias_relu6_body
}

#[inline(always)]
fn bias_relu6_body(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v = relu6(*v + b);
        }
    }
}

#[inline(always)]
fn relu6(v: f32) -> f32 {
    let v = if v > 0.0 { v } else { 0.0 };
    if v < 6.0 { v } else { 6.0 }
}

vectorised! {
    /// `x = x + bias (+ residual)` for each row of `x` (a projection's bias and, where its
    /// block has one, the skip connection), on one thread.
    fn bias_residual(x: &mut [f32], bias: &[f32], residual: Option<&[f32]>) = bias_residual_body
}

#[inline(always)]
fn bias_residual_body(x: &mut [f32], bias: &[f32], residual: Option<&[f32]>) {
    let width = bias.len();
    match residual {
        Some(residual) => {
            assert_eq!(x.len(), residual.len());
            for (row, skip) in x.chunks_exact_mut(width).zip(residual.chunks_exact(width)) {
                for ((v, b), r) in row.iter_mut().zip(bias).zip(skip) {
                    *v += b + r;
                }
            }
        }
        None => {
            for row in x.chunks_exact_mut(width) {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
        }
    }
}

/// The shape of a depthwise convolution over a channels-last image (`height × width ×
/// channels`, row-major), with TensorFlow's "same" zero padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Depthwise {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub kernel: usize,
    pub stride: usize,
}

impl Depthwise {
    /// Output height and width: the input's divided by the stride, rounded up.
    pub(crate) fn output(&self) -> (usize, usize) {
        (
            self.height.div_ceil(self.stride),
            self.width.div_ceil(self.stride),
        )
    }

    /// Padding before the first row and column ("same": the odd one goes after).
    fn pad_before(&self) -> (usize, usize) {
        let (out_h, out_w) = self.output();
        let total = |out: usize, size: usize| {
            ((out - 1) * self.stride + self.kernel).saturating_sub(size) / 2
        };
        (total(out_h, self.height), total(out_w, self.width))
    }
}

/// `out = ReLU6(depthwise(input, weight) + bias)`: `weight` is `kernel² × channels` (tap-major),
/// `out` the output image channels-last. Rows of the output are split over rayon's pool when
/// `threads` allows.
pub(crate) fn depthwise_bias_relu6(
    out: &mut [f32],
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    shape: Depthwise,
    threads: Threads,
) {
    let (out_h, out_w) = shape.output();
    let c = shape.channels;
    assert_eq!(input.len(), shape.height * shape.width * c);
    assert_eq!(out.len(), out_h * out_w * c);
    assert_eq!(weight.len(), shape.kernel * shape.kernel * c);
    assert_eq!(bias.len(), c);
    let row = out_w * c;
    match threads {
        Threads::Pool => out
            .par_chunks_mut(row)
            .enumerate()
            .for_each(|(y, out)| depthwise_row(out, y, input, weight, bias, shape)),
        Threads::Caller => {
            for (y, out) in out.chunks_mut(row).enumerate() {
                depthwise_row(out, y, input, weight, bias, shape);
            }
        }
    }
}

vectorised! {
    /// One output row of [`depthwise_bias_relu6`].
    fn depthwise_row(out: &mut [f32], y: usize, input: &[f32], weight: &[f32], bias: &[f32], shape: Depthwise) = depthwise_row_body
}

#[inline(always)]
fn depthwise_row_body(
    out: &mut [f32],
    y: usize,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    shape: Depthwise,
) {
    let c = shape.channels;
    let (pad_top, pad_left) = shape.pad_before();
    for (x, acc) in out.chunks_exact_mut(c).enumerate() {
        acc.copy_from_slice(bias);
        for ky in 0..shape.kernel {
            // Rows and columns in the padding contribute zeros: skip them.
            let Some(iy) = (y * shape.stride + ky).checked_sub(pad_top) else {
                continue;
            };
            if iy >= shape.height {
                continue;
            }
            for kx in 0..shape.kernel {
                let Some(ix) = (x * shape.stride + kx).checked_sub(pad_left) else {
                    continue;
                };
                if ix >= shape.width {
                    continue;
                }
                let pixel = &input[(iy * shape.width + ix) * c..][..c];
                let tap = &weight[(ky * shape.kernel + kx) * c..][..c];
                for ((a, p), w) in acc.iter_mut().zip(pixel).zip(tap) {
                    *a += p * w;
                }
            }
        }
        for a in acc.iter_mut() {
            *a = relu6(*a);
        }
    }
}

vectorised! {
    /// Softmax of each `width`-wide row of `x`, in place.
    fn softmax_rows(x: &mut [f32], width: usize) = softmax_body
}

#[inline(always)]
fn softmax_body(x: &mut [f32], width: usize) {
    for row in x.chunks_exact_mut(width) {
        let max = lane_max(row);
        for v in row.iter_mut() {
            *v = exp(*v - max);
        }
        let inv = 1.0 / lane_sum(row, |v| v);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

/// e^x in f32, within 2 ulp over the range where it is finite and normal; branch-free so it
/// vectorises. `x` is cut to [-87, 88].
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // x = n·ln2 + r with |r| ≤ ln2/2; ln2 split in two so n·ln2 is exact enough.
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    // Cephes' expf polynomial for e^r on that interval.
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let e_r = p * r * r + r + 1.0;
    // 2ⁿ from its exponent bits. Adding 2²³ puts the integer n + 127 (1 to 254 here) in the
    // low mantissa bits; shifting by 23 moves them into the exponent and drops the rest. (A
    // float-to-int cast would be exact too, but Rust's saturating cast does not vectorise.)
    let biased = (n + (8_388_608.0 + 127.0)).to_bits();
    e_r * f32::from_bits(biased << 23)
}

/// erf(x) in f32 within 4e-7, branch-free so it vectorises: its Taylor series below 0.5 (where
/// the approximation below loses digits to cancellation), else Abramowitz and Stegun 7.1.26
/// (the approximation PyTorch's own vectorised erf uses).
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let mut p = 1.061_405_4_f32;
    p = p * t - 1.453_152_1;
    p = p * t + 1.421_413_8;
    p = p * t - 0.284_496_74;
    p = p * t + 0.254_829_6;
    let far = 1.0 - p * t * exp(-a * a);
    // 2/√π · (a - a³/3 + a⁵/10 - a⁷/42 + a⁹/216 - a¹¹/1320): the next term is below 2e-8.
    let a2 = a * a;
    let mut s = -1.0_f32 / 1320.0;
    s = s * a2 + 1.0 / 216.0;
    s = s * a2 - 1.0 / 42.0;
    s = s * a2 + 0.1;
    s = s * a2 - 1.0 / 3.0;
    s = s * a2 + 1.0;
    let near = std::f32::consts::FRAC_2_SQRT_PI * a * s;
    let y = if a < 0.5 { near } else { far };
    y.copysign(x)
}

#[cfg(test)]
mod tests;
