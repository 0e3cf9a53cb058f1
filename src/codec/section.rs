//! The fields of a low-rank family section (lowrank, sparse-lowrank, shared-lowrank): one
//! bounds-checked little-endian cursor and one length-prefixed stream writer, so a truncated or
//! hostile section is an error naming the codec, never a panic, in every one of them.

use crate::error::{Error, Result};

/// Appends `stream` with its length as a u32 in front.
pub fn push_stream(out: &mut Vec<u8>, stream: &[u8], codec: &str) -> Result<()> {
    let len = u32::try_from(stream.len())
        .map_err(|_| Error::unsupported(format!("{codec} stream longer than 4 GiB")))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(stream);
    Ok(())
}

/// A bounds-checked little-endian cursor over a section of codec `codec`.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    codec: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], codec: &'static str) -> Self {
        Reader {
            bytes,
            pos: 0,
            codec,
        }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| Error::corrupt(format!("{} section ends early", self.codec)))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_bits(self.u32()?))
    }

    /// `n` quantizer steps, each finite and non-negative.
    pub fn steps(&mut self, n: usize) -> Result<Vec<f32>> {
        let raw = self.take(
            n.checked_mul(4)
                .ok_or_else(|| Error::corrupt(format!("{} rank overflows", self.codec)))?,
        )?;
        let steps: Vec<f32> = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if steps.iter().any(|s| !(s.is_finite() && *s >= 0.0)) {
            return Err(Error::corrupt(format!(
                "{} step is negative or not finite",
                self.codec
            )));
        }
        Ok(steps)
    }

    /// A length-prefixed stream written by [`push_stream`].
    pub fn stream(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// The bytes after the last field read (an embedded section of another codec).
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        out
    }

    /// Fails when bytes are left after the last field.
    pub fn end(&self) -> Result<()> {
        if self.pos != self.bytes.len() {
            return Err(Error::corrupt(format!(
                "{} section has trailing bytes",
                self.codec
            )));
        }
        Ok(())
    }
}
