//! Conversion of a CTranslate2 Whisper model (as shipped for faster-whisper)
//! to the ggml file format whisper.cpp loads.
//!
//! The ggml file is: magic `0x67676d6c`; eleven `i32` hyper-parameters; the mel
//! filter bank (`i32 n_mel`, `i32 n_fft`, `n_mel*n_fft` f32); the vocabulary
//! (`i32 count`, then per token `u32 len` and its raw bytes); then every tensor
//! as `i32 n_dims`, `i32 name_len`, `i32 type` (0 = f32, 1 = f16, 8 = q8_0),
//! the dims innermost first, the name and the data. Tensor names and types
//! follow whisper.cpp's loader: the 2-D weight matrices take the file's weight
//! type (f16, or q8_0 as whisper.cpp's own `quantize` tool writes it); the
//! convolution kernels stay f16; biases, layer norms and positional
//! embeddings stay f32. CTranslate2 fuses the attention projections
//! (query/key/value in one matrix, key/value in another); they are split here,
//! and the key bias, which Whisper does not have and CTranslate2 stores as
//! zeros, is dropped.

use std::collections::BTreeSet;
use std::io::Write;

use crate::ct2::{Ct2Model, DType, Variable};

const GGML_MAGIC: u32 = 0x6767_6d6c;
const N_FFT_BINS: usize = 201;
/// ggml's tensor type codes.
const GGML_TYPE_F32: usize = 0;
const GGML_TYPE_F16: usize = 1;
const GGML_TYPE_Q8_0: usize = 8;
/// Weights per q8_0 block; a block is one f16 scale and 32 int8 values.
pub const QK8_0: usize = 32;
const Q8_0_BLOCK_BYTES: usize = 2 + QK8_0;
/// ggml's `GGML_QNT_VERSION * GGML_QNT_VERSION_FACTOR`, added to a quantized file type.
const QNT_VERSION_OFFSET: usize = 2 * 1000;

/// How the 2-D weight matrices (projections, MLPs, token embedding) are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightType {
    /// Half precision, as OpenAI's weights were trained and published.
    F16,
    /// ggml's q8_0: 8-bit weights with one f16 scale per 32, about half the size of f16.
    Q8_0,
}

impl WeightType {
    /// The `ftype` hyper-parameter of the file header (ggml's `GGML_FTYPE_*`,
    /// plus the quantization version for quantized files).
    fn header_ftype(self) -> usize {
        match self {
            WeightType::F16 => 1,
            WeightType::Q8_0 => QNT_VERSION_OFFSET + 7,
        }
    }
}

/// Quantize `values` to ggml q8_0 blocks exactly as ggml's reference
/// `quantize_row_q8_0_ref` does: per block of 32, `d = max|x| / 127` (stored as
/// f16) and `q = round(x / d)`. `values.len()` must be a multiple of [`QK8_0`].
pub fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    assert!(
        values.len().is_multiple_of(QK8_0),
        "q8_0 needs whole blocks of {QK8_0}"
    );
    let mut out = Vec::with_capacity(values.len() / QK8_0 * Q8_0_BLOCK_BYTES);
    for block in values.chunks_exact(QK8_0) {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
        // f32::round rounds halves away from zero, like C's roundf.
        out.extend(block.iter().map(|&x| (x * id).round() as i8 as u8));
    }
    out
}

/// Expand q8_0 blocks back to f32 (`x = q * d`), as ggml's `dequantize_row_q8_0` does.
pub fn dequantize_q8_0(bytes: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(bytes.len() / Q8_0_BLOCK_BYTES * QK8_0);
    for block in bytes.chunks_exact(Q8_0_BLOCK_BYTES) {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        out.extend(block[2..].iter().map(|&q| q as i8 as f32 * d));
    }
    out
}

/// Why a model could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Ct2(#[from] crate::ct2::Ct2Error),
    #[error("unknown model layout: {0}")]
    Layout(String),
    #[error("vocabulary: {0}")]
    Vocabulary(String),
    #[error("writing the ggml file: {0}")]
    Io(#[from] std::io::Error),
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertSummary {
    pub tensors: usize,
    pub bytes: u64,
    pub n_vocab: usize,
    pub multilingual: bool,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub width: usize,
}

/// The token list of a CTranslate2 model: `vocabulary.txt` (one token per line)
/// or `vocabulary.json` (a JSON list), in GPT-2's byte-to-unicode spelling.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    tokens: Vec<String>,
}

impl Vocabulary {
    pub fn from_txt(text: &str) -> Self {
        let text = text.strip_suffix('\n').unwrap_or(text);
        Self {
            tokens: text
                .split('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
                .collect(),
        }
    }

    pub fn from_json(text: &str) -> Result<Self, ConvertError> {
        let tokens: Vec<String> = serde_json::from_str(text)
            .map_err(|e| ConvertError::Vocabulary(format!("not a JSON list of strings: {e}")))?;
        Ok(Self { tokens })
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    fn eot(&self) -> Result<usize, ConvertError> {
        self.tokens
            .iter()
            .position(|t| t == "<|endoftext|>")
            .ok_or_else(|| ConvertError::Vocabulary("no <|endoftext|> token".into()))
    }
}

/// GPT-2's map from printable unicode characters back to the bytes they stand for.
fn unicode_to_byte() -> std::collections::HashMap<char, u8> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut map = std::collections::HashMap::new();
    let mut extra = 0u32;
    for b in 0u32..256 {
        let c = if printable.contains(&b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        map.insert(char::from_u32(c).expect("valid code point"), b as u8);
    }
    map
}

fn token_bytes(
    token: &str,
    map: &std::collections::HashMap<char, u8>,
    id: usize,
) -> Result<Vec<u8>, ConvertError> {
    token
        .chars()
        .map(|c| {
            map.get(&c).copied().ok_or_else(|| {
                ConvertError::Vocabulary(format!(
                    "token {id} ({token:?}) is not in byte-level form"
                ))
            })
        })
        .collect()
}

/// Slaney-style mel filter bank as librosa computes it (`htk=False`, `norm="slaney"`),
/// for 16 kHz audio and a 400-point FFT: the filters Whisper was trained with.
pub fn mel_filters(n_mels: usize) -> Vec<f32> {
    const SR: f64 = 16000.0;
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = (6.4f64).ln() / 27.0;
    let hz_to_mel = |f: f64| {
        if f >= min_log_hz {
            min_log_mel + (f / min_log_hz).ln() / logstep
        } else {
            f / f_sp
        }
    };
    let mel_to_hz = |m: f64| {
        if m >= min_log_mel {
            min_log_hz * (logstep * (m - min_log_mel)).exp()
        } else {
            f_sp * m
        }
    };
    let fft_freqs: Vec<f64> = (0..N_FFT_BINS)
        .map(|i| i as f64 * (SR / 2.0) / (N_FFT_BINS - 1) as f64)
        .collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(SR / 2.0));
    let mel_f: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut out = Vec::with_capacity(n_mels * N_FFT_BINS);
    for m in 0..n_mels {
        let enorm = 2.0 / (mel_f[m + 2] - mel_f[m]);
        for &f in &fft_freqs {
            let lower = (f - mel_f[m]) / (mel_f[m + 1] - mel_f[m]);
            let upper = (mel_f[m + 2] - f) / (mel_f[m + 2] - mel_f[m + 1]);
            out.push((lower.min(upper).max(0.0) * enorm) as f32);
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Out {
    /// A 2-D weight matrix: stored in the file's [`WeightType`].
    Weight,
    F16,
    F32,
}

struct Tensor<'m, 'a> {
    name: String,
    src: &'m Variable<'a>,
    scale: Option<&'m Variable<'a>>,
    rows: (usize, usize),
    shape: Vec<usize>,
    out: Out,
}

fn layer_count(m: &Ct2Model, prefix: &str) -> usize {
    let set: BTreeSet<usize> = m
        .variables
        .iter()
        .filter_map(|v| v.name.strip_prefix(prefix)?.split('/').next()?.parse().ok())
        .collect();
    set.len()
}

struct Planner<'m, 'a> {
    m: &'m Ct2Model<'a>,
    plan: Vec<Tensor<'m, 'a>>,
}

impl<'m, 'a> Planner<'m, 'a> {
    fn var(&self, name: &str) -> Result<&'m Variable<'a>, ConvertError> {
        self.m
            .get(name)
            .ok_or_else(|| ConvertError::Layout(format!("missing variable {name}")))
    }

    /// Add rows `rows` (of the first dimension) of CT2 variable `src` as ggml tensor `name`.
    fn add(
        &mut self,
        name: String,
        src: &str,
        rows: Option<(usize, usize)>,
        out: Out,
    ) -> Result<(), ConvertError> {
        let v = self.var(src)?;
        let scale = if v.dtype == DType::I8 {
            Some(self.var(&format!("{src}_scale"))?)
        } else {
            None
        };
        let rows = rows.unwrap_or((0, v.shape[0]));
        if rows.1 > v.shape[0] || rows.0 >= rows.1 {
            return Err(ConvertError::Layout(format!(
                "{src} has shape {:?}, cannot take rows {rows:?}",
                v.shape
            )));
        }
        let mut shape = v.shape.clone();
        shape[0] = rows.1 - rows.0;
        self.plan.push(Tensor {
            name,
            src: v,
            scale,
            rows,
            shape,
            out,
        });
        Ok(())
    }

    fn linear(&mut self, ggml: &str, ct2: &str) -> Result<(), ConvertError> {
        self.add(
            format!("{ggml}.weight"),
            &format!("{ct2}/weight"),
            None,
            Out::Weight,
        )?;
        self.add(
            format!("{ggml}.bias"),
            &format!("{ct2}/bias"),
            None,
            Out::F32,
        )
    }

    fn norm(&mut self, ggml: &str, ct2: &str) -> Result<(), ConvertError> {
        self.add(
            format!("{ggml}.weight"),
            &format!("{ct2}/gamma"),
            None,
            Out::F32,
        )?;
        self.add(
            format!("{ggml}.bias"),
            &format!("{ct2}/beta"),
            None,
            Out::F32,
        )
    }

    /// Split a fused self-attention projection `[3d, d]` into query, key and value.
    fn fused_qkv(&mut self, ggml: &str, ct2: &str, d: usize) -> Result<(), ConvertError> {
        let (w, b) = (format!("{ct2}/weight"), format!("{ct2}/bias"));
        self.check_zero_rows(&b, d, 2 * d)?;
        self.add(
            format!("{ggml}.query.weight"),
            &w,
            Some((0, d)),
            Out::Weight,
        )?;
        self.add(format!("{ggml}.query.bias"), &b, Some((0, d)), Out::F32)?;
        self.add(
            format!("{ggml}.key.weight"),
            &w,
            Some((d, 2 * d)),
            Out::Weight,
        )?;
        self.add(
            format!("{ggml}.value.weight"),
            &w,
            Some((2 * d, 3 * d)),
            Out::Weight,
        )?;
        self.add(
            format!("{ggml}.value.bias"),
            &b,
            Some((2 * d, 3 * d)),
            Out::F32,
        )
    }

    /// Split a fused cross-attention key/value projection `[2d, d]`.
    fn fused_kv(&mut self, ggml: &str, ct2: &str, d: usize) -> Result<(), ConvertError> {
        let (w, b) = (format!("{ct2}/weight"), format!("{ct2}/bias"));
        self.check_zero_rows(&b, 0, d)?;
        self.add(format!("{ggml}.key.weight"), &w, Some((0, d)), Out::Weight)?;
        self.add(
            format!("{ggml}.value.weight"),
            &w,
            Some((d, 2 * d)),
            Out::Weight,
        )?;
        self.add(format!("{ggml}.value.bias"), &b, Some((d, 2 * d)), Out::F32)
    }

    fn check_zero_rows(&self, bias: &str, from: usize, to: usize) -> Result<(), ConvertError> {
        let v = self.var(bias)?;
        let vals = v.to_f32();
        if vals.len() < to || vals[from..to].iter().any(|&x| x != 0.0) {
            return Err(ConvertError::Layout(format!(
                "{bias}: the key bias (elements {from}..{to}) is not zero; not a Whisper model"
            )));
        }
        Ok(())
    }
}

fn values_f32(t: &Tensor) -> Vec<f32> {
    let row: usize = t.src.shape[1..].iter().product::<usize>().max(1);
    let all = t.src.to_f32();
    let mut vals = all[t.rows.0 * row..t.rows.1 * row].to_vec();
    if let Some(scale) = t.scale {
        let s = scale.to_f32();
        for (r, chunk) in vals.chunks_mut(row).enumerate() {
            let k = s.get(t.rows.0 + r).copied().unwrap_or(1.0);
            chunk.iter_mut().for_each(|x| *x /= k);
        }
    }
    vals
}

impl Tensor<'_, '_> {
    /// The stored type, given the file's weight type.
    fn ggml_type(&self, weights: WeightType) -> usize {
        match (self.out, weights) {
            (Out::Weight, WeightType::Q8_0) => GGML_TYPE_Q8_0,
            (Out::Weight | Out::F16, _) => GGML_TYPE_F16,
            (Out::F32, _) => GGML_TYPE_F32,
        }
    }

    fn n_bytes(&self, weights: WeightType) -> u64 {
        let n = self.shape.iter().product::<usize>() as u64;
        match self.ggml_type(weights) {
            GGML_TYPE_Q8_0 => n / QK8_0 as u64 * Q8_0_BLOCK_BYTES as u64,
            GGML_TYPE_F16 => n * 2,
            _ => n * 4,
        }
    }
}

fn tensor_bytes(t: &Tensor, weights: WeightType) -> Vec<u8> {
    let row: usize = t.src.shape[1..].iter().product::<usize>().max(1);
    if t.ggml_type(weights) == GGML_TYPE_Q8_0 {
        return quantize_q8_0(&values_f32(t));
    }
    match (t.out, t.src.dtype, t.scale) {
        (Out::Weight | Out::F16, DType::F16, None) => {
            t.src.data[t.rows.0 * row * 2..t.rows.1 * row * 2].to_vec()
        }
        (Out::Weight | Out::F16, _, _) => values_f32(t)
            .into_iter()
            .flat_map(|v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        (Out::F32, _, _) => values_f32(t)
            .into_iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
    }
}

fn put_i32(out: &mut impl Write, v: usize) -> Result<(), ConvertError> {
    let v = i32::try_from(v)
        .map_err(|_| ConvertError::Layout(format!("value {v} does not fit the file format")))?;
    out.write_all(&v.to_le_bytes())?;
    Ok(())
}

/// Convert a parsed CTranslate2 Whisper model to ggml, writing to `out`, with
/// the 2-D weight matrices stored as `weights`.
/// `progress(done, total)` is called with bytes of tensor data written.
pub fn convert(
    m: &Ct2Model,
    vocab: &Vocabulary,
    weights: WeightType,
    out: &mut impl Write,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ConvertSummary, ConvertError> {
    if m.spec != "WhisperSpec" {
        return Err(ConvertError::Layout(format!(
            "model spec is {:?}, expected WhisperSpec",
            m.spec
        )));
    }
    let mut p = Planner {
        m,
        plan: Vec::new(),
    };
    let emb = p.var("decoder/embeddings/weight")?;
    let conv1 = p.var("encoder/conv1/weight")?;
    let enc_pos = p.var("encoder/position_encodings/encodings")?;
    let dec_pos = p.var("decoder/position_encodings/encodings")?;
    if emb.shape.len() != 2
        || conv1.shape.len() != 3
        || enc_pos.shape.len() != 2
        || dec_pos.shape.len() != 2
    {
        return Err(ConvertError::Layout(
            "embedding, convolution or position tensors have an unexpected rank".into(),
        ));
    }
    let (n_vocab, d) = (emb.shape[0], emb.shape[1]);
    let n_mels = conv1.shape[1];
    let n_enc = layer_count(m, "encoder/layer_");
    let n_dec = layer_count(m, "decoder/layer_");
    if n_enc == 0 || n_dec == 0 {
        return Err(ConvertError::Layout("no encoder or decoder layers".into()));
    }
    let heads = |prefix: &str| -> usize {
        m.get(&format!("{prefix}/num_heads"))
            .or_else(|| m.get("num_heads"))
            .and_then(|v| v.scalar_i64())
            .map(|h| h as usize)
            .unwrap_or(d / 64)
    };
    let (enc_heads, dec_heads) = (heads("encoder"), heads("decoder"));
    if d % enc_heads != 0 || d % dec_heads != 0 {
        return Err(ConvertError::Layout(format!(
            "width {d} is not divisible by the head count"
        )));
    }

    // Tensor plan, in whisper.cpp's order.
    p.add(
        "encoder.positional_embedding".into(),
        "encoder/position_encodings/encodings",
        None,
        Out::F32,
    )?;
    for c in ["conv1", "conv2"] {
        p.add(
            format!("encoder.{c}.weight"),
            &format!("encoder/{c}/weight"),
            None,
            Out::F16,
        )?;
        p.add(
            format!("encoder.{c}.bias"),
            &format!("encoder/{c}/bias"),
            None,
            Out::F32,
        )?;
        // Conv biases are [d, 1] in whisper.cpp.
        p.plan.last_mut().expect("just added").shape.push(1);
    }
    for i in 0..n_enc {
        let (g, c) = (format!("encoder.blocks.{i}"), format!("encoder/layer_{i}"));
        p.norm(
            &format!("{g}.attn_ln"),
            &format!("{c}/self_attention/layer_norm"),
        )?;
        p.fused_qkv(
            &format!("{g}.attn"),
            &format!("{c}/self_attention/linear_0"),
            d,
        )?;
        p.linear(
            &format!("{g}.attn.out"),
            &format!("{c}/self_attention/linear_1"),
        )?;
        p.norm(&format!("{g}.mlp_ln"), &format!("{c}/ffn/layer_norm"))?;
        p.linear(&format!("{g}.mlp.0"), &format!("{c}/ffn/linear_0"))?;
        p.linear(&format!("{g}.mlp.2"), &format!("{c}/ffn/linear_1"))?;
    }
    p.norm("encoder.ln_post", "encoder/layer_norm")?;
    p.add(
        "decoder.positional_embedding".into(),
        "decoder/position_encodings/encodings",
        None,
        Out::F32,
    )?;
    p.add(
        "decoder.token_embedding.weight".into(),
        "decoder/embeddings/weight",
        None,
        Out::Weight,
    )?;
    for i in 0..n_dec {
        let (g, c) = (format!("decoder.blocks.{i}"), format!("decoder/layer_{i}"));
        p.norm(
            &format!("{g}.attn_ln"),
            &format!("{c}/self_attention/layer_norm"),
        )?;
        p.fused_qkv(
            &format!("{g}.attn"),
            &format!("{c}/self_attention/linear_0"),
            d,
        )?;
        p.linear(
            &format!("{g}.attn.out"),
            &format!("{c}/self_attention/linear_1"),
        )?;
        p.norm(
            &format!("{g}.cross_attn_ln"),
            &format!("{c}/attention/layer_norm"),
        )?;
        p.linear(
            &format!("{g}.cross_attn.query"),
            &format!("{c}/attention/linear_0"),
        )?;
        p.fused_kv(
            &format!("{g}.cross_attn"),
            &format!("{c}/attention/linear_1"),
            d,
        )?;
        p.linear(
            &format!("{g}.cross_attn.out"),
            &format!("{c}/attention/linear_2"),
        )?;
        p.norm(&format!("{g}.mlp_ln"), &format!("{c}/ffn/layer_norm"))?;
        p.linear(&format!("{g}.mlp.0"), &format!("{c}/ffn/linear_0"))?;
        p.linear(&format!("{g}.mlp.2"), &format!("{c}/ffn/linear_1"))?;
    }
    p.norm("decoder.ln", "decoder/layer_norm")?;

    // Vocabulary.
    let eot = vocab.eot()?;
    let multilingual = n_vocab >= 51865;
    let expected_eot = if multilingual { 50257 } else { 50256 };
    if eot != expected_eot {
        return Err(ConvertError::Vocabulary(format!(
            "<|endoftext|> is token {eot}, expected {expected_eot} for a {} model with {n_vocab} tokens",
            if multilingual {
                "multilingual"
            } else {
                "English-only"
            }
        )));
    }
    let map = unicode_to_byte();

    // Header.
    out.write_all(&GGML_MAGIC.to_le_bytes())?;
    for v in [
        n_vocab,
        enc_pos.shape[0],
        d,
        enc_heads,
        n_enc,
        dec_pos.shape[0],
        d,
        dec_heads,
        n_dec,
        n_mels,
        weights.header_ftype(),
    ] {
        put_i32(out, v)?;
    }
    put_i32(out, n_mels)?;
    put_i32(out, N_FFT_BINS)?;
    for f in mel_filters(n_mels) {
        out.write_all(&f.to_le_bytes())?;
    }
    put_i32(out, eot)?;
    for (id, tok) in vocab.tokens[..eot].iter().enumerate() {
        let bytes = token_bytes(tok, &map, id)?;
        out.write_all(&(bytes.len() as u32).to_le_bytes())?;
        out.write_all(&bytes)?;
    }

    // q8_0 blocks run along the innermost dimension (a row of the matrix).
    if weights == WeightType::Q8_0
        && let Some(t) = p
            .plan
            .iter()
            .find(|t| t.out == Out::Weight && !t.shape[t.shape.len() - 1].is_multiple_of(QK8_0))
    {
        return Err(ConvertError::Layout(format!(
            "{} has rows of {} values, not a multiple of {QK8_0}; it cannot be stored as q8_0",
            t.name,
            t.shape[t.shape.len() - 1]
        )));
    }

    // Tensors.
    let total: u64 = p.plan.iter().map(|t| t.n_bytes(weights)).sum();
    let mut done = 0u64;
    progress(0, total);
    for t in &p.plan {
        let data = tensor_bytes(t, weights);
        put_i32(out, t.shape.len())?;
        put_i32(out, t.name.len())?;
        put_i32(out, t.ggml_type(weights))?;
        for &dim in t.shape.iter().rev() {
            put_i32(out, dim)?;
        }
        out.write_all(t.name.as_bytes())?;
        out.write_all(&data)?;
        done += data.len() as u64;
        progress(done, total);
    }
    out.flush()?;
    Ok(ConvertSummary {
        tensors: p.plan.len(),
        bytes: done,
        n_vocab,
        multilingual,
        encoder_layers: n_enc,
        decoder_layers: n_dec,
        width: d,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mel_filters_match_librosa_reference_points() {
        let f = mel_filters(80);
        assert_eq!(f.len(), 80 * 201);
        // Filter 0 at bin 1 (40 Hz), worked out by hand from the Slaney formulas.
        assert!((f[1] - 0.024_862_594).abs() < 1e-6, "{}", f[1]);
        assert_eq!(f[0], 0.0);
        // Every filter has some weight and none is negative.
        for m in 0..80 {
            let row = &f[m * 201..(m + 1) * 201];
            assert!(row.iter().all(|&x| x >= 0.0));
            assert!(row.iter().any(|&x| x > 0.0), "filter {m} empty");
        }
    }

    #[test]
    fn byte_level_tokens_decode() {
        let map = unicode_to_byte();
        assert_eq!(token_bytes("Ġhello", &map, 0).unwrap(), b" hello");
        assert_eq!(token_bytes("Ċ", &map, 0).unwrap(), b"\n");
        // "æĪĳ" is the byte-level spelling of 我 (E6 88 91).
        assert_eq!(token_bytes("æĪĳ", &map, 0).unwrap(), "我".as_bytes());
        assert!(
            token_bytes("我", &map, 7)
                .unwrap_err()
                .to_string()
                .contains("token 7")
        );
    }

    #[test]
    fn q8_0_round_trip_error_is_bounded() {
        // Two blocks: a smooth ramp with a large outlier, and a block of zeros.
        let mut x: Vec<f32> = (0..32).map(|i| (i as f32 - 15.5) * 0.013).collect();
        x[7] = -0.9;
        x.extend([0.0f32; 32]);
        let q = quantize_q8_0(&x);
        assert_eq!(q.len(), 2 * 34);
        let y = dequantize_q8_0(&q);
        assert_eq!(y.len(), x.len());
        let d = 0.9 / 127.0;
        for (a, b) in x.iter().zip(&y) {
            // Half a step from rounding, plus the f16 rounding of the scale (<= 127 * d * 2^-11).
            assert!((a - b).abs() <= d * 0.57, "{a} -> {b}");
        }
        // The largest value maps to +-127 exactly; zeros stay zero.
        assert_eq!(q[2 + 7] as i8, -127);
        assert!(y[32..].iter().all(|&v| v == 0.0));
        assert_eq!(&q[34..36], &[0, 0], "zero scale for an all-zero block");
    }

    #[test]
    fn q8_0_matches_ggml_rounding() {
        // With max |x| = 127 the scale is exactly 1: halves round away from
        // zero, as C's roundf does (not to even).
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = 63.5;
        x[2] = -63.5;
        x[3] = 62.5;
        let q = quantize_q8_0(&x);
        assert_eq!(half::f16::from_le_bytes([q[0], q[1]]).to_f32(), 1.0);
        assert_eq!(
            [q[2] as i8, q[3] as i8, q[4] as i8, q[5] as i8],
            [127, 64, -64, 63]
        );
    }

    #[test]
    fn non_whisper_model_is_an_unknown_layout() {
        let f = crate::ct2::tests::write_ct2(&[("x", &[1], 0, vec![0; 4])], &[]);
        let m = Ct2Model::parse(&f).unwrap();
        let vocab = Vocabulary::from_txt("<|endoftext|>\n");
        let err =
            convert(&m, &vocab, WeightType::F16, &mut Vec::new(), &mut |_, _| {}).unwrap_err();
        assert!(matches!(err, ConvertError::Layout(_)), "{err}");
    }
}
