//! Image classification: decode with limits, resize the shorter side, centre-crop, normalise,
//! run EfficientNet-Lite0, and report the top classes with their probabilities.

use std::io::Cursor;

use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData};
use image::imageops::FilterType;
use image::{ImageReader, Limits};

use crate::device::{ComputeBackend, ComputeDevice};
use crate::efficientnet::{EfficientNetLite, FoldedEfficientNet};
use crate::efficientnet_cpu::CpuEfficientNet;
use crate::error::{InferenceError, Result};
use crate::store::{Manifest, ModelStore, TaskKind};

/// Model id of the default classifier.
pub const EFFICIENTNET_ID: &str = "efficientnet-lite0";
/// Widest and tallest image we decode, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 8192;
/// Most memory a decoder may take for one image.
const MAX_DECODE_BYTES: u64 = 256 << 20;
/// Images per forward pass on the CPU.
const CPU_BATCH: usize = 32;
/// Images per forward pass on wgpu: the widest activation is ~4.9 MB per image, and wgpu
/// adapters may bind no more than 128 MiB per storage buffer (lavapipe refuses 32 images).
const WGPU_BATCH: usize = 16;
/// Images in one request, at most.
pub const MAX_IMAGES: usize = 256;

/// How an image becomes the network's input (from the model's manifest).
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocessing {
    /// Shorter side after resizing, before the crop.
    pub resize: u32,
    /// Side of the centre crop fed to the network.
    pub crop: u32,
    /// Per-channel mean, on 0..1 pixel values.
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
}

impl Preprocessing {
    fn from_manifest(manifest: &Manifest) -> Result<Self> {
        let bad = |what: &str| InferenceError::Manifest {
            path: format!("models/{}/manifest.toml", manifest.id).into(),
            reason: format!("preprocessing.{what} is missing or malformed"),
        };
        let triple = |key: &str| -> Result<[f32; 3]> {
            let values = manifest.setting_f32_list(key).ok_or_else(|| bad(key))?;
            <[f32; 3]>::try_from(values).map_err(|_| bad(key))
        };
        Ok(Self {
            resize: manifest
                .setting_f64("resize")
                .ok_or_else(|| bad("resize"))? as u32,
            crop: manifest.setting_f64("crop").ok_or_else(|| bad("crop"))? as u32,
            mean: triple("mean")?,
            std: triple("std")?,
        })
    }

    /// Decode `bytes` and turn them into a `[3, crop, crop]` planar float image.
    /// `index` names the input in errors.
    pub fn prepare(&self, index: usize, bytes: &[u8]) -> Result<Vec<f32>> {
        let decode_error = |reason: String| InferenceError::ImageDecode { index, reason };
        let mut reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| decode_error(e.to_string()))?;
        // Check the header's size first: a 20000x20000 header must not cost 1.6 GB.
        let (width, height) = reader_dimensions(bytes).map_err(|e| decode_error(e.to_string()))?;
        if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
            return Err(InferenceError::ImageTooLarge {
                index,
                width,
                height,
                limit: MAX_IMAGE_SIDE,
            });
        }
        let mut limits = Limits::default();
        limits.max_image_width = Some(MAX_IMAGE_SIDE);
        limits.max_image_height = Some(MAX_IMAGE_SIDE);
        limits.max_alloc = Some(MAX_DECODE_BYTES);
        reader.limits(limits);
        let image = reader
            .decode()
            .map_err(|e| decode_error(e.to_string()))?
            .to_rgb8();
        let (width, height) = image.dimensions();
        if width == 0 || height == 0 {
            return Err(decode_error("image has no pixels".into()));
        }
        let scale = self.resize as f64 / f64::from(width.min(height));
        let new_w = ((f64::from(width) * scale).round() as u32).max(self.crop);
        let new_h = ((f64::from(height) * scale).round() as u32).max(self.crop);
        let resized = image::imageops::resize(&image, new_w, new_h, FilterType::Triangle);
        let left = (new_w - self.crop) / 2;
        let top = (new_h - self.crop) / 2;
        let side = self.crop as usize;
        let mut planar = vec![0f32; 3 * side * side];
        for y in 0..side {
            for x in 0..side {
                let pixel = resized.get_pixel(left + x as u32, top + y as u32);
                for c in 0..3 {
                    let value = f32::from(pixel[c]) / 255.0;
                    planar[c * side * side + y * side + x] = (value - self.mean[c]) / self.std[c];
                }
            }
        }
        Ok(planar)
    }
}

fn reader_dimensions(bytes: &[u8]) -> image::ImageResult<(u32, u32)> {
    ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()?
        .into_dimensions()
}

/// One predicted class.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassScore {
    /// ImageNet class index.
    pub class: usize,
    /// Its label, e.g. "Egyptian cat".
    pub label: String,
    /// Softmax probability.
    pub probability: f32,
}

/// The network, where it runs.
#[derive(Debug)]
enum Network {
    /// burn, on wgpu.
    Burn(Box<FoldedEfficientNet>),
    /// Hearth's own CPU forward pass ([`crate::efficientnet_cpu`]).
    Cpu(Box<CpuEfficientNet>),
}

/// A loaded image classifier.
#[derive(Debug)]
pub struct ImageClassifier {
    model: Network,
    labels: Vec<String>,
    preprocessing: Preprocessing,
    device: ComputeDevice,
}

impl ImageClassifier {
    /// Verify and load model `id` from `store` onto `device`.
    pub fn load(store: &ModelStore, id: &str, device: ComputeDevice) -> Result<Self> {
        let model = store.verify(id)?;
        if model.manifest.task != TaskKind::ImageClassification {
            return Err(InferenceError::UnknownModel(format!(
                "{id} is not an image classifier"
            )));
        }
        let preprocessing = Preprocessing::from_manifest(&model.manifest)?;
        let labels_path = store.model_dir(id).join("labels.txt");
        let labels: Vec<String> = std::fs::read_to_string(&labels_path)
            .map_err(|e| InferenceError::io(&labels_path, e))?
            .lines()
            .map(str::to_owned)
            .collect();
        let network = EfficientNetLite::lite0(&device.device, labels.len())
            .load_pytorch(&model.file(model.manifest.files[0].name.as_str())?)?
            .fold();
        let network = match device.backend {
            ComputeBackend::Cpu => Network::Cpu(Box::new(CpuEfficientNet::from_folded(&network)?)),
            ComputeBackend::Wgpu => Network::Burn(Box::new(network)),
        };
        tracing::info!(model = id, device = %device.describe(), classes = labels.len(), "image classifier loaded");
        Ok(Self {
            model: network,
            labels,
            preprocessing,
            device,
        })
    }

    /// The device this model runs on.
    pub fn device(&self) -> &ComputeDevice {
        &self.device
    }

    /// How inputs are prepared.
    pub fn preprocessing(&self) -> &Preprocessing {
        &self.preprocessing
    }

    /// The `top_k` most likely classes for each encoded image (PNG or JPEG bytes).
    pub fn classify(&self, images: &[&[u8]], top_k: usize) -> Result<Vec<Vec<ClassScore>>> {
        if images.len() > MAX_IMAGES {
            return Err(InferenceError::TooManyInputs {
                actual: images.len(),
                limit: MAX_IMAGES,
            });
        }
        let prepared = images
            .iter()
            .enumerate()
            .map(|(index, bytes)| self.preprocessing.prepare(index, bytes))
            .collect::<Result<Vec<_>>>()?;
        Ok(self
            .probabilities(&prepared)?
            .iter()
            .map(|probabilities| self.top_k(probabilities, top_k))
            .collect())
    }

    /// Softmax probabilities for already prepared inputs (each `[3, crop, crop]`), in batches
    /// sized for the backend.
    pub fn probabilities(&self, prepared: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        let batch = match self.device.backend {
            ComputeBackend::Cpu => CPU_BATCH,
            ComputeBackend::Wgpu => WGPU_BATCH,
        };
        let mut all = Vec::with_capacity(prepared.len());
        for chunk in prepared.chunks(batch) {
            all.extend(self.probabilities_batch(chunk)?);
        }
        Ok(all)
    }

    fn probabilities_batch(&self, prepared: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        let side = self.preprocessing.crop as usize;
        let model = match &self.model {
            Network::Burn(model) => model,
            Network::Cpu(model) => {
                let mut probabilities = model.logits(prepared, side)?;
                crate::cpu_kernels::softmax_rows(&mut probabilities, self.labels.len());
                return Ok(probabilities
                    .chunks(self.labels.len())
                    .map(<[f32]>::to_vec)
                    .collect());
            }
        };
        let batch = prepared.len();
        let flat: Vec<f32> = prepared.iter().flatten().copied().collect();
        if flat.len() != batch * 3 * side * side {
            return Err(InferenceError::Execution(
                "prepared image of the wrong size".into(),
            ));
        }
        let input = Tensor::<4>::from_data(
            TensorData::new(flat, [batch, 3, side, side]),
            &self.device.device,
        );
        let probabilities = crate::weights::tensor_values(softmax(model.forward(input), 1))?;
        Ok(probabilities
            .chunks(self.labels.len())
            .map(<[f32]>::to_vec)
            .collect())
    }

    fn top_k(&self, probabilities: &[f32], k: usize) -> Vec<ClassScore> {
        let mut order: Vec<usize> = (0..probabilities.len()).collect();
        order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
        order
            .into_iter()
            .take(k)
            .map(|class| ClassScore {
                class,
                label: self.labels.get(class).cloned().unwrap_or_default(),
                probability: probabilities[class],
            })
            .collect()
    }
}
