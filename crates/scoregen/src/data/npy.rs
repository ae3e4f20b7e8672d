//! `.npy` files (NumPy's array format, versions 1.0 to 3.0) holding `[n, d]` float arrays.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use npyz::{Endianness, NpyHeader, Order, TypeChar, WriterBuilder};

use super::write_atomic;
use crate::{Error, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Flat row-major data as stored, in its own precision.
enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// A decoded `.npy` array: row-major data of shape `[n, d]`.
struct Array {
    data: Data,
    n: usize,
    d: usize,
}

fn shape_str(shape: &[u64]) -> String {
    match shape {
        [a] => format!("({a},)"),
        _ => format!(
            "({})",
            shape.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Decodes the bytes of a whole `.npy` file. Errors are plain messages (the caller adds the
/// path).
fn decode(bytes: &[u8]) -> std::result::Result<Array, String> {
    // Pre-header: magic, version, header length. Checked here so that a corrupt length can
    // neither make us allocate a huge buffer nor give an obscure message.
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a .npy file (missing the \\x93NUMPY magic bytes)".into());
    }
    if bytes.len() < 10 {
        return Err("truncated .npy header".into());
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (len_bytes, header_len) = match major {
        1 => (2, u16::from_le_bytes([bytes[8], bytes[9]]) as usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated .npy header".into());
            }
            (
                4,
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            )
        }
        _ => return Err(format!("unsupported .npy format version {major}.{minor}")),
    };
    let data_start = 8 + len_bytes + header_len;
    if bytes.len() < data_start {
        return Err(format!(
            "truncated .npy header (declares {header_len} header bytes, file has {})",
            bytes.len() - 8 - len_bytes
        ));
    }
    let header = NpyHeader::from_reader(&bytes[..data_start])
        .map_err(|e| format!("invalid .npy header: {}", crate::error::one_line(e)))?;

    // dtype: little- or big-endian float32 / float64 only.
    let ts = match header.dtype() {
        npyz::DType::Plain(ts) => ts,
        other => {
            return Err(format!(
                "unsupported structured dtype {} (expected float32 '<f4' or float64 '<f8')",
                crate::error::excerpt(&other.descr())
            ))
        }
    };
    let size = match (ts.type_char(), ts.size_field(), ts.endianness()) {
        (TypeChar::Float, s @ (4 | 8), Endianness::Little | Endianness::Big) => s as usize,
        _ => {
            return Err(format!(
                "unsupported dtype '{}' (expected float32 '<f4' or float64 '<f8')",
                crate::error::excerpt(&ts.to_string())
            ))
        }
    };
    let big = ts.endianness() == Endianness::Big;

    // Shape: 1-D (n,) -> [n, 1]; 2-D (n, d).
    let shape = header.shape();
    let (n, d) = match *shape {
        [n] => (n, 1),
        [n, d] => (n, d),
        _ => {
            return Err(format!(
                "expected a 1-D or 2-D array, found {}-D shape {}",
                shape.len(),
                shape_str(shape)
            ))
        }
    };
    let too_big = || format!("array shape {} is too large", shape_str(shape));
    let n = usize::try_from(n).map_err(|_| too_big())?;
    let d = usize::try_from(d).map_err(|_| too_big())?;
    if n == 0 || d == 0 {
        return Err(format!("array is empty (shape {})", shape_str(shape)));
    }
    let count = n.checked_mul(d).ok_or_else(too_big)?;
    let want = count.checked_mul(size).ok_or_else(too_big)?;
    let body = &bytes[data_start..];
    if body.len() < want {
        return Err(format!(
            "truncated data: shape {} of '{ts}' needs {want} bytes, file has {}",
            shape_str(shape),
            body.len()
        ));
    }
    if body.len() > want {
        return Err(format!(
            "corrupt file: {} unexpected bytes after the data of shape {}",
            body.len() - want,
            shape_str(shape)
        ));
    }

    // Element (i, j) lives at i*d + j in C order, at j*n + i in Fortran order.
    let fortran = header.order() == Order::Fortran && shape.len() == 2 && d > 1 && n > 1;
    fn reorder<T: Copy>(flat: Vec<T>, n: usize, d: usize, fortran: bool) -> Vec<T> {
        if !fortran {
            return flat;
        }
        let mut out = Vec::with_capacity(flat.len());
        for i in 0..n {
            for j in 0..d {
                out.push(flat[j * n + i]);
            }
        }
        out
    }
    let data = if size == 4 {
        let flat: Vec<f32> = body
            .chunks_exact(4)
            .map(|c| {
                let b = [c[0], c[1], c[2], c[3]];
                if big {
                    f32::from_be_bytes(b)
                } else {
                    f32::from_le_bytes(b)
                }
            })
            .collect();
        Data::F32(reorder(flat, n, d, fortran))
    } else {
        let flat: Vec<f64> = body
            .chunks_exact(8)
            .map(|c| {
                let b = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
                if big {
                    f64::from_be_bytes(b)
                } else {
                    f64::from_le_bytes(b)
                }
            })
            .collect();
        Data::F64(reorder(flat, n, d, fortran))
    };
    Ok(Array { data, n, d })
}

fn read_array(path: &Path) -> Result<Array> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    decode(&bytes).map_err(|m| Error::file(path, m))
}

/// Reads a `.npy` file holding a float32 or float64 array as an `[n, d]` CPU tensor of the
/// same dtype (F32 or F64). A 1-D array of length `n` becomes `[n, 1]`.
///
/// Both byte orders and both C and Fortran memory order are handled (Fortran-order data is
/// transposed into the tensor's row-major layout). Any other dtype, an array of rank 0 or
/// more than 2, an empty array, or a corrupt or truncated file (including unexpected bytes
/// after the data) is an [`Error::File`].
pub fn read_npy(path: impl AsRef<Path>) -> Result<Tensor> {
    let Array { data, n, d } = read_array(path.as_ref())?;
    let t = match data {
        Data::F32(v) => Tensor::from_vec(v, (n, d), &Device::Cpu)?,
        Data::F64(v) => Tensor::from_vec(v, (n, d), &Device::Cpu)?,
    };
    Ok(t)
}

/// Reads a `.npy` file like [`read_npy`], returning `(data, n, d)` with `data` the
/// row-major values as `f64` (float32 files are widened exactly).
pub fn read_npy_f64(path: impl AsRef<Path>) -> Result<(Vec<f64>, usize, usize)> {
    let Array { data, n, d } = read_array(path.as_ref())?;
    let v = match data {
        Data::F32(v) => v.into_iter().map(f64::from).collect(),
        Data::F64(v) => v,
    };
    Ok((v, n, d))
}

/// Writes an `[n, d]` tensor to a `.npy` file (format 1.0, C order, little-endian), via
/// [`write_atomic`]. F32 and F64 tensors keep their dtype (`<f4` / `<f8`); any other dtype
/// is converted to F64. A tensor that is not 2-D is an [`Error::InvalidInput`].
pub fn write_npy(path: impl AsRef<Path>, t: &Tensor) -> Result<()> {
    let path = path.as_ref();
    let (n, d) = t.dims2().map_err(|_| {
        Error::invalid(format!(
            "write_npy: expected a 2-D [n, d] tensor, got shape {:?}",
            t.dims()
        ))
    })?;
    let shape = [n as u64, d as u64];
    let flat = t.contiguous()?.flatten_all()?;
    match t.dtype() {
        DType::F32 => write_flat(path, &shape, flat.to_vec1::<f32>()?),
        _ => write_flat(path, &shape, flat.to_dtype(DType::F64)?.to_vec1::<f64>()?),
    }
}

/// Writes the row-major values `v` of `shape` as a `.npy` file in `T`'s own dtype.
fn write_flat<T: npyz::AutoSerialize>(path: &Path, shape: &[u64], v: Vec<T>) -> Result<()> {
    write_atomic(path, |w| {
        let mut wr = npyz::WriteOptions::<T>::new()
            .default_dtype()
            .shape(shape)
            .writer(w)
            .begin_nd()?;
        wr.extend(v)?;
        wr.finish()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::TempDir;
    use super::*;

    /// A version 1.0 `.npy` file from a header dict, padded as numpy does.
    fn npy_v1(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut header = dict.as_bytes().to_vec();
        // magic (6) + version (2) + length (2) + header, ending in '\n', multiple of 64.
        let pad = (64 - (10 + header.len() + 1) % 64) % 64;
        header.extend(std::iter::repeat_n(b' ', pad));
        header.push(b'\n');
        let mut out = MAGIC.to_vec();
        out.extend([1u8, 0]);
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(&header);
        assert_eq!(out.len() % 64, 0);
        out.extend(data);
        out
    }

    fn le_f64(v: &[f64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// A version-1 file of little-endian `f64` values `v` with `shape` (a Python tuple).
    fn f8(shape: &str, fortran: bool, v: &[f64]) -> Vec<u8> {
        let order = if fortran { "True" } else { "False" };
        npy_v1(
            &format!("{{'descr': '<f8', 'fortran_order': {order}, 'shape': {shape}, }}"),
            &le_f64(v),
        )
    }

    /// Writes `bytes` to `p` and reads it back.
    fn write_read(p: &Path, bytes: &[u8]) -> Result<Tensor> {
        std::fs::write(p, bytes).unwrap();
        read_npy(p)
    }

    fn msg(e: &Error) -> String {
        match e {
            Error::File { message, .. } => message.clone(),
            other => panic!("expected Error::File, got {other:?}"),
        }
    }

    #[test]
    fn roundtrip_f64_bit_exact() {
        let dir = TempDir::new();
        let p = dir.join("x.npy");
        let vals = vec![0.1, -0.0, 1e-310, f64::MAX, std::f64::consts::PI, -1.0 / 3.0];
        let t = Tensor::from_vec(vals.clone(), (3, 2), &Device::Cpu).unwrap();
        write_npy(&p, &t).unwrap();
        let back = read_npy(&p).unwrap();
        assert_eq!(back.dtype(), DType::F64);
        assert_eq!(back.dims(), &[3, 2]);
        let got = back.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&vals));
        let (flat, n, d) = read_npy_f64(&p).unwrap();
        assert_eq!((n, d), (3, 2));
        assert_eq!(bits(&flat), bits(&vals));
        // Only the file itself is left in the directory.
        assert_eq!(dir.entries(), vec!["x.npy".to_string()]);
    }

    #[test]
    fn roundtrip_f32_bit_exact() {
        let dir = TempDir::new();
        let p = dir.join("x.npy");
        let vals = vec![0.1f32, -0.0, 1e-40, f32::MAX, 7.25, -1.0 / 3.0, 2.5, 1e30];
        let t = Tensor::from_vec(vals.clone(), (2, 4), &Device::Cpu).unwrap();
        write_npy(&p, &t).unwrap();
        // The header says '<f4'.
        let bytes = std::fs::read(&p).unwrap();
        assert!(String::from_utf8_lossy(&bytes[..128]).contains("'<f4'"));
        let back = read_npy(&p).unwrap();
        assert_eq!(back.dtype(), DType::F32);
        assert_eq!(back.dims(), &[2, 4]);
        let got = back.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&vals));
        let (flat, _, _) = read_npy_f64(&p).unwrap();
        assert_eq!(flat, vals.iter().map(|&x| x as f64).collect::<Vec<_>>());
    }

    #[test]
    fn other_dtypes_written_as_f64() {
        let dir = TempDir::new();
        let p = dir.join("u.npy");
        let t = Tensor::from_vec(vec![1u32, 2, 3, 4], (2, 2), &Device::Cpu).unwrap();
        write_npy(&p, &t).unwrap();
        let back = read_npy(&p).unwrap();
        assert_eq!(back.dtype(), DType::F64);
        assert_eq!(back.to_vec2::<f64>().unwrap(), vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
        // Not 2-D.
        let t1 = Tensor::from_vec(vec![1.0f64, 2.0], 2, &Device::Cpu).unwrap();
        assert!(matches!(write_npy(&p, &t1), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn reads_hand_crafted_numpy_v1_file() {
        let dir = TempDir::new();
        let p = dir.join("h.npy");
        let vals = [1.0, 2.0, 3.0, 4.5, -5.0, 6e100];
        let t = write_read(&p, &f8("(2, 3)", false, &vals)).unwrap();
        assert_eq!(t.dtype(), DType::F64);
        assert_eq!(
            t.to_vec2::<f64>().unwrap(),
            vec![vec![1.0, 2.0, 3.0], vec![4.5, -5.0, 6e100]]
        );
    }

    #[test]
    fn reads_1d_fortran_and_big_endian() {
        let dir = TempDir::new();
        // 1-D -> [n, 1].
        let p = dir.join("one.npy");
        let t = write_read(&p, &f8("(3,)", false, &[1.0, 2.0, 3.0])).unwrap();
        assert_eq!(t.dims(), &[3, 1]);
        assert_eq!(t.to_vec2::<f64>().unwrap(), vec![vec![1.0], vec![2.0], vec![3.0]]);

        // Fortran order: column-major storage of [[1, 2, 3], [4, 5, 6]].
        let p = dir.join("f.npy");
        let t = write_read(&p, &f8("(2, 3)", true, &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0])).unwrap();
        assert_eq!(
            t.to_vec2::<f64>().unwrap(),
            vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]
        );

        // Big-endian float32.
        let p = dir.join("be.npy");
        let data: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|x| x.to_be_bytes()).collect();
        let t = write_read(
            &p,
            &npy_v1("{'descr': '>f4', 'fortran_order': False, 'shape': (1, 2), }", &data),
        )
        .unwrap();
        assert_eq!(t.dtype(), DType::F32);
        assert_eq!(t.to_vec2::<f32>().unwrap(), vec![vec![1.5, -2.0]]);
    }

    #[test]
    fn rejects_int_dtype() {
        let dir = TempDir::new();
        let p = dir.join("i.npy");
        let data: Vec<u8> = [1i64, 2, 3, 4].iter().flat_map(|x| x.to_le_bytes()).collect();
        let e = write_read(
            &p,
            &npy_v1("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }", &data),
        )
        .unwrap_err();
        assert!(msg(&e).contains("unsupported dtype '<i8'"), "{e}");
        assert!(e.to_string().starts_with(&p.display().to_string()), "{e}");
        // float16 too.
        let bytes = npy_v1(
            "{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }",
            &[0, 0, 0, 0],
        );
        std::fs::write(&p, bytes).unwrap();
        assert!(msg(&read_npy(&p).unwrap_err()).contains("unsupported dtype"));
    }

    #[test]
    fn rejects_bad_rank_and_empty() {
        let dir = TempDir::new();
        let p = dir.join("r.npy");
        let e = write_read(&p, &f8("(1, 1, 2)", false, &[1.0, 2.0])).unwrap_err();
        assert!(msg(&e).contains("expected a 1-D or 2-D array"), "{e}");
        assert!(msg(&write_read(&p, &f8("()", false, &[1.0])).unwrap_err()).contains("0-D"));
        assert!(msg(&write_read(&p, &f8("(0, 3)", false, &[])).unwrap_err()).contains("empty"));
    }

    #[test]
    fn rejects_corrupt_and_truncated() {
        let dir = TempDir::new();
        let p = dir.join("c.npy");
        let good = f8("(2, 3)", false, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        // Truncated data.
        std::fs::write(&p, &good[..good.len() - 3]).unwrap();
        let e = read_npy(&p).unwrap_err();
        assert!(msg(&e).contains("truncated data"), "{e}");
        // Truncated header.
        std::fs::write(&p, &good[..30]).unwrap();
        assert!(msg(&read_npy(&p).unwrap_err()).contains("truncated .npy header"));
        std::fs::write(&p, &good[..8]).unwrap();
        assert!(msg(&read_npy(&p).unwrap_err()).contains("truncated"));
        // Trailing garbage.
        let mut long = good.clone();
        long.extend([0u8; 5]);
        std::fs::write(&p, &long).unwrap();
        assert!(msg(&read_npy(&p).unwrap_err()).contains("5 unexpected bytes"));
        // Not an npy file at all / empty file.
        std::fs::write(&p, b"a,b\n1,2\n").unwrap();
        assert!(msg(&read_npy(&p).unwrap_err()).contains("not a .npy file"));
        std::fs::write(&p, b"").unwrap();
        assert!(msg(&read_npy(&p).unwrap_err()).contains("not a .npy file"));
        // Garbled header dict.
        let bad = npy_v1("{'descr': '<f8', 'fortran_order': Fals", &le_f64(&[1.0]));
        std::fs::write(&p, bad).unwrap();
        assert!(msg(&read_npy(&p).unwrap_err()).contains("invalid .npy header"));
        // Unknown version.
        let mut v9 = good.clone();
        v9[6] = 9;
        std::fs::write(&p, v9).unwrap();
        assert!(msg(&read_npy(&p).unwrap_err()).contains("version 9.0"));
        // Missing file.
        let e = read_npy(dir.join("nope.npy")).unwrap_err();
        assert!(msg(&e).contains("cannot read"), "{e}");
    }
}
