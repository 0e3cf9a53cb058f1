//! What a user asks of a compression run: the target (a bit budget or an error bound), the method,
//! per-tensor overrides by name pattern, the seed, the backend, the allocator and an importance
//! file. [`CompressOptions`] is what the pipeline takes; [`Settings`] is the form in which the CLI's
//! flags and the page's controls arrive (strings and numbers), converted in one place.

use serde::Deserialize;

use crate::alloc::Allocator;
use crate::backend::BackendChoice;
use crate::codec::{self, Method};
use crate::error::{Error, Result};
use crate::sequence::SequenceKind;

/// What the user asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Whole output file at most this many bits per parameter.
    BitsPerWeight(f64),
    /// Every tensor's relative Frobenius error at most this.
    MaxError(f64),
}

/// A per-tensor rule chosen by name pattern (`--keep 'embeddings.*=8'`).
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    /// A glob: `*` matches any run of characters, `?` one character.
    pub pattern: String,
    pub rule: OverrideRule,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OverrideRule {
    /// Store the matching tensors exactly.
    Lossless,
    /// Code the matching tensors with the lowest-error option of at most this many bits per weight.
    BitsPerWeight(f64),
}

impl std::str::FromStr for Override {
    type Err = Error;

    /// `PATTERN=BITS` or `PATTERN=lossless`.
    fn from_str(s: &str) -> Result<Self> {
        let (pattern, rule) = s.rsplit_once('=').ok_or_else(|| {
            Error::option(format!(
                "override '{s}' is not PATTERN=BITS or PATTERN=lossless"
            ))
        })?;
        if pattern.is_empty() {
            return Err(Error::option(format!(
                "override '{s}' has an empty pattern"
            )));
        }
        let rule = if rule == "lossless" {
            OverrideRule::Lossless
        } else {
            let bits: f64 = rule.parse().map_err(|_| {
                Error::option(format!(
                    "override '{s}': '{rule}' is not a number of bits or 'lossless'"
                ))
            })?;
            if !(bits > 0.0 && bits <= 64.0) {
                return Err(Error::option(format!(
                    "override '{s}': bits must be in (0, 64]"
                )));
            }
            OverrideRule::BitsPerWeight(bits)
        };
        Ok(Override {
            pattern: pattern.to_string(),
            rule,
        })
    }
}

impl std::fmt::Display for Override {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.rule {
            OverrideRule::Lossless => write!(f, "{}=lossless", self.pattern),
            OverrideRule::BitsPerWeight(b) => write!(f, "{}={b}", self.pattern),
        }
    }
}

/// Glob match with `*` and `?` (iterative, linear backtracking on the last `*`).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[derive(Clone, Debug)]
pub struct CompressOptions {
    pub target: Target,
    /// `None` = auto: the allocator chooses the codec per tensor.
    pub method: Option<Method>,
    pub overrides: Vec<Override>,
    /// Base seed of every random choice (rotations, sketches, k-means++).
    pub seed: u64,
    /// Compute singular-value spectra for the report.
    pub spectra: bool,
    /// Where the heavy kernels run.
    pub backend: BackendChoice,
    /// How a `--bpw` budget is shared among tensors (unused with `--max-error`).
    pub allocator: Allocator,
    /// Row importances for fwsvd from an importance file (`--importance`), per tensor name.
    pub importance: Option<codec::fwsvd::ImportanceMap>,
    /// The model's small files (config, tokenizer), stored verbatim beside the weights so the
    /// `.lowbit` is a runnable model; outside the bit budget, which is the weights'.
    pub model_files: crate::model::ModelFiles,
    /// Input statistics of the model's linear weights from a calibration run: where present, a
    /// weight's options are judged by their relative output error (docs/CALIBRATION.md).
    pub activations: Option<crate::model::calibrate::ActivationStats>,
    /// The measured sensitivity of the model's weights (`model::sensitivity`): where present, an
    /// option's distortion is its predicted change of the model's output (its relative MSE times
    /// the tensor's sensitivity) instead of its relative MSE alone.
    pub sensitivity: Option<crate::model::sensitivity::Sensitivity>,
    /// An evolutionary search after the allocation, judged by running the compressed model
    /// (`pipeline::search`; needs `model_files`).
    pub search: Option<super::search::SearchOptions>,
    /// Measure the scalar grid's whole ladder up front (`--exhaustive`) instead of its coarse
    /// rungs refined near the allocator's choice (`pipeline::settle`): the reference the faster
    /// default is checked against.
    pub exhaustive: bool,
}

impl CompressOptions {
    /// The input energies `d_j` of weight `name`'s columns from the calibration statistics, when
    /// given for a matrix of this shape: what its options' output error and the per-column scalar
    /// grid are computed from, at analysis and again when the chosen option is written.
    pub fn input_energies(&self, name: &str, shape: &[usize]) -> Option<&[f32]> {
        self.activations.as_ref()?.columns_for(name, shape)
    }

    pub fn new(target: Target) -> Self {
        CompressOptions {
            target,
            method: None,
            overrides: Vec::new(),
            seed: 0,
            spectra: true,
            backend: BackendChoice::Auto,
            allocator: Allocator::default(),
            importance: None,
            model_files: crate::model::ModelFiles::new(),
            activations: None,
            sensitivity: None,
            search: None,
            exhaustive: false,
        }
    }

    /// Checks the target (a positive bit budget, a non-negative error bound).
    pub fn validate(&self) -> Result<()> {
        match self.target {
            Target::BitsPerWeight(b) if !(b.is_finite() && b > 0.0) => Err(Error::option(format!(
                "--bpw must be a positive number, got {b}"
            ))),
            Target::MaxError(e) if !(e.is_finite() && e >= 0.0) => Err(Error::option(format!(
                "--max-error must be a non-negative number, got {e}"
            ))),
            _ => Ok(()),
        }
    }
}

/// The budget when neither a bit budget nor an error bound is given.
pub const DEFAULT_BITS_PER_WEIGHT: f64 = 4.0;

/// A run's settings as a person gives them (the CLI's flags, the page's form), before they are
/// checked: [`Settings::options`] turns them into [`CompressOptions`]. The page sends them as JSON
/// (field names as here).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Bits per parameter for the whole output file...
    pub bpw: Option<f64>,
    /// ...or the largest relative Frobenius error per tensor (wins over `bpw`).
    pub max_error: Option<f64>,
    /// `auto` or one of [`Method::ALL`]'s names.
    pub method: String,
    /// `PATTERN=BITS` or `PATTERN=lossless` rules.
    pub overrides: Vec<String>,
    /// `greedy` or `knapsack`.
    pub allocator: String,
    pub seed: u64,
    pub backend: BackendChoice,
    /// Weigh each tensor's error by the model's measured sensitivity when the checkpoint comes
    /// with the config and tokenizer of a model lowbit runs (`model::sensitivity`; the CLI's
    /// `--no-sensitivity` turns it off).
    pub sensitivity: bool,
    /// The text the sensitivity is measured on, as the CLI's `--calibrate FILE` holds it; empty:
    /// the built-in paragraph (the CLI's default). The page's calibration box sends it; the CLI
    /// reads its file itself and leaves this empty.
    pub calibration_text: String,
    /// Measure every option in full (`--exhaustive`, [`CompressOptions::exhaustive`]).
    pub exhaustive: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bpw: None,
            max_error: None,
            method: AUTO.to_string(),
            overrides: Vec::new(),
            allocator: Allocator::DEFAULT.name().to_string(),
            seed: 0,
            backend: BackendChoice::Auto,
            sensitivity: true,
            calibration_text: String::new(),
            exhaustive: false,
        }
    }
}

/// The longest calibration text the page takes: the measurement reads only the text's first
/// tokens (a decoder: 128 by default) or sentences (an encoder: 32), so a megabyte is far more
/// than it uses; more is most likely the wrong file loaded into the box, copied to the worker and
/// tokenized for nothing.
pub const MAX_CALIBRATION_BYTES: usize = 1 << 20;

/// The method name that lets the allocator choose per tensor.
pub const AUTO: &str = "auto";

/// Every name `--method` (and the page's method list) accepts: `auto`, then [`Method::ALL`].
pub fn method_names() -> Vec<&'static str> {
    std::iter::once(AUTO)
        .chain(Method::ALL.iter().map(|m| m.name()))
        .collect()
}

/// `auto` -> `None`, a method's name -> that method.
pub fn parse_method(name: &str) -> Result<Option<Method>> {
    if name == AUTO {
        return Ok(None);
    }
    Method::from_name(name).map(Some).ok_or_else(|| {
        Error::option(format!(
            "unknown method '{name}' (use {})",
            method_names().join(", ")
        ))
    })
}

impl Settings {
    /// The checked options. With neither a budget nor an error bound, `lossless` needs none and
    /// everything else gets [`DEFAULT_BITS_PER_WEIGHT`].
    pub fn options(&self) -> Result<CompressOptions> {
        let method = parse_method(&self.method)?;
        let target = match (self.bpw, self.max_error) {
            (_, Some(e)) => Target::MaxError(e),
            (Some(b), None) => Target::BitsPerWeight(b),
            // Lossless has no budget to meet: everything is exact.
            (None, None) if method == Some(Method::Lossless) => Target::MaxError(0.0),
            (None, None) => Target::BitsPerWeight(DEFAULT_BITS_PER_WEIGHT),
        };
        let mut opts = CompressOptions::new(target);
        opts.method = method;
        opts.overrides = self
            .overrides
            .iter()
            .map(|o| o.parse::<Override>())
            .collect::<Result<_>>()?;
        opts.seed = self.seed;
        opts.backend = self.backend;
        opts.exhaustive = self.exhaustive;
        opts.allocator = Allocator::from_name(&self.allocator).ok_or_else(|| {
            Error::option(format!(
                "unknown allocator '{}' (use greedy or knapsack)",
                self.allocator
            ))
        })?;
        opts.validate()?;
        self.calibration()?;
        Ok(opts)
    }

    /// The calibration text, `None` for the built-in one (an empty text), or an error when it is
    /// longer than [`MAX_CALIBRATION_BYTES`].
    pub fn calibration(&self) -> Result<Option<&str>> {
        let text = self.calibration_text.as_str();
        if text.len() > MAX_CALIBRATION_BYTES {
            return Err(Error::option(format!(
                "calibration text: {} bytes, more than the page takes ({} MiB): the measurement \
                 reads only the text's beginning (the CLI's --calibrate takes a file of any length)",
                text.len(),
                MAX_CALIBRATION_BYTES >> 20
            )));
        }
        Ok((!text.is_empty()).then_some(text))
    }

    /// What identifies the calibration text in [`Settings::analysis_key`]: `builtin`, or the
    /// text's length and two checksums (a whole megabyte of text is not kept in every key).
    pub fn calibration_key(&self) -> String {
        let text = self.calibration_text.as_bytes();
        if text.is_empty() {
            return "builtin".into();
        }
        // FNV-1a beside the CRC-32: two unrelated 32- and 64-bit hashes, so that two texts
        // a person pastes in turn never share a key.
        let fnv = text.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
        });
        format!(
            "{}:{:08x}:{fnv:016x}",
            text.len(),
            crate::checksum::crc32(text)
        )
    }

    /// Sequences are always lossless: a bit budget, a codec choice or an override cannot apply to
    /// them (`importance`: whether an importance file was given).
    pub fn check_lossless(&self, kind: SequenceKind, importance: bool) -> Result<()> {
        let lossy = [
            (self.bpw.is_some(), "--bpw"),
            (self.max_error.is_some(), "--max-error"),
            (
                !matches!(self.method.as_str(), AUTO | "lossless"),
                "--method",
            ),
            (!self.overrides.is_empty(), "--keep"),
            (importance, "--importance"),
        ];
        match lossy.iter().find(|(given, _)| *given) {
            Some((_, flag)) => Err(Error::option(format!(
                "{flag} does not apply to a {kind:?} file: sequences are always compressed losslessly"
            ))),
            None => Ok(()),
        }
    }

    /// What measured options depend on: everything but the target (the page re-allocates from one
    /// measurement for every position of its slider).
    /// The calibration text counts only where the sensitivity is measured.
    pub fn analysis_key(&self) -> String {
        let calibration = match self.sensitivity {
            true => self.calibration_key(),
            false => String::new(),
        };
        format!(
            "{}|{:?}|{}|{:?}|{}|{}|{calibration}",
            self.method, self.overrides, self.seed, self.backend, self.sensitivity, self.exhaustive
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob_match(
            "embeddings.*",
            "embeddings.word_embeddings.weight"
        ));
        assert!(glob_match(
            "*.bias",
            "encoder.layer.0.attention.self.query.bias"
        ));
        assert!(glob_match("layer.?.w", "layer.3.w"));
        assert!(!glob_match("layer.?.w", "layer.10.w"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a*b", "acbd"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
    }

    #[test]
    fn the_calibration_text_is_in_the_analysis_key_and_the_budget_is_not() {
        let builtin = Settings::default();
        let text = Settings {
            calibration_text: "A text of one's own.\n".into(),
            ..Settings::default()
        };
        let other = Settings {
            calibration_text: "A text of one's own!\n".into(),
            ..Settings::default()
        };
        let budget = Settings {
            bpw: Some(2.5),
            ..text.clone()
        };
        assert_ne!(builtin.analysis_key(), text.analysis_key());
        assert_ne!(text.analysis_key(), other.analysis_key());
        assert_eq!(text.analysis_key(), budget.analysis_key());
        assert_eq!(builtin.calibration().unwrap(), None);
        assert_eq!(text.calibration().unwrap(), Some("A text of one's own.\n"));
        // Without the sensitivity the text is not read, so it does not count.
        let off = |s: &Settings| Settings {
            sensitivity: false,
            ..s.clone()
        };
        assert_eq!(off(&builtin).analysis_key(), off(&text).analysis_key());
    }

    #[test]
    fn a_calibration_text_over_the_limit_is_refused() {
        let mut s = Settings {
            calibration_text: "x".repeat(MAX_CALIBRATION_BYTES),
            ..Settings::default()
        };
        assert!(s.options().is_ok());
        s.calibration_text.push('x');
        let e = s.options().unwrap_err().to_string();
        assert!(
            e.starts_with("invalid option: calibration text: 1048577 bytes"),
            "{e}"
        );
    }

    #[test]
    fn overrides_parse() {
        assert_eq!(
            "emb*=8".parse::<Override>().unwrap(),
            Override {
                pattern: "emb*".into(),
                rule: OverrideRule::BitsPerWeight(8.0)
            }
        );
        assert_eq!(
            "x=lossless".parse::<Override>().unwrap().rule,
            OverrideRule::Lossless
        );
        assert!("x".parse::<Override>().is_err());
        assert!("=3".parse::<Override>().is_err());
        assert!("x=abc".parse::<Override>().is_err());
        assert!("x=0".parse::<Override>().is_err());
    }
}
