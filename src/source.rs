//! Where input bytes come from. Natively the whole file is one slice (an mmap); in the browser it
//! is a `File` read one range at a time (`File.slice()`), so that a checkpoint larger than the 4 GiB
//! a wasm32 module can address still goes through, tensor by tensor. The core reads headers and
//! tensors through this trait and never asks for the whole file unless the format needs it (CSV,
//! fvecs and sequence files are parsed as a whole).

use std::borrow::Cow;
use std::ops::Range;

use crate::error::{Error, Result};

/// Natively the checkpoint's tensors are analysed on several threads, so a source must be
/// shareable there; the browser's single-threaded worker has no such need (a `File` is not `Sync`).
#[cfg(not(target_arch = "wasm32"))]
pub trait SourceBound: Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Sync + ?Sized> SourceBound for T {}
#[cfg(target_arch = "wasm32")]
pub trait SourceBound {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> SourceBound for T {}

/// Random access to the bytes of one input file.
pub trait Source: SourceBound {
    /// The file's length in bytes.
    fn len(&self) -> u64;

    /// The bytes in `range`, which the caller has checked against [`Source::len`]. A range that
    /// does not fit in this machine's memory is an error, not a panic.
    fn read(&self, range: Range<u64>) -> Result<Cow<'_, [u8]>>;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `n` bytes, or the whole file when it is shorter.
    fn prefix(&self, n: u64) -> Result<Cow<'_, [u8]>> {
        self.read(0..n.min(self.len()))
    }

    /// The whole file, for the formats that are parsed as a whole.
    fn whole(&self) -> Result<Cow<'_, [u8]>> {
        self.read(0..self.len())
    }
}

impl Source for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read(&self, range: Range<u64>) -> Result<Cow<'_, [u8]>> {
        let r = usize_range(&range)?;
        self.get(r).map(Cow::Borrowed).ok_or_else(|| {
            Error::invalid(format!(
                "bytes {}..{} lie outside the {}-byte file",
                range.start,
                range.end,
                <[u8]>::len(self)
            ))
        })
    }
}

impl Source for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read(&self, range: Range<u64>) -> Result<Cow<'_, [u8]>> {
        self.as_slice().read(range)
    }
}

/// `range` as indices of this machine's memory, or an error saying it does not fit (a > 4 GiB
/// tensor in the browser's 32-bit address space).
pub fn usize_range(range: &Range<u64>) -> Result<Range<usize>> {
    match (usize::try_from(range.start), usize::try_from(range.end)) {
        (Ok(a), Ok(b)) if a <= b => Ok(a..b),
        _ => Err(Error::unsupported(format!(
            "{} bytes at offset {} do not fit in this machine's address space",
            range.end.saturating_sub(range.start),
            range.start
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_read_in_place_and_refuse_ranges_outside() {
        let file: &[u8] = b"0123456789";
        assert_eq!(file.read(2..5).unwrap().as_ref(), b"234");
        assert!(matches!(file.read(2..5).unwrap(), Cow::Borrowed(_)));
        assert_eq!(Source::len(file), 10);
        assert_eq!(file.prefix(100).unwrap().len(), 10);
        assert!(file.read(8..11).is_err());
    }
}
