//! Sequence files (FASTA, FASTQ, text): byte-exact round trips on generated edge cases and on the
//! real lambda genome (when fetched), determinism, the CLI's detection and reports, and hostile
//! inputs that must fail cleanly.

use std::fs;

use crate::common::*;
use lowbit::rng::Rng;
use lowbit::sequence::{self, SequenceKind, SequenceOptions};

/// Options that keep the tests fast: the selection study on a small prefix.
fn test_options() -> SequenceOptions {
    SequenceOptions {
        selection_symbols: 4096,
        max_lag: 4,
        ..SequenceOptions::default()
    }
}

fn compress(file: &[u8], kind: SequenceKind) -> (Vec<u8>, sequence::SequenceReport) {
    let mut out = Vec::new();
    let report = sequence::compress(
        file,
        "input",
        kind,
        &test_options(),
        &mut lowbit::NoProgress,
        &mut out,
    )
    .expect("compress");
    (out, report)
}

fn round_trip(file: &[u8]) -> Vec<u8> {
    let kind = match lowbit::pipeline::input_kind(file, "x") {
        Ok(lowbit::pipeline::InputKind::Sequence(kind)) => kind,
        other => panic!("not detected as a sequence file: {other:?}"),
    };
    let (packed, _) = compress(file, kind);
    let mut restored = Vec::new();
    lowbit::decompress(&packed, "x.lowbit", &mut lowbit::NoProgress, &mut restored)
        .expect("decompress");
    assert!(
        restored == file,
        "{kind:?} round trip differs for {:?}",
        String::from_utf8_lossy(&file[..file.len().min(80)])
    );
    packed
}

fn random_bases(seed: u64, n: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| b"ACGT"[rng.below(4) as usize]).collect()
}

/// A FASTA file with `records` records of random sequence in lines of `width`.
fn fasta(seed: u64, records: usize, len: usize, width: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for r in 0..records {
        out.extend_from_slice(format!(">seq{r} generated record {r}\n").as_bytes());
        for line in random_bases(seed + r as u64, len).chunks(width) {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    }
    out
}

#[test]
fn fasta_edge_cases_round_trip_byte_exact() {
    let base = fasta(1, 3, 500, 60);
    let crlf: Vec<u8> = String::from_utf8(base.clone())
        .unwrap()
        .replace('\n', "\r\n")
        .into_bytes();
    let mut lower = base.clone();
    lower[40..140].make_ascii_lowercase();
    let mut n_runs = base.clone();
    for b in &mut n_runs[200..260] {
        if *b != b'\n' {
            *b = b'N';
        }
    }
    n_runs[300] = b'R';
    n_runs[301] = b'y';
    let long_line: Vec<u8> = b">one long line\n"
        .iter()
        .copied()
        .chain(random_bases(3, 200_000))
        .collect();
    let cases: Vec<Vec<u8>> = vec![
        base.clone(),
        base[..base.len() - 1].to_vec(), // no trailing newline
        crlf.clone(),
        crlf[..crlf.len() - 2].to_vec(),
        lower,
        n_runs,
        long_line,
        b">empty\n>also empty\n>x\nACGT\n>last empty".to_vec(),
        b">a\n\nAC\n\n\nGT\n".to_vec(),
        b">".to_vec(),
        b">mixed\r\nACGT\nAC\r\n".to_vec(),
        b">iupac\nACGTRYKMSWBDHVN-acgtrykmswbdhvn*\n".to_vec(),
    ];
    for case in &cases {
        assert_eq!(sequence::sniff(case), Some(SequenceKind::Fasta));
        round_trip(case);
    }
}

#[test]
fn fastq_and_text_round_trip_byte_exact() {
    let mut fq = Vec::new();
    let mut rng = Rng::new(4);
    for r in 0..50 {
        let seq = random_bases(10 + r, 20 + r as usize);
        let qual: Vec<u8> = (0..seq.len()).map(|_| b'!' + rng.below(40) as u8).collect();
        let plus = if r % 2 == 0 {
            "+".to_string()
        } else {
            format!("+read{r}")
        };
        fq.extend_from_slice(format!("@read{r} lane=1\n").as_bytes());
        fq.extend_from_slice(&seq);
        fq.extend_from_slice(format!("\n{plus}\n").as_bytes());
        fq.extend_from_slice(&qual);
        fq.push(b'\n');
    }
    assert_eq!(sequence::sniff(&fq), Some(SequenceKind::Fastq));
    round_trip(&fq);
    round_trip(&fq[..fq.len() - 1]);
    for text in [
        &b"plain text, no newline at the end"[..],
        b"a\r\nwindows\r\ntext\r\n",
        b"\n",
        "unicode: \u{e9}t\u{e9}, \u{65e5}\u{672c}\n".as_bytes(),
        b"@not fastq\njust text\n",
    ] {
        assert_eq!(sequence::sniff(text), Some(SequenceKind::Text));
        round_trip(text);
    }
}

#[test]
fn compression_is_deterministic_and_beats_two_bits_on_repeats() {
    // A genome-like file: a random unit, then its repeat and its reverse complement.
    let unit = random_bases(7, 20_000);
    let rc: Vec<u8> = unit
        .iter()
        .rev()
        .map(|&b| match b {
            b'A' => b'T',
            b'C' => b'G',
            b'G' => b'C',
            _ => b'A',
        })
        .collect();
    let mut file = b">chr\n".to_vec();
    for part in [&unit, &unit, &rc] {
        for line in part.chunks(80) {
            file.extend_from_slice(line);
            file.push(b'\n');
        }
    }
    let a = round_trip(&file);
    let b = round_trip(&file);
    assert_eq!(a, b, "same input, same bytes");
    let (_, report) = compress(&file, SequenceKind::Fasta);
    // The unit costs ~2 bits a base; its two copies much less.
    let bpb = report.output.base_stream_bits_per_base;
    assert!(bpb < 0.8, "{bpb} bits per base");
    assert!(report.output.bits_per_residue < 1.0);
    assert_eq!(report.records.len(), 1);
    assert!(!report.weights.points.is_empty());
    assert_eq!(report.dependence.len(), 4);
}

#[test]
fn real_lambda_genome_round_trips() {
    let path = std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_default()
        .join(".cache/lowbit-data/dna/lambda.fa");
    let Ok(file) = fs::read(&path) else {
        eprintln!("skipped: {} not fetched", path.display());
        return;
    };
    round_trip(&file);
    let (_, report) = compress(&file, SequenceKind::Fasta);
    // Lambda is small (48 kbp) with few repeats: just below 2 bits per base in the base stream;
    // the whole file pays ~1.7 kB of container header on top (0.28 bits per base here).
    let bpb = report.output.base_stream_bits_per_base;
    assert!(bpb < 1.98, "{bpb}");
    assert!(report.output.bits_per_residue < 2.3);
}

#[test]
fn cli_detects_sequences_reports_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = fasta(9, 2, 3000, 70);
    fs::write(d.join("genome.fa"), &file).unwrap();
    let o = lowbit(
        &[
            "compress",
            "genome.fa",
            "-o",
            "g.lowbit",
            "--report",
            "rep",
            "--json",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["input"]["kind"], "fasta");
    assert_eq!(report["records"].as_array().unwrap().len(), 2);
    let html = fs::read_to_string(d.join("rep/report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Serial dependence"));
    let o = lowbit(&["decompress", "g.lowbit", "-o", "back.fa", "--quiet"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(d.join("back.fa")).unwrap(), file);
    let o = lowbit(&["inspect", "g.lowbit"], d);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("bases"));
    let o = lowbit(&["inspect", "genome.fa"], d);
    assert!(String::from_utf8_lossy(&o.stdout).contains("Fasta file"));
    // JSON with one "kind" (what the input is) and the sequence format apart.
    let o = lowbit(&["inspect", "genome.fa", "--json"], d);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.matches("\"kind\"").count(), 1, "{text}");
    let inspection: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(inspection["kind"], "sequence");
    assert_eq!(inspection["format"], "fasta");
}

fn assert_cli_fails(dir: &std::path::Path, args: &[&str], needles: &[&str]) {
    let before: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let o = lowbit(args, dir);
    let err = stderr(&o);
    assert!(!o.status.success(), "{args:?} should fail");
    assert!(
        err.starts_with("error: ") && !err.contains("panicked"),
        "{err}"
    );
    for n in needles {
        assert!(err.contains(n), "'{n}' not in: {err}");
    }
    let after: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(before.len(), after.len(), "{args:?} left files behind");
}

#[test]
fn hostile_sequence_inputs_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = Rng::new(5);
    let garbage: Vec<u8> = (0..4096).map(|_| rng.below(256) as u8).collect();
    fs::write(d.join("garbage.fa"), &garbage).unwrap();
    assert_cli_fails(
        d,
        &["compress", "garbage.fa", "-o", "x.lowbit"],
        &["garbage.fa"],
    );
    let mut fake = b">looks like FASTA\nACGT\n".to_vec();
    fake.extend_from_slice(&garbage);
    fs::write(d.join("fake.fa"), &fake).unwrap();
    assert_cli_fails(d, &["compress", "fake.fa", "-o", "x.lowbit"], &["fake.fa"]);
    fs::write(d.join("empty.fa"), b"").unwrap();
    assert_cli_fails(
        d,
        &["compress", "empty.fa", "-o", "x.lowbit"],
        &["empty.fa"],
    );
    fs::write(d.join("ok.fa"), b">a\nACGT\n").unwrap();
    assert_cli_fails(
        d,
        &["compress", "ok.fa", "-o", "x.lowbit", "--bpw", "2"],
        &["--bpw", "lossless"],
    );

    // Damaged and lying .lowbit files of a sequence.
    let file = fasta(2, 2, 2000, 60);
    let (packed, _) = compress(&file, SequenceKind::Fasta);
    let mut flipped = packed.clone();
    let last = flipped.len() - 10;
    flipped[last] ^= 0x40;
    let mut sink = Vec::new();
    let e = lowbit::decompress(&flipped, "f.lowbit", &mut lowbit::NoProgress, &mut sink)
        .unwrap_err()
        .to_string();
    assert!(e.contains("checksum"), "{e}");
    let header_len = u64::from_le_bytes(packed[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&packed[8..8 + header_len]).unwrap();
    for (from, to, needle) in [
        (
            format!("source_bytes\\\":{}", file.len()),
            "source_bytes\\\":999999999999".to_string(),
            "bomb",
        ),
        (
            format!("source_bytes\\\":{}", file.len()),
            format!("source_bytes\\\":{}", file.len() + 1),
            "restore",
        ),
        (
            "\\\"source_format\\\":\\\"fasta\\\"".to_string(),
            "\\\"source_format\\\":\\\"safetensors\\\"".to_string(),
            "sequence",
        ),
        (
            "\\\"source_format\\\":\\\"fasta\\\"".to_string(),
            "\\\"source_format\\\":\\\"text\\\"".to_string(),
            "streams",
        ),
        (
            "\\\"order\\\":2".to_string(),
            "\\\"order\\\":0".to_string(),
            "order",
        ),
    ] {
        assert!(header.contains(&from), "{from} not in {header}");
        let lying = header.replacen(&from, &to, 1);
        assert_ne!(lying, header);
        let mut h = lying.trim_end().to_string();
        while h.len() % 8 != 0 {
            h.push(' ');
        }
        let mut bad = (h.len() as u64).to_le_bytes().to_vec();
        bad.extend_from_slice(h.as_bytes());
        bad.extend_from_slice(&packed[8 + header_len..]);
        let mut sink = Vec::new();
        let e = lowbit::decompress(&bad, "lie.lowbit", &mut lowbit::NoProgress, &mut sink)
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle) && e.contains("lie.lowbit"), "{to}: {e}");
        assert!(sink.is_empty(), "no partial output");
    }
}
