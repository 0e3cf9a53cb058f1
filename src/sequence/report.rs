//! The report of a sequence compression: JSON (serde) and a self-contained HTML page with SVG
//! plots. Sizes are coded sizes (sections as stored, header included in the totals); entropy
//! figures of the selection study are exact code lengths of a single adaptive FCM and labelled so.

use serde::Serialize;

use super::fasta::SequenceStreams;
use super::selection::{self, Choice, LagMeasures};
use super::{CodedStream, SequenceKind, SequenceOptions};
use crate::codec::fcm::NucleotideTrace;
use crate::container;
use crate::svg;

/// Version of this report's JSON layout (docs/SEQUENCES.md).
pub const SEQUENCE_REPORT_SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize)]
pub struct SequenceReport {
    pub schema_version: u32,
    pub lowbit_version: String,
    pub input: SequenceInput,
    pub output: SequenceOutput,
    pub streams: Vec<StreamReport>,
    pub records: Vec<RecordReport>,
    /// Mixer weights along the base stream (first decision, normalised by the sum of |w|).
    pub weights: WeightTrace,
    /// Serial-dependence measures of the base stream by lag (on `selection.symbols` bases).
    pub dependence: Vec<LagMeasures>,
    pub selection: Option<SelectionReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SequenceInput {
    pub file: String,
    pub kind: SequenceKind,
    pub bytes: u64,
    pub records: u64,
    /// Sequence letters, line ends excluded.
    pub residues: u64,
    /// Of the residues, A/C/G/T in either case (the "bases" of bits per base).
    pub bases: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SequenceOutput {
    pub bytes: u64,
    pub header_bytes: u64,
    /// 8 x whole .lowbit bytes / input bytes.
    pub bits_per_byte: f64,
    /// 8 x whole .lowbit bytes / residues (headers, layout, everything counted); 0 for text.
    pub bits_per_residue: f64,
    /// 8 x base-stream section bytes / ACGT bases.
    pub base_stream_bits_per_base: f64,
    pub ratio: f64,
    /// Whole compression time (split, model, container) natively; absent on wasm.
    pub seconds: Option<f64>,
    pub megabytes_per_second: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StreamReport {
    pub name: String,
    pub model: String,
    pub symbols: u64,
    pub coded_bytes: u64,
    pub bits_per_symbol: f64,
    pub seconds: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RecordReport {
    /// The header's first word.
    pub name: String,
    pub bases: u64,
    /// Coded bytes of this record's bases (from the coder's position at record boundaries).
    pub coded_bytes: u64,
    pub bits_per_base: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct WeightTrace {
    pub inputs: Vec<String>,
    /// (base index, one weight per input).
    pub points: Vec<(u64, Vec<f32>)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SelectionReport {
    /// Bases analysed (a prefix of the base stream).
    pub symbols: u64,
    /// The order each measure alone would choose (largest significant lag).
    pub order_by_cramers_v: usize,
    pub order_by_cohens_kappa: usize,
    pub order_by_pami: usize,
    /// Two-step: k by pami, alpha by maximum likelihood. Seconds include the measures.
    pub two_step: Choice,
    /// Exhaustive grid over k = 1..=max_lag and `selection::GRID_ALPHAS`.
    pub grid: Choice,
}

pub(crate) struct Inputs<'a> {
    pub file: &'a [u8],
    pub file_name: &'a str,
    pub kind: SequenceKind,
    pub streams: &'a SequenceStreams,
    pub coded: &'a [CodedStream],
    pub header_bytes: u64,
    pub output_bytes: u64,
    pub trace: NucleotideTrace,
    pub record_bits: Vec<u64>,
    pub coding_seconds: Option<f64>,
    pub opts: &'a SequenceOptions,
}

fn largest_significant(m: &[LagMeasures], f: impl Fn(&LagMeasures) -> bool) -> usize {
    m.iter().filter(|x| f(x)).map(|x| x.lag).max().unwrap_or(1)
}

fn selection_study(
    bases: &[u8],
    opts: &SequenceOptions,
) -> (Vec<LagMeasures>, Option<SelectionReport>) {
    let n = bases.len().min(opts.selection_symbols);
    if n < 2 || opts.max_lag == 0 {
        return (Vec::new(), None);
    }
    let seq = &bases[..n];
    let t0 = super::clock();
    let measures = selection::dependence_by_lag(seq, 4, opts.max_lag);
    let k = selection::order_from_measures(&measures);
    let (alpha, bps) = selection::ml_alpha(seq, 4, k);
    let t1 = super::clock();
    let (gk, galpha, gbps) = selection::grid_search(seq, 4, opts.max_lag);
    let t2 = super::clock();
    let secs = |a: Option<std::time::Duration>, b: Option<std::time::Duration>| match (a, b) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    let report = SelectionReport {
        symbols: n as u64,
        order_by_cramers_v: largest_significant(&measures, |m| m.cramers_v_significant),
        order_by_cohens_kappa: largest_significant(&measures, |m| m.cohens_kappa_significant),
        order_by_pami: k,
        two_step: Choice {
            order: k,
            alpha,
            bits_per_symbol: bps,
            seconds: secs(t0, t1),
        },
        grid: Choice {
            order: gk,
            alpha: galpha,
            bits_per_symbol: gbps,
            seconds: secs(t1, t2),
        },
    };
    (measures, Some(report))
}

pub(crate) fn build(i: Inputs) -> SequenceReport {
    let s = i.streams;
    let bases = s.residues.bases.len() as u64;
    let headers: Vec<&[u8]> = s.headers.split(|&b| b == b'\n').collect();
    let mut records = Vec::new();
    let starts = &s.record_starts;
    let base_stream_bytes = i
        .coded
        .iter()
        .find(|c| c.name == super::BASES)
        .map(|c| c.bytes.len() as u64)
        .unwrap_or(0);
    for (r, &start) in starts.iter().enumerate() {
        let end = starts.get(r + 1).copied().unwrap_or(bases);
        let from = i.record_bits.get(r).copied().unwrap_or(0);
        let to = i
            .record_bits
            .get(r + 1)
            .copied()
            .unwrap_or(base_stream_bytes);
        let n = end - start;
        // FASTQ headers may be followed by a '+' line; FASTA names are line r.
        let name = headers
            .get(if i.kind == SequenceKind::Fasta {
                r
            } else {
                usize::MAX
            })
            .map(|h| {
                String::from_utf8_lossy(h.split(|&b| b == b' ').next().unwrap_or(h)).into_owned()
            })
            .unwrap_or_else(|| format!("record {}", r + 1));
        records.push(RecordReport {
            name,
            bases: n,
            coded_bytes: to.saturating_sub(from),
            bits_per_base: 8.0 * to.saturating_sub(from) as f64 / n.max(1) as f64,
        });
    }
    let (dependence, selection) = selection_study(&s.residues.bases, i.opts);
    let input_bytes = i.file.len() as u64;
    let seconds = i.coding_seconds;
    SequenceReport {
        schema_version: SEQUENCE_REPORT_SCHEMA_VERSION,
        lowbit_version: env!("CARGO_PKG_VERSION").to_string(),
        input: SequenceInput {
            file: i.file_name.to_string(),
            kind: i.kind,
            bytes: input_bytes,
            records: starts.len() as u64,
            residues: s.residue_count,
            bases,
        },
        output: SequenceOutput {
            bytes: i.output_bytes,
            header_bytes: i.header_bytes,
            bits_per_byte: 8.0 * i.output_bytes as f64 / input_bytes.max(1) as f64,
            bits_per_residue: if s.residue_count > 0 {
                8.0 * i.output_bytes as f64 / s.residue_count as f64
            } else {
                0.0
            },
            base_stream_bits_per_base: 8.0 * base_stream_bytes as f64 / bases.max(1) as f64,
            ratio: input_bytes as f64 / i.output_bytes.max(1) as f64,
            seconds,
            megabytes_per_second: seconds.map(|t| input_bytes as f64 / 1e6 / t.max(1e-9)),
        },
        streams: i
            .coded
            .iter()
            .map(|c| StreamReport {
                name: c.name.to_string(),
                model: c.codec.label(),
                symbols: c.symbols,
                coded_bytes: container::section_len(c.symbols, c.bytes.len() as u64),
                bits_per_symbol: 8.0 * c.bytes.len() as f64 / c.symbols.max(1) as f64,
                seconds: c.seconds,
            })
            .collect(),
        records,
        weights: WeightTrace {
            inputs: i.trace.inputs,
            points: i.trace.weights,
        },
        dependence,
        selection,
    }
}

fn esc(s: &str) -> String {
    svg::escape_xml(s)
}

impl SequenceReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }

    /// A self-contained HTML page: summary, streams, records, selection, and two plots.
    pub fn to_html(&self) -> String {
        let mut h = String::new();
        h.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
        h.push_str(&format!(
            "<title>lowbit report: {}</title>\n<style>body{{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:1000px;padding:0 1rem}}table{{border-collapse:collapse;margin:1rem 0}}th,td{{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:left;font-size:.9rem}}svg{{max-width:100%;height:auto}}</style></head><body>\n",
            esc(&self.input.file)
        ));
        h.push_str(&format!(
            "<h1>lowbit report: {} ({:?})</h1>\n",
            esc(&self.input.file),
            self.input.kind
        ));
        self.summary_table(&mut h);
        self.stream_and_record_tables(&mut h);
        if let Some(s) = &self.selection {
            selection_table(&mut h, s);
        }
        if !self.weights.points.is_empty() {
            h.push_str(&self.weights_chart());
        }
        if !self.dependence.is_empty() {
            h.push_str(&self.dependence_chart());
        }
        h.push_str("</body></html>\n");
        h
    }

    /// The summary table: input, output, rates and time.
    fn summary_table(&self, h: &mut String) {
        let o = &self.output;
        h.push_str("<table>\n");
        let row = |h: &mut String, k: &str, v: String| {
            h.push_str(&format!("<tr><th>{k}</th><td>{}</td></tr>\n", esc(&v)))
        };
        row(
            h,
            "input",
            format!(
                "{} bytes, {} records, {} residues ({} ACGT)",
                self.input.bytes, self.input.records, self.input.residues, self.input.bases
            ),
        );
        row(
            h,
            "output",
            format!(
                "{} bytes ({} header), ratio {:.3}",
                o.bytes, o.header_bytes, o.ratio
            ),
        );
        row(h, "bits per input byte", format!("{:.4}", o.bits_per_byte));
        if self.input.residues > 0 {
            row(
                h,
                "bits per residue (whole file)",
                format!("{:.4}", o.bits_per_residue),
            );
            row(
                h,
                "bits per base (base stream)",
                format!("{:.4}", o.base_stream_bits_per_base),
            );
        }
        if let (Some(t), Some(s)) = (o.seconds, o.megabytes_per_second) {
            row(h, "time", format!("{t:.2} s ({s:.2} MB/s)"));
        }
        h.push_str("</table>\n");
    }

    /// The streams table, then the first 1000 records' table when there are records.
    fn stream_and_record_tables(&self, h: &mut String) {
        h.push_str("<h2>Streams</h2>\n<table><tr><th>stream</th><th>model</th><th>symbols</th><th>bytes</th><th>bits/symbol</th></tr>\n");
        for s in &self.streams {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td></tr>\n",
                esc(&s.name),
                esc(&s.model),
                s.symbols,
                s.coded_bytes,
                s.bits_per_symbol
            ));
        }
        h.push_str("</table>\n");
        if !self.records.is_empty() {
            h.push_str("<h2>Records</h2>\n<table><tr><th>record</th><th>bases</th><th>bytes</th><th>bits/base</th></tr>\n");
            for r in self.records.iter().take(1000) {
                h.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td></tr>\n",
                    esc(&r.name),
                    r.bases,
                    r.coded_bytes,
                    r.bits_per_base
                ));
            }
            h.push_str("</table>\n");
        }
    }

    /// The mixer weights along the sequence, one line per model input.
    fn weights_chart(&self) -> String {
        let series = (0..self.weights.inputs.len())
            .map(|k| svg::Series {
                name: self.weights.inputs[k].clone(),
                points: self
                    .weights
                    .points
                    .iter()
                    .map(|(x, w)| (*x as f64, w.get(k).copied().unwrap_or(0.0) as f64))
                    .collect(),
                mark: svg::Mark::Line,
            })
            .collect();
        svg::line_chart(&svg::Chart {
            title: "Mixer weights along the sequence (first decision)".into(),
            x: svg::Axis::linear("base index"),
            y: svg::Axis::linear("weight (share of sum |w|)"),
            series,
            width: 900,
            height: 420,
        })
    }

    /// The three serial-dependence measures by lag.
    fn dependence_chart(&self) -> String {
        let pts = |f: &dyn Fn(&LagMeasures) -> f64| -> Vec<(f64, f64)> {
            self.dependence
                .iter()
                .map(|m| (m.lag as f64, f(m)))
                .collect()
        };
        svg::line_chart(&svg::Chart {
            title: "Serial dependence by lag".into(),
            x: svg::Axis::linear("lag h"),
            y: svg::Axis::log10("measure"),
            series: vec![
                svg::Series {
                    name: "Cramer's V".into(),
                    points: pts(&|m| m.cramers_v),
                    mark: svg::Mark::LineAndPoints,
                },
                svg::Series {
                    name: "Cohen's kappa".into(),
                    points: pts(&|m| m.cohens_kappa),
                    mark: svg::Mark::LineAndPoints,
                },
                svg::Series {
                    name: "pami (bits)".into(),
                    points: pts(&|m| m.pami_bits),
                    mark: svg::Mark::LineAndPoints,
                },
            ],
            width: 900,
            height: 380,
        })
    }
}

/// The selection study: the two-step choice of (k, alpha) against the grid's.
fn selection_table(h: &mut String, s: &SelectionReport) {
    h.push_str(&format!("<h2>Choosing one FCM's (k, alpha) on {} bases</h2>\n<p>Exact code length of a single adaptive order-k model (not the mixture the coder uses).</p>\n<table><tr><th>method</th><th>k</th><th>alpha</th><th>bits/base</th><th>seconds</th></tr>\n", s.symbols));
    for (name, c) in [
        ("two-step (pami, ML alpha)", &s.two_step),
        ("grid", &s.grid),
    ] {
        h.push_str(&format!(
            "<tr><td>{name}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.3}</td></tr>\n",
            c.order, c.alpha, c.bits_per_symbol, c.seconds
        ));
    }
    h.push_str(&format!(
        "</table><p>Largest significant lag: Cramer's V {}, Cohen's kappa {}, pami {}.</p>\n",
        s.order_by_cramers_v, s.order_by_cohens_kappa, s.order_by_pami
    ));
}
