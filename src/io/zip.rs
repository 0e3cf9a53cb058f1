//! A small reader of zip archives, as far as `torch.save` needs it: the end-of-central-directory
//! record (ZIP64 too: torch writes it always, and checkpoints past 4 GiB need it), the central
//! directory, and the local header of each entry, to find where the entry's bytes start.
//!
//! It never decompresses: it returns byte ranges of the file. The caller decides what to do with a
//! compressed entry (the PyTorch reader refuses it). Like the other readers it works through a
//! [`Source`], reading the tail of the file, the central directory and the local headers only, so a
//! multi-gigabyte checkpoint is never read whole; and every count and offset it reads is checked
//! against the file before anything is allocated for it.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::source::Source;

/// The signature a zip file starts with (its first local header).
pub const LOCAL_MAGIC: &[u8; 4] = b"PK\x03\x04";
const CENTRAL_MAGIC: &[u8; 4] = b"PK\x01\x02";
const EOCD_MAGIC: &[u8; 4] = b"PK\x05\x06";
const ZIP64_LOCATOR_MAGIC: &[u8; 4] = b"PK\x06\x07";
const ZIP64_EOCD_MAGIC: &[u8; 4] = b"PK\x06\x06";

const EOCD_LEN: u64 = 22;
const ZIP64_LOCATOR_LEN: u64 = 20;
const ZIP64_EOCD_LEN: u64 = 56;
const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: u64 = 30;
/// The EOCD record ends with a comment of at most 65535 bytes: it lies in the last this many bytes.
const EOCD_SEARCH: u64 = EOCD_LEN + 0xFFFF;

/// Most entries read. A checkpoint holds one entry per storage (a large model has tens of
/// thousands); the bound keeps a forged count from sizing an allocation.
pub const MAX_ENTRIES: u64 = 1 << 20;
/// Largest central directory read into memory (a million entries with 200-byte names).
pub const MAX_DIRECTORY_LEN: u64 = 256 << 20;

/// Compression method 0: the entry's bytes are stored as they are.
pub const STORED: u16 = 0;

/// Whether `head` (the first bytes of a file) starts like a zip archive: a local header, or the
/// end record of an empty archive.
pub fn is_zip(head: &[u8]) -> bool {
    head.starts_with(LOCAL_MAGIC) || head.starts_with(EOCD_MAGIC)
}

/// One entry of the central directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// 0 stored, 8 deflate, ...
    pub method: u16,
    pub flags: u16,
    pub compressed_size: u64,
    pub size: u64,
    /// Offset of the entry's local header.
    pub header_offset: u64,
}

impl Entry {
    /// Whether the entry is encrypted (general-purpose flag bit 0).
    pub fn encrypted(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// The central directory of an archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directory {
    /// In directory order.
    pub entries: Vec<Entry>,
    /// Where the central directory starts: every entry's local header and data lie before it.
    pub directory_start: u64,
}

impl Directory {
    pub fn find(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut le = [0u8; 8];
    le.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(le)
}

/// Reads the central directory: finds the end record (and the ZIP64 one it points to), then
/// parses every central header. Entries are checked to lie before the directory; their local
/// headers are read by [`data_range`].
pub fn read_directory<S: Source + ?Sized>(file: &S) -> Result<Directory> {
    let End {
        count,
        dir_len,
        dir_start,
        dir_limit,
    } = find_end(file)?;
    if count > MAX_ENTRIES {
        return Err(Error::unsupported(format!(
            "{count} zip entries, more than the {MAX_ENTRIES} read"
        )));
    }
    if dir_len > MAX_DIRECTORY_LEN {
        return Err(Error::unsupported(format!(
            "a zip central directory of {dir_len} bytes, more than the {MAX_DIRECTORY_LEN} read"
        )));
    }
    let dir_end = dir_start
        .checked_add(dir_len)
        .filter(|&end| end <= dir_limit)
        .ok_or_else(|| {
            Error::invalid(format!(
                "zip central directory [{dir_start}, +{dir_len}) runs past its end record at {dir_limit}"
            ))
        })?;
    // Each central header is at least 46 bytes: a count the directory cannot hold is a lie, found
    // before anything is reserved for it.
    if count > dir_len / CENTRAL_LEN as u64 {
        return Err(Error::invalid(format!(
            "{count} zip entries cannot fit in a {dir_len}-byte central directory"
        )));
    }
    let dir = file.read(dir_start..dir_end)?;
    let mut entries = Vec::with_capacity(count as usize);
    let mut at = 0usize;
    for index in 0..count {
        let (entry, next) = central_entry(&dir, at, index, dir_start)?;
        entries.push(entry);
        at = next;
    }
    Ok(Directory {
        entries,
        directory_start: dir_start,
    })
}

/// Where the central directory is, from the end record (and the ZIP64 one, when there is one).
struct End {
    count: u64,
    dir_len: u64,
    dir_start: u64,
    /// The end of the area the directory may occupy: the first end record.
    dir_limit: u64,
}

fn find_end<S: Source + ?Sized>(file: &S) -> Result<End> {
    let file_len = file.len();
    let tail_start = file_len.saturating_sub(EOCD_SEARCH);
    let tail = file.read(tail_start..file_len)?;
    // The last signature whose comment length reaches exactly to the end of the file; a signature
    // inside the comment is not it.
    let eocd_at = (0..tail.len().saturating_sub(EOCD_LEN as usize - 1))
        .rev()
        .find(|&i| {
            tail[i..].starts_with(EOCD_MAGIC)
                && i + EOCD_LEN as usize + u16_at(&tail, i + 20) as usize == tail.len()
        })
        .ok_or_else(|| {
            Error::invalid("no zip end-of-central-directory record (truncated archive?)")
        })?;
    let eocd = &tail[eocd_at..eocd_at + EOCD_LEN as usize];
    let eocd_pos = tail_start + eocd_at as u64;
    if u16_at(eocd, 4) != 0 || u16_at(eocd, 6) != 0 {
        return Err(Error::unsupported("a zip archive split over several disks"));
    }
    let mut count = u16_at(eocd, 10) as u64;
    let mut dir_len = u32_at(eocd, 12) as u64;
    let mut dir_start = u32_at(eocd, 16) as u64;
    let mut dir_limit = eocd_pos;

    let locator_pos = eocd_pos.checked_sub(ZIP64_LOCATOR_LEN);
    let locator = match locator_pos {
        Some(p) => Some(file.read(p..eocd_pos)?),
        None => None,
    };
    if let (Some(locator), Some(locator_pos)) = (locator, locator_pos) {
        if locator.starts_with(ZIP64_LOCATOR_MAGIC) {
            if u32_at(&locator, 4) != 0 || u32_at(&locator, 16) > 1 {
                return Err(Error::unsupported("a zip archive split over several disks"));
            }
            let at = u64_at(&locator, 8);
            let end = at
                .checked_add(ZIP64_EOCD_LEN)
                .filter(|&end| end <= locator_pos)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "ZIP64 end record at offset {at} runs past its locator at {locator_pos}"
                    ))
                })?;
            let rec = file.read(at..end)?;
            if !rec.starts_with(ZIP64_EOCD_MAGIC) {
                return Err(Error::invalid(format!(
                    "no ZIP64 end record at offset {at}, where the locator points"
                )));
            }
            if u32_at(&rec, 16) != 0 || u32_at(&rec, 20) != 0 {
                return Err(Error::unsupported("a zip archive split over several disks"));
            }
            count = u64_at(&rec, 32);
            dir_len = u64_at(&rec, 40);
            dir_start = u64_at(&rec, 48);
            dir_limit = at;
        }
    }
    Ok(End {
        count,
        dir_len,
        dir_start,
        dir_limit,
    })
}

/// The central header at `at` of the directory `dir` (which starts at `dir_start` in the file):
/// the entry and where the next header starts.
fn central_entry(dir: &[u8], at: usize, index: u64, dir_start: u64) -> Result<(Entry, usize)> {
    let fixed = dir
        .get(at..at + CENTRAL_LEN)
        .filter(|h| h.starts_with(CENTRAL_MAGIC))
        .ok_or_else(|| {
            Error::invalid(format!(
                "zip central header {index} at offset {} is missing or damaged",
                dir_start + at as u64
            ))
        })?;
    let flags = u16_at(fixed, 8);
    let method = u16_at(fixed, 10);
    let mut compressed_size = u32_at(fixed, 20) as u64;
    let mut size = u32_at(fixed, 24) as u64;
    let name_len = u16_at(fixed, 28) as usize;
    let extra_len = u16_at(fixed, 30) as usize;
    let comment_len = u16_at(fixed, 32) as usize;
    let disk = u16_at(fixed, 34);
    let mut header_offset = u32_at(fixed, 42) as u64;
    let var = at + CENTRAL_LEN;
    let var_end = var + name_len + extra_len + comment_len;
    let (name, extra) = match dir.get(var..var_end) {
        Some(v) => (&v[..name_len], &v[name_len..name_len + extra_len]),
        None => {
            return Err(Error::invalid(format!(
                "zip central header {index} runs past the end of the central directory"
            )))
        }
    };
    let name = std::str::from_utf8(name)
        .map_err(|_| Error::invalid(format!("zip entry {index}: name is not UTF-8")))?
        .to_string();
    // ZIP64 extended information (tag 1): the 64-bit values of the fields that hold
    // 0xFFFFFFFF, in this order.
    if size == 0xFFFF_FFFF || compressed_size == 0xFFFF_FFFF || header_offset == 0xFFFF_FFFF {
        let mut fields = zip64_fields(extra).ok_or_else(|| {
            Error::invalid(format!(
                "zip entry '{name}': 32-bit fields say ZIP64 but there is no ZIP64 extra field"
            ))
        })?;
        let mut next = |v: &mut u64| -> Result<()> {
            if *v == 0xFFFF_FFFF {
                *v = fields.next().ok_or_else(|| {
                    Error::invalid(format!("zip entry '{name}': ZIP64 extra field too short"))
                })?;
            }
            Ok(())
        };
        next(&mut size)?;
        next(&mut compressed_size)?;
        next(&mut header_offset)?;
    }
    if disk != 0 && disk != 0xFFFF {
        return Err(Error::unsupported("a zip archive split over several disks"));
    }
    if header_offset >= dir_start {
        return Err(Error::invalid(format!(
            "zip entry '{name}': local header offset {header_offset} is not before the central directory at {dir_start}"
        )));
    }
    let entry = Entry {
        name,
        method,
        flags,
        compressed_size,
        size,
        header_offset,
    };
    Ok((entry, var_end))
}

/// The 64-bit values of the ZIP64 extra field (tag 1) in `extra`, if there is one.
fn zip64_fields(extra: &[u8]) -> Option<impl Iterator<Item = u64> + '_> {
    let mut rest = extra;
    while rest.len() >= 4 {
        let tag = u16_at(rest, 0);
        let len = u16_at(rest, 2) as usize;
        let body = rest.get(4..4 + len)?;
        if tag == 1 {
            return Some(body.chunks_exact(8).map(|c| u64_at(c, 0)));
        }
        rest = &rest[4 + len..];
    }
    None
}

/// The byte range of `entry`'s data (compressed, if it is compressed) in the file, from its local
/// header: the header must be there, name the same entry, and the data must end before the
/// central directory. The local header's sizes are not used: torch writes zeros there and puts
/// the sizes in a data descriptor after the data (flag bit 3), so the central directory's are the
/// ones to trust.
pub fn data_range<S: Source + ?Sized>(
    file: &S,
    dir: &Directory,
    entry: &Entry,
) -> Result<Range<u64>> {
    let bad = |what: String| Error::invalid(format!("zip entry '{}': {what}", entry.name));
    let fixed_end = entry
        .header_offset
        .checked_add(LOCAL_LEN)
        .filter(|&e| e <= dir.directory_start)
        .ok_or_else(|| bad("local header runs into the central directory".into()))?;
    let fixed = file.read(entry.header_offset..fixed_end)?;
    if !fixed.starts_with(LOCAL_MAGIC) {
        return Err(bad(format!(
            "no local header at offset {}",
            entry.header_offset
        )));
    }
    let name_len = u16_at(&fixed, 26) as u64;
    let extra_len = u16_at(&fixed, 28) as u64;
    let name_end = fixed_end + name_len;
    if name_end > dir.directory_start {
        return Err(bad("local header runs into the central directory".into()));
    }
    if file.read(fixed_end..name_end)?.as_ref() != entry.name.as_bytes() {
        return Err(bad(format!(
            "the local header at offset {} names another entry",
            entry.header_offset
        )));
    }
    let start = name_end + extra_len;
    let end = start
        .checked_add(entry.compressed_size)
        .filter(|&e| e <= dir.directory_start)
        .ok_or_else(|| {
            bad(format!(
                "{} bytes of data at offset {start} run past the central directory at {}",
                entry.compressed_size, dir.directory_start
            ))
        })?;
    Ok(start..end)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal zip writer for tests: STORED entries, data aligned to `align` bytes by padding
    /// the local header's extra field (as torch does), a data descriptor after each entry (flag
    /// bit 3, zero sizes in the local header, as torch does), and optionally the ZIP64 end records.
    pub(crate) fn write_zip(entries: &[(&str, &[u8])], align: usize, zip64: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data) in entries {
            let offset = out.len();
            let base = offset + 30 + name.len() + 4;
            let pad = (align - base % align) % align;
            let crc = crate::checksum::crc32(data);
            out.extend_from_slice(LOCAL_MAGIC);
            out.extend_from_slice(&[0, 0, 8, 8, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&[0; 12]);
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&(4 + pad as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"FB");
            out.extend_from_slice(&(pad as u16).to_le_bytes());
            out.resize(out.len() + pad, b'Z');
            out.extend_from_slice(data);
            out.extend_from_slice(b"PK\x07\x08");
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            central.extend_from_slice(CENTRAL_MAGIC);
            central.extend_from_slice(&[0, 0, 0, 0, 8, 8, 0, 0, 0, 0, 0, 0]);
            central.extend_from_slice(&crc.to_le_bytes());
            central.extend_from_slice(&(data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(name.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 12]);
            central.extend_from_slice(&(offset as u32).to_le_bytes());
            central.extend_from_slice(name.as_bytes());
        }
        let dir_start = out.len();
        out.extend_from_slice(&central);
        let n = entries.len();
        if zip64 {
            let rec = out.len();
            out.extend_from_slice(ZIP64_EOCD_MAGIC);
            out.extend_from_slice(&44u64.to_le_bytes());
            out.extend_from_slice(&[0x1e, 3, 0x2d, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&(n as u64).to_le_bytes());
            out.extend_from_slice(&(n as u64).to_le_bytes());
            out.extend_from_slice(&(central.len() as u64).to_le_bytes());
            out.extend_from_slice(&(dir_start as u64).to_le_bytes());
            out.extend_from_slice(ZIP64_LOCATOR_MAGIC);
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&(rec as u64).to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
        }
        out.extend_from_slice(EOCD_MAGIC);
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        let start32 = if zip64 { u32::MAX } else { dir_start as u32 };
        out.extend_from_slice(&start32.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out
    }

    fn contents(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
        let dir = read_directory(zip).unwrap();
        dir.entries
            .iter()
            .map(|e| {
                let r = data_range(zip, &dir, e).unwrap();
                (
                    e.name.clone(),
                    zip[r.start as usize..r.end as usize].to_vec(),
                )
            })
            .collect()
    }

    #[test]
    fn entries_are_found_with_and_without_zip64() {
        let entries: [(&str, &[u8]); 3] = [("a/x", b"hello"), ("a/data/0", &[7; 100]), ("e", b"")];
        for zip64 in [false, true] {
            let zip = write_zip(&entries, 64, zip64);
            assert!(is_zip(&zip));
            let got = contents(&zip);
            assert_eq!(got.len(), 3);
            for ((name, data), (n, d)) in entries.iter().zip(&got) {
                assert_eq!((*name, *data), (n.as_str(), d.as_slice()));
            }
            // Aligned as torch aligns its storages.
            let dir = read_directory(zip.as_slice()).unwrap();
            let r = data_range(zip.as_slice(), &dir, &dir.entries[1]).unwrap();
            assert_eq!(r.start % 64, 0);
        }
    }

    #[test]
    fn a_comment_after_the_end_record_is_skipped() {
        let mut zip = write_zip(&[("n", b"v")], 1, false);
        let len = zip.len();
        zip[len - 2..].copy_from_slice(&6u16.to_le_bytes());
        zip.extend_from_slice(b"PK\x05\x06 x");
        assert_eq!(contents(&zip)[0].1, b"v");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let zip = write_zip(&[("a/data.pkl", b"abc"), ("a/data/0", &[1; 40])], 64, true);
        for cut in 0..zip.len() {
            let part = &zip[..cut];
            let ok = read_directory(part).and_then(|d| {
                d.entries
                    .iter()
                    .map(|e| data_range(part, &d, e))
                    .collect::<Result<Vec<_>>>()
            });
            assert!(ok.is_err(), "cut at {cut} was accepted");
        }
    }

    #[test]
    fn lying_offsets_and_counts_are_refused() {
        let zip = write_zip(&[("a", b"0123456789")], 1, false);
        let eocd = zip.len() - 22;
        let dir_start = u32_at(&zip, eocd + 16) as usize;
        // The entry count far above what the directory holds.
        let mut bad = zip.clone();
        bad[eocd + 10..eocd + 12].copy_from_slice(&0xFFFEu16.to_le_bytes());
        let e = read_directory(bad.as_slice()).unwrap_err().to_string();
        assert!(e.contains("cannot fit"), "{e}");
        // The directory past the end record.
        let mut bad = zip.clone();
        bad[eocd + 16..eocd + 20].copy_from_slice(&(eocd as u32).to_le_bytes());
        assert!(read_directory(bad.as_slice()).is_err());
        // A compressed size running into the directory.
        let mut bad = zip.clone();
        bad[dir_start + 20..dir_start + 24].copy_from_slice(&1000u32.to_le_bytes());
        let d = read_directory(bad.as_slice()).unwrap();
        let e = data_range(bad.as_slice(), &d, &d.entries[0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("run past"), "{e}");
        // A local header offset pointing at the data, or at another name.
        let mut bad = zip.clone();
        bad[dir_start + 42..dir_start + 46].copy_from_slice(&5u32.to_le_bytes());
        let d = read_directory(bad.as_slice()).unwrap();
        assert!(data_range(bad.as_slice(), &d, &d.entries[0]).is_err());
        let mut bad = zip.clone();
        bad[30] = b'b';
        let d = read_directory(bad.as_slice()).unwrap();
        let e = data_range(bad.as_slice(), &d, &d.entries[0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("names another entry"), "{e}");
        // ZIP64 sentinel without the extra field.
        let mut bad = zip.clone();
        bad[dir_start + 20..dir_start + 24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_directory(bad.as_slice()).is_err());
    }

    #[test]
    fn a_forged_zip64_record_is_refused() {
        let zip = write_zip(&[("a", b"0123456789")], 1, true);
        let eocd = zip.len() - 22;
        let rec = eocd - 20 - 56;
        for (field, value) in [
            (32, u64::MAX),
            (40, u64::MAX),
            (48, u64::MAX),
            (40, 1 << 40),
        ] {
            let mut bad = zip.clone();
            bad[rec + field..rec + field + 8].copy_from_slice(&value.to_le_bytes());
            assert!(read_directory(bad.as_slice()).is_err(), "field {field}");
        }
        let mut bad = zip.clone();
        bad[eocd - 12..eocd - 4].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
        assert!(read_directory(bad.as_slice()).is_err());
    }
}
