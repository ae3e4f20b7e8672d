//! Mixed tables (numeric and categorical columns with missing cells) and their encoding
//! into the model's coordinates.
//!
//! A numeric column is standardised, `z = (v - mean) / sd` over its observed cells; a
//! categorical column with `K` levels becomes `K` one-hot coordinates, each standardised the
//! same way, and a missing label makes all `K` of them missing. Decoding reads a number back
//! as `mean + sd z` and a label as the level with the largest coordinate (argmax of the
//! de-standardised one-hot block), as in DiffPuter (Zhang et al. 2024).

use std::path::Path;

use crate::data::column_mean_sd;
use crate::data::csv::{is_missing_marker, parse_records, read_records};
use crate::error::excerpt;
use crate::io::write_atomic;
use crate::{Error, Result};

/// What a column holds.
#[derive(Clone, Debug, PartialEq)]
pub enum ColumnKind {
    /// Numbers. `decimals`: the most decimal places among the observed cells (imputed
    /// values are written with two more), `None` when a cell uses exponent notation
    /// (imputed values are then written in shortest round-trip form).
    Numeric {
        /// Decimal places of the most precise observed cell.
        decimals: Option<usize>,
    },
    /// Labels; `levels` in order of first appearance.
    Categorical {
        /// The distinct observed labels (trimmed).
        levels: Vec<String>,
    },
}

/// A table read from a CSV file with a header, cells possibly missing (empty, `NA`, `NaN`,
/// `N/A`, `null`, case-insensitive).
#[derive(Clone, Debug, PartialEq)]
pub struct MixedTable {
    /// Column names from the header row.
    pub header: Vec<String>,
    /// Number of data rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// The kind of each column.
    pub kinds: Vec<ColumnKind>,
    /// Row-major cells: the number, or the level index of a label; NaN where missing.
    pub cells: Vec<f64>,
    /// The original text of every data cell (after CSV unquoting), written back unchanged.
    pub raw: Vec<Vec<String>>,
    /// The 1-based file line of each data row.
    pub lines: Vec<u64>,
}

fn decimals_of(text: &str) -> Option<usize> {
    let t = text.trim();
    if t.contains(['e', 'E']) {
        return None;
    }
    Some(t.split_once('.').map_or(0, |(_, f)| f.len()))
}

/// `'name'` or the 1-based number of column `j`.
fn label(header: &[String], j: usize) -> String {
    match header.get(j) {
        Some(h) if !h.trim().is_empty() => format!("'{}'", excerpt(h.trim())),
        _ => format!("{}", j + 1),
    }
}

impl MixedTable {
    /// Reads a comma-separated file whose first row is the header. Columns named in
    /// `categorical` (header names, or 1-based numbers) are categorical; every other column
    /// is numeric if all its present cells are numbers, categorical if most of them are
    /// text, and an error (naming the first offending cell) if only a few are text.
    /// Errors: unreadable file, empty file, no data rows, ragged rows, a duplicate or
    /// unknown column in `categorical`, infinite numbers, text in a numeric column.
    pub fn read(path: impl AsRef<Path>, categorical: &[String]) -> Result<MixedTable> {
        let path = path.as_ref();
        let (records, lines) = read_records(path, b',')?;
        Self::from_records(path, records, lines, categorical)
    }

    /// [`MixedTable::read`] on the bytes of a CSV file (`name` names it in messages).
    pub fn parse(name: &str, bytes: &[u8], categorical: &[String]) -> Result<MixedTable> {
        let path = Path::new(name);
        let (records, lines) = parse_records(path, bytes, b',')?;
        Self::from_records(path, records, lines, categorical)
    }

    fn from_records(
        path: &Path,
        mut records: Vec<Vec<String>>,
        mut lines: Vec<u64>,
        categorical: &[String],
    ) -> Result<MixedTable> {
        let header = records.remove(0);
        lines.remove(0);
        if records.is_empty() {
            return Err(Error::file(path, "no data rows (only a header)"));
        }
        let cols = header.len();
        let mut forced = vec![false; cols];
        for c in categorical {
            let j = header
                .iter()
                .position(|h| h.trim() == c.trim())
                .or_else(|| {
                    c.trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|&k| k >= 1 && k <= cols)
                        .map(|k| k - 1)
                })
                .ok_or_else(|| Error::invalid(format!("--categorical: no column named '{}'", excerpt(c))))?;
            forced[j] = true;
        }
        let mut kinds = Vec::with_capacity(cols);
        for j in 0..cols {
            let present: Vec<(usize, &str)> = records
                .iter()
                .enumerate()
                .map(|(i, r)| (i, r[j].trim()))
                .filter(|(_, t)| !is_missing_marker(t))
                .collect();
            let text: Vec<(usize, &str)> = present
                .iter()
                .copied()
                .filter(|(_, t)| t.parse::<f64>().map_or(true, |v| v.is_nan()))
                .collect();
            let categorical = forced[j] || 2 * text.len() > present.len();
            if categorical {
                let mut levels: Vec<String> = Vec::new();
                for (_, t) in &present {
                    if !levels.iter().any(|l| l == t) {
                        levels.push(t.to_string());
                    }
                }
                kinds.push(ColumnKind::Categorical { levels });
            } else {
                if let Some(&(i, t)) = text.first() {
                    return Err(Error::file(
                        path,
                        format!(
                            "row {}, column {}: '{}' is not a number ({} of {} present cells in this column \
                             are numbers; name it with --categorical to treat the column as labels)",
                            lines[i],
                            label(&header, j),
                            excerpt(t),
                            present.len() - text.len(),
                            present.len()
                        ),
                    ));
                }
                if let Some(&(i, t)) = present
                    .iter()
                    .find(|(_, t)| t.parse::<f64>().is_ok_and(|v| v.abs() > crate::data::MAX_ABS_VALUE))
                {
                    return Err(Error::file(
                        path,
                        format!(
                            "row {}, column {}: '{}' is infinite or too large in magnitude (at most 1e100: rescale the column)",
                            lines[i],
                            label(&header, j),
                            excerpt(t)
                        ),
                    ));
                }
                let decimals = present
                    .iter()
                    .map(|(_, t)| decimals_of(t))
                    .try_fold(0usize, |a, d| d.map(|d| a.max(d)));
                kinds.push(ColumnKind::Numeric { decimals });
            }
        }
        let rows = records.len();
        let mut cells = Vec::with_capacity(rows * cols);
        for r in &records {
            for (j, text) in r.iter().enumerate() {
                let t = text.trim();
                let v = if is_missing_marker(t) {
                    f64::NAN
                } else {
                    match &kinds[j] {
                        ColumnKind::Numeric { .. } => t.parse::<f64>().unwrap_or(f64::NAN),
                        ColumnKind::Categorical { levels } => {
                            levels.iter().position(|l| l == t).map_or(f64::NAN, |k| k as f64)
                        }
                    }
                };
                cells.push(v);
            }
        }
        Ok(MixedTable {
            header,
            rows,
            cols,
            kinds,
            cells,
            raw: records,
            lines,
        })
    }

    /// A numeric table from row-major values (NaN = missing), e.g. a built-in data set.
    /// The raw text of a cell is its shortest round-trip form.
    pub fn numeric(header: Vec<String>, values: Vec<f64>, rows: usize) -> Result<MixedTable> {
        let cols = header.len();
        if cols == 0 || rows == 0 || values.len() != rows * cols {
            return Err(Error::invalid(format!(
                "a table of {rows} rows and {cols} columns needs {} values, got {}",
                rows * cols,
                values.len()
            )));
        }
        if values.iter().any(|v| v.is_infinite()) {
            return Err(Error::invalid("the table has infinite values"));
        }
        let raw = values
            .chunks(cols)
            .map(|r| {
                r.iter()
                    .map(|v| if v.is_nan() { String::new() } else { format!("{v}") })
                    .collect()
            })
            .collect();
        Ok(MixedTable {
            header,
            rows,
            cols,
            kinds: vec![ColumnKind::Numeric { decimals: None }; cols],
            cells: values,
            raw,
            lines: (2..rows as u64 + 2).collect(),
        })
    }

    /// Whether cell `(i, j)` is missing.
    pub fn is_missing(&self, i: usize, j: usize) -> bool {
        self.cells[i * self.cols + j].is_nan()
    }

    /// The rows with at least one missing cell.
    pub fn incomplete_rows(&self) -> Vec<usize> {
        (0..self.rows)
            .filter(|&i| (0..self.cols).any(|j| self.is_missing(i, j)))
            .collect()
    }

    /// Number of missing cells.
    pub fn n_missing(&self) -> usize {
        self.cells.iter().filter(|v| v.is_nan()).count()
    }

    /// The first column with no observed cell, if any (its name for messages).
    pub fn empty_column(&self) -> Option<String> {
        (0..self.cols)
            .find(|&j| (0..self.rows).all(|i| self.is_missing(i, j)))
            .map(|j| label(&self.header, j))
    }

    /// The text of an imputed cell value `v` of column `j`.
    pub fn format_value(&self, j: usize, v: f64) -> String {
        match &self.kinds[j] {
            ColumnKind::Numeric { decimals: Some(k) } => format!("{:.*}", k + 2, v),
            ColumnKind::Numeric { decimals: None } => format!("{v}"),
            ColumnKind::Categorical { levels } => levels[v as usize].clone(),
        }
    }

    /// Writes the table with missing cells replaced: observed cells are written exactly as
    /// read; missing cell `(i, j)` gets `text(i, j)`. Atomic (temporary file, then rename).
    pub fn write_filled(&self, path: impl AsRef<Path>, text: &dyn Fn(usize, usize) -> String) -> Result<()> {
        write_atomic(path.as_ref(), |w| {
            let mut out = csv::WriterBuilder::new()
                .terminator(csv::Terminator::Any(b'\n'))
                .from_writer(w);
            out.write_record(&self.header).map_err(std::io::Error::other)?;
            for i in 0..self.rows {
                let row: Vec<String> = (0..self.cols)
                    .map(|j| {
                        if self.is_missing(i, j) {
                            text(i, j)
                        } else {
                            self.raw[i][j].clone()
                        }
                    })
                    .collect();
                out.write_record(&row).map_err(std::io::Error::other)?;
            }
            out.flush()?;
            Ok(())
        })
    }
}

/// The map between a [`MixedTable`]'s cells and the model's coordinates.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoding {
    /// The first model coordinate of each column.
    pub offset: Vec<usize>,
    /// The number of model coordinates of each column (1, or `K` for `K` levels).
    pub width: Vec<usize>,
    /// Per-coordinate mean over observed cells.
    pub mean: Vec<f64>,
    /// Per-coordinate standard deviation over observed cells (1 when it is 0 or undefined).
    pub sd: Vec<f64>,
}

impl Encoding {
    /// Fits means and standard deviations on the observed cells of `table`.
    pub fn fit(table: &MixedTable) -> Encoding {
        let mut offset = Vec::with_capacity(table.cols);
        let mut width = Vec::with_capacity(table.cols);
        let mut dim = 0;
        for k in &table.kinds {
            offset.push(dim);
            let w = match k {
                ColumnKind::Numeric { .. } => 1,
                ColumnKind::Categorical { levels } => levels.len().max(1),
            };
            width.push(w);
            dim += w;
        }
        let mut enc = Encoding {
            offset,
            width,
            mean: vec![0.0; dim],
            sd: vec![1.0; dim],
        };
        let (mean, sd) = column_mean_sd(&enc.one_hot(table), dim, 0);
        enc.mean = mean;
        enc.sd = sd;
        enc
    }

    /// The model's dimension.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    fn one_hot(&self, table: &MixedTable) -> Vec<f64> {
        let d = self.dim();
        let mut out = vec![f64::NAN; table.rows * d];
        for i in 0..table.rows {
            for j in 0..table.cols {
                let v = table.cells[i * table.cols + j];
                if v.is_nan() {
                    continue;
                }
                let o = i * d + self.offset[j];
                match &table.kinds[j] {
                    ColumnKind::Numeric { .. } => out[o] = v,
                    ColumnKind::Categorical { .. } => {
                        for k in 0..self.width[j] {
                            out[o + k] = if k == v as usize { 1.0 } else { 0.0 };
                        }
                    }
                }
            }
        }
        out
    }

    /// The table in model coordinates, row-major `[rows, dim]`, NaN where missing.
    pub fn encode(&self, table: &MixedTable) -> Vec<f64> {
        let d = self.dim();
        let mut z = self.one_hot(table);
        for row in z.chunks_mut(d) {
            for c in 0..d {
                row[c] = (row[c] - self.mean[c]) / self.sd[c];
            }
        }
        z
    }

    /// One row of model coordinates back to cell values (numbers, level indices).
    pub fn decode_row(&self, table: &MixedTable, z: &[f64]) -> Vec<f64> {
        (0..table.cols)
            .map(|j| {
                let o = self.offset[j];
                match &table.kinds[j] {
                    ColumnKind::Numeric { .. } => self.mean[o] + self.sd[o] * z[o],
                    ColumnKind::Categorical { .. } => {
                        let mut best = (0usize, f64::NEG_INFINITY);
                        for k in 0..self.width[j] {
                            let v = self.mean[o + k] + self.sd[o + k] * z[o + k];
                            if v > best.1 {
                                best = (k, v);
                            }
                        }
                        best.0 as f64
                    }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_util::TempDir;

    fn write(dir: &TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Issue 15: the empty cells of a one-column table are blank lines, and those rows
    /// vanished; they are missing values.
    #[test]
    fn one_column_blank_lines_are_missing_cells() {
        let t = MixedTable::parse("one.csv", b"x\n1.5\n\n2\n\n", &[]).unwrap();
        assert_eq!(t.rows, 3);
        assert!(t.is_missing(1, 0) && !t.is_missing(2, 0));
        assert_eq!(t.lines, vec![2, 3, 4]);
        assert_eq!(t.incomplete_rows(), vec![1]);
        // Echoed cells and names are cut to 40 characters on a character boundary.
        let long = "é".repeat(50);
        let text = format!("{long}\n1\n2\n3\n{long}\n");
        let e = MixedTable::parse("t.csv", text.as_bytes(), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("...") && e.chars().count() < 250, "{e}");
        let e = MixedTable::parse("t.csv", b"a\n1\n", &[long]).unwrap_err().to_string();
        assert!(e.contains("no column named") && e.chars().count() < 100, "{e}");
    }

    #[test]
    fn reads_kinds_and_round_trips_observed_cells() {
        let dir = TempDir::new();
        let p = write(
            &dir,
            "t.csv",
            "species,len,sex\nAdelie,39.1,male\nGentoo, 40.25 ,NA\n\"Chin,strap\",,female\nAdelie,NaN,male\n",
        );
        let t = MixedTable::read(&p, &[]).unwrap();
        assert_eq!(t.rows, 4);
        assert_eq!(
            t.kinds[0],
            ColumnKind::Categorical {
                levels: vec!["Adelie".into(), "Gentoo".into(), "Chin,strap".into()]
            }
        );
        assert_eq!(t.kinds[1], ColumnKind::Numeric { decimals: Some(2) });
        assert_eq!(t.n_missing(), 3);
        assert_eq!((t.cells[3], t.cells[6]), (1.0, 2.0));
        let enc = Encoding::fit(&t);
        assert_eq!(enc.dim(), 3 + 1 + 2);
        let z = enc.encode(&t);
        let back = enc.decode_row(&t, &z[..enc.dim()]);
        assert_eq!(back[0], 0.0);
        assert!((back[1] - 39.1).abs() < 1e-12);
        let out = dir.join("o.csv");
        t.write_filled(&out, &|_, j| t.format_value(j, if j == 2 { 1.0 } else { 1.5 }))
            .unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            text,
            "species,len,sex\nAdelie,39.1,male\nGentoo, 40.25 ,female\n\"Chin,strap\",1.5000,female\nAdelie,1.5000,male\n"
        );
    }

    #[test]
    fn text_in_a_numeric_column_is_an_error_unless_forced() {
        let dir = TempDir::new();
        let p = write(&dir, "t.csv", "a,b\n1,2\n3,x\n5,6\n");
        let e = MixedTable::read(&p, &[]).unwrap_err().to_string();
        assert!(e.contains("row 3, column 'b': 'x' is not a number"), "{e}");
        let t = MixedTable::read(&p, &["b".to_string()]).unwrap();
        assert!(matches!(t.kinds[1], ColumnKind::Categorical { .. }));
        assert!(MixedTable::read(&p, &["zz".to_string()]).is_err());
        let ragged = write(&dir, "r.csv", "a,b\n1,2\n3\n");
        assert!(MixedTable::read(&ragged, &[])
            .unwrap_err()
            .to_string()
            .contains("row 3 has 1 fields"));
        let empty = write(&dir, "e.csv", "");
        assert!(MixedTable::read(&empty, &[]).unwrap_err().to_string().contains("empty"));
        let header_only = write(&dir, "h.csv", "a,b\n");
        assert!(MixedTable::read(&header_only, &[])
            .unwrap_err()
            .to_string()
            .contains("no data rows"));
        let inf = write(&dir, "i.csv", "a,b\n1,inf\n");
        assert!(MixedTable::read(&inf, &[])
            .unwrap_err()
            .to_string()
            .contains("infinite"));
    }

    #[test]
    fn empty_column_is_found() {
        let t = MixedTable::numeric(vec!["a".into(), "b".into()], vec![1.0, f64::NAN, 2.0, f64::NAN], 2).unwrap();
        assert_eq!(t.empty_column().as_deref(), Some("'b'"));
    }
}
