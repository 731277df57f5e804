//! Writers for GGUF bytes, for tests that build small or broken files.

use super::GgmlType;

/// A version-3 file of tensors (no metadata beyond what tensors need), default alignment.
#[derive(Default)]
pub struct Builder {
    infos: Vec<u8>,
    data: Vec<u8>,
    count: u64,
}

impl Builder {
    /// Add a tensor with ggml-order `dims` and its stored bytes.
    pub fn tensor_raw(&mut self, name: &str, dims: &[u64], ggml_type: GgmlType, bytes: &[u8]) {
        string(&mut self.infos, name);
        self.infos.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.infos.extend(d.to_le_bytes());
        }
        self.infos.extend(ggml_type.0.to_le_bytes());
        self.infos.extend((self.data.len() as u64).to_le_bytes());
        self.data.extend(bytes);
        self.data.resize(self.data.len().div_ceil(32) * 32, 0);
        self.count += 1;
    }

    /// The file's bytes.
    pub fn finish(self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(self.count.to_le_bytes());
        out.extend(0u64.to_le_bytes());
        out.extend(self.infos);
        out.resize(out.len().div_ceil(32) * 32, 0);
        out.extend(self.data);
        out
    }
}

/// Append a GGUF string.
pub fn string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}
