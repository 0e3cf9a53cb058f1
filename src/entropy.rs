//! PLACEHOLDER implementation with the final API: symbols stored as LEB128 varints, no modelling.
//! Replaced by the constriction-based coder on its branch; callers do not change.

use crate::error::{Error, Result};

/// Entropy-coded symbols: the bytes to store and how many of them are the model's table
/// (side information).
#[derive(Clone, Debug)]
pub struct Coded {
    pub bytes: Vec<u8>,
    pub table_bytes: usize,
}

/// Codes `symbols` (each < `alphabet`) with a static model fitted to them; the model's table is
/// part of the output. Decoding needs `symbols.len()` and `alphabet` from the caller.
pub fn encode(symbols: &[u32], alphabet: u32) -> Coded {
    let contexts = vec![0u32; symbols.len()];
    encode_with_contexts(symbols, &contexts, alphabet, 1)
}

pub fn decode(bytes: &[u8], count: usize, alphabet: u32) -> Result<Vec<u32>> {
    let contexts = vec![0u32; count];
    decode_with_contexts(bytes, &contexts, alphabet, 1)
}

/// Like [`encode`], with one model per context: symbol `i` is coded with the model of
/// `contexts[i]` (< `n_contexts`). The decoder must know the same contexts beforehand.
pub fn encode_with_contexts(
    symbols: &[u32],
    contexts: &[u32],
    alphabet: u32,
    n_contexts: u32,
) -> Coded {
    assert_eq!(symbols.len(), contexts.len());
    let _ = n_contexts;
    let mut bytes = Vec::new();
    for &s in symbols {
        debug_assert!(s < alphabet);
        let mut v = s;
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                bytes.push(b);
                break;
            }
            bytes.push(b | 0x80);
        }
    }
    Coded {
        bytes,
        table_bytes: 0,
    }
}

pub fn decode_with_contexts(
    bytes: &[u8],
    contexts: &[u32],
    alphabet: u32,
    n_contexts: u32,
) -> Result<Vec<u32>> {
    let _ = n_contexts;
    let mut out = Vec::with_capacity(contexts.len().min(bytes.len()));
    let mut pos = 0;
    for _ in 0..contexts.len() {
        let mut v: u32 = 0;
        let mut shift = 0;
        loop {
            let b = *bytes
                .get(pos)
                .ok_or_else(|| Error::corrupt("entropy-coded stream ends early"))?;
            pos += 1;
            v |= ((b & 0x7f) as u32).checked_shl(shift).unwrap_or(0);
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 28 {
                return Err(Error::corrupt("bad varint in entropy-coded stream"));
            }
        }
        if v >= alphabet {
            return Err(Error::corrupt("symbol outside the alphabet"));
        }
        out.push(v);
    }
    Ok(out)
}

/// Empirical entropy of `symbols` in bits (an estimate, for reports: never a size).
pub fn entropy_bits(symbols: &[u32], alphabet: u32) -> f64 {
    let mut counts = vec![0u64; alphabet as usize];
    for &s in symbols {
        counts[s as usize] += 1;
    }
    let n = symbols.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| -(c as f64) * (c as f64 / n).log2())
        .sum()
}
