//! Element types of checkpoint tensors (the safetensors dtype strings) and the conversions between
//! the float types lowbit compresses (F32, F16, BF16) and the f32 working precision of the codecs.
//!
//! Every other dtype is carried byte for byte; this module only needs to know its element size.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DType {
    #[serde(rename = "BOOL")]
    Bool,
    U8,
    I8,
    #[serde(rename = "F8_E5M2")]
    F8E5M2,
    #[serde(rename = "F8_E4M3")]
    F8E4M3,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    F64,
    I64,
    U64,
}

impl DType {
    pub const ALL: [DType; 15] = [
        DType::Bool,
        DType::U8,
        DType::I8,
        DType::F8E5M2,
        DType::F8E4M3,
        DType::I16,
        DType::U16,
        DType::F16,
        DType::BF16,
        DType::I32,
        DType::U32,
        DType::F32,
        DType::F64,
        DType::I64,
        DType::U64,
    ];

    /// The safetensors spelling of the dtype.
    pub fn name(self) -> &'static str {
        match self {
            DType::Bool => "BOOL",
            DType::U8 => "U8",
            DType::I8 => "I8",
            DType::F8E5M2 => "F8_E5M2",
            DType::F8E4M3 => "F8_E4M3",
            DType::I16 => "I16",
            DType::U16 => "U16",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I32 => "I32",
            DType::U32 => "U32",
            DType::F32 => "F32",
            DType::F64 => "F64",
            DType::I64 => "I64",
            DType::U64 => "U64",
        }
    }

    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::Bool | DType::U8 | DType::I8 | DType::F8E5M2 | DType::F8E4M3 => 1,
            DType::I16 | DType::U16 | DType::F16 | DType::BF16 => 2,
            DType::I32 | DType::U32 | DType::F32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
        }
    }

    /// Float types that the lossy codecs accept. Everything else is stored losslessly.
    pub fn is_lossy_compressible(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    /// The float types the vector coders take: those above plus F64 (coded as f32 values and
    /// restored as F64, so a vector dataset in double precision keeps its file type).
    pub fn is_vector_compressible(self) -> bool {
        self.is_float()
    }

    /// Every floating-point type ([`to_f32`] converts each of them; the model runtime loads them).
    pub fn is_float(self) -> bool {
        self.is_lossy_compressible() || self == DType::F64
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Little-endian element bytes of a compressible float dtype to f32 (exact for all three).
/// Panics if `dtype` is not F32/F16/BF16 or `bytes` is not a whole number of elements: callers
/// validate both when they read the header.
pub fn to_f32(dtype: DType, bytes: &[u8]) -> Vec<f32> {
    assert_eq!(
        bytes.len() % dtype.size(),
        0,
        "byte length is a whole number of elements"
    );
    match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")) as f32)
            .collect(),
        other => panic!("to_f32 called on {other}, which the lossy codecs do not take"),
    }
}

/// f32 values to the little-endian bytes of `dtype` (round to nearest even for F16/BF16).
pub fn from_f32(dtype: DType, values: &[f32]) -> Vec<u8> {
    match dtype {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        DType::BF16 => values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        DType::F64 => values
            .iter()
            .flat_map(|&v| (v as f64).to_le_bytes())
            .collect(),
        other => panic!("from_f32 called on {other}, which the lossy codecs do not produce"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_name(d.name()), Some(d));
            assert_eq!(
                serde_json::to_string(&d).unwrap(),
                format!("\"{}\"", d.name())
            );
        }
        assert_eq!(DType::from_name("F4"), None);
    }

    #[test]
    fn half_types_round_trip_exactly() {
        let v = [0.0f32, -1.5, 3.140625, 65504.0, 1e-3];
        for d in [DType::F16, DType::BF16] {
            let once = to_f32(d, &from_f32(d, &v));
            let twice = to_f32(d, &from_f32(d, &once));
            assert_eq!(once, twice);
        }
        assert_eq!(to_f32(DType::F32, &from_f32(DType::F32, &v)), v);
    }
}
