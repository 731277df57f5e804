//! EfficientNet-Lite0's forward pass on the CPU, without burn: images channels-last
//! (`height × width × channels`), the 1x1 convolutions (most of the work) as matrix products
//! ([`cpu_kernels::matmul`]), the depthwise convolutions as one vectorised loop over channels
//! with the folded BatchNorm and ReLU6 in the same pass, and the stem as a product over 3x3
//! patches. A batch runs one image per thread; a single image spreads its products and rows
//! over the pool instead.

use burn::tensor::Tensor;
use rayon::prelude::*;

use crate::cpu_kernels::{self, Depthwise, MatRef, Threads};
use crate::efficientnet::{FoldedConv, FoldedEfficientNet};
use crate::error::{InferenceError, Result};
use crate::weights::{tensor_values, transpose};

/// Channels of the images the stem reads.
const IMAGE_CHANNELS: usize = 3;

/// A 1x1 convolution: `weight` is `inputs × outputs`, row-major.
#[derive(Debug)]
struct Pointwise {
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

impl Pointwise {
    fn from_folded(conv: &FoldedConv) -> Result<Self> {
        let [outputs, inputs, _, _] = conv.weight.dims();
        Ok(Self {
            // burn's `[out, in, 1, 1]`, transposed.
            weight: transpose(&values(&conv.weight)?, outputs, inputs),
            bias: values(&conv.bias)?,
            inputs,
            outputs,
        })
    }

    /// The product for `pixels` pixels of `x` (no bias yet).
    fn product(&self, x: &[f32], pixels: usize, threads: Threads) -> Vec<f32> {
        let mut out = vec![0.0; pixels * self.outputs];
        cpu_kernels::matmul(
            &mut out,
            self.outputs,
            MatRef::row_major(x, pixels, self.inputs),
            MatRef::row_major(&self.weight, self.inputs, self.outputs),
            threads,
        );
        out
    }
}

/// A depthwise convolution: `weight` is `kernel² × channels`, tap-major.
#[derive(Debug)]
struct DepthwiseConv {
    weight: Vec<f32>,
    bias: Vec<f32>,
    kernel: usize,
    stride: usize,
}

impl DepthwiseConv {
    fn from_folded(conv: &FoldedConv) -> Result<Self> {
        let [channels, _, kernel, _] = conv.weight.dims();
        Ok(Self {
            // burn's `[channels, 1, k, k]`, made tap-major so channels are contiguous.
            weight: transpose(&values(&conv.weight)?, channels, kernel * kernel),
            bias: values(&conv.bias)?,
            kernel,
            stride: conv.stride,
        })
    }
}

#[derive(Debug)]
struct Block {
    expand: Option<Pointwise>,
    depthwise: DepthwiseConv,
    project: Pointwise,
    residual: bool,
}

/// The folded network's weights for the CPU path.
#[derive(Debug)]
pub(crate) struct CpuEfficientNet {
    /// The stem's 3x3 stride-2 convolution over patches: `27 × 32`, rows `(ky, kx, channel)`.
    stem: Pointwise,
    blocks: Vec<Block>,
    head: Pointwise,
    /// The classifier: `1280 × classes`.
    fc: Pointwise,
}

/// An image in flight: channels-last values and its size.
struct Activation {
    values: Vec<f32>,
    height: usize,
    width: usize,
}

impl CpuEfficientNet {
    /// Copy the weights out of a folded network.
    pub(crate) fn from_folded(network: &FoldedEfficientNet) -> Result<Self> {
        let [stem_out, stem_in, kernel, _] = network.stem.weight.dims();
        if stem_in != IMAGE_CHANNELS || kernel != 3 || network.stem.stride != 2 {
            return Err(InferenceError::Execution(
                "the stem is not a 3x3 stride-2 convolution over RGB".into(),
            ));
        }
        // `[out, in, ky, kx]` to rows `(ky, kx, in)`, columns `out`.
        let stored = values(&network.stem.weight)?;
        let patch = kernel * kernel * stem_in;
        let mut stem = vec![0.0; patch * stem_out];
        for o in 0..stem_out {
            for c in 0..stem_in {
                for tap in 0..kernel * kernel {
                    stem[(tap * stem_in + c) * stem_out + o] =
                        stored[(o * stem_in + c) * kernel * kernel + tap];
                }
            }
        }
        let blocks = network
            .blocks
            .iter()
            .map(|b| {
                Ok(Block {
                    expand: b.expand.as_ref().map(Pointwise::from_folded).transpose()?,
                    depthwise: DepthwiseConv::from_folded(&b.depthwise)?,
                    project: Pointwise::from_folded(&b.project)?,
                    residual: b.residual,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let [fc_in, classes] = network.fc_weight.dims();
        Ok(Self {
            stem: Pointwise {
                weight: stem,
                bias: values(&network.stem.bias)?,
                inputs: patch,
                outputs: stem_out,
            },
            blocks,
            head: Pointwise::from_folded(&network.head)?,
            fc: Pointwise {
                weight: values(&network.fc_weight)?,
                bias: values(&network.fc_bias)?,
                inputs: fc_in,
                outputs: classes,
            },
        })
    }

    /// Logits `batch × classes`, row-major, for normalised planar images (`3 × side × side`).
    pub(crate) fn logits(&self, images: &[Vec<f32>], side: usize) -> Result<Vec<f32>> {
        if let Some(index) = images
            .iter()
            .position(|image| image.len() != IMAGE_CHANNELS * side * side)
        {
            return Err(InferenceError::Execution(format!(
                "prepared image {index} is not 3x{side}x{side}"
            )));
        }
        let pooled: Vec<Vec<f32>> = if images.len() >= rayon::current_num_threads() {
            images
                .par_iter()
                .map(|image| self.features(image, side, Threads::Caller))
                .collect()
        } else {
            images
                .iter()
                .map(|image| self.features(image, side, Threads::Pool))
                .collect()
        };
        let pooled: Vec<f32> = pooled.concat();
        let mut logits = self.fc.product(&pooled, images.len(), Threads::Pool);
        cpu_kernels::bias_residual(&mut logits, &self.fc.bias, None);
        Ok(logits)
    }

    /// The head's output averaged over the image: one value per channel.
    fn features(&self, image: &[f32], side: usize, threads: Threads) -> Vec<f32> {
        let mut x = self.stem(image, side, threads);
        for block in &self.blocks {
            x = block.forward(&x, threads);
        }
        let pixels = x.height * x.width;
        let mut head = self.head.product(&x.values, pixels, threads);
        cpu_kernels::bias_relu6(&mut head, &self.head.bias, threads);
        let mut mean = vec![0f32; self.head.outputs];
        for pixel in head.chunks_exact(self.head.outputs) {
            for (m, v) in mean.iter_mut().zip(pixel) {
                *m += v;
            }
        }
        let scale = 1.0 / pixels as f32;
        mean.iter_mut().for_each(|m| *m *= scale);
        mean
    }

    /// The 3x3 stride-2 stem with "same" padding, as a product over each output pixel's patch.
    fn stem(&self, image: &[f32], side: usize, threads: Threads) -> Activation {
        let out = side.div_ceil(2);
        let pad = ((out - 1) * 2 + 3).saturating_sub(side) / 2;
        let plane = side * side;
        let mut patches = vec![0.0; out * out * self.stem.inputs];
        for (pixel, patch) in patches.chunks_exact_mut(self.stem.inputs).enumerate() {
            let (y, x) = (pixel / out, pixel % out);
            for ky in 0..3 {
                let Some(iy) = (y * 2 + ky).checked_sub(pad).filter(|&iy| iy < side) else {
                    continue;
                };
                for kx in 0..3 {
                    let Some(ix) = (x * 2 + kx).checked_sub(pad).filter(|&ix| ix < side) else {
                        continue;
                    };
                    for c in 0..IMAGE_CHANNELS {
                        patch[(ky * 3 + kx) * IMAGE_CHANNELS + c] =
                            image[c * plane + iy * side + ix];
                    }
                }
            }
        }
        let mut values = self.stem.product(&patches, out * out, threads);
        cpu_kernels::bias_relu6(&mut values, &self.stem.bias, threads);
        Activation {
            values,
            height: out,
            width: out,
        }
    }
}

impl Block {
    fn forward(&self, input: &Activation, threads: Threads) -> Activation {
        let pixels = input.height * input.width;
        let expanded = self.expand.as_ref().map(|expand| {
            let mut x = expand.product(&input.values, pixels, threads);
            cpu_kernels::bias_relu6(&mut x, &expand.bias, threads);
            x
        });
        let x = expanded.as_deref().unwrap_or(&input.values);
        let shape = Depthwise {
            height: input.height,
            width: input.width,
            channels: self.depthwise.bias.len(),
            kernel: self.depthwise.kernel,
            stride: self.depthwise.stride,
        };
        let (height, width) = shape.output();
        let mut filtered = vec![0.0; height * width * shape.channels];
        cpu_kernels::depthwise_bias_relu6(
            &mut filtered,
            x,
            &self.depthwise.weight,
            &self.depthwise.bias,
            shape,
            threads,
        );
        let mut values = self.project.product(&filtered, height * width, threads);
        let residual = self.residual.then_some(input.values.as_slice());
        cpu_kernels::bias_residual(&mut values, &self.project.bias, residual);
        Activation {
            values,
            height,
            width,
        }
    }
}

/// A tensor's values, row-major.
fn values<const D: usize>(tensor: &Tensor<D>) -> Result<Vec<f32>> {
    tensor_values(tensor.clone())
}
