//! The one bounds-checked reader of a codec's section (scalar, turbo, vq, the low-rank family,
//! the vector coders) and the length-prefixed stream writer of the low-rank family: a truncated
//! or hostile section is an error naming the codec, never a panic, in every one of them.

use crate::error::{Error, Result};

use super::get_varint;

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
    /// The error of a field that runs past the end, when not "`codec` section ends early" (the
    /// vector coders' own words, kept).
    ends_early: Option<&'static str>,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], codec: &'static str) -> Self {
        Reader {
            bytes,
            pos: 0,
            codec,
            ends_early: None,
        }
    }

    /// The same reader, whose fields running past the end fail with `message`.
    pub fn ends_early_as(self, message: &'static str) -> Self {
        Reader {
            ends_early: Some(message),
            ..self
        }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let (codec, ends_early) = (self.codec, self.ends_early);
        self.take_or(n, || match ends_early {
            Some(message) => Error::corrupt(message),
            None => Error::corrupt(format!("{codec} section ends early")),
        })
    }

    /// [`Self::take`] of the field `what`, whose truncation error names it.
    pub fn take_named(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let codec = self.codec;
        self.take_or(n, || {
            Error::corrupt(format!("{codec} section ends inside the {what}"))
        })
    }

    fn take_or(&mut self, n: usize, error: impl FnOnce() -> Error) -> Result<&'a [u8]> {
        let Some(end) = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()) else {
            return Err(error());
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A variable-length integer (`codec::put_varint`); its errors are `codec::get_varint`'s.
    pub fn varint(&mut self) -> Result<u64> {
        let (v, used) = get_varint(&self.bytes[self.pos..])?;
        self.pos += used;
        Ok(v)
    }

    /// `count` little-endian f32s (the length is checked before anything is allocated).
    pub fn f32s(&mut self, count: usize) -> Result<Vec<f32>> {
        let len = count
            .checked_mul(4)
            .ok_or_else(|| Error::corrupt(format!("{} section field too long", self.codec)))?;
        Ok(self
            .take(len)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
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

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Whether every byte has been read.
    pub fn is_done(&self) -> bool {
        self.pos == self.bytes.len()
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
