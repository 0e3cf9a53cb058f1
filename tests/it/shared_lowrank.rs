//! `--method shared-lowrank` end to end: sibling matrices that share an input-side subspace are
//! grouped and coded with one stored basis, the file round-trips (library and CLI), the sizes are
//! the file's, and damaged or inconsistent group records are rejected with typed errors.

use crate::common;

use lowbit::codec::{CodecParams, Method};
use lowbit::container::{self, Container, Manifest};
use lowbit::dtype;
use lowbit::rng::Rng;
use lowbit::{CompressOptions, NoProgress, Target};

use crate::common::{siblings, SIB_COLS as COLS, SIB_ROWS as ROWS};

fn compress(input: &[u8], target: Target) -> (Vec<u8>, lowbit::Report) {
    let mut opts = CompressOptions::new(target);
    opts.method = Some(Method::SharedLowrank);
    let mut out = Vec::new();
    let report = lowbit::compress(input, "in.safetensors", &opts, &mut NoProgress, &mut out)
        .expect("compresses");
    (out, report)
}

#[test]
fn siblings_share_one_stored_basis_and_round_trip() {
    let input = siblings();
    let (file, report) = compress(&input, Target::MaxError(0.1));
    assert_eq!(
        report.output.bytes,
        file.len() as u64,
        "the report's size is the file's"
    );
    let c = Container::read(&file).expect("valid");
    assert_eq!(c.manifest.groups.len(), 1, "{:#?}", c.manifest.groups);
    let g = &c.manifest.groups[0];
    assert_eq!(g.cols, COLS);
    let members: Vec<&str> = c
        .manifest
        .tensors
        .iter()
        .filter(|t| matches!(t.codec, CodecParams::SharedLowrank(_)))
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(
        members,
        [
            "enc.layer.0.attn.query.weight",
            "enc.layer.0.attn.key.weight",
            "enc.layer.0.attn.value.weight"
        ]
    );
    // The unrelated matrix has no sibling: plain low rank.
    let other = c
        .manifest
        .tensors
        .iter()
        .find(|t| t.name == "enc.layer.0.mlp.dense.weight")
        .unwrap();
    assert!(matches!(other.codec, CodecParams::Lowrank(_)));
    // Every byte is counted: sections + header = the file.
    let sections: u64 = c
        .manifest
        .tensors
        .iter()
        .map(|t| t.section_len())
        .sum::<u64>()
        + g.section_len();
    assert_eq!(c.header_bytes + sections, file.len() as u64);
    assert!(
        report.output.side_bytes + report.output.payload_bytes + report.output.padding_bytes
            == sections
    );

    let mut restored = Vec::new();
    lowbit::decompress(&file, "x.lowbit", &mut NoProgress, &mut restored).expect("decodes");
    let (a, b) = (common::tensors_of(&input), common::tensors_of(&restored));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for t in &report.tensors {
        let (dt, shape, orig) = &a[&t.name];
        let (dt2, shape2, back) = &b[&t.name];
        assert_eq!((dt, shape), (dt2, shape2));
        let err = common::rel_error(*dt, orig, back);
        // The decoded error is the one the plan measured, and --max-error holds.
        assert!(
            (err - t.rel_error).abs() <= 1e-6 * (1.0 + t.rel_error),
            "{}: decoded {err} vs measured {}",
            t.name,
            t.rel_error
        );
        assert!(err <= 0.1, "{}: {err}", t.name);
        if members.contains(&t.name.as_str()) {
            assert!(t.reason.contains("shares a rank-"), "{}", t.reason);
        }
    }
    // Same input, same bytes.
    assert_eq!(compress(&input, Target::MaxError(0.1)).0, file);
}

#[test]
fn shared_basis_beats_separate_bases_at_equal_rank_on_siblings() {
    // The allocator's view: the set's options at each rank, alone vs grouped.
    let input = siblings();
    let (ckpt, _) = lowbit::checkpoint::Checkpoint::load(&input, "in.safetensors").unwrap();
    let mut opts = CompressOptions::new(Target::BitsPerWeight(4.0));
    opts.method = Some(Method::SharedLowrank);
    let analyses: Vec<_> = ckpt
        .tensors
        .iter()
        .map(|t| lowbit::pipeline::analyse_tensor(&input, t, &opts, false).unwrap())
        .collect();
    let plan = lowbit::pipeline::shared::AllocatorItems::build(&ckpt, &analyses, &opts, &|t| {
        let t = &ckpt.tensors[t];
        Ok(dtype::to_f32(
            t.dtype,
            &input[lowbit::source::usize_range(&t.range).unwrap()],
        ))
    })
    .unwrap();
    assert_eq!(plan.sets.len(), 1);
    let set = &plan.sets[0];
    let mut compared = 0;
    for shared in set.options.iter().filter(|o| !o.groups.is_empty()) {
        for g in &shared.groups {
            assert!(g.exact_error <= g.threshold && g.estimate >= g.exact_error - 1e-9);
        }
        let alone = set
            .options
            .iter()
            .find(|o| o.groups.is_empty() && o.rank == shared.rank)
            .unwrap();
        // At rank >= 10 the shared subspace holds all three: one basis instead of three.
        if shared.rank >= 10 && shared.groups[0].members.len() == 3 {
            assert!(
                shared.bytes < alone.bytes,
                "{} vs {}",
                shared.bytes,
                alone.bytes
            );
            compared += 1;
        }
    }
    assert!(compared > 0, "no grouped option at rank >= 10");
}

#[test]
fn cli_round_trip() {
    let dir = std::env::temp_dir().join(format!("lowbit-shared-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("in.safetensors"), siblings()).unwrap();
    let o = common::lowbit(
        &[
            "compress",
            "in.safetensors",
            "-o",
            "out.lowbit",
            "--method",
            "shared-lowrank",
            "--bpw",
            "6",
        ],
        &dir,
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let o = common::lowbit(
        &["decompress", "out.lowbit", "-o", "back.safetensors"],
        &dir,
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let back = std::fs::read(dir.join("back.safetensors")).unwrap();
    let size = std::fs::metadata(dir.join("out.lowbit")).unwrap().len();
    assert!(8.0 * size as f64 / (4 * ROWS * COLS + COLS) as f64 <= 6.0);
    assert_eq!(common::tensors_of(&back).len(), 5);
    std::fs::remove_dir_all(&dir).ok();
}

/// The file with its manifest replaced (sections unchanged).
fn with_manifest(file: &[u8], edit: impl FnOnce(&mut Manifest)) -> Vec<u8> {
    let c = Container::read(file).unwrap();
    let mut m = c.manifest.clone();
    edit(&mut m);
    let mut out = container::encode_header(&m).unwrap();
    out.extend_from_slice(&file[c.header_bytes as usize..]);
    out
}

fn decode_err(file: &[u8]) -> lowbit::Error {
    let mut out = Vec::new();
    lowbit::decompress(file, "bad.lowbit", &mut NoProgress, &mut out)
        .expect_err("a damaged file must be rejected")
}

#[test]
fn inconsistent_groups_are_rejected() {
    let (good, _) = compress(&siblings(), Target::MaxError(0.1));
    let member = |m: &mut Manifest| -> usize {
        m.tensors
            .iter()
            .position(|t| matches!(t.codec, CodecParams::SharedLowrank(_)))
            .unwrap()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "group index out of range",
            with_manifest(&good, |m| {
                let i = member(m);
                if let CodecParams::SharedLowrank(p) = &mut m.tensors[i].codec {
                    p.group = 7;
                }
            }),
        ),
        (
            "member rank differs",
            with_manifest(&good, |m| {
                let i = member(m);
                if let CodecParams::SharedLowrank(p) = &mut m.tensors[i].codec {
                    p.rank += 1;
                }
            }),
        ),
        ("group removed", with_manifest(&good, |m| m.groups.clear())),
        (
            "group renamed",
            with_manifest(&good, |m| m.groups[0].name = "lowbit.group.9".into()),
        ),
        (
            "group crc",
            with_manifest(&good, |m| m.groups[0].crc32 ^= 1),
        ),
        (
            "group bits",
            with_manifest(&good, |m| m.groups[0].basis.factor_bits = 13),
        ),
        (
            "group coded bytes beyond its section",
            with_manifest(&good, |m| {
                let len = m.groups[0].section_len();
                m.groups[0].coded_bytes = len + 1;
            }),
        ),
        (
            "unused group",
            with_manifest(&good, |m| {
                let extra = container::GroupRecord {
                    name: format!("{}1", container::GROUP_SECTION_PREFIX),
                    ..m.groups[0].clone()
                };
                m.groups.push(extra);
            }),
        ),
    ];
    for (what, bad) in cases {
        let e = decode_err(&bad);
        assert!(
            matches!(
                e,
                lowbit::Error::Corrupt { .. } | lowbit::Error::InvalidInput { .. }
            ),
            "{what}: {e:?}"
        );
    }
    // A basis section damaged behind a recomputed checksum reaches the basis decoder.
    let c = Container::read(&good).unwrap();
    let range = c.group_sections[0].clone();
    let mut rng = Rng::new(3);
    for _ in 0..200 {
        let mut bad = good.clone();
        let at = range.start + rng.below(range.len() as u64) as usize;
        bad[at] ^= 1 << rng.below(8);
        let mut m = c.manifest.clone();
        m.groups[0].crc32 = container::crc32(&bad[range.clone()]);
        let mut file = container::encode_header(&m).unwrap();
        file.extend_from_slice(&bad[c.header_bytes as usize..]);
        let bad = file;
        let mut out = Vec::new();
        if lowbit::decompress(&bad, "bad.lowbit", &mut NoProgress, &mut out).is_ok() {
            lowbit::io::safetensors::read_header(&out).expect("well formed");
        }
    }
}

#[test]
fn mutated_shared_files_never_panic() {
    let (good, _) = compress(&siblings(), Target::MaxError(0.1));
    let mut rng = Rng::new(99);
    for case in 0..400 {
        let mut bad = good.clone();
        if case % 2 == 0 {
            let at = rng.below(bad.len() as u64) as usize;
            bad[at] ^= 1 << rng.below(8);
        } else {
            bad.truncate(rng.below(bad.len() as u64) as usize);
        }
        let mut out = Vec::new();
        if lowbit::decompress(&bad, "bad.lowbit", &mut NoProgress, &mut out).is_ok() {
            lowbit::io::safetensors::read_header(&out).expect("well formed");
        }
        let _ = lowbit::inspect(&bad, "bad.lowbit");
    }
}
