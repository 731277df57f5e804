use super::*;

#[test]
#[allow(deprecated)]
fn rope_rotates_pairs_like_complex_multiplication() {
    let device = Device::ndarray();
    let config = LlamaConfig {
        vocab_size: 1,
        hidden: 4,
        layers: 1,
        heads: 1,
        kv_heads: 1,
        feed_forward: 1,
        rope_base: 10_000.0,
        rms_eps: 1e-5,
        context: 8,
    };
    let (cos, sin) = rope_tables(&config);
    let table = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [8, 4]), &device);
    let (cos, sin) = (table(cos), table(sin));
    let pos = 3;
    let x = Tensor::<4>::from_data(
        TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 1, 1, 4]),
        &device,
    );
    let cos = cos.slice([pos..pos + 1, 0..4]).reshape([1, 1, 1, 4]);
    let sin = sin.slice([pos..pos + 1, 0..4]).reshape([1, 1, 1, 4]);
    let out = rope(x, &cos, &sin)
        .try_into_data()
        .unwrap()
        .try_into_vec::<f32>()
        .unwrap();
    // The host path's rotation gives the same values.
    let (cos_values, sin_values) = rope_tables(&config);
    let mut host = [0.0f32; 4];
    crate::llama_cpu::rope_into(
        &[1.0, 2.0, 3.0, 4.0],
        &cos_values[pos * 4..(pos + 1) * 4],
        &sin_values[pos * 4..(pos + 1) * 4],
        &mut host,
    );
    // Pair 0 turns by 3 rad, pair 1 by 3 / 100 rad.
    for (i, (a, b)) in [(1.0f64, 2.0f64), (3.0, 4.0)].into_iter().enumerate() {
        let angle = pos as f64 * 10_000f64.powf(-2.0 * i as f64 / 4.0);
        let (s, c) = angle.sin_cos();
        for out in [&out[..], &host[..]] {
            assert!((out[2 * i] as f64 - (a * c - b * s)).abs() < 1e-5);
            assert!((out[2 * i + 1] as f64 - (a * s + b * c)).abs() < 1e-5);
        }
    }
}
