//! FASTA and FASTQ files split into streams that model well, and joined back byte for byte.
//!
//! A file becomes: the header lines (text), the line layout (line lengths, run-length coded), the
//! residues' case runs, the runs of non-ACGT residues (N and IUPAC codes, gaps, anything else) and
//! the ACGT bases as symbols 0..3 — plus, for FASTQ, the quality lines. Every byte of the input is
//! in exactly one stream, so any input that parses is restored exactly: CRLF or LF line ends, a
//! missing final newline, empty records, empty lines, very long lines, lowercase, stray bytes.
//!
//! Not here: the modelling of the streams (`fcm.rs`) and the container (`mod.rs`).

use crate::codec::{get_varint, put_varint};
use crate::error::{Error, Result};

/// Which letters are bases of the 4-symbol stream (after upper-casing): A, C, G, T = 0, 1, 2, 3.
#[inline]
fn base_code(upper: u8) -> Option<u8> {
    match upper {
        b'A' => Some(0),
        b'C' => Some(1),
        b'G' => Some(2),
        b'T' => Some(3),
        _ => None,
    }
}

const BASE_LETTERS: [u8; 4] = *b"ACGT";

/// Residues (sequence letters, line breaks removed) split into three streams.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Residues {
    /// The A/C/G/T residues, upper-cased, as 0..3.
    pub bases: Vec<u8>,
    /// Varints: alternating run lengths of upper-case (first) and lower-case residues.
    pub case_runs: Vec<u8>,
    /// Varints, per run of one repeated non-ACGT (upper-cased) byte: residues since the previous
    /// run ended, run length, the byte.
    pub exceptions: Vec<u8>,
}

impl Residues {
    pub fn split(residues: &[u8]) -> Residues {
        let mut r = Residues {
            bases: Vec::with_capacity(residues.len()),
            ..Default::default()
        };
        let (mut lower, mut run) = (false, 0u64);
        let mut gap = 0u64;
        let mut i = 0;
        while i < residues.len() {
            let byte = residues[i];
            if byte.is_ascii_lowercase() != lower {
                put_varint(&mut r.case_runs, run);
                lower = !lower;
                run = 0;
            }
            run += 1;
            let upper = byte.to_ascii_uppercase();
            if let Some(code) = base_code(upper) {
                r.bases.push(code);
                gap += 1;
                i += 1;
                continue;
            }
            // A run of one repeated exception byte (case may vary inside it).
            let mut len = 1;
            while i + len < residues.len() && residues[i + len].to_ascii_uppercase() == upper {
                let b = residues[i + len];
                if b.is_ascii_lowercase() != lower {
                    put_varint(&mut r.case_runs, run);
                    lower = !lower;
                    run = 0;
                }
                run += 1;
                len += 1;
            }
            put_varint(&mut r.exceptions, gap);
            put_varint(&mut r.exceptions, len as u64);
            r.exceptions.push(upper);
            gap = 0;
            i += len;
        }
        put_varint(&mut r.case_runs, run);
        r
    }

    /// Rebuilds the residues (at most `max_total`); every count is checked before it is used.
    pub fn join(&self, max_total: u64) -> Result<Vec<u8>> {
        let total = self.total(max_total)?;
        let mut out = Vec::with_capacity(total);
        let mut bases = self.bases.iter();
        let mut pos = 0;
        let exc = &self.exceptions;
        while pos < exc.len() {
            let (gap, n) = get_varint(&exc[pos..])?;
            pos += n;
            let (len, n) = get_varint(&exc[pos..])?;
            pos += n;
            let byte = *exc
                .get(pos)
                .ok_or_else(|| Error::corrupt("the exception stream ends early"))?;
            pos += 1;
            if gap > (total - out.len()) as u64 || len > (total - out.len()) as u64 - gap {
                return Err(Error::corrupt("an exception run lies outside the sequence"));
            }
            for _ in 0..gap {
                let b = bases
                    .next()
                    .ok_or_else(|| Error::corrupt("too few bases for the layout"))?;
                out.push(BASE_LETTERS[(*b & 3) as usize]);
            }
            out.extend(std::iter::repeat_n(byte, len as usize));
        }
        for &b in bases {
            if out.len() == total {
                return Err(Error::corrupt("more bases than the layout holds"));
            }
            out.push(BASE_LETTERS[(b & 3) as usize]);
        }
        if out.len() != total {
            return Err(Error::corrupt("too few residues for the layout"));
        }
        let (mut pos, mut at, mut lower) = (0, 0usize, false);
        while pos < self.case_runs.len() {
            let (run, n) = get_varint(&self.case_runs[pos..])?;
            pos += n;
            if run > (total - at) as u64 {
                return Err(Error::corrupt("a case run lies outside the sequence"));
            }
            let end = at + run as usize;
            if lower {
                out[at..end].make_ascii_lowercase();
            }
            at = end;
            lower = !lower;
        }
        Ok(out)
    }

    /// The residue count the streams describe: bases plus exception runs, at most `max_total`.
    fn total(&self, max_total: u64) -> Result<usize> {
        let mut total = self.bases.len() as u64;
        let mut pos = 0;
        let exc = &self.exceptions;
        while pos < exc.len() {
            pos += get_varint(&exc[pos..])?.1;
            let (len, n) = get_varint(&exc[pos..])?;
            pos += n + 1;
            total = total.saturating_add(len);
        }
        if total > max_total {
            return Err(Error::corrupt(format!(
                "the sequence streams claim {total} residues, more than the file can hold"
            )));
        }
        Ok(total as usize)
    }
}

/// The line structure shared by FASTA and FASTQ: line ends and the final newline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineEnds {
    pub crlf: bool,
    pub final_newline: bool,
}

/// Splits a file into lines (without their ends). CRLF is recognised only when every line end
/// is CRLF; otherwise a '\r' stays in the line's content.
pub fn lines(file: &[u8]) -> (Vec<&[u8]>, LineEnds) {
    let final_newline = file.last() == Some(&b'\n');
    let mut lines: Vec<&[u8]> = file.split(|&b| b == b'\n').collect();
    if final_newline {
        lines.pop();
    }
    let terminated = if final_newline {
        lines.len()
    } else {
        lines.len().saturating_sub(1)
    };
    let crlf = terminated > 0 && lines[..terminated].iter().all(|l| l.last() == Some(&b'\r'));
    if crlf {
        for l in &mut lines[..terminated] {
            *l = &l[..l.len() - 1];
        }
    }
    (
        lines,
        LineEnds {
            crlf,
            final_newline,
        },
    )
}

fn push_line(out: &mut Vec<u8>, line: &[u8], last: bool, ends: LineEnds) {
    out.extend_from_slice(line);
    if !last || ends.final_newline {
        if ends.crlf {
            out.push(b'\r');
        }
        out.push(b'\n');
    }
}

/// A FASTA or FASTQ file as streams.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SequenceStreams {
    /// Header lines without their '>' / '@', each followed by '\n'. For FASTQ, '+' lines that are
    /// neither bare nor a copy of the header follow their header as an extra line.
    pub headers: Vec<u8>,
    /// Varints: flags (bit 0 CRLF, bit 1 final newline), record count, then per record the layout
    /// (FASTA: number of (line length, repeat) pairs and the pairs; FASTQ: sequence length and the
    /// '+' line kind).
    pub layout: Vec<u8>,
    pub residues: Residues,
    /// FASTQ only: the quality lines, concatenated (each as long as its sequence).
    pub qualities: Vec<u8>,
    /// Total residues (sum of the sequence line lengths).
    pub residue_count: u64,
    /// Index in `residues.bases` where each record's bases start (for per-record figures).
    pub record_starts: Vec<u64>,
}

fn flags(ends: LineEnds) -> u64 {
    ends.crlf as u64 | (ends.final_newline as u64) << 1
}

/// Reads varints from a layout stream, each bounded before use.
struct LayoutReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl LayoutReader<'_> {
    fn next(&mut self, max: u64, what: &str) -> Result<u64> {
        let (v, n) = get_varint(&self.bytes[self.pos.min(self.bytes.len())..])
            .map_err(|_| Error::corrupt(format!("the layout stream ends early ({what})")))?;
        self.pos += n;
        if v > max {
            return Err(Error::corrupt(format!(
                "the layout claims {v} for {what} (at most {max} possible)"
            )));
        }
        Ok(v)
    }
}

/// Splits a FASTA file (it starts with '>').
pub fn split_fasta(file: &[u8]) -> SequenceStreams {
    let (lines, ends) = lines(file);
    let mut s = SequenceStreams::default();
    put_varint(&mut s.layout, flags(ends));
    let records = lines.iter().filter(|l| l.first() == Some(&b'>')).count();
    put_varint(&mut s.layout, records as u64);
    let mut residues = Vec::with_capacity(file.len());
    let mut i = 0;
    while i < lines.len() {
        let header = lines[i];
        debug_assert_eq!(header.first(), Some(&b'>'));
        s.headers.extend_from_slice(&header[1..]);
        s.headers.push(b'\n');
        s.record_starts.push(residues.len() as u64);
        i += 1;
        let mut runs: Vec<(u64, u64)> = Vec::new();
        while i < lines.len() && lines[i].first() != Some(&b'>') {
            let len = lines[i].len() as u64;
            match runs.last_mut() {
                Some((l, n)) if *l == len => *n += 1,
                _ => runs.push((len, 1)),
            }
            residues.extend_from_slice(lines[i]);
            i += 1;
        }
        put_varint(&mut s.layout, runs.len() as u64);
        for (len, n) in runs {
            put_varint(&mut s.layout, len);
            put_varint(&mut s.layout, n);
        }
    }
    s.residue_count = residues.len() as u64;
    s.residues = Residues::split(&residues);
    s.record_starts = record_base_starts(&residues, &s.record_starts);
    s
}

/// Converts residue offsets of record starts to offsets in the base stream.
fn record_base_starts(residues: &[u8], starts: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(starts.len());
    let mut bases = 0u64;
    let mut at = 0usize;
    for &s in starts {
        let s = s as usize;
        bases += residues[at..s]
            .iter()
            .filter(|b| base_code(b.to_ascii_uppercase()).is_some())
            .count() as u64;
        at = s;
        out.push(bases);
    }
    out
}

/// Joins FASTA streams back into the file. `max_output` bounds what a damaged layout may claim.
pub fn join_fasta(s: &SequenceStreams, max_output: u64) -> Result<Vec<u8>> {
    let mut layout = LayoutReader {
        bytes: &s.layout,
        pos: 0,
    };
    let flags = layout.next(3, "flags")?;
    let ends = LineEnds {
        crlf: flags & 1 != 0,
        final_newline: flags & 2 != 0,
    };
    let records = layout.next(max_output, "records")? as usize;
    let residues = s.residues.join(max_output)?;
    let total = residues.len();
    let mut headers = s.headers.split(|&b| b == b'\n');
    let mut out = Vec::with_capacity(total.saturating_add(s.headers.len()));
    let mut at = 0usize;
    for r in 0..records {
        let header = headers
            .next()
            .ok_or_else(|| Error::corrupt("fewer headers than records"))?;
        let pairs = layout.next(max_output, "line runs")?;
        let mut record_lines: Vec<(usize, u64)> = Vec::new();
        for _ in 0..pairs {
            let len = layout.next((total - at) as u64, "a line length")? as usize;
            let n = layout.next(max_output, "a line count")?;
            if len > 0 && n > ((total - at) / len) as u64 {
                return Err(Error::corrupt("the layout holds more residues than stored"));
            }
            at += len * n as usize;
            record_lines.push((len, n));
        }
        let last_record = r + 1 == records;
        let mut header_line = Vec::with_capacity(header.len() + 1);
        header_line.push(b'>');
        header_line.extend_from_slice(header);
        push_line(&mut out, &header_line, last_record && pairs == 0, ends);
        let line_total: u64 = record_lines.iter().map(|&(_, n)| n).sum();
        let mut line_index = 0u64;
        let mut pos = at
            - record_lines
                .iter()
                .map(|&(l, n)| l * n as usize)
                .sum::<usize>();
        for (len, n) in record_lines {
            for _ in 0..n {
                line_index += 1;
                if out.len() as u64 > max_output {
                    return Err(Error::corrupt(
                        "the layout claims more output than possible",
                    ));
                }
                push_line(
                    &mut out,
                    &residues[pos..pos + len],
                    last_record && line_index == line_total,
                    ends,
                );
                pos += len;
            }
        }
    }
    if at != total || headers.next() != Some(&[][..]) || layout.pos != s.layout.len() {
        return Err(Error::corrupt(
            "the FASTA streams do not agree with each other",
        ));
    }
    Ok(out)
}

/// '+' line kinds of FASTQ records.
const PLUS_BARE: u64 = 0;
const PLUS_COPY: u64 = 1;
const PLUS_OTHER: u64 = 2;

/// Splits a FASTQ file: strict 4-line records ('@' header, sequence, '+' line, qualities as long as
/// the sequence). Returns `None` when the file is not that (the caller then codes it as text).
pub fn split_fastq(file: &[u8]) -> Option<SequenceStreams> {
    let (lines, ends) = lines(file);
    if lines.is_empty() || lines.len() % 4 != 0 {
        return None;
    }
    let mut s = SequenceStreams::default();
    put_varint(&mut s.layout, flags(ends));
    put_varint(&mut s.layout, (lines.len() / 4) as u64);
    let mut residues = Vec::new();
    let mut starts = Vec::new();
    for rec in lines.chunks_exact(4) {
        let (header, seq, plus, qual) = (rec[0], rec[1], rec[2], rec[3]);
        if header.first() != Some(&b'@') || plus.first() != Some(&b'+') || qual.len() != seq.len() {
            return None;
        }
        s.headers.extend_from_slice(&header[1..]);
        s.headers.push(b'\n');
        put_varint(&mut s.layout, seq.len() as u64);
        let kind = if plus.len() == 1 {
            PLUS_BARE
        } else if plus[1..] == header[1..] {
            PLUS_COPY
        } else {
            s.headers.extend_from_slice(&plus[1..]);
            s.headers.push(b'\n');
            PLUS_OTHER
        };
        put_varint(&mut s.layout, kind);
        starts.push(residues.len() as u64);
        residues.extend_from_slice(seq);
        s.qualities.extend_from_slice(qual);
    }
    s.residue_count = residues.len() as u64;
    s.residues = Residues::split(&residues);
    s.record_starts = record_base_starts(&residues, &starts);
    Some(s)
}

/// Joins FASTQ streams back into the file.
pub fn join_fastq(s: &SequenceStreams, max_output: u64) -> Result<Vec<u8>> {
    let mut layout = LayoutReader {
        bytes: &s.layout,
        pos: 0,
    };
    let flags = layout.next(3, "flags")?;
    let ends = LineEnds {
        crlf: flags & 1 != 0,
        final_newline: flags & 2 != 0,
    };
    let records = layout.next(max_output / 4, "records")? as usize;
    let residues = s.residues.join(max_output)?;
    let total = residues.len();
    if s.qualities.len() != total {
        return Err(Error::corrupt("qualities and residues differ in length"));
    }
    let mut headers = s.headers.split(|&b| b == b'\n');
    let mut out = Vec::with_capacity(2 * total + s.headers.len());
    let mut at = 0usize;
    for r in 0..records {
        let header = headers
            .next()
            .ok_or_else(|| Error::corrupt("fewer headers than records"))?;
        let len = layout.next((total - at) as u64, "a sequence length")? as usize;
        let kind = layout.next(PLUS_OTHER, "a '+' line kind")?;
        let mut line = vec![b'@'];
        line.extend_from_slice(header);
        push_line(&mut out, &line, false, ends);
        push_line(&mut out, &residues[at..at + len], false, ends);
        line[0] = b'+';
        match kind {
            PLUS_BARE => line.truncate(1),
            PLUS_COPY => {}
            _ => {
                let plus = headers
                    .next()
                    .ok_or_else(|| Error::corrupt("a '+' line is missing"))?;
                line.truncate(1);
                line.extend_from_slice(plus);
            }
        }
        push_line(&mut out, &line, false, ends);
        push_line(&mut out, &s.qualities[at..at + len], r + 1 == records, ends);
        at += len;
        if out.len() as u64 > max_output {
            return Err(Error::corrupt(
                "the layout claims more output than possible",
            ));
        }
    }
    if at != total || headers.next() != Some(&[][..]) || layout.pos != s.layout.len() {
        return Err(Error::corrupt(
            "the FASTQ streams do not agree with each other",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fasta_round_trip(file: &[u8]) -> SequenceStreams {
        let s = split_fasta(file);
        assert_eq!(
            join_fasta(&s, 1 << 30).unwrap(),
            file,
            "{:?}",
            String::from_utf8_lossy(file)
        );
        s
    }

    #[test]
    fn fasta_edge_cases_round_trip() {
        for f in [
            &b">a\nACGT\nAC\n"[..],
            b">a\nACGT\nAC",
            b">a",
            b">a\n",
            b">\n>\n>x\nA\n",
            b">a\r\nACGT\r\nAC\r\n",
            b">a\r\nACGT\r\nAC",
            b">a\r\nACGT\nAC\n",
            b">a\nacgtNNNNnnnnRYKM--**\n\nACGT\n>b empty next\n>c\nTTTT\n",
            b">a\n\n\n\nA\n\n",
            b">a\nA\xff\x00B\r\n",
        ] {
            fasta_round_trip(f);
        }
        let long: Vec<u8> = b">long\n"
            .iter()
            .copied()
            .chain((0..100_000).map(|i| b"ACGTN"[i % 5]))
            .collect();
        fasta_round_trip(&long);
    }

    #[test]
    fn fasta_streams_separate_bases_case_and_exceptions() {
        let s = fasta_round_trip(b">r1 x\nACgtNN\nnA\n>r2\nT\n");
        assert_eq!(s.headers, b"r1 x\nr2\n");
        assert_eq!(s.residues.bases, vec![0, 1, 2, 3, 0, 3]);
        // Upper 2, lower 2, upper 2, lower 1, upper 2.
        assert_eq!(s.residues.case_runs, vec![2, 2, 2, 1, 2]);
        // Gap 4, run of 3 'N'.
        assert_eq!(s.residues.exceptions, vec![4, 3, b'N']);
        assert_eq!(s.record_starts, vec![0, 5]);
        assert_eq!(s.residue_count, 9);
    }

    #[test]
    fn fastq_round_trips_and_rejects_non_fastq() {
        for f in [
            &b"@r1\nACGT\n+\nIIII\n@r2\nNNa\n+r2\n#'(\n"[..],
            b"@r1\r\nACGT\r\n+other\r\nIIII\r\n",
            b"@r1\nACGT\n+\nIIII",
            b"@e\n\n+\n\n",
        ] {
            let s = split_fastq(f).unwrap();
            assert_eq!(join_fastq(&s, 1 << 30).unwrap(), f);
        }
        assert!(split_fastq(b"@r1\nACGT\n+\nIII\n").is_none());
        assert!(split_fastq(b"@r1\nACGT\n").is_none());
    }

    #[test]
    fn damaged_layouts_are_errors() {
        let mut s = split_fasta(b">a\nACGT\nAC\n");
        s.layout[1] = 200;
        assert!(join_fasta(&s, 1 << 20).is_err());
        let mut s = split_fasta(b">a\nACGT\nAC\n");
        s.residues.bases.pop();
        assert!(join_fasta(&s, 1 << 20).is_err());
        let s = split_fasta(b">a\nACGT\nAC\n");
        assert!(join_fasta(&s, 5).is_err());
        let mut s = split_fasta(b">a\nACNT\nAC\n");
        s.residues.exceptions = vec![9, 9, b'N'];
        assert!(join_fasta(&s, 1 << 20).is_err());
    }
}
