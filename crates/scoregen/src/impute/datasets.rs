//! The real tables compiled into the library for imputation benchmarks, named
//! `builtin:NAME` on the command line (attribution and licences in the crate's
//! `data/README.md`).
//!
//! | name | rows x columns | what |
//! | --- | --- | --- |
//! | `breast-cancer` | 569 x 30 | Wisconsin diagnostic breast cancer, the 30 real features (`f1..f30`) |
//! | `wine` | 178 x 13 | wine recognition, the 13 chemical measurements (`f1..f13`) |
//! | `iris` | 150 x 4 | Fisher's iris, sepal / petal length and width in cm |
//! | `digits` | 1797 x 64 | 8x8 handwritten digits, pixel intensities 0..16 (`p1..p64`) |
//! | `penguins` | 344 x 8 | Palmer penguins with their **real** missing values (`NA`); species, island and sex are labels |
//!
//! The class labels of the first four are left out: the tables are the features. All are
//! complete except penguins.

use super::table::MixedTable;
use crate::data::{builtin, to_rows};
use crate::{Error, Result};

/// The names accepted by [`load_table`].
pub const TABLE_NAMES: [&str; 5] = ["breast-cancer", "wine", "iris", "digits", "penguins"];

static BREAST_CANCER: &str = include_str!("../../data/breast_cancer.csv");
static WINE: &str = include_str!("../../data/wine_data.csv");
static IRIS: &str = include_str!("../../data/iris.csv");
static PENGUINS: &str = include_str!("../../data/penguins.csv");

/// A table in scikit-learn's bundled format: a first line `n,d,class names...`, then `n`
/// rows of `d` features and a label; the features are returned.
fn sklearn_table(name: &str, text: &str, header: Vec<String>) -> Result<MixedTable> {
    let corrupt = |msg: String| Error::file(format!("builtin:{name}"), format!("embedded table is corrupt: {msg}"));
    let mut lines = text.lines();
    let first: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let parse = |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| corrupt(format!("bad first line field '{s}'")))
    };
    if first.len() < 2 {
        return Err(corrupt("no first line".into()));
    }
    let (n, d) = (parse(first[0])?, parse(first[1])?);
    if header.len() != d {
        return Err(corrupt(format!("{d} features, expected {}", header.len())));
    }
    let mut values = Vec::with_capacity(n * d);
    for (k, line) in lines.filter(|l| !l.trim().is_empty()).enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != d + 1 {
            return Err(corrupt(format!("line {}: {} fields", k + 2, f.len())));
        }
        for v in &f[..d] {
            values.push(
                v.trim()
                    .parse::<f64>()
                    .map_err(|_| corrupt(format!("line {}: '{v}' is not a number", k + 2)))?,
            );
        }
    }
    if values.len() != n * d {
        return Err(corrupt(format!("{} rows, expected {n}", values.len() / d)));
    }
    let mut t = MixedTable::numeric(header, values, n)?;
    // The text of each cell as in the file.
    for (i, line) in text.lines().skip(1).filter(|l| !l.trim().is_empty()).enumerate() {
        for (j, v) in line.split(',').take(d).enumerate() {
            t.raw[i][j] = v.trim().to_string();
        }
    }
    t.kinds = (0..d)
        .map(|j| super::table::ColumnKind::Numeric {
            decimals: (0..n)
                .map(|i| t.raw[i][j].split_once('.').map_or(0, |(_, f)| f.len()))
                .max(),
        })
        .collect();
    Ok(t)
}

fn names(prefix: &str, d: usize) -> Vec<String> {
    (1..=d).map(|k| format!("{prefix}{k}")).collect()
}

/// Loads a built-in table by name (see the module docs).
pub fn load_table(name: &str) -> Result<MixedTable> {
    match name {
        "breast-cancer" => sklearn_table(name, BREAST_CANCER, names("f", 30)),
        "wine" => sklearn_table(name, WINE, names("f", 13)),
        "iris" => sklearn_table(
            name,
            IRIS,
            ["sepal_length", "sepal_width", "petal_length", "petal_width"]
                .map(String::from)
                .to_vec(),
        ),
        "digits" => {
            let ds = builtin::load("digits", None, 0)?;
            let x: Vec<f64> = to_rows(&ds.x)?.0.iter().map(|v| (v * 16.0).round()).collect();
            let n = x.len() / 64;
            let mut t = MixedTable::numeric(names("p", 64), x, n)?;
            t.kinds = vec![super::table::ColumnKind::Numeric { decimals: Some(0) }; 64];
            Ok(t)
        }
        "penguins" => MixedTable::parse("builtin:penguins", PENGUINS.as_bytes(), &[]),
        _ => Err(Error::invalid(format!(
            "unknown built-in table '{name}' (expected one of {})",
            TABLE_NAMES.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::impute::ColumnKind;

    #[test]
    fn every_table_loads_with_its_shape() {
        for (name, rows, cols) in [
            ("breast-cancer", 569, 30),
            ("wine", 178, 13),
            ("iris", 150, 4),
            ("digits", 1797, 64),
            ("penguins", 344, 8),
        ] {
            let t = load_table(name).unwrap();
            assert_eq!((t.rows, t.cols), (rows, cols), "{name}");
            if name != "penguins" {
                assert_eq!(t.n_missing(), 0, "{name}");
            }
        }
        let p = load_table("penguins").unwrap();
        assert!(p.n_missing() > 0);
        assert!(matches!(&p.kinds[0], ColumnKind::Categorical { levels } if levels.len() == 3));
        assert!(matches!(&p.kinds[6], ColumnKind::Categorical { levels } if levels.len() == 2));
        assert!(matches!(p.kinds[2], ColumnKind::Numeric { decimals: Some(1) }));
        assert!(load_table("nope").is_err());
    }
}
