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
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let with_min = ggml_type == GgmlType::Q5_1;
            let header = if with_min { 4 } else { 2 };
            for b in bytes.chunks_exact(block_bytes) {
                let d = f16_at(b, 0);
                let m = if with_min { f16_at(b, 2) } else { 0.0 };
                let qh =
                    u32::from_le_bytes([b[header], b[header + 1], b[header + 2], b[header + 3]]);
                let qs = &b[header + 4..header + 20];
                let value = |q: u32| {
                    if with_min {
                        q as f32 * d + m
                    } else {
                        (q as i32 - 16) as f32 * d
                    }
                };
                out.extend((0..16).map(|j| value(qs[j] as u32 & 0x0f | ((qh >> j) & 1) << 4)));
                out.extend(
                    (0..16).map(|j| value((qs[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4)),
                );
            }
        }
        GgmlType::Q8_0 => {
            for b in bytes.chunks_exact(block_bytes) {
                let d = f16_at(b, 0);
                out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
            }
        }
        _ => return Err(format!("type {ggml_type} is not supported")),
    }
    Ok(out)
}
