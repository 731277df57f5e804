use half::f16;

use super::*;

fn header(tensors: u64, kvs: u64) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(tensors.to_le_bytes());
    out.extend(kvs.to_le_bytes());
    out
}

fn parse(bytes: Vec<u8>) -> Result<GgufFile> {
    let dir = tempfile::tempdir().map_err(|e| InferenceError::io("tmp", e))?;
    let path = dir.path().join("t.gguf");
    std::fs::write(&path, bytes).map_err(|e| InferenceError::io(&path, e))?;
    GgufFile::open(&path)
}

/// A file with one u32 metadata value and one tensor of `ggml_type`, `dims`, `data`.
fn one_tensor(ggml_type: u32, dims: &[u64], data: &[u8]) -> Vec<u8> {
    let mut out = header(1, 1);
    write::string(&mut out, "general.architecture");
    out.extend(8u32.to_le_bytes());
    write::string(&mut out, "llama");
    write::string(&mut out, "t");
    out.extend((dims.len() as u32).to_le_bytes());
    for d in dims {
        out.extend(d.to_le_bytes());
    }
    out.extend(ggml_type.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    out.resize(out.len().div_ceil(32) * 32, 0);
    out.extend(data);
    out
}

#[test]
fn reads_metadata_and_f16_tensor() {
    let data: Vec<u8> = [1.0f32, -2.5, 0.125, 3.0]
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect();
    let file = parse(one_tensor(1, &[2, 2], &data)).unwrap();
    assert_eq!(file.get_str("general.architecture").unwrap(), "llama");
    let (values, shape) = file.tensor_f32("t").unwrap();
    assert_eq!(values, vec![1.0, -2.5, 0.125, 3.0]);
    assert_eq!(shape, vec![2, 2]);
}

#[test]
fn dequantizes_q4_0_q4_1_q8_0_and_q5() {
    // Q4_0: d = 0.5, nibbles 0..16 in the low halves, 15..0 in the high halves.
    let mut b = f16::from_f32(0.5).to_le_bytes().to_vec();
    b.extend((0..16u8).map(|j| j | (15 - j) << 4));
    let v = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
    assert_eq!(v[0], -4.0);
    assert_eq!(v[15], 3.5);
    assert_eq!(v[16], 3.5);
    assert_eq!(v[31], -4.0);

    // Q4_1: d = 2, m = -1.
    let mut b = f16::from_f32(2.0).to_le_bytes().to_vec();
    b.extend(f16::from_f32(-1.0).to_le_bytes());
    b.extend((0..16u8).map(|j| j | 1 << 4));
    let v = dequantize(GgmlType::Q4_1, &b, 32).unwrap();
    assert_eq!(&v[..3], &[-1.0, 1.0, 3.0]);
    assert_eq!(v[16], 1.0);

    // Q8_0: d = 0.25, values -16..16.
    let mut b = f16::from_f32(0.25).to_le_bytes().to_vec();
    b.extend((0..32i8).map(|j| (j - 16) as u8));
    let v = dequantize(GgmlType::Q8_0, &b, 32).unwrap();
    assert_eq!(v[0], -4.0);
    assert_eq!(v[31], 3.75);

    // Q5_0: the fifth bit of element j is bit j of qh (low halves), bit j+16 (high halves).
    let mut b = f16::from_f32(1.0).to_le_bytes().to_vec();
    b.extend((1u32 | 1 << 16).to_le_bytes());
    b.extend([0u8; 16]);
    let v = dequantize(GgmlType::Q5_0, &b, 32).unwrap();
    assert_eq!(v[0], 0.0);
    assert_eq!(v[1], -16.0);
    assert_eq!(v[16], 0.0);

    // Q5_1: d = 1, m = 0.5: value = q + 0.5.
    let mut b = f16::from_f32(1.0).to_le_bytes().to_vec();
    b.extend(f16::from_f32(0.5).to_le_bytes());
    b.extend((1u32 << 31).to_le_bytes());
    b.extend([0x21u8; 16]);
    let v = dequantize(GgmlType::Q5_1, &b, 32).unwrap();
    assert_eq!(v[0], 1.5);
    assert_eq!(v[16], 2.5);
    assert_eq!(v[31], 18.5);
}

#[test]
fn hostile_files_are_errors() {
    let reason = |bytes: Vec<u8>| match parse(bytes) {
        Err(InferenceError::Gguf { reason, .. }) => reason,
        other => panic!("expected a GGUF error, got {other:?}"),
    };
    assert!(reason(b"GGML\x03\0\0\0".to_vec()).contains("not a GGUF file"));
    assert!(reason(b"GG".to_vec()).contains("truncated"));
    // A billion tensors claimed by a 24-byte file.
    assert!(reason(header(1 << 30, 0)).contains("cannot fit"));
    // A string claiming 2^60 bytes.
    let mut bytes = header(0, 1);
    bytes.extend((1u64 << 60).to_le_bytes());
    assert!(reason(bytes).contains("cannot fit"));
    // An array of 2^40 u64s.
    let mut bytes = header(0, 1);
    write::string(&mut bytes, "k");
    bytes.extend(9u32.to_le_bytes());
    bytes.extend(10u32.to_le_bytes());
    bytes.extend((1u64 << 40).to_le_bytes());
    assert!(reason(bytes).contains("cannot fit"));
    // Tensor data cut short.
    let mut bytes = one_tensor(0, &[4, 4], &[0; 64]);
    bytes.truncate(bytes.len() - 1);
    assert!(reason(bytes).contains("past the end"));
    // Dimensions whose product overflows.
    assert!(reason(one_tensor(0, &[1 << 40, 1 << 40], &[])).contains("too large"));
    // A row that is not a whole number of blocks.
    assert!(reason(one_tensor(2, &[33], &[0; 64])).contains("multiple"));
}

#[test]
fn unsupported_types_are_named() {
    // IQ2_XXS (type 16), an I-quant Hearth does not read.
    let file = parse(one_tensor(16, &[256], &[0; 66])).unwrap();
    let err = file.tensor_f32("t").unwrap_err().to_string();
    assert!(err.contains("IQ2_XXS"), "{err}");
}

#[test]
fn every_prefix_of_a_valid_file_is_an_error_not_a_panic() {
    let data = [0u8; 20];
    let bytes = one_tensor(3, &[32], &data);
    parse(bytes.clone()).unwrap();
    for len in 0..bytes.len() {
        assert!(
            parse(bytes[..len].to_vec()).is_err(),
            "prefix of {len} bytes parsed"
        );
    }
}

/// Every block type Hearth reads, against the `gguf` Python package (llama.cpp's reader):
/// rows of real tensors (Gemma 3 270M Q4_K_M: Q4_K, Q6_K, Q5_0, Q8_0; SmolLM2 Q4_1) and rows
/// of random blocks for the types neither file has, with the values the package dequantised
/// them to (`fixtures/blocks.gguf`, made by `fixtures/make_block_fixtures.py`).
#[test]
fn every_block_type_dequantises_like_the_gguf_package() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/blocks.gguf");
    let file = GgufFile::open(&path).unwrap();
    let mut types = std::collections::BTreeSet::new();
    let mut cases = 0;
    for info in file.tensors().iter().filter(|t| t.name.ends_with(".q")) {
        let expected_name = info.name.replace(".q", ".f32");
        let (ours, shape) = file.tensor_f32(&info.name).unwrap();
        let (theirs, expected_shape) = file.tensor_f32(&expected_name).unwrap();
        assert_eq!(shape, expected_shape, "{}", info.name);
        let scale = theirs.iter().fold(1e-30f32, |m, v| m.max(v.abs()));
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // The same arithmetic in f32; only the order of a multiplication may differ.
        assert!(
            worst <= scale * 1e-6,
            "{}: {} values, largest difference {worst} (largest value {scale})",
            info.name,
            ours.len()
        );
        types.insert(info.ggml_type.name());
        cases += 1;
    }
    let expected: std::collections::BTreeSet<&str> = [
        "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
    ]
    .into_iter()
    .collect();
    assert_eq!(types, expected, "{cases} cases");
}

/// Q8_K (llama.cpp's type for activations in K-quant products; the Python package cannot
/// dequantise it): an f32 scale, 256 signed bytes, 16 sums the reader skips.
#[test]
fn dequantizes_q8_k_by_hand() {
    let mut block = 0.25f32.to_le_bytes().to_vec();
    block.extend((0..256).map(|i| (i as i8).wrapping_sub(100) as u8));
    block.extend([0u8; 32]);
    let values = dequantize(GgmlType::Q8_K, &block, 256).unwrap();
    assert_eq!(values[0], -25.0);
    assert_eq!(values[100], 0.0);
    assert_eq!(values[227], 31.75);
    assert_eq!(values[228], -32.0, "signed bytes wrap");
    assert!(dequantize(GgmlType::Q8_K, &block[..291], 256).is_err());
}
