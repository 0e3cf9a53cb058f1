//! The `lowbit` command line: parses flags, maps files, draws progress, writes outputs atomically.
//! All compression logic lives in the library.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lowbit::alloc::Allocator;
use lowbit::codec::Method;
use lowbit::dataset::{DatasetKind, SequenceOptions, SequenceReport};
use lowbit::{CompressOptions, Inspection, Override, Progress, Report, Target};

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
}

#[derive(Subcommand)]
enum Command {
    /// Compress a .safetensors checkpoint, or a vector dataset (.npy, .csv, .fvecs), to a .lowbit
    /// file; FASTA, FASTQ and text files (detected by content) are compressed losslessly.
    Compress {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        settings: Settings,
        /// Write report.json and report.html into this directory.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Restore a .lowbit file to the original kind of file (.safetensors, .npy, .csv, .fvecs, or
    /// the identical FASTA/FASTQ/text file).
    Decompress {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// List the tensors of a checkpoint, or the contents and bits per weight of a .lowbit.
    Inspect { file: PathBuf },
    /// Predicted size and error per tensor for a target, without writing anything (a dry run).
    Plan {
        input: PathBuf,
        #[command(flatten)]
        settings: Settings,
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

/// The budget when neither --bpw nor --max-error is given.
const DEFAULT_BITS_PER_WEIGHT: f64 = 4.0;

#[derive(Args)]
struct Settings {
    /// Bits per parameter for the whole output file, everything counted (default 4; none for
    /// --method lossless).
    #[arg(long, conflicts_with = "max_error")]
    bpw: Option<f64>,
    /// Maximum relative Frobenius error per tensor instead of a size budget.
    #[arg(long)]
    max_error: Option<f64>,
    /// auto (the allocator picks per tensor), scalar, vq, lowrank, sparse-lowrank, fwsvd,
    /// shared-lowrank, hyper, turbo, lossless, or for vector datasets transform or pq.
    #[arg(long, default_value = "auto")]
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
}

impl Settings {
    /// Sequences are always lossless: a bit budget or a codec choice cannot apply to them.
    fn check_lossless(&self, kind: DatasetKind) -> Result<()> {
        let lossy = [
            (self.bpw.is_some(), "--bpw"),
            (self.max_error.is_some(), "--max-error"),
            (
                !matches!(self.method.as_str(), "auto" | "lossless"),
                "--method",
            ),
            (!self.keep.is_empty(), "--keep"),
            (self.importance.is_some(), "--importance"),
        ];
        if let Some((_, flag)) = lossy.iter().find(|(given, _)| *given) {
            bail!(
                "{flag} does not apply to a {kind:?} file: sequences are always compressed losslessly"
            );
        }
        Ok(())
    }

    fn options(&self) -> Result<CompressOptions> {
        let method = match self.method.as_str() {
            "auto" => None,
            name => Some(Method::from_name(name).ok_or_else(|| {
                anyhow!(
                    "unknown method '{name}' (use auto, scalar, vq, lowrank, sparse-lowrank, fwsvd, \
                     shared-lowrank, hyper, turbo, lossless, transform or pq)"
                )
            })?),
        };
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
            .keep
            .iter()
            .map(|k| k.parse::<Override>())
            .collect::<Result<_, _>>()?;
        opts.seed = self.seed;
        opts.backend = self.backend.parse()?;
        opts.allocator = Allocator::from_name(&self.allocator).ok_or_else(|| {
            anyhow!(
                "unknown allocator '{}' (use greedy or knapsack)",
                self.allocator
            )
        })?;
        if let Some(path) = &self.importance {
            let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            opts.importance = Some(lowbit::codec::fwsvd::ImportanceMap::from_safetensors(
                &bytes,
                &display_name(path),
            )?);
        }
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
fn write_atomically<T>(path: &Path, write: impl FnOnce(&mut dyn Write) -> Result<T>) -> Result<T> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.lowbit-tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let file =
        fs::File::create(&tmp).with_context(|| format!("{}: cannot write here", path.display()))?;
    let mut out = BufWriter::new(file);
    let result = write(&mut out).and_then(|v| {
        let file = out
            .into_inner()
            .map_err(|e| anyhow!("{}: {}", path.display(), e.error()))?;
        file.sync_all()
            .with_context(|| format!("{}: cannot write", path.display()))?;
        Ok(v)
    });
    match result {
        Ok(v) => {
            fs::rename(&tmp, path).with_context(|| {
                format!(
                    "{}: cannot move the finished file into place",
                    path.display()
                )
            })?;
            Ok(v)
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
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
    write_atomically(&dir.join("report.json"), |w| {
        Ok(w.write_all(json.as_bytes())?)
    })?;
    write_atomically(&dir.join("report.html"), |w| {
        Ok(w.write_all(html.as_bytes())?)
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
    match cli.command {
        Command::Compress {
            input,
            output,
            settings,
            report,
        } => {
            check_not_same_file(&input, &output)?;
            let bytes = open_input(&input)?;
            let name = display_name(&input);
            // `.csv` / `.fvecs` are vector datasets by name (a CSV is text too: the name decides).
            let vector_file = lowbit::checkpoint::vector_format_by_name(&name).is_some();
            if let Some(kind) = lowbit::dataset::sniff_input(&bytes).filter(|_| !vector_file) {
                settings.check_lossless(kind)?;
                let mut bar = Bar::new(cli.quiet || cli.json);
                let report_data = write_atomically(&output, |w| {
                    Ok(lowbit::dataset::compress(
                        &bytes,
                        &name,
                        kind,
                        &SequenceOptions::default(),
                        &mut bar,
                        w,
                    )?)
                })?;
                drop(bar);
                if let Some(dir) = report {
                    write_report_files(&dir, &report_data.to_json(), &report_data.to_html())?;
                }
                if cli.json {
                    println!("{}", report_data.to_json());
                } else if !cli.quiet {
                    print_sequence_summary(&report_data);
                }
                return Ok(());
            }
            if !vector_file && !bytes.is_empty() && !bytes.starts_with(b"\x93NUMPY") {
                if let Err(e) = lowbit::io::safetensors::read_header(&bytes) {
                    bail!(
                        "{name}: neither a checkpoint (.safetensors, .npy) nor a FASTA, FASTQ or text file \
                         (binary content that is not a valid safetensors header: {e})"
                    );
                }
            }
            let opts = settings.options()?;
            let mut bar = Bar::new(cli.quiet || cli.json);
            let compress = |opts: &CompressOptions, bar: &mut Bar| {
                write_atomically(&output, |w| {
                    Ok(lowbit::compress(&bytes[..], &name, opts, bar, w)?)
                })
            };
            let report_data = match compress(&opts, &mut bar) {
                Err(e)
                    if matches!(
                        e.downcast_ref::<lowbit::Error>(),
                        Some(lowbit::Error::GpuFailedWhileWriting { .. })
                    ) =>
                {
                    // The half-written output is gone (write_atomically removed it): start
                    // again on the CPU.
                    eprintln!("warning: {e}; compressing again on the CPU");
                    let mut cpu = opts.clone();
                    cpu.backend = lowbit::BackendChoice::Cpu;
                    compress(&cpu, &mut bar)?
                }
                other => other?,
            };
            drop(bar);
            if let Some(dir) = report {
                write_report(&dir, &report_data)?;
            }
            if cli.json {
                println!("{}", report_data.to_json());
            } else if !cli.quiet {
                print_summary(&report_data);
            }
        }
        Command::Decompress { input, output } => {
            check_not_same_file(&input, &output)?;
            let bytes = open_input(&input)?;
            let name = display_name(&input);
            let mut bar = Bar::new(cli.quiet || cli.json);
            let summary = write_atomically(&output, |w| {
                Ok(lowbit::decompress(&bytes, &name, &mut bar, w)?)
            })?;
            drop(bar);
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else if !cli.quiet {
                println!(
                    "{}: {} tensors, {} parameters -> {} ({} bytes)",
                    name,
                    summary.tensors,
                    summary.parameters,
                    output.display(),
                    summary.bytes_written
                );
            }
        }
        Command::Inspect { file } => {
            let bytes = open_input(&file)?;
            let inspection = lowbit::inspect(&bytes[..], &display_name(&file))?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&inspection)?);
            } else {
                print_inspection(&display_name(&file), &inspection);
            }
        }
        Command::Plan { input, settings } => {
            let opts = settings.options()?;
            let bytes = open_input(&input)?;
            let name = display_name(&input);
            // `.csv` / `.fvecs` are vector datasets by name (a CSV is text too: the name decides).
            let vector_file = lowbit::checkpoint::vector_format_by_name(&name).is_some();
            if let Some(kind) = lowbit::dataset::sniff_input(&bytes).filter(|_| !vector_file) {
                bail!("{name}: a {kind:?} file has no size/error trade-off to plan: `lowbit compress` codes it losslessly");
            }
            let mut bar = Bar::new(cli.quiet || cli.json);
            let plan =
                lowbit::plan(&bytes[..], &name, &opts, &mut bar).map_err(|e| e.in_file(&name))?;
            drop(bar);
            let report =
                lowbit::compress::build_report(&plan, &name, bytes.len() as u64, &opts, false);
            if cli.json {
                println!("{}", report.to_json());
            } else if !cli.quiet {
                print_summary(&report);
            }
        }
        Command::Demo { out, bpw } => {
            let input = lowbit::demo::demo_checkpoint();
            let opts = CompressOptions::new(Target::BitsPerWeight(bpw));
            let mut bar = Bar::new(cli.quiet || cli.json);
            let mut compressed = Vec::new();
            let report =
                lowbit::compress(&input, "demo.safetensors", &opts, &mut bar, &mut compressed)?;
            let mut restored = Vec::new();
            lowbit::decompress(
                &compressed,
                "demo.lowbit",
                &mut lowbit::NoProgress,
                &mut restored,
            )?;
            drop(bar);
            if let Some(dir) = out {
                fs::create_dir_all(&dir)
                    .with_context(|| format!("{}: cannot create", dir.display()))?;
                write_atomically(&dir.join("demo.safetensors"), |w| Ok(w.write_all(&input)?))?;
                write_atomically(&dir.join("demo.lowbit"), |w| Ok(w.write_all(&compressed)?))?;
                write_atomically(&dir.join("demo.restored.safetensors"), |w| {
                    Ok(w.write_all(&restored)?)
                })?;
                write_report(&dir, &report)?;
            }
            if cli.json {
                println!("{}", report.to_json());
            } else if !cli.quiet {
                print_summary(&report);
            }
        }
    }
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
        Inspection::Lowbit { bytes, parameters, bits_per_weight, header_bytes, tensors, .. } => (
            tensors,
            format!(
                "{name}: .lowbit, {bytes} bytes ({header_bytes} header), {parameters} parameters, {bits_per_weight:.4} bits per weight"
            ),
        ),
        Inspection::Sequence(_) => unreachable!("printed above"),
    };
    println!("{header}");
    for t in tensors {
        let shape = shape_text(&t.shape);
        println!(
            "  {:<56} {:>5} {:>16} {:>12} B {:>7.3} bpw  {}",
            t.name,
            t.dtype.name(),
            shape,
            t.bytes,
            t.bits_per_weight,
            t.codec.as_deref().unwrap_or("")
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
