//! Numeric CSV tables, with optional header and missing values.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::write_atomic;
use crate::error::{excerpt, one_line};
use crate::{Error, Result};

/// Whether the first row of a CSV file is a header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HeaderMode {
    /// The first row is a header iff one of its cells is non-empty, not a missing-value
    /// marker, and does not parse as a number.
    #[default]
    Auto,
    /// The first row is always a header.
    Yes,
    /// There is no header; the first row is data.
    No,
}

/// Options for [`read_csv`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvOptions {
    /// Header detection (default [`HeaderMode::Auto`]).
    pub header: HeaderMode,
    /// Whether missing cells are accepted (stored as NaN) rather than an error
    /// (default `false`). Missing cells are empty cells and `NaN`, `nan`, `NA`, `N/A`,
    /// `null` (case-insensitive, surrounding whitespace ignored).
    pub allow_missing: bool,
    /// The field delimiter (default `b','`).
    pub delimiter: u8,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            header: HeaderMode::Auto,
            allow_missing: false,
            delimiter: b',',
        }
    }
}

/// A numeric table read from a CSV file.
///
/// Every column is numeric for now; per-column kinds (e.g. categorical columns) may be
/// added later as a further field, with `values` then holding a numeric encoding of every
/// cell and `raw` staying the source of truth for the text.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// The column names, if the file has a header row.
    pub header: Option<Vec<String>>,
    /// Number of data rows (the header excluded).
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Row-major `rows x cols` values; NaN where a cell is missing.
    pub values: Vec<f64>,
    /// The original text of every data cell, `raw[i][j]`, exactly as in the file (after CSV
    /// unquoting), so that observed cells can be written back unchanged.
    pub raw: Vec<Vec<String>>,
    /// For each data row, the 1-based line number in the file where it starts.
    pub lines: Vec<u64>,
}

impl Table {
    /// The value at data row `i`, column `j` (NaN when missing). Panics out of range.
    pub fn get(&self, i: usize, j: usize) -> f64 {
        assert!(i < self.rows && j < self.cols, "Table::get out of range");
        self.values[i * self.cols + j]
    }

    /// Whether the cell at data row `i`, column `j` is missing. Panics out of range.
    pub fn is_missing(&self, i: usize, j: usize) -> bool {
        self.get(i, j).is_nan()
    }

    /// Number of missing cells.
    pub fn n_missing(&self) -> usize {
        self.values.iter().filter(|v| v.is_nan()).count()
    }

    /// A name for column `j` for messages: its header name if it has a non-empty one,
    /// otherwise its 1-based number.
    pub fn column_name(&self, j: usize) -> String {
        column_label(self.header.as_deref(), j)
    }

    /// The values as an F64 `[rows, cols]` CPU tensor. Fails with [`Error::InvalidInput`]
    /// if any cell is missing.
    pub fn to_tensor(&self) -> Result<Tensor> {
        if let Some(k) = self.values.iter().position(|v| v.is_nan()) {
            let (i, j) = (k / self.cols, k % self.cols);
            return Err(Error::invalid(format!(
                "the table has {} missing value(s) (first at row {}, column {}); \
                 they must be filled in before use",
                self.n_missing(),
                self.lines.get(i).copied().unwrap_or(i as u64 + 1),
                j + 1
            )));
        }
        Ok(Tensor::from_vec(
            self.values.clone(),
            (self.rows, self.cols),
            &Device::Cpu,
        )?)
    }
}

/// `'name'` for a named column, else the 1-based column number.
fn column_label(header: Option<&[String]>, j: usize) -> String {
    match header.and_then(|h| h.get(j)) {
        Some(name) if !name.trim().is_empty() => format!("'{}'", excerpt(name)),
        _ => format!("{}", j + 1),
    }
}

/// Whether a (trimmed) cell is a missing-value marker.
pub(crate) fn is_missing_marker(s: &str) -> bool {
    s.is_empty() || ["nan", "na", "n/a", "null"].iter().any(|m| s.eq_ignore_ascii_case(m))
}

/// How a cell reads as a number.
enum Cell {
    Missing,
    Number(f64),
    Infinite,
    Text,
}

fn parse_cell(raw: &str) -> Cell {
    let s = raw.trim();
    if is_missing_marker(s) {
        return Cell::Missing;
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_nan() => Cell::Missing,
        Ok(v) if v.is_infinite() => Cell::Infinite,
        Ok(v) => Cell::Number(v),
        Err(_) => Cell::Text,
    }
}

/// The number of line ends in `bytes[from..to]`: `\n`, and `\r` not followed by `\n` (the
/// csv crate ends a record at either, so a lone `\r` starts a new line too).
fn line_ends(bytes: &[u8], from: usize, to: usize) -> u64 {
    (from..to)
        .filter(|&i| bytes[i] == b'\n' || (bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n')))
        .count() as u64
}

fn csv_error(path: &Path, bytes: &[u8], e: ::csv::Error) -> Error {
    let line = e.position().map(|p| {
        let mut byte = (p.byte() as usize).min(bytes.len());
        while byte < bytes.len() && matches!(bytes[byte], b'\r' | b'\n') {
            byte += 1;
        }
        1 + line_ends(bytes, 0, byte) as usize
    });
    let msg = match (e.kind(), line) {
        (::csv::ErrorKind::Io(io), _) => format!("cannot read: {}", one_line(io)),
        (::csv::ErrorKind::Utf8 { .. }, Some(l)) => format!("row {l} is not valid UTF-8"),
        (::csv::ErrorKind::Utf8 { .. }, None) => "not valid UTF-8".to_string(),
        _ => format!("cannot parse: {}", one_line(e)),
    };
    Error::file(path, msg)
}

/// Reads a numeric CSV file into a [`Table`].
///
/// Cells are parsed as `f64` after trimming surrounding whitespace; `raw` keeps the text as
/// it was. Errors (all [`Error::File`], with 1-based file line numbers as row numbers):
/// an empty file or a header without data rows; a row with a different number of fields
/// than the first (`row R has X fields, expected Y`); a cell that is not a number
/// (`row R, column 'NAME': 'text' is not a number`); an infinite value; a missing cell when
/// `opts.allow_missing` is false. Blank lines are skipped, except between the rows of a
/// one-column file, where they are missing cells.
pub fn read_csv(path: impl AsRef<Path>, opts: &CsvOptions) -> Result<Table> {
    let path = path.as_ref();
    let (records, lines_all) = read_records(path, opts.delimiter)?;
    let first = &records[0];
    let cols = first.len();
    let is_header = match opts.header {
        HeaderMode::Yes => true,
        HeaderMode::No => false,
        HeaderMode::Auto => first.iter().any(|c| matches!(parse_cell(c), Cell::Text)),
    };
    let header: Option<Vec<String>> = is_header.then(|| first.clone());
    let skip = usize::from(is_header);
    let mut values = Vec::new();
    for (rec, &line) in records.iter().zip(&lines_all).skip(skip) {
        for (j, text) in rec.iter().enumerate() {
            let v = match parse_cell(text) {
                Cell::Number(v) => v,
                Cell::Missing if opts.allow_missing => f64::NAN,
                Cell::Missing => {
                    return Err(Error::file(
                        path,
                        format!(
                            "missing value at row {line}, column {} \
                             (missing values are not allowed here)",
                            j + 1
                        ),
                    ))
                }
                Cell::Infinite => {
                    return Err(Error::file(
                        path,
                        format!(
                            "row {line}, column {}: '{}' is infinite (only finite numbers \
                             are allowed)",
                            column_label(header.as_deref(), j),
                            excerpt(text)
                        ),
                    ))
                }
                Cell::Text => {
                    return Err(Error::file(
                        path,
                        format!(
                            "row {line}, column {}: '{}' is not a number",
                            column_label(header.as_deref(), j),
                            excerpt(text)
                        ),
                    ))
                }
            };
            values.push(v);
        }
    }
    let raw: Vec<Vec<String>> = records.into_iter().skip(skip).collect();
    let lines: Vec<u64> = lines_all.into_iter().skip(skip).collect();
    if raw.is_empty() {
        return Err(Error::file(path, "no data rows (only a header)"));
    }
    Ok(Table {
        header,
        rows: raw.len(),
        cols,
        values,
        raw,
        lines,
    })
}

/// Reads every record of a delimited text file as strings, with the 1-based file line
/// where each starts. Errors: unreadable or non-UTF-8 file, an empty file, a record with a
/// different number of fields than the first (`row R has X fields, expected Y`). Blank
/// lines are skipped, except in a one-column file, where a blank line between two rows is
/// a row with one empty (missing) cell.
pub(crate) fn read_records(path: &Path, delimiter: u8) -> Result<(Vec<Vec<String>>, Vec<u64>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    parse_records(path, &bytes, delimiter)
}

/// [`read_records`] on the bytes of a file (`path` names it in messages).
pub(crate) fn parse_records(path: &Path, bytes: &[u8], delimiter: u8) -> Result<(Vec<Vec<String>>, Vec<u64>)> {
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(bytes);
    // File line numbers from byte offsets (the csv crate's own line count skips blank
    // lines). Records come in order, so the newlines are counted once overall.
    let (mut seen_byte, mut seen_line) = (0usize, 1u64);
    let mut line_at = |byte: usize| -> u64 {
        let byte = byte.clamp(seen_byte, bytes.len());
        seen_line += line_ends(bytes, seen_byte, byte);
        seen_byte = byte;
        seen_line
    };
    let mut records = Vec::new();
    let mut lines = Vec::new();
    let mut cols = None;
    for rec in reader.records() {
        let rec = rec.map_err(|e| csv_error(path, bytes, e))?;
        // The reported start includes the blank lines skipped before the record: count them
        // (`\r\n`, `\n` or a lone `\r` each end one) and find where the record itself begins.
        let mut start = rec.position().map_or(0, |p| p.byte() as usize).min(bytes.len());
        // After a `\r\n` the reported start is the `\n`, which ends the previous row.
        if start > 0 && bytes[start - 1] == b'\r' && bytes.get(start) == Some(&b'\n') {
            start += 1;
        }
        let (mut body, mut blanks) = (start, 0u64);
        while body < bytes.len() && matches!(bytes[body], b'\r' | b'\n') {
            if bytes[body] == b'\n' || bytes.get(body + 1) != Some(&b'\n') {
                blanks += 1;
            }
            body += 1;
        }
        // In a one-column file a blank line between rows is an empty cell, i.e. a missing
        // value (as written by `pandas.to_csv` or `numpy.savetxt`), not a row to drop.
        // Blank lines before the first row and after the last one are still skipped.
        if cols == Some(1) && blanks > 0 {
            let first = line_at(start);
            for k in 0..blanks {
                records.push(vec![String::new()]);
                lines.push(first + k);
            }
        }
        let line = line_at(body);
        let c = *cols.get_or_insert(rec.len());
        if rec.len() != c {
            return Err(Error::file(
                path,
                format!("row {line} has {} fields, expected {c}", rec.len()),
            ));
        }
        records.push(rec.iter().map(str::to_string).collect::<Vec<_>>());
        lines.push(line);
    }
    if records.is_empty() {
        return Err(Error::file(path, "the file is empty (no rows)"));
    }
    Ok((records, lines))
}

/// Guesses the delimiter of a whitespace- or comma-separated text file from its first
/// non-blank line: `,` if present, else tab if present, else space.
pub(super) fn sniff_delimiter(path: &Path) -> Result<u8> {
    let file = File::open(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let mut line = Vec::new();
    let mut r = BufReader::new(file);
    loop {
        line.clear();
        let k = r
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        if k == 0 || line.iter().any(|b| !b.is_ascii_whitespace()) {
            break;
        }
    }
    Ok(if line.contains(&b',') {
        b','
    } else if line.contains(&b'\t') {
        b'\t'
    } else if line.trim_ascii().contains(&b' ') {
        b' '
    } else {
        b','
    })
}

/// Writes an `[n, d]` tensor as CSV (comma-separated, `\n` line ends), with an optional
/// header row, via [`write_atomic`].
///
/// Values are written with Rust's shortest round-trip formatting, so reading the file back
/// gives the same numbers bit for bit: F32 tensors as `f32`, everything else as `f64`.
/// NaN is written as `NaN` (read back as missing). Fails with [`Error::InvalidInput`] if
/// the tensor is not 2-D or has no columns, if the header length is not `d`, or if a value
/// is infinite.
pub fn write_csv(path: impl AsRef<Path>, header: Option<&[String]>, t: &Tensor) -> Result<()> {
    let path = path.as_ref();
    let (n, d) = t.dims2().map_err(|_| {
        Error::invalid(format!(
            "write_csv: expected a 2-D [n, d] tensor, got shape {:?}",
            t.dims()
        ))
    })?;
    if d == 0 {
        return Err(Error::invalid("write_csv: the tensor has no columns"));
    }
    if let Some(h) = header {
        if h.len() != d {
            return Err(Error::invalid(format!(
                "write_csv: header has {} names but the tensor has {d} columns",
                h.len()
            )));
        }
    }
    let flat = t.contiguous()?.flatten_all()?;
    let cells: Vec<String> = if t.dtype() == DType::F32 {
        let v = flat.to_vec1::<f32>()?;
        check_finite(v.iter().map(|&x| x as f64), d)?;
        v.iter().map(|x| x.to_string()).collect()
    } else {
        let v = flat.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        check_finite(v.iter().copied(), d)?;
        v.iter().map(|x| x.to_string()).collect()
    };
    write_atomic(path, |w| {
        let mut wr = ::csv::WriterBuilder::new()
            .terminator(::csv::Terminator::Any(b'\n'))
            .from_writer(w);
        let map = |e: ::csv::Error| Error::file(path, format!("cannot write: {e}"));
        if let Some(h) = header {
            wr.write_record(h).map_err(map)?;
        }
        for i in 0..n {
            wr.write_record(&cells[i * d..(i + 1) * d]).map_err(map)?;
        }
        wr.flush()?;
        Ok(())
    })
}

fn check_finite(values: impl Iterator<Item = f64>, d: usize) -> Result<()> {
    for (k, v) in values.enumerate() {
        if v.is_infinite() {
            return Err(Error::invalid(format!(
                "write_csv: infinite value at row {}, column {}",
                k / d + 1,
                k % d + 1
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::TempDir;
    use super::*;

    fn write(dir: &TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn msg(e: &Error) -> String {
        match e {
            Error::File { message, .. } => message.clone(),
            other => panic!("expected Error::File, got {other:?}"),
        }
    }

    fn missing_ok() -> CsvOptions {
        CsvOptions {
            allow_missing: true,
            ..CsvOptions::default()
        }
    }

    #[test]
    fn header_and_missing_cells() {
        let dir = TempDir::new();
        let p = write(
            &dir,
            "m.csv",
            "x,y,z\n1.50,,3\nNA, -2e3 ,n/a\nnull,NaN,0.1\n\"4\",nan,N/A\n",
        );
        let t = read_csv(&p, &missing_ok()).unwrap();
        assert_eq!(t.header, Some(vec!["x".to_string(), "y".to_string(), "z".to_string()]));
        assert_eq!((t.rows, t.cols), (4, 3));
        assert_eq!(t.lines, vec![2, 3, 4, 5]);
        assert_eq!(t.get(0, 0), 1.5);
        assert!(t.is_missing(0, 1));
        assert_eq!(t.get(0, 2), 3.0);
        assert!(t.is_missing(1, 0));
        assert_eq!(t.get(1, 1), -2000.0);
        assert!(t.is_missing(1, 2));
        assert!(t.is_missing(2, 0) && t.is_missing(2, 1));
        assert_eq!(t.get(2, 2), 0.1);
        assert_eq!(t.get(3, 0), 4.0);
        assert_eq!(t.n_missing(), 7);
        // Raw text is kept exactly (after unquoting).
        assert_eq!(t.raw[0], vec!["1.50", "", "3"]);
        assert_eq!(t.raw[1], vec!["NA", " -2e3 ", "n/a"]);
        assert_eq!(t.raw[3], vec!["4", "nan", "N/A"]);
        assert_eq!(t.column_name(1), "'y'");
        // A table with missing values cannot become a tensor.
        let e = t.to_tensor().unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)));
        assert!(e.to_string().contains("7 missing"), "{e}");
        assert!(e.to_string().contains("row 2, column 2"), "{e}");
    }

    #[test]
    fn missing_not_allowed() {
        let dir = TempDir::new();
        let p = write(&dir, "m.csv", "a,b\n1,2\n3,\n");
        let e = read_csv(&p, &CsvOptions::default()).unwrap_err();
        assert_eq!(
            msg(&e),
            "missing value at row 3, column 2 (missing values are not allowed here)"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "{}: missing value at row 3, column 2 (missing values are not allowed here)",
                p.display()
            )
        );
    }

    #[test]
    fn header_auto_detection() {
        let dir = TempDir::new();
        // Numbers only: no header.
        let p = write(&dir, "a.csv", "1,2\n3,4\n");
        let t = read_csv(&p, &CsvOptions::default()).unwrap();
        assert_eq!(t.header, None);
        assert_eq!((t.rows, t.cols), (2, 2));
        assert_eq!(t.lines, vec![1, 2]);
        assert_eq!(
            t.to_tensor().unwrap().to_vec2::<f64>().unwrap(),
            vec![vec![1.0, 2.0], vec![3.0, 4.0]]
        );
        // One named column is enough for a header; an empty cell does not count.
        let p = write(&dir, "b.csv", ",b\n1,2\n");
        let t = read_csv(&p, &CsvOptions::default()).unwrap();
        assert_eq!(t.header, Some(vec![String::new(), "b".to_string()]));
        assert_eq!(t.rows, 1);
        // Missing markers and numbers in the first row: data, not a header.
        let p = write(&dir, "c.csv", "NA,1e-3\n2,3\n");
        let t = read_csv(&p, &missing_ok()).unwrap();
        assert_eq!(t.header, None);
        assert_eq!(t.rows, 2);
        // Forced modes.
        let p = write(&dir, "d.csv", "10,20\n1,2\n");
        let t = read_csv(
            &p,
            &CsvOptions {
                header: HeaderMode::Yes,
                ..CsvOptions::default()
            },
        )
        .unwrap();
        assert_eq!(t.header, Some(vec!["10".to_string(), "20".to_string()]));
        assert_eq!(t.values, vec![1.0, 2.0]);
        let p = write(&dir, "e.csv", "a,b\n1,2\n");
        let e = read_csv(
            &p,
            &CsvOptions {
                header: HeaderMode::No,
                ..CsvOptions::default()
            },
        )
        .unwrap_err();
        assert_eq!(msg(&e), "row 1, column 1: 'a' is not a number");
    }

    /// Issue 15: in a one-column file, empty cells are blank lines, and those rows
    /// vanished; they are missing values.
    #[test]
    fn one_column_blank_lines_are_missing_cells() {
        let dir = TempDir::new();
        for (text, name) in [
            ("x\n1\n\n3\n\n\n6\n\n", "lf"),
            ("x\r\n1\r\n\r\n3\r\n\r\n\r\n6\r\n\r\n", "crlf"),
            ("\n\nx\n1\n\n3\n\n\n6\n", "leading"),
            ("x\r1\r\r3\r\r\r6\r\r", "cr"),
        ] {
            let p = write(&dir, &format!("{name}.csv"), text);
            let t = read_csv(&p, &missing_ok()).unwrap();
            assert_eq!(t.rows, 6, "{name}");
            let v: Vec<String> = t.values.iter().map(|x| x.to_string()).collect();
            assert_eq!(v, ["1", "NaN", "3", "NaN", "NaN", "6"], "{name}");
            assert_eq!(t.raw[1], vec![String::new()]);
            let skip = if name == "leading" { 2 } else { 0 };
            assert_eq!(t.lines, (2..8).map(|l| l + skip).collect::<Vec<u64>>(), "{name}");
            // Without missing values allowed, the blank line is named.
            let e = read_csv(&p, &CsvOptions::default()).unwrap_err();
            assert!(
                msg(&e).contains(&format!("missing value at row {}, column 1", 3 + skip)),
                "{e}"
            );
        }
        // With two or more columns a blank line is still no row.
        let p = write(&dir, "two.csv", "1,2\n\n3,4\n");
        assert_eq!(read_csv(&p, &missing_ok()).unwrap().rows, 2);
    }

    #[test]
    fn long_cells_are_truncated_in_messages() {
        let dir = TempDir::new();
        let long = format!("{}\"\"{}", "é".repeat(30), "x".repeat(500));
        let p = write(&dir, "l.csv", &format!("a,b\n1,\"{long}\"\n"));
        let e = read_csv(&p, &CsvOptions::default()).unwrap_err().to_string();
        assert!(
            e.contains("column 'b': 'éééé") && e.contains("...' is not a number"),
            "{e}"
        );
        assert!(e.len() < 200, "{e}");
        let p = write(&dir, "nl.csv", "a,b\n1,\"two\nlines\"\n");
        let e = read_csv(&p, &CsvOptions::default()).unwrap_err().to_string();
        assert!(e.contains("'two\\nlines' is not a number") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn ragged_row() {
        let dir = TempDir::new();
        let p = write(&dir, "r.csv", "a,b,c\n1,2,3\n4,5\n");
        let e = read_csv(&p, &CsvOptions::default()).unwrap_err();
        assert_eq!(msg(&e), "row 3 has 2 fields, expected 3");
        // Blank lines are skipped but line numbers still count them.
        let p = write(&dir, "r2.csv", "1,2\n\n3,4,5\n");
        let e = read_csv(&p, &CsvOptions::default()).unwrap_err();
        assert_eq!(msg(&e), "row 3 has 3 fields, expected 2");
    }

    #[test]
    fn line_numbers_bom_and_utf8() {
        let dir = TempDir::new();
        // A quoted cell spanning two lines shifts later line numbers.
        let p = write(&dir, "q.csv", "1,2\n\"3\n\",4\n5\n");
        let e = read_csv(&p, &CsvOptions::default()).unwrap_err();
        assert_eq!(msg(&e), "row 4 has 1 fields, expected 2");
        // Invalid UTF-8.
        let p = dir.join("u.csv");
        std::fs::write(&p, b"1,2\n\n\xff,3\n").unwrap();
        let e = read_csv(&p, &CsvOptions::default()).unwrap_err();
        assert_eq!(msg(&e), "row 3 is not valid UTF-8");
        // A UTF-8 byte-order mark is not part of the first name.
        let p = write(&dir, "b.csv", "\u{feff}a,b\n\n1,2\n");
        let t = read_csv(&p, &CsvOptions::default()).unwrap();
        assert_eq!(t.header, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(t.lines, vec![3]);
    }

    #[test]
    fn text_in_numeric_column() {
        let dir = TempDir::new();
        let p = write(&dir, "t.csv", "x,y\n1,2\n3,abc\n");
        let e = read_csv(&p, &missing_ok()).unwrap_err();
        assert_eq!(msg(&e), "row 3, column 'y': 'abc' is not a number");
        let p = write(&dir, "t2.csv", "1,2\n3,4x\n");
        let e = read_csv(&p, &CsvOptions::default()).unwrap_err();
        assert_eq!(msg(&e), "row 2, column 2: '4x' is not a number");
    }

    #[test]
    fn infinities_rejected() {
        let dir = TempDir::new();
        for cell in ["inf", "-Infinity", "1e400"] {
            let p = write(&dir, "i.csv", &format!("x,y\n1,{cell}\n"));
            let e = read_csv(&p, &missing_ok()).unwrap_err();
            assert!(msg(&e).starts_with("row 2, column 'y'"), "{e}");
            assert!(msg(&e).contains("infinite"), "{e}");
        }
    }

    #[test]
    fn empty_file_and_header_only() {
        let dir = TempDir::new();
        let p = write(&dir, "e.csv", "");
        let e = read_csv(&p, &CsvOptions::default()).unwrap_err();
        assert!(msg(&e).contains("empty"), "{e}");
        let p = write(&dir, "h.csv", "a,b\n");
        let e = read_csv(&p, &CsvOptions::default()).unwrap_err();
        assert!(msg(&e).contains("no data rows"), "{e}");
        let e = read_csv(dir.join("nope.csv"), &CsvOptions::default()).unwrap_err();
        assert!(msg(&e).contains("cannot read"), "{e}");
    }

    #[test]
    fn other_delimiter_and_crlf() {
        let dir = TempDir::new();
        let p = write(&dir, "s.csv", "a;b\r\n1;2.5\r\n3;4\r\n");
        let t = read_csv(
            &p,
            &CsvOptions {
                delimiter: b';',
                ..CsvOptions::default()
            },
        )
        .unwrap();
        assert_eq!(t.values, vec![1.0, 2.5, 3.0, 4.0]);
        assert_eq!(t.raw[0], vec!["1", "2.5"]);
    }

    #[test]
    fn write_read_roundtrip_exact() {
        let dir = TempDir::new();
        let p = dir.join("w.csv");
        let vals = vec![0.1, -1.0 / 3.0, 1e-310, f64::MAX, -0.0, 123456789.125];
        let t = Tensor::from_vec(vals.clone(), (3, 2), &Device::Cpu).unwrap();
        let names = vec!["a,1".to_string(), "b".to_string()];
        write_csv(&p, Some(&names), &t).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("\"a,1\",b\n0.1,"), "{text}");
        let back = read_csv(&p, &CsvOptions::default()).unwrap();
        assert_eq!(back.header, Some(names.clone()));
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.values), bits(&vals));
        // f32 tensors use f32 formatting and come back exactly after narrowing.
        let v32 = vec![0.1f32, 1e-40, 3.4e38, -7.0];
        let t = Tensor::from_vec(v32.clone(), (2, 2), &Device::Cpu).unwrap();
        write_csv(&p, None, &t).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap().lines().next().unwrap(),
            "0.1,0.0000000000000000000000000000000000000001"
        );
        let back = read_csv(&p, &CsvOptions::default()).unwrap();
        assert_eq!(back.values.iter().map(|&x| x as f32).collect::<Vec<_>>(), v32);
        // Bad inputs.
        assert!(matches!(
            write_csv(&p, Some(&names[..1]), &t),
            Err(Error::InvalidInput(_))
        ));
        let inf = Tensor::from_vec(vec![1.0f64, f64::INFINITY], (1, 2), &Device::Cpu).unwrap();
        assert!(matches!(write_csv(&p, None, &inf), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn sniffing() {
        let dir = TempDir::new();
        assert_eq!(sniff_delimiter(&write(&dir, "a", "\n1 2\n")).unwrap(), b' ');
        assert_eq!(sniff_delimiter(&write(&dir, "b", "1\t2\n")).unwrap(), b'\t');
        assert_eq!(sniff_delimiter(&write(&dir, "c", "1, 2\n")).unwrap(), b',');
        assert_eq!(sniff_delimiter(&write(&dir, "d", "1\n")).unwrap(), b',');
    }
}
