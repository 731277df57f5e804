//! Tensor sizes and dequantisation of the block formats Hearth reads.

use half::{bf16, f16};

use super::{GgmlType, TensorInfo};

/// Bytes a tensor occupies, or why it cannot be read.
pub(super) fn tensor_byte_len(info: &TensorInfo) -> std::result::Result<u64, String> {
    let (block, block_bytes) = info
        .ggml_type
        .layout()
        .ok_or_else(|| format!("type {} is not supported", info.ggml_type))?;
    let elements = info
        .dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n > 0 && usize::try_from(n).is_ok())
        .ok_or_else(|| format!("dimensions {:?} are empty or too large", info.dims))?;
    if !info.dims[0].is_multiple_of(block) {
        return Err(format!(
            "row length {} is not a multiple of the {}-element {} block",
            info.dims[0], block, info.ggml_type
        ));
    }
    (elements / block)
        .checked_mul(block_bytes)
        .ok_or_else(|| format!("dimensions {:?} are too large", info.dims))
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Dequantise `elements` values of type `ggml_type` from `bytes` (whose length the caller has
/// checked against [`tensor_byte_len`]).
pub fn dequantize(
    ggml_type: GgmlType,
    bytes: &[u8],
    elements: usize,
) -> std::result::Result<Vec<f32>, String> {
    let (block, block_bytes) = ggml_type
        .layout()
        .ok_or_else(|| format!("type {ggml_type} is not supported"))?;
    let (block, block_bytes) = (block as usize, block_bytes as usize);
    if !elements.is_multiple_of(block) || bytes.len() != elements / block * block_bytes {
        return Err(format!(
            "{} bytes do not hold {elements} values of type {ggml_type}",
            bytes.len()
        ));
    }
    let mut out = Vec::with_capacity(elements);
    match ggml_type {
        GgmlType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        GgmlType::F16 => out.extend(bytes.chunks_exact(2).map(|b| f16_at(b, 0))),
        GgmlType::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        GgmlType::Q4_0 => {
            for b in bytes.chunks_exact(block_bytes) {
                let d = f16_at(b, 0);
                let qs = &b[2..18];
                out.extend(qs.iter().map(|&q| ((q & 0x0f) as i32 - 8) as f32 * d));
                out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
            }
        }
        GgmlType::Q4_1 => {
            for b in bytes.chunks_exact(block_bytes) {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let qs = &b[4..20];
                out.extend(qs.iter().map(|&q| (q & 0x0f) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
        }
        GgmlType::Q8_0 => {
            for b in bytes.chunks_exact(block_bytes) {
                let d = f16_at(b, 0);
                out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
            }
        }
        _ => {
            let decode = block_decoder(ggml_type)
                .ok_or_else(|| format!("type {ggml_type} is not supported"))?;
            out.resize(elements, 0.0);
            for (b, values) in bytes
                .chunks_exact(block_bytes)
                .zip(out.chunks_exact_mut(block))
            {
                decode(b, values);
            }
        }
    }
    Ok(out)
}

/// Writes one stored block's values into a slice of the block's length.
pub(crate) type BlockDecoder = fn(&[u8], &mut [f32]);

/// How to decode one block of `ggml_type`, for the types read block by block: Q5_0, Q5_1 and
/// the K-quants. (The caller gives a block of the type's size and a slice of its length.)
pub(crate) fn block_decoder(ggml_type: GgmlType) -> Option<BlockDecoder> {
    Some(match ggml_type {
        GgmlType::Q5_0 => q5_0,
        GgmlType::Q5_1 => q5_1,
        GgmlType::Q2_K => q2_k,
        GgmlType::Q3_K => q3_k,
        GgmlType::Q4_K => q4_k,
        GgmlType::Q5_K => q5_k,
        GgmlType::Q6_K => q6_k,
        GgmlType::Q8_K => q8_k,
        _ => return None,
    })
}

/// Q5_0 and Q5_1, 22 or 24 bytes: `d` (and minimum `m`), 32 fifth bits, 16 bytes of low 4 bits.
/// Value: `d * (q - 16)`, or `d * q + m`.
fn q5(b: &[u8], out: &mut [f32], with_min: bool) {
    let header = if with_min { 4 } else { 2 };
    let d = f16_at(b, 0);
    let m = if with_min { f16_at(b, 2) } else { 0.0 };
    let qh = u32::from_le_bytes([b[header], b[header + 1], b[header + 2], b[header + 3]]);
    let qs = &b[header + 4..header + 20];
    let value = |q: u32| {
        if with_min {
            q as f32 * d + m
        } else {
            (q as i32 - 16) as f32 * d
        }
    };
    for j in 0..16 {
        out[j] = value(qs[j] as u32 & 0x0f | ((qh >> j) & 1) << 4);
        out[j + 16] = value((qs[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4);
    }
}

fn q5_0(b: &[u8], out: &mut [f32]) {
    q5(b, out, false);
}

fn q5_1(b: &[u8], out: &mut [f32]) {
    q5(b, out, true);
}

// The K-quants (llama.cpp's `ggml-quants.c`): 256 values in a super-block, an f16 scale `d`
// (and minimum `dmin`) for the super-block and a small integer scale (and minimum) for each
// sub-block of 16 or 32 values. The layouts below are the stored bytes, in order.

/// Sub-block `j` (0..8) of the 12 bytes of 6-bit scales and minimums of Q4_K and Q5_K.
fn scale_min_k4(j: usize, scales: &[u8]) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        (
            (scales[j + 4] & 0x0f) | ((scales[j - 4] >> 6) << 4),
            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
        )
    }
}

/// Q2_K, 84 bytes: 16 scale bytes (low nibble scale, high nibble minimum, per 16 values), 64
/// bytes of 2-bit values, `d`, `dmin`. Value: `d * scale * q - dmin * min`.
fn q2_k(b: &[u8], out: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    let mut parts = out.chunks_exact_mut(16).zip(scales);
    for half in qs.chunks_exact(32) {
        for shift in [0, 2, 4, 6] {
            for (src, (dst, &sc)) in half.chunks_exact(16).zip(parts.by_ref()) {
                let (dl, ml) = (d * (sc & 0x0f) as f32, dmin * (sc >> 4) as f32);
                for (y, &q) in dst.iter_mut().zip(src) {
                    *y = dl * ((q >> shift) & 3) as f32 - ml;
                }
            }
        }
    }
}

/// Q3_K, 110 bytes: 32 bytes of high bits, 64 bytes of 2-bit low values, 12 bytes of 6-bit
/// scales (offset by 32), `d`. Value: `d * (scale - 32) * (low - (high ? 0 : 4))`.
fn q3_k(b: &[u8], out: &mut [f32]) {
    let (hmask, qs, packed) = (&b[0..32], &b[32..96], &b[96..108]);
    let d = f16_at(b, 108);
    // The 16 scales: low 4 bits from the first 8 bytes, high 2 bits from the last 4.
    let scales: [i32; 16] = std::array::from_fn(|i| {
        let low = if i < 8 {
            packed[i] & 0x0f
        } else {
            packed[i - 8] >> 4
        };
        let high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
        (low | high << 4) as i32 - 32
    });
    let mut parts = out.chunks_exact_mut(16).zip(scales);
    let mut bit = 1u8;
    for half in qs.chunks_exact(32) {
        for shift in [0, 2, 4, 6] {
            for ((src, high), (dst, scale)) in half
                .chunks_exact(16)
                .zip(hmask.chunks_exact(16))
                .zip(parts.by_ref())
            {
                let dl = d * scale as f32;
                for ((y, &q), &h) in dst.iter_mut().zip(src).zip(high) {
                    let low = ((q >> shift) & 3) as i32;
                    *y = dl * (low - if h & bit != 0 { 0 } else { 4 }) as f32;
                }
            }
            bit <<= 1;
        }
    }
}

/// Q4_K, 144 bytes: `d`, `dmin`, 12 bytes of 6-bit scales and minimums (8 sub-blocks of 32), 128
/// bytes of 4-bit values. Value: `d * scale * q - dmin * min`.
fn q4_k(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qs) = (&b[4..16], &b[16..144]);
    for (j, (src, dst)) in qs
        .chunks_exact(32)
        .zip(out.chunks_exact_mut(64))
        .enumerate()
    {
        let (s1, m1) = scale_min_k4(2 * j, scales);
        let (s2, m2) = scale_min_k4(2 * j + 1, scales);
        let (d1, m1) = (d * s1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * s2 as f32, dmin * m2 as f32);
        let (low, high) = dst.split_at_mut(32);
        for ((l, h), &q) in low.iter_mut().zip(high).zip(src) {
            *l = d1 * (q & 0x0f) as f32 - m1;
            *h = d2 * (q >> 4) as f32 - m2;
        }
    }
}

/// Q5_K, 176 bytes: Q4_K's header, 32 bytes of fifth bits, 128 bytes of low 4 bits.
fn q5_k(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for (j, (src, dst)) in qs
        .chunks_exact(32)
        .zip(out.chunks_exact_mut(64))
        .enumerate()
    {
        let (s1, m1) = scale_min_k4(2 * j, scales);
        let (s2, m2) = scale_min_k4(2 * j + 1, scales);
        let (d1, m1) = (d * s1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * s2 as f32, dmin * m2 as f32);
        let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
        let (low, high) = dst.split_at_mut(32);
        for (((l, h), &q), &bits) in low.iter_mut().zip(high).zip(src).zip(qh) {
            *l = d1 * ((q & 0x0f) + if bits & u1 != 0 { 16 } else { 0 }) as f32 - m1;
            *h = d2 * ((q >> 4) + if bits & u2 != 0 { 16 } else { 0 }) as f32 - m2;
        }
    }
}

/// Q6_K, 210 bytes: 128 bytes of low 4 bits, 64 bytes of high 2 bits, 16 signed scales (per 16
/// values), `d`. Value: `d * scale * (q - 32)`.
fn q6_k(b: &[u8], out: &mut [f32]) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    for (n, values) in out.chunks_exact_mut(128).enumerate() {
        let (ql, qh) = (&ql[64 * n..64 * n + 64], &qh[32 * n..32 * n + 32]);
        let sc = &scales[8 * n..8 * n + 8];
        for l in 0..32 {
            let is = l / 16;
            let q = |low: u8, shift: u32| ((low | ((qh[l] >> shift) & 3) << 4) as i32 - 32) as f32;
            values[l] = d * sc[is] as i8 as f32 * q(ql[l] & 0x0f, 0);
            values[l + 32] = d * sc[is + 2] as i8 as f32 * q(ql[l + 32] & 0x0f, 2);
            values[l + 64] = d * sc[is + 4] as i8 as f32 * q(ql[l] >> 4, 4);
            values[l + 96] = d * sc[is + 6] as i8 as f32 * q(ql[l + 32] >> 4, 6);
        }
    }
}

/// Q8_K, 292 bytes: an f32 scale `d`, 256 signed bytes, 16 sums of 16 (for products; unused
/// here). Value: `d * q`.
fn q8_k(b: &[u8], out: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (y, &q) in out.iter_mut().zip(&b[4..260]) {
        *y = d * q as i8 as f32;
    }
}
