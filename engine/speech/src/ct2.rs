//! Reader for CTranslate2 `model.bin` files (the format faster-whisper uses).
//!
//! Layout (little-endian), binary version 6:
//! `u32 version`, `string spec`, `u32 spec_revision`, `u32 n_variables`, then per
//! variable `string name`, `u8 rank`, `u32 dims[rank]`, `u8 dtype`,
//! `u32 n_bytes`, raw data; then `u32 n_aliases` and pairs of `string alias`,
//! `string target`. A `string` is a `u16` length (counting a trailing NUL)
//! followed by its bytes. The reader borrows the variable data from the input
//! buffer and checks every length against the end of the file.

use std::collections::HashMap;

/// Element types CTranslate2 stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    Bf16,
}

impl DType {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => DType::F32,
            1 => DType::I8,
            2 => DType::I16,
            3 => DType::I32,
            4 => DType::F16,
            5 => DType::Bf16,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            DType::I8 => 1,
            DType::I16 | DType::F16 | DType::Bf16 => 2,
            DType::F32 | DType::I32 => 4,
        }
    }
}

/// One named tensor or scalar.
#[derive(Debug, Clone)]
pub struct Variable<'a> {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub data: &'a [u8],
}

impl Variable<'_> {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as `f32` (converting from f16, bf16 or integers).
    pub fn to_f32(&self) -> Vec<f32> {
        let d = self.data;
        match self.dtype {
            DType::F32 => d
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            DType::F16 => d
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::Bf16 => d
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::I8 => d.iter().map(|&b| b as i8 as f32).collect(),
            DType::I16 => d
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32)
                .collect(),
            DType::I32 => d
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
                .collect(),
        }
    }

    /// A scalar integer configuration value (e.g. `num_heads`).
    pub fn scalar_i64(&self) -> Option<i64> {
        if self.len() != 1 {
            return None;
        }
        let d = self.data;
        Some(match self.dtype {
            DType::I8 => d[0] as i8 as i64,
            DType::I16 => i16::from_le_bytes([d[0], d[1]]) as i64,
            DType::I32 => i32::from_le_bytes([d[0], d[1], d[2], d[3]]) as i64,
            _ => return None,
        })
    }
}

/// A parsed CTranslate2 model.
#[derive(Debug, Clone)]
pub struct Ct2Model<'a> {
    pub binary_version: u32,
    pub spec: String,
    pub spec_revision: u32,
    pub variables: Vec<Variable<'a>>,
    index: HashMap<String, usize>,
    aliases: HashMap<String, String>,
}

/// What is wrong with a `model.bin`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Ct2Error {
    #[error(
        "truncated: the file ends at byte {at} while reading {what} (it needs {need} more bytes)"
    )]
    Truncated {
        at: usize,
        need: usize,
        what: String,
    },
    #[error("unsupported CTranslate2 binary version {0} (this reader knows version 6)")]
    Version(u32),
    #[error("variable {name:?} has unknown data type code {code}")]
    DType { name: String, code: u8 },
    #[error(
        "variable {name:?}: shape {shape:?} of {dtype:?} needs {expected} bytes but the file declares {declared}"
    )]
    SizeMismatch {
        name: String,
        shape: Vec<usize>,
        dtype: DType,
        expected: usize,
        declared: u32,
    },
    #[error("{extra} unexpected bytes after the end of the model")]
    TrailingBytes { extra: usize },
    #[error("a name is not valid UTF-8 at byte {at}")]
    BadName { at: usize },
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Ct2Error> {
        if self.buf.len() - self.pos < n {
            return Err(Ct2Error::Truncated {
                at: self.buf.len(),
                need: n - (self.buf.len() - self.pos),
                what: what.to_string(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, Ct2Error> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, Ct2Error> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32, Ct2Error> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self, what: &str) -> Result<String, Ct2Error> {
        let len = self.u16(what)? as usize;
        let at = self.pos;
        let bytes = self.take(len, what)?;
        let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
        String::from_utf8(bytes.to_vec()).map_err(|_| Ct2Error::BadName { at })
    }
}

impl<'a> Ct2Model<'a> {
    /// Parse a whole `model.bin` held in memory.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Ct2Error> {
        let mut c = Cursor { buf, pos: 0 };
        let binary_version = c.u32("the binary version")?;
        if binary_version != 6 {
            return Err(Ct2Error::Version(binary_version));
        }
        let spec = c.string("the model spec name")?;
        let spec_revision = c.u32("the spec revision")?;
        let n = c.u32("the variable count")? as usize;
        let mut variables = Vec::with_capacity(n.min(100_000));
        for i in 0..n {
            let name = c.string(&format!("the name of variable {i}"))?;
            let rank = c.u8(&format!("the rank of {name}"))? as usize;
            let mut shape = Vec::with_capacity(rank);
            for _ in 0..rank {
                shape.push(c.u32(&format!("the shape of {name}"))? as usize);
            }
            let code = c.u8(&format!("the data type of {name}"))?;
            let dtype = DType::from_code(code).ok_or_else(|| Ct2Error::DType {
                name: name.clone(),
                code,
            })?;
            let declared = c.u32(&format!("the size of {name}"))?;
            let expected = shape.iter().product::<usize>().max(1) * dtype.size();
            if expected != declared as usize {
                return Err(Ct2Error::SizeMismatch {
                    name,
                    shape,
                    dtype,
                    expected,
                    declared,
                });
            }
            let data = c.take(declared as usize, &format!("the data of {name}"))?;
            if shape.is_empty() {
                shape.push(1);
            }
            variables.push(Variable {
                name,
                shape,
                dtype,
                data,
            });
        }
        let mut aliases = HashMap::new();
        if c.pos < buf.len() {
            let n_alias = c.u32("the alias count")?;
            for _ in 0..n_alias {
                let alias = c.string("an alias")?;
                let target = c.string("an alias target")?;
                aliases.insert(alias, target);
            }
        }
        if c.pos != buf.len() {
            return Err(Ct2Error::TrailingBytes {
                extra: buf.len() - c.pos,
            });
        }
        let index = variables
            .iter()
            .enumerate()
            .map(|(i, v)| (v.name.clone(), i))
            .collect();
        Ok(Self {
            binary_version,
            spec,
            spec_revision,
            variables,
            index,
            aliases,
        })
    }

    /// Look a variable up by name, following aliases.
    pub fn get(&self, name: &str) -> Option<&Variable<'a>> {
        let name = self.aliases.get(name).map(String::as_str).unwrap_or(name);
        self.index.get(name).map(|&i| &self.variables[i])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Build a tiny CT2 file in memory.
    pub(crate) fn write_ct2(
        vars: &[(&str, &[u32], u8, Vec<u8>)],
        aliases: &[(&str, &str)],
    ) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&6u32.to_le_bytes());
        string(&mut out, "WhisperSpec");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(vars.len() as u32).to_le_bytes());
        for (name, dims, code, data) in vars {
            string(&mut out, name);
            out.push(dims.len() as u8);
            for d in *dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.push(*code);
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
        out.extend_from_slice(&(aliases.len() as u32).to_le_bytes());
        for (a, t) in aliases {
            string(&mut out, a);
            string(&mut out, t);
        }
        out
    }

    #[test]
    fn parses_variables_scalars_and_aliases() {
        let w: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let f = write_ct2(
            &[
                ("decoder/embeddings/weight", &[2, 3], 0, w),
                ("decoder/num_heads", &[], 2, 8i16.to_le_bytes().to_vec()),
            ],
            &[("decoder/projection/weight", "decoder/embeddings/weight")],
        );
        let m = Ct2Model::parse(&f).unwrap();
        assert_eq!(m.spec, "WhisperSpec");
        assert_eq!(
            m.get("decoder/projection/weight").unwrap().to_f32(),
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
        assert_eq!(m.get("decoder/num_heads").unwrap().scalar_i64(), Some(8));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let f = write_ct2(&[("a", &[2], 4, vec![0, 60, 0, 60])], &[]);
        for cut in 0..f.len() - 4 {
            let e = Ct2Model::parse(&f[..cut]);
            assert!(
                matches!(e, Err(Ct2Error::Truncated { .. })),
                "cut at {cut}: {e:?}"
            );
        }
    }

    #[test]
    fn unknown_version_and_dtype_are_reported() {
        let mut f = write_ct2(&[("a", &[1], 9, vec![0])], &[]);
        assert!(matches!(
            Ct2Model::parse(&f),
            Err(Ct2Error::DType { code: 9, .. })
        ));
        f[0] = 5;
        assert_eq!(Ct2Model::parse(&f).unwrap_err(), Ct2Error::Version(5));
    }
}
