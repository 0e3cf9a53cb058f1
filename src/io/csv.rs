//! `.csv` files of numbers: one vector per line, fields separated by commas, an optional header
//! line (the first line, when any of its fields is not a number). Read into an `n x d` f32 matrix;
//! written back with the header restored and every value in the shortest form that reads back to
//! the same f32.
//!
//! Accepted: UTF-8 text, `\n` or `\r\n` line ends, spaces around fields, empty lines (skipped),
//! anything Rust's `f32::from_str` takes (so `NaN` and `inf` parse; the vector coders refuse them
//! later with their own message). Refused with `Error::InvalidInput` naming the line: an empty
//! file, a header without data, a row whose field count differs from the first row's (ragged), a
//! field that is not a number, a quoted or otherwise non-numeric data field.

use crate::error::{Error, Result};

/// A parsed CSV file.
#[derive(Clone, Debug, PartialEq)]
pub struct CsvTable {
    /// The header line as it was (without its line end), if the file had one.
    pub header: Option<String>,
    pub rows: usize,
    pub cols: usize,
    /// Row-major, `rows * cols` values.
    pub values: Vec<f32>,
}

fn parse_field(field: &str) -> Option<f32> {
    field.trim().parse::<f32>().ok()
}

/// Checks that `header` is a line [`read`] takes back as the header of a `cols`-column file: one
/// line, not blank, `cols` fields, at least one of them not a number (a `.lowbit` stores the header
/// as text; a damaged one must not restore to a CSV that lowbit itself cannot read).
pub fn check_header(header: &str, cols: usize) -> Result<()> {
    let fields: Vec<&str> = header.split(',').collect();
    if header.contains('\n') || header.ends_with('\r') || header.trim().is_empty() {
        return Err(Error::corrupt("the stored CSV header is not one line"));
    }
    if fields.len() != cols {
        return Err(Error::corrupt(format!(
            "the stored CSV header has {} fields for {cols} columns",
            fields.len()
        )));
    }
    if fields.iter().all(|f| parse_field(f).is_some()) {
        return Err(Error::corrupt(
            "the stored CSV header is all numbers (it would read back as data)",
        ));
    }
    Ok(())
}

/// Parses a CSV file held in memory.
pub fn read(file: &[u8]) -> Result<CsvTable> {
    if file.is_empty() {
        return Err(Error::invalid("empty CSV file: no vectors to compress"));
    }
    let text = std::str::from_utf8(file)
        .map_err(|e| Error::invalid(format!("CSV file is not UTF-8 text: {e}")))?;
    let mut header = None;
    let mut cols = 0usize;
    let mut values = Vec::new();
    let mut rows = 0usize;
    for (index, line) in text.split('\n').enumerate() {
        let line_no = index + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let first_line = header.is_none() && rows == 0;
        if first_line && fields.iter().any(|f| parse_field(f).is_none()) {
            header = Some(line.to_string());
            cols = fields.len();
            continue;
        }
        if cols == 0 {
            cols = fields.len();
        } else if fields.len() != cols {
            return Err(Error::invalid(format!(
                "CSV line {line_no} has {} fields where the first line has {cols} (ragged rows)",
                fields.len()
            )));
        }
        for (f, field) in fields.iter().enumerate() {
            let v = parse_field(field).ok_or_else(|| {
                Error::invalid(format!(
                    "CSV line {line_no}, field {}: '{}' is not a number",
                    f + 1,
                    field.trim().chars().take(40).collect::<String>()
                ))
            })?;
            values.push(v);
        }
        rows += 1;
    }
    if rows == 0 {
        return Err(Error::invalid(if header.is_some() {
            "CSV file has a header but no data rows"
        } else {
            "CSV file has no data rows"
        }));
    }
    Ok(CsvTable {
        header,
        rows,
        cols,
        values,
    })
}

/// Writes `values` (`cols` per row) as CSV text, after the header line if there is one.
pub fn write(header: Option<&str>, values: &[f32], cols: usize) -> Vec<u8> {
    let mut out = String::with_capacity(values.len() * 12);
    if let Some(h) = header {
        out.push_str(h);
        out.push('\n');
    }
    for row in values.chunks(cols.max(1)) {
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Display gives the shortest text that parses back to the same f32.
            out.push_str(&v.to_string());
        }
        out.push('\n');
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_header_and_writes_it_back() {
        let t = read(b"a,b,c\r\n1,2.5,-3e-2\n4, 5 ,6\n\n").unwrap();
        assert_eq!(t.header.as_deref(), Some("a,b,c"));
        assert_eq!((t.rows, t.cols), (2, 3));
        assert_eq!(t.values, vec![1.0, 2.5, -0.03, 4.0, 5.0, 6.0]);
        let again = read(&write(t.header.as_deref(), &t.values, t.cols)).unwrap();
        assert_eq!(again, t);
    }

    #[test]
    fn refuses_bad_files_with_the_line() {
        let err = |b: &[u8]| read(b).unwrap_err().to_string();
        assert!(err(b"").contains("empty"));
        assert!(err(b"x,y\n").contains("no data rows"));
        assert!(err(b"1,2\n3\n").contains("line 2 has 1 fields"));
        assert!(err(b"1,2\n3,abc\n").contains("line 2, field 2"));
        assert!(err(b"\xff\xfe").contains("UTF-8"));
        // NaN parses; the vector coders refuse it later.
        assert!(read(b"1,NaN\n").unwrap().values[1].is_nan());
    }
}
