//! llama.cpp importance matrices (what `llama-imatrix` writes): per linear weight, the second
//! moment of each input channel over the calibration tokens, `d_j = E[x_j^2]`. Two formats:
//!
//! - **GGUF** (llama.cpp's default): for each weight `NAME` an F32 tensor `NAME.in_sum2` of GGUF
//!   dims `[cols, n_mat]` (the sums of `x_j^2`, one row per expert matrix, 1 for a dense layer)
//!   and an F32 tensor `NAME.counts` of dims `[1, n_mat]` (the tokens each matrix saw). `d_j` is
//!   `in_sum2 / counts`, averaged over the experts that saw any token.
//! - **legacy `.dat`**: an i32 entry count; per entry an i32 name length, the name, an i32
//!   `ncall` (chunks), an i32 value count and that many f32 (each the mean square times `ncall`);
//!   then an optional i32 chunk count and i32-length dataset name. `d_j` is the value / `ncall`,
//!   averaged over the value count's `n_mat` blocks when the caller knows the columns.
//!
//! Only the scale of `d_j` within one weight matters to lowbit (its per-column grid and the
//! equivalent MSE are both invariant to it), so the two formats give the same statistics for the
//! same collection. Names stay llama.cpp's (`blk.0.attn_q.weight`); `model::calibrate` maps them
//! onto a checkpoint. Every count and length is checked against the bytes left before anything
//! is allocated, and a value that is negative or not finite is refused with its weight's name.

use std::collections::BTreeMap;

use super::gguf::{self, GgmlType};
use crate::error::{Error, Result};
use crate::source::Source;

/// Most entries (weights) in one legacy file.
pub const MAX_ENTRIES: u32 = 1 << 20;
/// Longest weight name in a legacy file.
pub const MAX_NAME_LEN: u32 = 4096;

/// An importance matrix as read: per weight (llama.cpp's name), its values in file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Imatrix {
    /// Weight name -> `n_mat` blocks of per-column mean squares, concatenated (one block for a
    /// dense layer). The legacy format does not say `n_mat`: see [`Imatrix::columns`].
    pub entries: BTreeMap<String, Vec<f32>>,
    /// The chunks of calibration text the collection ran, when the file says.
    pub chunks: Option<u64>,
}

impl Imatrix {
    /// Weight `name`'s per-column second moments for a weight of `cols` columns: its values, or
    /// the mean of its `n_mat` blocks of `cols` (an expert-split weight). `None` when the file has
    /// no such entry; an error when its length is not a multiple of `cols`.
    pub fn columns(&self, name: &str, cols: usize) -> Result<Option<Vec<f32>>> {
        let Some(v) = self.entries.get(name) else {
            return Ok(None);
        };
        if cols == 0 || v.is_empty() || v.len() % cols != 0 {
            return Err(Error::invalid(format!(
                "the importance matrix has {} values for '{name}', which has {cols} input columns",
                v.len()
            ))
            .in_tensor(name));
        }
        let blocks = v.len() / cols;
        let mut sum = vec![0f64; cols];
        for block in v.chunks_exact(cols) {
            sum.iter_mut().zip(block).for_each(|(s, &x)| *s += x as f64);
        }
        Ok(Some(
            sum.into_iter()
                .map(|s| (s / blocks as f64) as f32)
                .collect(),
        ))
    }
}

/// Reads an importance matrix, GGUF or legacy (told apart by GGUF's magic).
pub fn read<S: Source + ?Sized>(file: &S) -> Result<Imatrix> {
    if file.prefix(4)?.as_ref() == gguf::MAGIC {
        read_gguf(file)
    } else {
        read_legacy(&file.whole()?)
    }
}

fn bad(reason: impl std::fmt::Display) -> Error {
    Error::invalid(format!("not a valid importance matrix: {reason}"))
}

/// Values must be finite and non-negative (they are means of squares).
fn check_values(name: &str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
        None => Ok(()),
        Some(i) => Err(bad(format!(
            "value {} at index {i} of '{name}' is not a finite mean square",
            values[i]
        ))
        .in_tensor(name)),
    }
}

fn read_gguf<S: Source + ?Sized>(file: &S) -> Result<Imatrix> {
    let g = gguf::read(file)?;
    let chunks = g
        .metadata
        .iter()
        .find(|(k, _)| k == "imatrix.chunk_count")
        .and_then(|(_, v)| v.to_text())
        .and_then(|t| t.parse().ok());
    let f32_tensor = |t: &gguf::GgufTensor| -> Result<Vec<f32>> {
        if t.ggml_type != GgmlType::F32 {
            return Err(bad(format!("'{}' is {}, not F32", t.name, t.ggml_type)).in_tensor(&t.name));
        }
        let bytes = file.read(t.range.clone())?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    };
    let mut entries = BTreeMap::new();
    for sums in &g.tensors {
        let Some(name) = sums.name.strip_suffix(".in_sum2") else {
            continue;
        };
        let counts_name = format!("{name}.counts");
        let counts = g
            .tensors
            .iter()
            .find(|t| t.name == counts_name)
            .ok_or_else(|| bad(format!("'{}' has no '{counts_name}'", sums.name)))?;
        let (sums_v, counts_v) = (f32_tensor(sums)?, f32_tensor(counts)?);
        check_values(name, &sums_v)?;
        check_values(name, &counts_v)?;
        let n_mat = counts_v.len();
        if n_mat == 0 || sums_v.len() % n_mat != 0 || sums.shape.len() > 2 {
            return Err(bad(format!(
                "'{name}' has {} sums for {n_mat} matrices",
                sums_v.len()
            ))
            .in_tensor(name));
        }
        let cols = sums_v.len() / n_mat;
        // Experts that saw no token carry no information: they are left out of the mean.
        let mut values = Vec::with_capacity(sums_v.len());
        for (block, &count) in sums_v.chunks_exact(cols).zip(&counts_v) {
            if count > 0.0 {
                values.extend(block.iter().map(|&s| s / count));
            }
        }
        if values.is_empty() {
            return Err(bad(format!("'{name}' saw no token")).in_tensor(name));
        }
        entries.insert(name.to_string(), values);
    }
    if entries.is_empty() {
        return Err(bad(
            "a GGUF file with no '.in_sum2' tensor (is it a model, not an imatrix?)",
        ));
    }
    Ok(Imatrix { entries, chunks })
}

/// A little-endian reader over the legacy file's bytes.
struct Bytes<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Bytes<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8]> {
        if self.b.len() - self.pos < n {
            return Err(bad(format!("the file ends inside {what}")));
        }
        self.pos += n;
        Ok(&self.b[self.pos - n..self.pos])
    }

    fn i32(&mut self, what: &str) -> Result<i32> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A count that must be positive (or zero when `zero_ok`) and at most `max`.
    fn count(&mut self, what: &str, max: u64) -> Result<usize> {
        let v = self.i32(what)?;
        if v < 0 || v as u64 > max {
            return Err(bad(format!("{what} is {v} (at most {max})")));
        }
        Ok(v as usize)
    }
}

fn read_legacy(b: &[u8]) -> Result<Imatrix> {
    let mut r = Bytes { b, pos: 0 };
    // An entry takes at least 12 bytes: its name's length, ncall and the value count.
    let n = r.count(
        "the entry count",
        MAX_ENTRIES.min((b.len() / 12) as u32) as u64,
    )?;
    let mut entries = BTreeMap::new();
    for _ in 0..n {
        let len = r.count("a name's length", MAX_NAME_LEN as u64)?;
        let name = std::str::from_utf8(r.take(len, "a name")?)
            .map_err(|_| bad("a weight name that is not UTF-8"))?
            .to_string();
        let ncall = r.i32("a call count")?;
        let left = ((b.len() - r.pos) / 4) as u64;
        let nval = r.count(&format!("the value count of '{name}'"), left)?;
        let raw = r.take(4 * nval, "the values")?;
        let mut values: Vec<f32> = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        check_values(&name, &values)?;
        if ncall <= 0 || nval == 0 {
            return Err(bad(format!("'{name}' saw no token (call count {ncall})")).in_tensor(&name));
        }
        values.iter_mut().for_each(|v| *v /= ncall as f32);
        if entries.insert(name.clone(), values).is_some() {
            return Err(bad(format!("'{name}' appears twice")));
        }
    }
    // The trailer (chunk count, dataset name) is optional: files of older tools end here.
    let chunks = match b.len() - r.pos >= 4 {
        true => Some(r.count("the chunk count", i32::MAX as u64)? as u64),
        false => None,
    };
    if b.len() - r.pos >= 4 {
        let len = r.count("the dataset name's length", (b.len() - r.pos - 4) as u64)?;
        r.take(len, "the dataset name")?;
    }
    if r.pos != b.len() {
        return Err(bad(format!(
            "{} bytes after the last entry",
            b.len() - r.pos
        )));
    }
    Ok(Imatrix { entries, chunks })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A legacy file as llama.cpp writes it: `(name, ncall, values as stored)`.
    pub(crate) fn legacy(entries: &[(&str, i32, &[f32])], trailer: bool) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(entries.len() as i32).to_le_bytes());
        for (name, ncall, values) in entries {
            b.extend_from_slice(&(name.len() as i32).to_le_bytes());
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&ncall.to_le_bytes());
            b.extend_from_slice(&(values.len() as i32).to_le_bytes());
            values
                .iter()
                .for_each(|v| b.extend_from_slice(&v.to_le_bytes()));
        }
        if trailer {
            b.extend_from_slice(&7i32.to_le_bytes());
            b.extend_from_slice(&9i32.to_le_bytes());
            b.extend_from_slice(b"calib.txt");
        }
        b
    }

    #[test]
    fn a_legacy_file_gives_mean_squares() {
        let file = legacy(&[("blk.0.attn_q.weight", 2, &[2.0, 4.0, 0.0])], true);
        let m = read(&file[..]).unwrap();
        assert_eq!(m.entries["blk.0.attn_q.weight"], vec![1.0, 2.0, 0.0]);
        assert_eq!(m.chunks, Some(7));
        let without = read(&legacy(&[("w", 1, &[1.0, 3.0, 5.0, 7.0])], false)[..]).unwrap();
        assert_eq!(without.chunks, None);
        // Two expert matrices of two columns: their mean.
        assert_eq!(without.columns("w", 2).unwrap(), Some(vec![3.0, 5.0]));
        assert_eq!(without.columns("v", 2).unwrap(), None);
        assert!(without.columns("w", 3).is_err());
    }

    #[test]
    fn hostile_legacy_files_are_named_errors() {
        let good = legacy(&[("blk.0.ffn_up.weight", 1, &[1.0, 2.0])], true);
        for cut in 0..good.len() {
            // Every truncation is an error, except where the optional trailer's parts end.
            let r = read(&good[..cut]);
            if cut != good.len() - 17 && cut != good.len() - 13 {
                assert!(r.is_err(), "truncated at {cut}");
            }
        }
        let lying_count = {
            let mut b = good.clone();
            b[..4].copy_from_slice(&i32::MAX.to_le_bytes());
            b
        };
        assert!(read(&lying_count[..])
            .unwrap_err()
            .to_string()
            .contains("entry count"));
        let huge_values = {
            let mut b = good.clone();
            let at = 4 + 4 + "blk.0.ffn_up.weight".len() + 4;
            b[at..at + 4].copy_from_slice(&(1i32 << 30).to_le_bytes());
            b
        };
        assert!(read(&huge_values[..]).is_err());
        let negative = legacy(&[("w", 1, &[-1.0])], false);
        let e = read(&negative[..]).unwrap_err().to_string();
        assert!(e.contains("'w'") && e.contains("mean square"), "{e}");
        let nan = legacy(&[("w", 1, &[f32::NAN])], false);
        assert!(read(&nan[..]).is_err());
        let no_calls = legacy(&[("w", 0, &[1.0])], false);
        assert!(read(&no_calls[..]).is_err());
        let twice = legacy(&[("w", 1, &[1.0]), ("w", 1, &[1.0])], false);
        assert!(read(&twice[..]).unwrap_err().to_string().contains("twice"));
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn a_gguf_file_gives_sums_over_counts_and_skips_idle_experts() {
        use crate::io::gguf::tests::Writer;
        let file = Writer::new()
            .kv("imatrix.chunk_count", 4, 5u32.to_le_bytes().to_vec())
            .tensor(
                "blk.0.ffn_down.weight.in_sum2",
                &[3, 1],
                GgmlType::F32,
                &f32_bytes(&[8.0, 4.0, 0.0]),
            )
            .tensor(
                "blk.0.ffn_down.weight.counts",
                &[1, 1],
                GgmlType::F32,
                &f32_bytes(&[4.0]),
            )
            // Two experts of two columns, the second never used.
            .tensor(
                "blk.0.ffn_up_exps.weight.in_sum2",
                &[2, 2],
                GgmlType::F32,
                &f32_bytes(&[2.0, 6.0, 0.0, 0.0]),
            )
            .tensor(
                "blk.0.ffn_up_exps.weight.counts",
                &[1, 2],
                GgmlType::F32,
                &f32_bytes(&[2.0, 0.0]),
            )
            .bytes();
        let m = read(&file[..]).unwrap();
        assert_eq!(m.chunks, Some(5));
        assert_eq!(m.entries["blk.0.ffn_down.weight"], vec![2.0, 1.0, 0.0]);
        assert_eq!(
            m.columns("blk.0.ffn_up_exps.weight", 2).unwrap(),
            Some(vec![1.0, 3.0])
        );
        // The same collection as a legacy file gives the same statistics.
        let dat = legacy(&[("blk.0.ffn_down.weight", 5, &[10.0, 5.0, 0.0])], true);
        assert_eq!(
            read(&dat[..]).unwrap().entries["blk.0.ffn_down.weight"],
            vec![2.0, 1.0, 0.0]
        );
    }

    #[test]
    fn hostile_gguf_imatrices_are_named_errors() {
        use crate::io::gguf::tests::Writer;
        let no_counts = Writer::new()
            .tensor("w.in_sum2", &[2, 1], GgmlType::F32, &f32_bytes(&[1.0, 1.0]))
            .bytes();
        assert!(read(&no_counts[..])
            .unwrap_err()
            .to_string()
            .contains("w.counts"));
        let model = Writer::new()
            .tensor(
                "token_embd.weight",
                &[2, 1],
                GgmlType::F32,
                &f32_bytes(&[1.0, 1.0]),
            )
            .bytes();
        assert!(read(&model[..])
            .unwrap_err()
            .to_string()
            .contains("in_sum2"));
        let f16 = Writer::new()
            .tensor("w.in_sum2", &[2, 1], GgmlType::F16, &[0, 60, 0, 60])
            .tensor("w.counts", &[1, 1], GgmlType::F32, &f32_bytes(&[1.0]))
            .bytes();
        assert!(read(&f16[..]).unwrap_err().to_string().contains("not F32"));
        let uneven = Writer::new()
            .tensor(
                "w.in_sum2",
                &[3, 1],
                GgmlType::F32,
                &f32_bytes(&[1.0, 1.0, 1.0]),
            )
            .tensor("w.counts", &[1, 2], GgmlType::F32, &f32_bytes(&[1.0, 1.0]))
            .bytes();
        assert!(read(&uneven[..]).is_err());
        let idle = Writer::new()
            .tensor("w.in_sum2", &[1, 1], GgmlType::F32, &f32_bytes(&[1.0]))
            .tensor("w.counts", &[1, 1], GgmlType::F32, &f32_bytes(&[0.0]))
            .bytes();
        assert!(read(&idle[..])
            .unwrap_err()
            .to_string()
            .contains("no token"));
    }

    /// Three weights of what `llama-imatrix` (llama.cpp b0.3.36's tree) wrote for SmolLM2-135M on
    /// 4 chunks of 256 tokens, in both formats (`--output-format dat` and the default GGUF; the
    /// GGUF fixture rewritten with the three entries by the `gguf` package, the values untouched).
    const REAL_DAT: &[u8] = include_bytes!("../../tests/fixtures/imatrix/smollm2-3.dat");
    const REAL_GGUF: &[u8] = include_bytes!("../../tests/fixtures/imatrix/smollm2-3.gguf");

    #[test]
    fn llama_cpps_two_formats_give_the_same_statistics() {
        let (dat, gguf) = (read(REAL_DAT).unwrap(), read(REAL_GGUF).unwrap());
        assert_eq!(dat.chunks, Some(4));
        assert_eq!(gguf.chunks, Some(4));
        let names: Vec<&String> = dat.entries.keys().collect();
        assert_eq!(names, gguf.entries.keys().collect::<Vec<_>>());
        assert_eq!(names.len(), 3);
        for (name, d) in &dat.entries {
            let g = &gguf.entries[name];
            assert_eq!(d.len(), g.len());
            for (a, b) in d.iter().zip(g) {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1e-12),
                    "{name}: {a} vs {b}"
                );
            }
        }
        assert_eq!(dat.entries["blk.0.ffn_down.weight"].len(), 1536);
    }

    #[test]
    fn mutated_real_imatrices_never_panic() {
        let mut rng = crate::rng::Rng::new(17);
        for fixture in [REAL_DAT, REAL_GGUF] {
            for _ in 0..1500 {
                let mut b = fixture.to_vec();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(b.len() as u64) as usize;
                    match rng.below(3) {
                        0 => b[at] = rng.next_u64() as u8,
                        1 => b[at] ^= 1 << rng.below(8),
                        _ => b.truncate(at),
                    }
                    if b.is_empty() {
                        break;
                    }
                }
                if let Ok(m) = read(&b[..]) {
                    for v in m.entries.values() {
                        assert!(v.iter().all(|x| x.is_finite() && *x >= 0.0));
                    }
                }
            }
        }
    }
}
