//! EfficientNet-Lite0 in burn: TF-style "same" padding, BatchNorm with eps 1e-3, ReLU6, and no
//! squeeze-excite. Field names follow the PyTorch checkpoint with leading underscores removed.

use std::path::Path;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::store::PytorchStore;
use burn::tensor::activation::relu6;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor};

use crate::error::Result;

/// The checkpoint's BatchNorm epsilon.
const BN_EPS: f64 = 1e-3;

/// One stage of blocks: (repeats, kernel, stride, expand ratio, in channels, out channels).
/// From the TF EfficientNet-Lite builder; Lite0 scales neither width nor depth.
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];
const STEM_CHANNELS: usize = 32;
const HEAD_CHANNELS: usize = 1280;

/// An inverted-residual block: optional 1x1 expansion, depthwise conv, 1x1 projection.
/// Holds the checkpoint's weights; inference runs on the folded form ([`EfficientNetLite::fold`]).
#[derive(Module, Debug)]
pub struct MbConvBlock {
    expand_conv: Option<Conv2d>,
    bn0: Option<BatchNorm>,
    depthwise_conv: Conv2d,
    bn1: BatchNorm,
    project_conv: Conv2d,
    bn2: BatchNorm,
    #[module(skip)]
    kernel: usize,
    #[module(skip)]
    stride: usize,
    #[module(skip)]
    residual: bool,
}

/// The whole network: stem, 16 blocks, head, classifier.
#[derive(Module, Debug)]
pub struct EfficientNetLite {
    conv_stem: Conv2d,
    bn0: BatchNorm,
    blocks: Vec<MbConvBlock>,
    conv_head: Conv2d,
    bn1: BatchNorm,
    fc: Linear,
}

fn conv(
    device: &Device,
    input: usize,
    output: usize,
    kernel: usize,
    stride: usize,
    groups: usize,
) -> Conv2d {
    Conv2dConfig::new([input, output], [kernel, kernel])
        .with_stride([stride, stride])
        .with_groups(groups)
        .with_bias(false)
        .init(device)
}

fn batch_norm(device: &Device, channels: usize) -> BatchNorm {
    BatchNormConfig::new(channels)
        .with_epsilon(BN_EPS)
        .init(device)
}

/// Zero-pad like TensorFlow's "SAME": the output is `ceil(input / stride)` and any odd padding
/// goes after (right/bottom), not before.
fn pad_same(x: Tensor<4>, kernel: usize, stride: usize) -> Tensor<4> {
    let [_, _, height, width] = x.dims();
    let amount = |size: usize| {
        let out = size.div_ceil(stride);
        ((out - 1) * stride + kernel).saturating_sub(size)
    };
    let (pad_h, pad_w) = (amount(height), amount(width));
    if pad_h == 0 && pad_w == 0 {
        return x;
    }
    x.pad(
        (pad_w / 2, pad_w - pad_w / 2, pad_h / 2, pad_h - pad_h / 2),
        burn::tensor::ops::PadMode::Constant(0.0),
    )
}

impl EfficientNetLite {
    /// EfficientNet-Lite0 with untrained weights and `classes` outputs.
    pub fn lite0(device: &Device, classes: usize) -> Self {
        let mut blocks = Vec::new();
        for (repeats, kernel, stride, expand, input, output) in STAGES {
            for i in 0..repeats {
                let (input, stride) = if i == 0 { (input, stride) } else { (output, 1) };
                let hidden = input * expand;
                let expands = expand != 1;
                blocks.push(MbConvBlock {
                    expand_conv: expands.then(|| conv(device, input, hidden, 1, 1, 1)),
                    bn0: expands.then(|| batch_norm(device, hidden)),
                    depthwise_conv: conv(device, hidden, hidden, kernel, stride, hidden),
                    bn1: batch_norm(device, hidden),
                    project_conv: conv(device, hidden, output, 1, 1, 1),
                    bn2: batch_norm(device, output),
                    kernel,
                    stride,
                    residual: stride == 1 && input == output,
                });
            }
        }
        Self {
            conv_stem: conv(device, 3, STEM_CHANNELS, 3, 2, 1),
            bn0: batch_norm(device, STEM_CHANNELS),
            blocks,
            conv_head: conv(device, STAGES[6].5, HEAD_CHANNELS, 1, 1, 1),
            bn1: batch_norm(device, HEAD_CHANNELS),
            fc: LinearConfig::new(HEAD_CHANNELS, classes).init(device),
        }
    }

    /// The network for inference, with every BatchNorm folded into the convolution before it.
    pub fn fold(&self) -> FoldedEfficientNet {
        let stem = FoldedConv::new(&self.conv_stem, &self.bn0, 3, 2, 1);
        let blocks = self
            .blocks
            .iter()
            .map(|block| {
                let hidden = block.depthwise_conv.weight.dims()[0];
                FoldedBlock {
                    expand: match (&block.expand_conv, &block.bn0) {
                        (Some(conv), Some(bn)) => Some(FoldedConv::new(conv, bn, 1, 1, 1)),
                        _ => None,
                    },
                    depthwise: FoldedConv::new(
                        &block.depthwise_conv,
                        &block.bn1,
                        block.kernel,
                        block.stride,
                        hidden,
                    ),
                    project: FoldedConv::new(&block.project_conv, &block.bn2, 1, 1, 1),
                    residual: block.residual,
                }
            })
            .collect();
        let fc_bias = match &self.fc.bias {
            Some(bias) => bias.val(),
            None => Tensor::zeros([self.fc.weight.dims()[1]], &self.fc.weight.device()),
        };
        FoldedEfficientNet {
            stem,
            blocks,
            head: FoldedConv::new(&self.conv_head, &self.bn1, 1, 1, 1),
            fc_weight: self.fc.weight.val(),
            fc_bias,
        }
    }

    /// Load the PyTorch checkpoint (`_conv_stem.weight`, `_blocks.0._depthwise_conv.weight`, ...).
    /// Every tensor must be present with its shape; `num_batches_tracked` is ignored.
    pub fn load_pytorch(mut self, path: &Path) -> Result<Self> {
        // PytorchStore adapts PyTorch layouts (Linear transposes, BatchNorm names) itself.
        let mut store = PytorchStore::from_file(path)
            .with_key_remapping(r"(^|\.)_", "$1")
            .allow_partial(true);
        crate::weights::load_complete(&mut self, &mut store, path)?;
        Ok(self)
    }

    /// FLOPs of one forward pass on a `size`x`size` image (multiply-adds counted as two).
    pub fn flops(size: usize, classes: usize) -> f64 {
        let mut macs = 0.0;
        let mut side = size.div_ceil(2);
        macs += (side * side * 3 * 9 * STEM_CHANNELS) as f64;
        for (repeats, kernel, stride, expand, input, output) in STAGES {
            for i in 0..repeats {
                let (input, stride) = if i == 0 { (input, stride) } else { (output, 1) };
                let hidden = input * expand;
                if expand != 1 {
                    macs += (side * side * input * hidden) as f64;
                }
                side = side.div_ceil(stride);
                macs += (side * side * hidden * kernel * kernel) as f64;
                macs += (side * side * hidden * output) as f64;
            }
        }
        macs += (side * side * STAGES[6].5 * HEAD_CHANNELS) as f64;
        macs += (HEAD_CHANNELS * classes) as f64;
        2.0 * macs
    }
}

/// A convolution with the BatchNorm after it folded in:
/// `bn(conv(x, w)) = conv(x, w * s) + (beta - mean * s)` with `s = gamma / sqrt(var + eps)`.
#[derive(Clone, Debug)]
pub(crate) struct FoldedConv {
    pub(crate) weight: Tensor<4>,
    pub(crate) bias: Tensor<1>,
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) groups: usize,
}

impl FoldedConv {
    fn new(conv: &Conv2d, bn: &BatchNorm, kernel: usize, stride: usize, groups: usize) -> Self {
        let scale = bn.gamma.val() / bn.running_var.value().add_scalar(bn.epsilon).sqrt();
        let out = scale.dims()[0];
        let weight = conv.weight.val() * scale.clone().reshape([out, 1, 1, 1]);
        let bias = bn.beta.val() - bn.running_mean.value() * scale;
        Self {
            weight,
            bias,
            kernel,
            stride,
            groups,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [batch, channels, height, width] = x.dims();
        let out = self.bias.dims()[0];
        if self.kernel == 1 {
            // A 1x1 convolution as one matrix product per image, `[out, in] x [in, h*w]`:
            // most of the FLOPs are here, and burn's CPU convolution is a multiply-add loop
            // while its matrix product is BLAS (or a tuned GPU kernel).
            let weight = self.weight.clone().reshape([1, out, channels]);
            return (weight.matmul(x.reshape([batch, channels, height * width]))
                + self.bias.clone().reshape([1, out, 1]))
            .reshape([batch, out, height, width]);
        }
        let bias = Some(self.bias.clone());
        if self.stride == 1 {
            // Odd kernel, stride 1: "same" padding is symmetric, so the convolution pads.
            let pad = self.kernel / 2;
            let options = ConvOptions::new([1, 1], [pad, pad], [1, 1], self.groups);
            return conv2d(x, self.weight.clone(), bias, options);
        }
        let options = ConvOptions::new([self.stride, self.stride], [0, 0], [1, 1], self.groups);
        conv2d(
            pad_same(x, self.kernel, self.stride),
            self.weight.clone(),
            bias,
            options,
        )
    }
}

#[derive(Clone, Debug)]
pub(crate) struct FoldedBlock {
    pub(crate) expand: Option<FoldedConv>,
    pub(crate) depthwise: FoldedConv,
    pub(crate) project: FoldedConv,
    pub(crate) residual: bool,
}

impl FoldedBlock {
    fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let mut x = input.clone();
        if let Some(expand) = &self.expand {
            x = relu6(expand.forward(x));
        }
        x = relu6(self.depthwise.forward(x));
        x = self.project.forward(x);
        if self.residual { x + input } else { x }
    }
}

/// EfficientNet-Lite0 ready for inference (see [`EfficientNetLite::fold`]).
#[derive(Clone, Debug)]
pub struct FoldedEfficientNet {
    pub(crate) stem: FoldedConv,
    pub(crate) blocks: Vec<FoldedBlock>,
    pub(crate) head: FoldedConv,
    pub(crate) fc_weight: Tensor<2>,
    pub(crate) fc_bias: Tensor<1>,
}

impl FoldedEfficientNet {
    /// Logits `[batch, classes]` for normalised images `[batch, 3, height, width]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = relu6(self.stem.forward(images));
        for block in &self.blocks {
            x = block.forward(x);
        }
        let x = relu6(self.head.forward(x));
        let [batch, channels, _, _] = x.dims();
        let pooled = x.mean_dim(3).mean_dim(2).reshape([batch, channels]);
        pooled.matmul(self.fc_weight.clone()) + self.fc_bias.clone().unsqueeze_dim(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        // 224 wide, 3x3, stride 2: TF pads 0 before and 1 after.
        let device = crate::device::ComputeDevice::cpu().device;
        let x = Tensor::<4>::ones([1, 1, 224, 224], &device);
        assert_eq!(pad_same(x, 3, 2).dims(), [1, 1, 225, 225]);
        let x = Tensor::<4>::ones([1, 1, 56, 56], &device);
        assert_eq!(pad_same(x, 5, 2).dims(), [1, 1, 59, 59]);
        let x = Tensor::<4>::ones([1, 1, 14, 14], &device);
        assert_eq!(pad_same(x, 5, 1).dims(), [1, 1, 18, 18]);
    }

    #[test]
    fn lite0_has_sixteen_blocks_and_about_0_8_gflops() {
        let device = crate::device::ComputeDevice::cpu().device;
        let model = EfficientNetLite::lite0(&device, 1000);
        assert_eq!(model.blocks.len(), 16);
        let gflops = EfficientNetLite::flops(224, 1000) / 1e9;
        assert!((0.7..0.9).contains(&gflops), "{gflops}");
    }
}
