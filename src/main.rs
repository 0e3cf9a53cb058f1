//! The `lowbit` command line: parses flags, maps files, draws progress, writes outputs atomically.
//! All compression logic lives in the library: each command is a call to `lowbit::api` or
//! `lowbit::pipeline`, plus printing.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lowbit::alloc::Allocator;
use lowbit::api::{Compressed, Output};
use lowbit::backend::{block_on, Backend, BackendChoice};
use lowbit::model::calibrate::{ActivationStats, CalibrationOptions};
use lowbit::model::device::Encoder;
use lowbit::model::eval::BUILTIN_TEXT;
use lowbit::model::eval::{Downstream, EvalOptions};
use lowbit::model::sample::Sampler;
use lowbit::model::sensitivity::{OutputChange, Sensitivity, SensitivityOptions};
use lowbit::model::{Model, ModelFiles};
use lowbit::pipeline::search::SearchOptions;
use lowbit::sequence::SequenceReport;
use lowbit::{CompressOptions, Inspection, Progress, Report, Target};

#[derive(Parser)]
#[command(
    name = "lowbit",
    version,
    about = "Compress model checkpoints to a bit budget, on your own machine."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// No progress bar, no summary.
    #[arg(long, global = true)]
    quiet: bool,
    /// Print the result as JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// How many threads to use (default: one per core). The output is the same for any number.
    #[arg(long, global = true, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
}

#[derive(Subcommand)]
enum Command {
    /// Compress a .safetensors checkpoint (or a model folder: its model.safetensors), or a vector
    /// dataset (.npy, .csv, .fvecs), to a .lowbit file; FASTA, FASTQ and text files (detected by
    /// content) are compressed losslessly.
    Compress {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        settings: Settings,
        /// Write report.json and report.html into this directory.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Run the compressed model next to the original on this text and put the downstream
        /// figures (perplexity, KL, agreement; or embedding cosines) in the report.
        #[arg(long, value_name = "FILE")]
        eval_text: Option<PathBuf>,
        /// Do not store the model's config and tokenizer files found beside the checkpoint.
        #[arg(long)]
        no_model_files: bool,
        #[command(flatten)]
        calibrate: CalibrateArgs,
    },
    /// Restore a .lowbit file to the original kind of file (.safetensors, .npy, .csv, .fvecs, or
    /// the identical FASTA/FASTQ/text file).
    Decompress {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// Do not write the stored config and tokenizer files beside the restored checkpoint.
        #[arg(long)]
        no_model_files: bool,
    },
    /// Compare a compressed model with its original on a text: perplexity, KL divergence and
    /// next-token agreement (decoders), embedding cosines and neighbour agreement (encoders).
    Eval {
        /// The original: a .safetensors checkpoint (config.json and tokenizer.json beside it) or
        /// its folder.
        original: PathBuf,
        /// The compressed model: a .lowbit, or a restored checkpoint.
        compressed: PathBuf,
        #[command(flatten)]
        eval: EvalArgs,
    },
    /// Generate text from a model (a .lowbit runs as it is; a checkpoint needs its config.json and
    /// tokenizer.json beside it). An encoder prints the prompt's sentence embedding.
    Run {
        model: PathBuf,
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
        /// 0 always takes the most likely token.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// Sample among the k most likely tokens only (0: all).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Where the forward pass runs: auto (a real GPU if there is one), gpu or cpu.
        #[arg(long, default_value = "auto")]
        backend: String,
    },
    /// List the tensors of a checkpoint, or the contents and bits per weight of a .lowbit.
    Inspect { file: PathBuf },
    /// Predicted size and error per tensor for a target, without writing anything (a dry run).
    Plan {
        input: PathBuf,
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        calibrate: CalibrateArgs,
    },
    /// Compress a small built-in example checkpoint and print the report summary.
    Demo {
        /// Also write the .lowbit, the restored checkpoint and the report here.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 4.0)]
        bpw: f64,
    },
}

#[derive(Args)]
struct EvalArgs {
    /// The text to judge on (default: a short built-in English text). Encoders embed its lines of
    /// 20 to 200 characters.
    #[arg(long, value_name = "FILE")]
    text: Option<PathBuf>,
    /// Decoders: tokens of the text to score.
    #[arg(long, default_value_t = 4096)]
    tokens: usize,
    /// Decoders: the window each run starts afresh in.
    #[arg(long, default_value_t = 256)]
    context: usize,
    /// Encoders: sentences to embed.
    #[arg(long, default_value_t = 256)]
    sentences: usize,
    /// Where both models run: auto (a real GPU if there is one), gpu or cpu.
    #[arg(long, default_value = "auto")]
    backend: String,
}

impl EvalArgs {
    fn options(&self) -> EvalOptions {
        EvalOptions {
            tokens: self.tokens,
            context: self.context,
            sentences: self.sentences,
        }
    }
}

#[derive(Args)]
struct Settings {
    /// Bits per parameter for the whole output file, everything counted (default 4; none for
    /// --method lossless).
    #[arg(long, conflicts_with = "max_error")]
    bpw: Option<f64>,
    /// Maximum relative Frobenius error per tensor instead of a size budget.
    #[arg(long)]
    max_error: Option<f64>,
    /// auto (the allocator picks per tensor) or one method (docs/METHODS.md); transform and pq
    /// are for vector datasets.
    #[arg(long, default_value = lowbit::pipeline::options::AUTO,
          value_parser = PossibleValuesParser::new(lowbit::pipeline::method_names()))]
    method: String,
    /// Per-tensor rule by name pattern: PATTERN=BITS or PATTERN=lossless (repeatable).
    #[arg(long = "keep", value_name = "PATTERN=BITS")]
    keep: Vec<String>,
    /// Seed of every random choice (the same seed gives the same bytes).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where the heavy kernels run: auto (a real GPU if there is one), gpu or cpu.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// How a --bpw budget is shared among tensors: greedy (convex hull) or knapsack (exact DP).
    #[arg(long, default_value = Allocator::DEFAULT.name())]
    allocator: String,
    /// Row importances for fwsvd: a .safetensors file with, per tensor name, per-row ([rows]) or
    /// per-element (the tensor's shape) non-negative weights, e.g. a Fisher or activation
    /// statistic. Tensors without an entry use the data-free proxies; in auto mode fwsvd is
    /// also tried for the tensors that have one.
    #[arg(long, value_name = "FILE")]
    importance: Option<PathBuf>,
    /// Measure every rung of the scalar grid's ladder (quarter-bit steps) up front, instead of
    /// one-bit rungs refined near the allocator's choice: slower, the reference the default is
    /// checked against.
    #[arg(long)]
    exhaustive: bool,
}

impl Settings {
    /// The library's settings (checked there, in one place for the CLI and the page).
    fn settings(&self) -> Result<lowbit::Settings> {
        Ok(lowbit::Settings {
            bpw: self.bpw,
            max_error: self.max_error,
            method: self.method.clone(),
            overrides: self.keep.clone(),
            allocator: self.allocator.clone(),
            seed: self.seed,
            backend: self.backend.parse()?,
            // `compress` measures it itself (CalibrateArgs, `--calibrate FILE`) and passes it in.
            sensitivity: true,
            calibration_text: String::new(),
            exhaustive: self.exhaustive,
        })
    }

    /// The importance file, parsed, when one is given.
    fn importance(&self) -> Result<Option<lowbit::codec::fwsvd::ImportanceMap>> {
        let Some(path) = &self.importance else {
            return Ok(None);
        };
        let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Some(lowbit::checkpoint::importance_map(
            &bytes,
            &display_name(path),
        )?))
    }

    fn options(&self) -> Result<CompressOptions> {
        let mut opts = self.settings()?.options()?;
        opts.importance = self.importance()?;
        Ok(opts)
    }
}

/// Set by Ctrl-C; the library polls it between tensors and stops with `Error::Cancelled`, so the
/// temporary output is removed like on any other failure.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Draws the library's progress events as an indicatif bar with an ETA.
struct Bar {
    bar: ProgressBar,
}

impl Bar {
    fn new(quiet: bool) -> Self {
        let bar = ProgressBar::with_draw_target(
            Some(0),
            if quiet {
                ProgressDrawTarget::hidden()
            } else {
                ProgressDrawTarget::stderr()
            },
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>8} [{bar:30}] {percent:>3}% eta {eta:<4} {wide_msg}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Bar { bar }
    }
}

impl Progress for Bar {
    fn stage(&mut self, name: &str, total: u64) {
        self.bar.reset();
        self.bar.set_length(total.max(1));
        self.bar.set_prefix(name.to_string());
    }

    fn advance(&mut self, done: u64, item: &str) {
        self.bar.inc(done);
        self.bar.set_message(item.to_string());
    }

    fn cancelled(&self) -> bool {
        INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// The input file, memory-mapped (or read, for empty files and pipes that cannot be mapped).
enum Input {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Input {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Input::Mapped(m) => m,
            Input::Owned(v) => v,
        }
    }
}

fn open_input(path: &Path) -> Result<Input> {
    let file = fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("{}: cannot stat", path.display()))?;
    if meta.is_dir() {
        bail!("{}: is a directory", path.display());
    }
    if meta.len() == 0 {
        bail!("{}: the file is empty", path.display());
    }
    // SAFETY: the map is read-only; lowbit never writes to its input. Another process truncating
    // the file while it is mapped is outside what any mmap-based reader can defend against.
    match unsafe { memmap2::Mmap::map(&file) } {
        Ok(m) => Ok(Input::Mapped(m)),
        Err(_) => {
            Ok(Input::Owned(fs::read(path).with_context(|| {
                format!("{}: cannot read", path.display())
            })?))
        }
    }
}

fn display_name(path: &Path) -> String {
    path.display().to_string()
}

/// Refuses to write over the input (same path, or the same file through another name).
fn check_not_same_file(input: &Path, output: &Path) -> Result<()> {
    let same = match (fs::canonicalize(input), fs::canonicalize(output)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        bail!(
            "{}: the output path is the input file; choose another output",
            output.display()
        );
    }
    Ok(())
}

/// Writes through `write` into a temporary file next to `path` and renames it into place only on
/// success, so a failed run leaves nothing behind.
fn write_atomically<T>(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> lowbit::Result<T>,
) -> lowbit::Result<T> {
    let shown = path.display();
    let io = |what: &str| {
        let at = format!("{shown}: {what}");
        move |e| lowbit::Error::io(at, e)
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| lowbit::Error::option(format!("{shown}: not a file path")))?;
    let tmp = dir.join(format!(
        ".{}.lowbit-tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let file = fs::File::create(&tmp).map_err(io("cannot write here"))?;
    let mut out = BufWriter::new(file);
    let result = write(&mut out).and_then(|v| {
        let file = out
            .into_inner()
            .map_err(|e| lowbit::Error::io(shown.to_string(), e.into_error()))?;
        file.sync_all().map_err(io("cannot write"))?;
        Ok(v)
    });
    match result {
        Ok(v) => {
            fs::rename(&tmp, path).map_err(io("cannot move the finished file into place"))?;
            Ok(v)
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// An output path as the front door's [`Output`]: each attempt writes a fresh temporary file.
struct AtomicFile<'a>(&'a Path);

impl Output for AtomicFile<'_> {
    fn attempt(
        &mut self,
        write: &mut dyn FnMut(&mut dyn Write) -> lowbit::Result<()>,
    ) -> lowbit::Result<()> {
        write_atomically(self.0, write)
    }
}

fn write_report(dir: &Path, report: &Report) -> Result<()> {
    write_report_files(dir, &report.to_json(), &report.to_html())
}

fn print_sequence_summary(r: &SequenceReport) {
    let o = &r.output;
    println!(
        "{}: {:?}, {} bytes, {} records, {} residues ({} ACGT) -> {} bytes, {:.4} bits per input byte",
        r.input.file, r.input.kind, r.input.bytes, r.input.records, r.input.residues, r.input.bases,
        o.bytes, o.bits_per_byte
    );
    if r.input.residues > 0 {
        println!(
            "  {:.4} bits per residue (whole file), {:.4} bits per base (base stream)",
            o.bits_per_residue, o.base_stream_bits_per_base
        );
    }
    for s in &r.streams {
        println!(
            "  {:<12} {:<28} {:>12} symbols {:>10} B {:>8.4} bits/symbol",
            s.name, s.model, s.symbols, s.coded_bytes, s.bits_per_symbol
        );
    }
    if let (Some(t), Some(v)) = (o.seconds, o.megabytes_per_second) {
        println!("  {t:.2} s, {v:.2} MB/s");
    }
}

fn write_report_files(dir: &Path, json: &str, html: &str) -> Result<()> {
    fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create the report directory", dir.display()))?;
    let io = |e| lowbit::Error::io("report", e);
    write_atomically(&dir.join("report.json"), |w| {
        w.write_all(json.as_bytes()).map_err(io)
    })?;
    write_atomically(&dir.join("report.html"), |w| {
        w.write_all(html.as_bytes()).map_err(io)
    })?;
    Ok(())
}

/// `384x1536` style.
fn shape_text(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

fn print_summary(report: &Report) {
    let o = &report.output;
    println!(
        "{}: {} parameters, {} -> {} bytes ({:.2}x), {:.4} bits per weight{}",
        report.input.file,
        report.input.parameters,
        report.input.bytes,
        o.bytes,
        o.ratio,
        o.bits_per_weight,
        if o.written {
            ""
        } else {
            " (plan, nothing written)"
        }
    );
    println!(
        "header {} B, payload {} B, side information {} B, padding {} B; rel. MSE {:.3e} (lossy tensors), {:.3e} (2-D float tensors)",
        o.header_bytes, o.payload_bytes, o.side_bytes, o.padding_bytes, o.rel_mse_lossy, o.rel_mse_2d
    );
    let width = report
        .tensors
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(6)
        .clamp(6, 48);
    println!(
        "{:<width$}  {:>16}  {:<28}  {:>7}  {:>10}  {:>7}",
        "tensor", "shape", "codec", "bpw", "rel.err", "SNR dB"
    );
    for t in &report.tensors {
        let mut name = t.name.clone();
        if name.len() > width {
            name = format!("...{}", &name[name.len() - (width - 3)..]);
        }
        let shape = shape_text(&t.shape);
        println!(
            "{:<width$}  {:>16}  {:<28}  {:>7.3}  {:>10.3e}  {:>7}",
            name,
            shape,
            t.label,
            t.bits_per_weight,
            t.rel_error,
            t.snr_db
                .map(|s| format!("{s:.1}"))
                .unwrap_or_else(|| "exact".into())
        );
    }
}

fn run(cli: Cli) -> Result<()> {
    let quiet = cli.quiet || cli.json;
    match cli.command {
        Command::Compress {
            input,
            output,
            settings,
            report,
            eval_text,
            no_model_files,
            calibrate,
        } => compress(
            &input,
            &output,
            &settings,
            &Extras {
                report_dir: report,
                eval_text,
                model_files: !no_model_files,
                calibrate,
            },
            quiet,
            cli.json,
        ),
        Command::Decompress {
            input,
            output,
            no_model_files,
        } => decompress(&input, &output, !no_model_files, quiet, cli.json),
        Command::Eval {
            original,
            compressed,
            eval,
        } => evaluate(&original, &compressed, &eval, cli.json),
        Command::Run {
            model,
            prompt,
            max_tokens,
            temperature,
            top_k,
            seed,
            backend,
        } => run_model(
            &model,
            &prompt,
            max_tokens,
            &mut Sampler::new(temperature, top_k, seed),
            backend.parse()?,
            cli.json,
        ),
        Command::Inspect { file } => {
            let bytes = open_input(&file)?;
            let inspection = lowbit::inspect(&bytes[..], &display_name(&file))?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&inspection)?);
            } else {
                print_inspection(&display_name(&file), &inspection);
            }
            Ok(())
        }
        Command::Plan {
            input,
            settings,
            calibrate,
        } => {
            let mut opts = settings.options()?;
            let input = checkpoint_of(&input);
            let bytes = open_input(&input)?;
            // As `compress` does, so that the plan is what it would write.
            if input.extension().is_some_and(|e| e == "safetensors") {
                let files = model_files_beside(&input)?;
                let name = display_name(&input);
                opts.sensitivity =
                    calibrate.sensitivity(&bytes, &name, &files, quiet || cli.json)?;
                opts.search = calibrate.search(&files)?;
                opts.model_files = files;
            }
            let name = display_name(&input);
            opts.activations = calibrate.activations(&bytes, &name, &opts.model_files)?;
            let mut bar = Bar::new(quiet);
            let report =
                lowbit::api::plan_report(&bytes[..], &display_name(&input), &opts, &mut bar)?;
            drop(bar);
            show(&report, quiet, cli.json);
            Ok(())
        }
        Command::Demo { out, bpw } => demo(out.as_deref(), bpw, quiet, cli.json),
    }
}

/// Prints a report's summary, or its JSON.
fn show(report: &Report, quiet: bool, json: bool) {
    if json {
        println!("{}", report.to_json());
    } else if !quiet {
        print_summary(report);
    }
}

/// Sensitivity (docs/CALIBRATION.md): before compressing a model lowbit recognises (config.json
/// and its tokenizer beside the checkpoint), the original model is run over a text with each weight
/// matrix perturbed in turn, and each tensor's error is weighed by how far it moves the output.
#[derive(clap::Args)]
struct CalibrateArgs {
    /// The text to run the model over (default: a built-in English paragraph).
    #[arg(long, value_name = "FILE")]
    calibrate: Option<PathBuf>,
    /// Decoders: how many tokens of that text to run.
    #[arg(long, value_name = "N", default_value_t = SensitivityOptions::default().tokens)]
    calibrate_tokens: usize,
    /// Judge every tensor by its relative weight error alone, without running the model.
    #[arg(long, conflicts_with = "calibrate")]
    no_sensitivity: bool,
    /// An importance matrix from llama.cpp's `llama-imatrix` (GGUF or legacy .dat): each weight's
    /// inputs' energies per channel; the scalar grid then steps each input channel by its energy
    /// and the options are judged by the output error they cause.
    #[arg(long, value_name = "FILE")]
    imatrix: Option<PathBuf>,
    /// After the allocation, search N generations for a better choice of options at the same
    /// size, judged by running the compressed model over the text (EvoPress-style; the model's
    /// config and tokenizer must be beside the checkpoint).
    #[arg(long, value_name = "N", default_value_t = 0)]
    search: usize,
    /// Decoders: how many tokens of the text the search judges each model on (more text fits
    /// the text less and takes longer).
    #[arg(long, value_name = "N", default_value_t = SearchOptions::new(0, String::new(), String::new()).tokens)]
    search_tokens: usize,
    /// Encoders: how many sentences (lines of 20 to 200 characters) the search judges on.
    #[arg(long, value_name = "N", default_value_t = SearchOptions::new(0, String::new(), String::new()).sentences)]
    search_sentences: usize,
}

impl CalibrateArgs {
    /// The text the model runs over, and its name for the report.
    fn text(&self) -> Result<(String, String)> {
        Ok(match &self.calibrate {
            Some(path) => (read_text(path)?, display_name(path)),
            None => (BUILTIN_TEXT.to_string(), "built-in text".to_string()),
        })
    }

    /// The input statistics this run compresses with: `--imatrix`'s, or those of the model run
    /// over `--calibrate`'s text (not over the built-in paragraph: too few tokens to pay, see
    /// docs/CALIBRATION.md), or none.
    fn activations(
        &self,
        bytes: &[u8],
        name: &str,
        files: &ModelFiles,
    ) -> Result<Option<ActivationStats>> {
        if let Some(path) = &self.imatrix {
            let imatrix = open_input(path)?;
            let stats = lowbit::api::read_imatrix(bytes, name, &imatrix, &display_name(path))?;
            return Ok(Some(stats));
        }
        if self.calibrate.is_none() || files.get("config.json").is_none() {
            return Ok(None);
        }
        let (text, source) = self.text()?;
        let options = CalibrationOptions::default();
        let stats = lowbit::api::calibrate(bytes, name, files, &text, &source, &options)
            .context("--calibrate: the model could not be run")?;
        Ok(Some(stats))
    }

    /// The search this run makes after its allocation, if any.
    fn search(&self, files: &ModelFiles) -> Result<Option<SearchOptions>> {
        if self.search == 0 {
            return Ok(None);
        }
        if files.get("config.json").is_none() {
            anyhow::bail!(
                "--search runs the model: it needs the model's config.json and tokenizer beside the checkpoint"
            );
        }
        if self.search_tokens < 2 || self.search_sentences < 1 {
            anyhow::bail!("--search-tokens must be at least 2 and --search-sentences at least 1");
        }
        let (text, source) = self.text()?;
        let mut options = SearchOptions::new(self.search, text, source);
        options.tokens = self.search_tokens;
        options.sentences = self.search_sentences;
        Ok(Some(options))
    }

    /// The sensitivity this run compresses with, if any.
    fn sensitivity(
        &self,
        bytes: &[u8],
        name: &str,
        files: &ModelFiles,
        quiet: bool,
    ) -> Result<Option<Sensitivity>> {
        if self.no_sensitivity {
            return Ok(None);
        }
        if files.get("config.json").is_none() {
            if self.calibrate.is_some() {
                anyhow::bail!(
                    "--calibrate needs the model's config.json and tokenizer beside the checkpoint"
                );
            }
            return Ok(None);
        }
        let options = SensitivityOptions {
            tokens: self.calibrate_tokens,
            ..SensitivityOptions::default()
        };
        let (text, source) = self.text()?;
        let start = std::time::Instant::now();
        match lowbit::api::measure_sensitivity(bytes, name, files, &text, &source, &options) {
            Ok(s) => {
                if !quiet {
                    eprintln!(
                        "sensitivity: {} weight matrices measured on {} {} of {} in {:.1} s",
                        s.tensors.len(),
                        s.units,
                        match s.measure {
                            OutputChange::KlDivergence => "tokens",
                            OutputChange::OneMinusCosine => "sentences",
                        },
                        s.source,
                        start.elapsed().as_secs_f64()
                    );
                }
                Ok(Some(s))
            }
            Err(e) if self.calibrate.is_none() => {
                eprintln!(
                    "note: the model was not run ({e}); every tensor is judged by its weight error"
                );
                Ok(None)
            }
            Err(e) => Err(anyhow::Error::new(e).context("--calibrate: the model could not be run")),
        }
    }
}

/// What `compress` does besides compressing.
struct Extras {
    report_dir: Option<PathBuf>,
    eval_text: Option<PathBuf>,
    /// Store the model files found beside a checkpoint.
    model_files: bool,
    calibrate: CalibrateArgs,
}

/// The file a command reads: a model folder stands for its `model.safetensors` (with the config
/// and tokenizer beside it).
fn checkpoint_of(input: &Path) -> PathBuf {
    match input.is_dir() {
        true => input.join("model.safetensors"),
        false => input.to_path_buf(),
    }
}

fn compress(
    input: &Path,
    output: &Path,
    settings: &Settings,
    extras: &Extras,
    quiet: bool,
    json: bool,
) -> Result<()> {
    let input = checkpoint_of(input);
    let input = input.as_path();
    check_not_same_file(input, output)?;
    let bytes = open_input(input)?;
    let name = display_name(input);
    let library_settings = settings.settings()?;
    let importance = settings.importance()?;
    let is_checkpoint = input.extension().is_some_and(|e| e == "safetensors");
    let model_files = match extras.model_files && is_checkpoint {
        true => model_files_beside(input)?,
        false => ModelFiles::new(),
    };
    let eval_text = extras.eval_text.as_deref().map(read_text).transpose()?;
    let sensitivity = match is_checkpoint {
        true => extras
            .calibrate
            .sensitivity(&bytes, &name, &model_files, quiet || json)?,
        false if extras.calibrate.calibrate.is_some() => {
            anyhow::bail!(
                "--calibrate needs a .safetensors checkpoint with its model files beside it"
            )
        }
        false => None,
    };
    let mut bar = Bar::new(quiet);
    let compressed = lowbit::api::compress_input(
        &bytes[..],
        &name,
        &library_settings,
        importance,
        lowbit::api::ModelInputs {
            search: match is_checkpoint {
                true => extras.calibrate.search(&model_files)?,
                false if extras.calibrate.search > 0 => anyhow::bail!(
                    "--search needs a .safetensors checkpoint with its model files beside it"
                ),
                false => None,
            },
            files: model_files.clone(),
            activations: extras.calibrate.activations(&bytes, &name, &model_files)?,
            sensitivity,
        },
        &mut bar,
        &mut AtomicFile(output),
    )?;
    drop(bar);
    match compressed {
        Compressed::Model(mut report) => {
            if let Some(fallback) = &report.backend.fallback {
                eprintln!("warning: {fallback}");
            }
            if let Some(text) = &eval_text {
                let judged = (|| -> lowbit::Result<Downstream> {
                    let original = lowbit::api::load_model(&bytes, &name, &model_files)?;
                    let compressed =
                        open_input(output).map_err(|e| lowbit::Error::invalid(format!("{e:#}")))?;
                    let restored =
                        lowbit::api::load_model(&compressed, &display_name(output), &model_files)?;
                    lowbit::model::eval::compare(
                        &original,
                        &restored,
                        text,
                        &EvalOptions::default(),
                    )
                })();
                match judged {
                    Ok(d) => report.downstream = Some(d),
                    Err(e) => eprintln!("warning: --eval-text: the model was not run: {e}"),
                }
            }
            if let Some(dir) = &extras.report_dir {
                write_report(dir, &report)?;
            }
            show(&report, quiet, json);
        }
        Compressed::Sequence(report) => {
            if let Some(dir) = &extras.report_dir {
                write_report_files(dir, &report.to_json(), &report.to_html())?;
            }
            if json {
                println!("{}", report.to_json());
            } else if !quiet {
                print_sequence_summary(&report);
            }
        }
    }
    Ok(())
}

fn decompress(input: &Path, output: &Path, files: bool, quiet: bool, json: bool) -> Result<()> {
    check_not_same_file(input, output)?;
    let bytes = open_input(input)?;
    let name = display_name(input);
    // The stored model files go beside the output; checked before anything is written, so a
    // refusal leaves nothing behind.
    let files = match files {
        true => lowbit::api::model_files_of(&bytes, &name)?,
        false => ModelFiles::new(),
    };
    let dir = parent_dir(output);
    let to_write = files_to_write(&dir, &files)?;
    let mut bar = Bar::new(quiet);
    let summary = write_atomically(output, |w| lowbit::decompress(&bytes, &name, &mut bar, w))?;
    drop(bar);
    for (rel, data) in &to_write {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("{}: cannot create", parent.display()))?;
        }
        write_atomically(&path, |w| {
            w.write_all(data)
                .map_err(|e| lowbit::Error::io("model file", e))
        })?;
    }
    if !quiet && !json && !files.is_empty() {
        let names: Vec<&str> = files.iter().map(|(n, _)| n).collect();
        println!("model files beside it: {}", names.join(", "));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else if !quiet {
        println!(
            "{}: {} tensors, {} parameters -> {} ({} bytes)",
            name,
            summary.tensors,
            summary.parameters,
            output.display(),
            summary.bytes_written
        );
    }
    Ok(())
}

/// The directory a path's file is in (`.` for a bare name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The model files (config, tokenizer) in the folder of `checkpoint`.
fn model_files_beside(checkpoint: &Path) -> Result<ModelFiles> {
    let dir = parent_dir(checkpoint);
    let mut files = ModelFiles::new();
    for name in lowbit::model::files::MODEL_FILE_NAMES {
        let path = dir.join(name);
        if path.is_file() {
            let bytes =
                fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
            files
                .insert(name, bytes)
                .with_context(|| path.display().to_string())?;
        }
    }
    Ok(files)
}

/// Which of `files` to write into `dir`: those not there yet. One already there with the same
/// bytes is left alone; one with other bytes is refused (lowbit never overwrites a user's file).
fn files_to_write<'a>(dir: &Path, files: &'a ModelFiles) -> Result<Vec<(&'a str, &'a [u8])>> {
    let mut out = Vec::new();
    for (name, bytes) in files.iter() {
        let path = dir.join(name);
        match fs::read(&path) {
            Ok(existing) if existing == bytes => {}
            Ok(_) => bail!(
                "{}: exists with other contents; the .lowbit's model file would replace it \
                 (restore into another folder, or pass --no-model-files)",
                path.display()
            ),
            Err(_) => out.push((name, bytes)),
        }
    }
    Ok(out)
}

fn read_text(path: &Path) -> Result<String> {
    fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read as UTF-8 text", path.display()))
}

/// A model from a path: a `.lowbit`, a checkpoint, or a folder holding `model.safetensors`; the
/// model files beside it fill in what a `.lowbit` does not store.
fn open_model(path: &Path) -> Result<Model> {
    let file = match path.is_dir() {
        true => path.join("model.safetensors"),
        false => path.to_path_buf(),
    };
    let bytes = open_input(&file)?;
    Ok(lowbit::api::load_model(
        &bytes,
        &display_name(&file),
        &model_files_beside(&file)?,
    )?)
}

fn evaluate(original: &Path, compressed: &Path, args: &EvalArgs, json: bool) -> Result<()> {
    let text = match &args.text {
        Some(p) => read_text(p)?,
        None => lowbit::model::eval::BUILTIN_TEXT.to_string(),
    };
    let (a, b) = (open_model(original)?, open_model(compressed)?);
    let (backend, reason) = open_backend(args.backend.parse()?)?;
    let started = std::time::Instant::now();
    let d = block_on(lowbit::model::eval::compare_on(
        &a,
        &b,
        &text,
        &args.options(),
        &backend,
    ))?;
    let seconds = started.elapsed().as_secs_f64();
    if json {
        // The comparison's own time (both models loaded), for the benchmarks.
        let mut v = serde_json::to_value(&d)?;
        if let Some(fields) = v.as_object_mut() {
            fields.insert("seconds".into(), seconds.into());
            fields.insert("backend".into(), ran_on(&backend, &reason).into());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{d}");
        eprintln!(
            "({} evaluated in {:.1} s on {})",
            a.family(),
            seconds,
            ran_on(&backend, &reason)
        );
    }
    Ok(())
}

/// The backend for `choice` and why (`--backend` of `run` and `eval`).
fn open_backend(choice: BackendChoice) -> Result<(Backend, String)> {
    Ok(block_on(Backend::new(choice))?)
}

/// Where a model ran, for the closing line: `CPU (why)` or `GPU: adapter (why)`, and the
/// fallback when the GPU was given up on the way.
fn ran_on(backend: &Backend, reason: &str) -> String {
    let mut s = match backend.adapter() {
        Some(adapter) => format!("GPU: {adapter}, {reason}"),
        None => format!("CPU, {reason}"),
    };
    if let Some(why) = backend.fallback() {
        s.push_str(&format!(
            "; the GPU was given up ({why}), the rest ran on the CPU"
        ));
    }
    s
}

fn run_model(
    path: &Path,
    prompt: &str,
    max_tokens: usize,
    sampler: &mut Sampler,
    choice: BackendChoice,
    json: bool,
) -> Result<()> {
    let model = open_model(path)?;
    let (backend, reason) = open_backend(choice)?;
    if let Model::Encoder(bert) = &model {
        let mut encoder = Encoder::load(bert, &backend);
        let e = block_on(encoder.embed_sentences(&[prompt.to_string()]))?.remove(0);
        if json {
            println!("{}", serde_json::to_string(&e)?);
        } else {
            let head: Vec<String> = e.iter().take(8).map(|v| format!("{v:.5}")).collect();
            println!("embedding ({} values): [{}, ...]", e.len(), head.join(", "));
            eprintln!("(on {})", ran_on(&backend, &reason));
        }
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut shown = 0;
    let mut stdout = std::io::stdout();
    let generated = block_on(lowbit::api::generate_text_on(
        &model,
        &backend,
        prompt,
        max_tokens,
        sampler,
        &mut |text, _| {
            // Print what the text so far adds to what was printed.
            if !json && text.len() > shown && text.is_char_boundary(shown) {
                let _ = write!(stdout, "{}", &text[shown..]);
                let _ = stdout.flush();
                shown = text.len();
            }
            true
        },
    ))?;
    let seconds = started.elapsed().as_secs_f64();
    if json {
        println!(
            "{}",
            serde_json::json!({"prompt": prompt, "text": generated.text, "tokens": generated.tokens,
                               "prompt_tokens": generated.prompt_tokens, "seconds": seconds,
                               "backend": backend.name(), "adapter": backend.adapter(),
                               "fallback": backend.fallback()})
        );
    } else {
        println!("{}", generated.text.get(shown..).unwrap_or(""));
        eprintln!(
            "({} tokens in {seconds:.2} s, {:.1} tokens/s, prompt {} tokens, {})",
            generated.tokens,
            generated.tokens as f64 / seconds.max(1e-9),
            generated.prompt_tokens,
            ran_on(&backend, &reason)
        );
    }
    Ok(())
}

fn demo(out: Option<&Path>, bpw: f64, quiet: bool, json: bool) -> Result<()> {
    let input = lowbit::demo::demo_checkpoint();
    let opts = CompressOptions::new(Target::BitsPerWeight(bpw));
    let mut bar = Bar::new(quiet);
    let mut compressed = Vec::new();
    let report = lowbit::compress(&input, "demo.safetensors", &opts, &mut bar, &mut compressed)?;
    let mut restored = Vec::new();
    lowbit::decompress(
        &compressed,
        "demo.lowbit",
        &mut lowbit::NoProgress,
        &mut restored,
    )?;
    drop(bar);
    if let Some(dir) = out {
        fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
        let io = |e| lowbit::Error::io("output", e);
        write_atomically(&dir.join("demo.safetensors"), |w| {
            w.write_all(&input).map_err(io)
        })?;
        write_atomically(&dir.join("demo.lowbit"), |w| {
            w.write_all(&compressed).map_err(io)
        })?;
        write_atomically(&dir.join("demo.restored.safetensors"), |w| {
            w.write_all(&restored).map_err(io)
        })?;
        write_report(dir, &report)?;
    }
    show(&report, quiet, json);
    Ok(())
}

fn print_inspection(name: &str, inspection: &Inspection) {
    if let Inspection::Sequence(s) = inspection {
        println!(
            "{name}: {:?} file, {} bytes, {} records, {} residues ({} ACGT)",
            s.kind, s.bytes, s.records, s.residues, s.bases
        );
        return;
    }
    let (tensors, header) = match inspection {
        Inspection::Checkpoint { format, bytes, parameters, tensors } => {
            (tensors, format!("{name}: {format:?} checkpoint, {bytes} bytes, {parameters} parameters, {} tensors", tensors.len()))
        }
        Inspection::Lowbit { bytes, parameters, bits_per_weight, header_bytes, tensors, model_files, .. } => (
            tensors,
            format!(
                "{name}: .lowbit, {bytes} bytes ({header_bytes} header{}), {parameters} parameters, {bits_per_weight:.4} bits per weight",
                model_files.iter().map(|(n, b)| format!(", {n} {b} B")).collect::<String>()
            ),
        ),
        Inspection::Sequence(_) => unreachable!("printed above"),
    };
    println!("{header}");
    for t in tensors {
        let shape = shape_text(&t.shape);
        println!(
            "  {:<56} {:>6} {:>16} {:>12} B {:>7.3} bpw  {}",
            t.name,
            t.ggml_type.as_deref().unwrap_or(t.dtype.name()),
            shape,
            t.bytes,
            t.bits_per_weight,
            t.codec.as_deref().unwrap_or("")
        );
    }
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so printing into a closed pipe (`lowbit inspect f | head`) would
    // panic; the default action ends the process quietly, as for any other command-line tool.
    #[cfg(unix)]
    // SAFETY: called first thing, before any other thread exists; SIG_DFL is a valid action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        lowbit::parallel::set_threads(n as usize);
    }
    // If no handler can be installed, Ctrl-C keeps its default meaning (the run just stops).
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed));
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
