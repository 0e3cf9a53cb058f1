//! `.fvecs` files (the format of the TEXMEX ANN benchmarks, SIFT1M/GIST1M): every vector is a
//! little-endian `i32` dimension followed by that many little-endian `f32` values. All vectors
//! must have the same dimension.
//!
//! Refused with `Error::InvalidInput`: an empty file, a dimension that is not positive or above
//! [`MAX_DIM`], a length that is not a whole number of records (truncated), a record whose
//! dimension differs from the first one's (naming the record).

use crate::error::{Error, Result};

/// Largest dimension accepted (a hostile first word cannot make the reader's record size
/// overflow or exceed any real dataset: GIST is 960).
pub const MAX_DIM: usize = 1 << 20;

/// Reads all vectors: `(rows, dim, values)` with `values` row-major.
pub fn read(file: &[u8]) -> Result<(usize, usize, Vec<f32>)> {
    if file.is_empty() {
        return Err(Error::invalid("empty fvecs file: no vectors to compress"));
    }
    if file.len() < 4 {
        return Err(Error::invalid(format!(
            "fvecs file of {} bytes is shorter than one dimension word",
            file.len()
        )));
    }
    let dim = i32::from_le_bytes([file[0], file[1], file[2], file[3]]);
    if dim <= 0 || dim as usize > MAX_DIM {
        return Err(Error::invalid(format!(
            "fvecs dimension {dim} is not in 1..={MAX_DIM}"
        )));
    }
    let dim = dim as usize;
    let record = 4 * (dim + 1);
    if !file.len().is_multiple_of(record) {
        return Err(Error::invalid(format!(
            "fvecs file of {} bytes is not a whole number of {record}-byte records (dimension {dim}): truncated?",
            file.len()
        )));
    }
    let rows = file.len() / record;
    let mut values = Vec::with_capacity(rows * dim);
    for (r, rec) in file.chunks_exact(record).enumerate() {
        let d = i32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
        if d as i64 != dim as i64 {
            return Err(Error::invalid(format!(
                "fvecs record {r} has dimension {d} where the first has {dim}"
            )));
        }
        values.extend(
            rec[4..]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
    }
    Ok((rows, dim, values))
}

/// Writes `values` (`dim` per vector) as fvecs.
pub fn write(values: &[f32], dim: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4 + values.len() / dim.max(1) * 4);
    for row in values.chunks(dim.max(1)) {
        out.extend_from_slice(&(dim as i32).to_le_bytes());
        for v in row {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_bad_files() {
        let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        let file = write(&values, 4);
        assert_eq!(read(&file).unwrap(), (3, 4, values));
        let err = |b: &[u8]| read(b).unwrap_err().to_string();
        assert!(err(&[]).contains("empty"));
        assert!(err(&file[..file.len() - 3]).contains("truncated"));
        assert!(err(&(-1i32).to_le_bytes()).contains("dimension -1"));
        let mut other = file.clone();
        other[20..24].copy_from_slice(&5i32.to_le_bytes());
        assert!(err(&other).contains("record 1 has dimension 5"));
    }
}
