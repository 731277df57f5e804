use super::*;

fn values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    let mut values = crate::test_values(n, seed);
    values.iter_mut().for_each(|v| *v *= scale);
    values
}

fn erf_f64(x: f64) -> f64 {
    // Maclaurin series to convergence for |x| < 3, then 1 (to f32 precision).
    if x.abs() >= 3.9 {
        return x.signum();
    }
    let (mut term, mut sum, mut n) = (x, x, 0.0);
    while term.abs() > 1e-17 * sum.abs().max(1e-300) {
        n += 1.0;
        term *= -x * x / n;
        sum += term / (2.0 * n + 1.0);
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn exp_and_erf_match_f64() {
    for x in values(20_000, 1, 80.0) {
        let want = f64::from(x).exp();
        let got = f64::from(exp(x));
        assert!(
            (got - want).abs() <= 3e-7 * want,
            "exp({x}) = {got}, want {want}"
        );
    }
    for x in values(20_000, 2, 5.0) {
        let (got, want) = (f64::from(erf(x)), erf_f64(f64::from(x)));
        let allowed = if x.abs() < 0.5 {
            2e-7 * want.abs()
        } else {
            4e-7
        };
        assert!(
            (got - want).abs() <= allowed,
            "erf({x}) = {got}, want {want}"
        );
    }
    // Out of range: cut to the ends, never zero, infinite or NaN.
    assert_eq!(exp(-1000.0), exp(-87.0));
    assert!(exp(-1000.0) > 0.0 && exp(1000.0).is_finite());
}

#[test]
fn row_kernels_match_plain_f64() {
    let width = 37; // not a multiple of the lanes
    let rows = 5;
    let x0 = values(rows * width, 3, 4.0);
    let y = values(rows * width, 4, 2.0);
    let bias = values(width, 5, 1.0);
    let gamma = values(width, 6, 1.5);
    let beta = values(width, 7, 0.5);

    let mut x = x0.clone();
    residual_layer_norm(&mut x, &y, &bias, &gamma, &beta, 1e-12);
    for r in 0..rows {
        let v: Vec<f64> = (0..width)
            .map(|c| f64::from(x0[r * width + c] + y[r * width + c] + bias[c]))
            .collect();
        let mean = v.iter().sum::<f64>() / width as f64;
        let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / width as f64;
        for c in 0..width {
            let want = (v[c] - mean) / var.sqrt() * f64::from(gamma[c]) + f64::from(beta[c]);
            let got = f64::from(x[r * width + c]);
            assert!((got - want).abs() < 1e-5, "norm ({r},{c}): {got} vs {want}");
        }
    }

    let mut g = x0.clone();
    bias_gelu(&mut g, &bias);
    for (i, (&got, &x)) in g.iter().zip(&x0).enumerate() {
        let u = f64::from(x + bias[i % width]);
        let want = 0.5 * u * (1.0 + erf_f64(u / 2f64.sqrt()));
        assert!(
            (f64::from(got) - want).abs() < 2e-6,
            "gelu({u}): {got} vs {want}"
        );
    }

    let mut s = x0.clone();
    softmax_rows(&mut s, width);
    for r in 0..rows {
        let row = &x0[r * width..(r + 1) * width];
        let max = row.iter().fold(f64::MIN, |m, &v| m.max(f64::from(v)));
        let total: f64 = row.iter().map(|&v| (f64::from(v) - max).exp()).sum();
        for c in 0..width {
            let want = (f64::from(row[c]) - max).exp() / total;
            let got = f64::from(s[r * width + c]);
            assert!(
                (got - want).abs() < 1e-6,
                "softmax ({r},{c}): {got} vs {want}"
            );
        }
    }
}

#[test]
fn products_of_strided_and_transposed_views_match_the_definition() {
    let (m, k, n) = (7, 5, 3);
    // `a` is the middle columns of a wider matrix; `b` is read transposed.
    let wide = values(m * 9, 8, 1.0);
    let a = MatRef::strided(&wide[2..], m, k, 9);
    let bt = values(n * k, 9, 1.0);
    let b = MatRef::row_major(&bt, n, k).t();
    // The product goes into columns 1..4 of a 7 × 6 output; the rest stays untouched.
    let mut out = vec![-7.0; m * 6];
    for threads in [Threads::Caller, Threads::Pool] {
        matmul(&mut out[1..], 6, a, b, threads);
        for r in 0..m {
            for c in 0..6 {
                let got = out[r * 6 + c];
                if !(1..4).contains(&c) {
                    assert_eq!(got, -7.0);
                    continue;
                }
                let want: f32 = (0..k)
                    .map(|i| wide[2 + r * 9 + i] * bt[(c - 1) * k + i])
                    .sum();
                assert!((got - want).abs() < 1e-5, "({r},{c}): {got} vs {want}");
            }
        }
    }
}

#[test]
fn depthwise_convolution_matches_the_definition_with_same_padding() {
    for (kernel, stride, height, width) in [(3, 1, 6, 5), (3, 2, 7, 8), (5, 2, 9, 6), (5, 1, 4, 4)]
    {
        let channels = 19;
        let shape = Depthwise {
            height,
            width,
            channels,
            kernel,
            stride,
        };
        let input = values(height * width * channels, 10, 2.0);
        let weight = values(kernel * kernel * channels, 11, 1.0);
        let bias = values(channels, 12, 0.5);
        let (out_h, out_w) = shape.output();
        assert_eq!(
            (out_h, out_w),
            (height.div_ceil(stride), width.div_ceil(stride))
        );
        // TensorFlow "same": total padding (out - 1)·stride + kernel - size, odd one after.
        let pad = |out: usize, size: usize| ((out - 1) * stride + kernel).saturating_sub(size) / 2;
        let (top, left) = (pad(out_h, height) as isize, pad(out_w, width) as isize);
        for threads in [Threads::Caller, Threads::Pool] {
            let mut out = vec![f32::NAN; out_h * out_w * channels];
            depthwise_bias_relu6(&mut out, &input, &weight, &bias, shape, threads);
            for y in 0..out_h {
                for x in 0..out_w {
                    for ch in 0..channels {
                        let mut want = f64::from(bias[ch]);
                        for ky in 0..kernel {
                            for kx in 0..kernel {
                                let iy = (y * stride + ky) as isize - top;
                                let ix = (x * stride + kx) as isize - left;
                                if iy < 0 || ix < 0 || iy >= height as isize || ix >= width as isize
                                {
                                    continue;
                                }
                                let at = (iy as usize * width + ix as usize) * channels + ch;
                                want += f64::from(input[at])
                                    * f64::from(weight[(ky * kernel + kx) * channels + ch]);
                            }
                        }
                        let want = want.clamp(0.0, 6.0);
                        let got = f64::from(out[(y * out_w + x) * channels + ch]);
                        assert!(
                            (got - want).abs() < 1e-5,
                            "k{kernel} s{stride} ({y},{x},{ch}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn chat_kernels_match_plain_f64() {
    let (rows, width) = (3, 21);
    let x = values(rows * width, 13, 3.0);
    let weight = values(width, 14, 1.0);
    let mut normed = vec![0.0; rows * width];
    rms_norm_rows(&mut normed, &x, &weight, 1e-5);
    for r in 0..rows {
        let row = &x[r * width..(r + 1) * width];
        let ms = row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / width as f64;
        for c in 0..width {
            let want = f64::from(row[c]) / (ms + 1e-5).sqrt() * f64::from(weight[c]);
            let got = f64::from(normed[r * width + c]);
            assert!((got - want).abs() < 1e-5, "rms ({r},{c}): {got} vs {want}");
        }
    }

    let gate_up = values(rows * 2 * width, 15, 6.0);
    let mut gated = vec![0.0; rows * width];
    silu_mul_rows(&mut gated, &gate_up, width);
    for r in 0..rows {
        for c in 0..width {
            let g = f64::from(gate_up[r * 2 * width + c]);
            let u = f64::from(gate_up[r * 2 * width + width + c]);
            let want = g / (1.0 + (-g).exp()) * u;
            let got = f64::from(gated[r * width + c]);
            assert!((got - want).abs() < 1e-5, "silu ({r},{c}): {got} vs {want}");
        }
    }

    // Two heads of width 19 interleaved per position; attend to head 1 over 7 positions.
    let (positions, head_width) = (7, 19);
    let keys = values(positions * 2 * head_width, 16, 1.0);
    let cache_values = values(positions * 2 * head_width, 17, 1.0);
    let query = values(head_width, 18, 1.0);
    let layout = HeadLayout {
        stride: 2 * head_width,
        offset: head_width,
        width: head_width,
    };
    let mut out = vec![0.0; head_width];
    let mut scores = vec![0.0; positions];
    attend(
        &mut out,
        &query,
        &keys,
        &cache_values,
        layout,
        0.5,
        &mut scores,
    );
    let logits: Vec<f64> = (0..positions)
        .map(|j| {
            (0..head_width)
                .map(|i| f64::from(query[i]) * f64::from(keys[j * 2 * head_width + head_width + i]))
                .sum::<f64>()
                * 0.5
        })
        .collect();
    let max = logits.iter().copied().fold(f64::MIN, f64::max);
    let total: f64 = logits.iter().map(|l| (l - max).exp()).sum();
    for i in 0..head_width {
        let want: f64 = (0..positions)
            .map(|j| {
                (logits[j] - max).exp() / total
                    * f64::from(cache_values[j * 2 * head_width + head_width + i])
            })
            .sum();
        assert!(
            (f64::from(out[i]) - want).abs() < 1e-5,
            "attend {i}: {} vs {want}",
            out[i]
        );
    }
}

#[test]
fn relu6_and_residual_passes_add_their_bias() {
    let bias = [1.0, -2.0, 0.5];
    let mut x = vec![-3.0, 1.0, 7.0, 4.0, 9.0, -0.25];
    bias_relu6(&mut x, &bias, Threads::Pool);
    assert_eq!(x, [0.0, 0.0, 6.0, 5.0, 6.0, 0.25]);
    let mut x = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    bias_residual(&mut x, &bias, Some(&[10.0, 20.0, 30.0, 40.0, 50.0, 60.0]));
    assert_eq!(x, [12.0, 20.0, 33.5, 45.0, 53.0, 66.5]);
    bias_residual(&mut x, &bias, None);
    assert_eq!(x, [13.0, 18.0, 34.0, 46.0, 51.0, 67.0]);
}

#[test]
#[should_panic(expected = "runs past")]
fn a_view_past_its_slice_is_refused() {
    let data = vec![0.0; 10];
    MatRef::strided(&data, 3, 4, 4);
}
