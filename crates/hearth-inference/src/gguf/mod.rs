//! A reader for GGUF files (llama.cpp's model format), written from the public format description.
//!
//! Layout: magic `GGUF`, version (2 or 3), tensor count, metadata count, the metadata key/value
//! pairs, the tensor infos (name, dimensions, type, offset), padding to `general.alignment`
//! (default 32), then the tensor data. All integers are little-endian.
//!
//! The file is memory-mapped and every read is bounds-checked: a truncated or hostile file gives
//! [`InferenceError::Gguf`], never a panic, and no count read from the file is trusted to size an
//! allocation before the bytes it claims are known to exist.
//!
//! Dequantisation covers F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0. K-quants and
//! I-quants are recognised by name and refused with a clear error.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{InferenceError, Result};

mod dequant;

pub use dequant::dequantize;
use dequant::tensor_byte_len;
pub(crate) use dequant::{BlockDecoder, block_decoder};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Arrays inside arrays deeper than this are refused (no format in use nests at all).
const MAX_ARRAY_DEPTH: usize = 2;
/// More dimensions than ggml supports is a malformed file.
const MAX_DIMS: usize = 4;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetadataValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<MetadataValue>),
}

impl MetadataValue {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[MetadataValue]> {
        match self {
            Self::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// A ggml tensor type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GgmlType(pub u32);

impl GgmlType {
    pub const F32: Self = Self(0);
    pub const F16: Self = Self(1);
    pub const Q4_0: Self = Self(2);
    pub const Q4_1: Self = Self(3);
    pub const Q5_0: Self = Self(6);
    pub const Q5_1: Self = Self(7);
    pub const Q8_0: Self = Self(8);
    pub const Q2_K: Self = Self(10);
    pub const Q3_K: Self = Self(11);
    pub const Q4_K: Self = Self(12);
    pub const Q5_K: Self = Self(13);
    pub const Q6_K: Self = Self(14);
    pub const Q8_K: Self = Self(15);
    pub const BF16: Self = Self(30);

    /// The type's name as llama.cpp writes it.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "F32",
            1 => "F16",
            2 => "Q4_0",
            3 => "Q4_1",
            6 => "Q5_0",
            7 => "Q5_1",
            8 => "Q8_0",
            9 => "Q8_1",
            10 => "Q2_K",
            11 => "Q3_K",
            12 => "Q4_K",
            13 => "Q5_K",
            14 => "Q6_K",
            15 => "Q8_K",
            16 => "IQ2_XXS",
            17 => "IQ2_XS",
            18 => "IQ3_XXS",
            19 => "IQ1_S",
            20 => "IQ4_NL",
            21 => "IQ3_S",
            22 => "IQ2_S",
            23 => "IQ4_XS",
            24 => "I8",
            25 => "I16",
            26 => "I32",
            27 => "I64",
            28 => "F64",
            29 => "IQ1_M",
            30 => "BF16",
            _ => "unknown",
        }
    }

    /// Elements per block and bytes per block, for the types this reader can dequantise.
    pub(crate) fn layout(self) -> Option<(u64, u64)> {
        Some(match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q5_0 => (32, 22),
            Self::Q5_1 => (32, 24),
            Self::Q8_0 => (32, 34),
            // The K-quants: super-blocks of 256 values with sub-block scales.
            Self::Q2_K => (256, 84),
            Self::Q3_K => (256, 110),
            Self::Q4_K => (256, 144),
            Self::Q5_K => (256, 176),
            Self::Q6_K => (256, 210),
            Self::Q8_K => (256, 292),
            _ => return None,
        })
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (type {})", self.name(), self.0)
    }
}

/// One tensor's description.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` varies fastest (the row length).
    pub dims: Vec<u64>,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Byte offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Dimensions in row-major order (slowest first), as burn and PyTorch write shapes.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// An open, parsed GGUF file.
pub struct GgufFile {
    path: PathBuf,
    map: Arc<Mmap>,
    version: u32,
    metadata: BTreeMap<String, MetadataValue>,
    tensors: Vec<TensorInfo>,
    by_name: BTreeMap<String, usize>,
    data_start: u64,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// A bounds-checked little-endian cursor over the mapped bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "truncated: needs {n} bytes at offset {} but the file ends at {}",
                self.pos,
                self.bytes.len()
            ));
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count of items that each take at least `min_item_bytes`: refused when the rest of the
    /// file could not hold that many, so a hostile count cannot drive an allocation.
    fn count(&mut self, what: &str, min_item_bytes: usize) -> std::result::Result<usize, String> {
        let n = self.u64()?;
        let fits = usize::try_from(n)
            .ok()
            .filter(|&n| n.saturating_mul(min_item_bytes) <= self.remaining());
        fits.ok_or_else(|| {
            format!(
                "{what} count {n} at offset {} cannot fit in the {} bytes left",
                self.pos - 8,
                self.remaining()
            )
        })
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let len = self.count("string length", 1)?;
        let at = self.pos;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("string at offset {at} is not UTF-8"))
    }

    fn value(&mut self, type_id: u32, depth: usize) -> std::result::Result<MetadataValue, String> {
        use MetadataValue as V;
        Ok(match type_id {
            0 => V::U8(u8::from_le_bytes(self.array()?)),
            1 => V::I8(i8::from_le_bytes(self.array()?)),
            2 => V::U16(u16::from_le_bytes(self.array()?)),
            3 => V::I16(i16::from_le_bytes(self.array()?)),
            4 => V::U32(self.u32()?),
            5 => V::I32(i32::from_le_bytes(self.array()?)),
            6 => V::F32(f32::from_le_bytes(self.array()?)),
            7 => match self.array::<1>()?[0] {
                0 => V::Bool(false),
                1 => V::Bool(true),
                other => return Err(format!("bool value {other} at offset {}", self.pos - 1)),
            },
            8 => V::String(self.string()?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"));
                }
                let item_type = self.u32()?;
                let min = match item_type {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    other => return Err(format!("unknown array item type {other}")),
                };
                let n = self.count("array length", min)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item_type, depth + 1)?);
                }
                V::Array(items)
            }
            10 => V::U64(self.u64()?),
            11 => V::I64(i64::from_le_bytes(self.array()?)),
            12 => V::F64(f64::from_le_bytes(self.array()?)),
            other => {
                return Err(format!(
                    "unknown metadata value type {other} at offset {}",
                    self.pos - 4
                ));
            }
        })
    }
}

impl GgufFile {
    /// Map and parse `path`. Only the header, metadata and tensor infos are read here; tensor
    /// data is read (and dequantised) on demand.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| InferenceError::io(path, e))?;
        let map = map_file(&file).map_err(|e| InferenceError::io(path, e))?;
        Self::parse(path, map)
    }

    fn parse(path: &Path, map: Mmap) -> Result<Self> {
        let bad = |reason: String| InferenceError::Gguf {
            path: path.to_owned(),
            reason,
        };
        let mut cur = Cursor {
            bytes: &map,
            pos: 0,
        };
        let magic = cur.array::<4>().map_err(&bad)?;
        if &magic != MAGIC {
            return Err(bad(format!(
                "not a GGUF file (starts with {magic:02x?}, expected \"GGUF\")"
            )));
        }
        let version = cur.u32().map_err(&bad)?;
        if !(2..=3).contains(&version) {
            return Err(bad(format!(
                "GGUF version {version} is not supported (2 and 3 are)"
            )));
        }
        // A tensor info is at least 8 (name length) + 4 (dims) + 4 (type) + 8 (offset) bytes;
        // a metadata pair at least 8 (key length) + 4 (type) + 1.
        let tensor_count = cur.count("tensor", 24).map_err(&bad)?;
        let kv_count = cur.count("metadata", 13).map_err(&bad)?;

        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = cur.string().map_err(&bad)?;
            let type_id = cur.u32().map_err(&bad)?;
            let value = cur
                .value(type_id, 0)
                .map_err(|e| bad(format!("metadata {key:?}: {e}")))?;
            metadata.insert(key, value);
        }

        let mut tensors = Vec::with_capacity(tensor_count);
        let mut by_name = BTreeMap::new();
        for _ in 0..tensor_count {
            let name = cur.string().map_err(&bad)?;
            let n_dims = cur.u32().map_err(&bad)? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(bad(format!("tensor {name:?} has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(cur.u64().map_err(&bad)?);
            }
            let ggml_type = GgmlType(cur.u32().map_err(&bad)?);
            let offset = cur.u64().map_err(&bad)?;
            if by_name.insert(name.clone(), tensors.len()).is_some() {
                return Err(bad(format!("tensor {name:?} appears twice")));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => v
                .as_u64()
                .filter(|a| a.is_power_of_two())
                .ok_or_else(|| bad(format!("general.alignment {v:?} is not a power of two")))?,
        };
        let data_start = (cur.pos as u64).div_ceil(alignment) * alignment;
        let file_len = map.len() as u64;
        for info in &tensors {
            let check = tensor_byte_len(info).and_then(|len| {
                if info.offset % alignment != 0 {
                    return Err(format!(
                        "offset {} is not aligned to {alignment}",
                        info.offset
                    ));
                }
                let end = data_start
                    .checked_add(info.offset)
                    .and_then(|s| s.checked_add(len))
                    .filter(|&end| end <= file_len);
                end.map(|_| ()).ok_or_else(|| {
                    format!(
                        "data ({len} bytes at {}) runs past the end of the file ({file_len} bytes)",
                        info.offset
                    )
                })
            });
            // Unsupported types are only an error when someone asks for that tensor.
            if let Err(reason) = check
                && info.ggml_type.layout().is_some()
            {
                return Err(bad(format!("tensor {:?}: {reason}", info.name)));
            }
        }

        Ok(Self {
            path: path.to_owned(),
            map: Arc::new(map),
            version,
            metadata,
            tensors,
            by_name,
            data_start,
        })
    }

    /// Where the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// All metadata, by key.
    pub fn metadata(&self) -> &BTreeMap<String, MetadataValue> {
        &self.metadata
    }

    /// Every tensor's description, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The description of the tensor called `name`.
    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo> {
        self.by_name
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| self.error(format!("has no tensor {name:?}")))
    }

    /// An error about this file.
    pub fn error(&self, reason: String) -> InferenceError {
        InferenceError::Gguf {
            path: self.path.clone(),
            reason,
        }
    }

    /// A required metadata value.
    pub fn get(&self, key: &str) -> Result<&MetadataValue> {
        self.metadata
            .get(key)
            .ok_or_else(|| self.error(format!("metadata {key:?} is missing")))
    }

    /// A required unsigned integer.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.get(key)?;
        v.as_u64()
            .ok_or_else(|| self.error(format!("metadata {key:?} is {v:?}, not an integer")))
    }

    /// A required number.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.get(key)?;
        v.as_f64()
            .ok_or_else(|| self.error(format!("metadata {key:?} is {v:?}, not a number")))
    }

    /// A required string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.get(key)?;
        v.as_str()
            .ok_or_else(|| self.error(format!("metadata {key:?} is not a string")))
    }

    /// A required array.
    pub fn get_array(&self, key: &str) -> Result<&[MetadataValue]> {
        let v = self.get(key)?;
        v.as_array()
            .ok_or_else(|| self.error(format!("metadata {key:?} is not an array")))
    }

    /// The raw stored bytes of a tensor.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Result<&[u8]> {
        let (start, len) = self.tensor_range(info)?;
        Ok(&self.map[start..start + len])
    }

    /// Where a tensor's bytes lie in [`GgufFile::shared_map`]: offset and length, checked
    /// against the file's size.
    pub fn tensor_range(&self, info: &TensorInfo) -> Result<(usize, usize)> {
        let len = tensor_byte_len(info)
            .map_err(|reason| self.error(format!("tensor {:?}: {reason}", info.name)))?;
        let start = (self.data_start + info.offset) as usize;
        match start.checked_add(len as usize) {
            Some(end) if end <= self.map.len() => Ok((start, len as usize)),
            _ => Err(self.error(format!("tensor {:?} lies outside the file", info.name))),
        }
    }

    /// The whole mapped file, to keep tensors readable after this `GgufFile` is dropped.
    pub fn shared_map(&self) -> Arc<Mmap> {
        Arc::clone(&self.map)
    }

    /// A tensor dequantised to f32, in row-major order of [`TensorInfo::shape`].
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let info = self.tensor_info(name)?;
        let bytes = self.tensor_bytes(info)?;
        let values = dequantize(info.ggml_type, bytes, info.elements() as usize)
            .map_err(|reason| self.error(format!("tensor {name:?}: {reason}")))?;
        Ok((values, info.shape()))
    }
}

#[allow(unsafe_code)]
fn map_file(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: the map is read-only and private to this process. Another process truncating
    // the file while it is mapped could fault; model files are verified by hash just before
    // they are opened and Hearth never writes to them.
    unsafe { Mmap::map(file) }
}

#[cfg(test)]
pub(crate) mod write;

#[cfg(test)]
mod tests;
