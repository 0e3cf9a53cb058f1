//! Hand-built pickles and zips in the layout torch writes (checked against files written by
//! torch 2.x: see tests/fixtures/tiny.pth and tests/it/pytorch.rs for a real one).

use super::*;
use crate::io::zip::tests::write_zip;

/// A pickle writer for the opcodes torch uses (protocol 2), plus the ones tests need to attack.
#[derive(Default)]
struct P(Vec<u8>);

impl P {
    fn op(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn proto(&mut self, v: u8) -> &mut Self {
        self.op(&[0x80, v])
    }
    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.op(b"X")
            .op(&(s.len() as u32).to_le_bytes())
            .op(s.as_bytes())
    }
    fn int(&mut self, v: u32) -> &mut Self {
        self.op(b"J").op(&v.to_le_bytes())
    }
    fn ints(&mut self, v: &[u32]) -> &mut Self {
        self.op(b"(");
        for &i in v {
            self.int(i);
        }
        self.op(b"t")
    }
    fn stop(&mut self) -> Vec<u8> {
        self.op(b".");
        std::mem::take(&mut self.0)
    }
    /// `_rebuild_tensor_v2(storage(type, key, numel), offset, shape, stride, False, OrderedDict())`.
    #[allow(clippy::too_many_arguments)]
    fn tensor(
        &mut self,
        storage_type: &str,
        key: &str,
        numel: u32,
        offset: u32,
        shape: &[u32],
        stride: &[u32],
    ) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(b"((")
            .str("storage")
            .global("torch", storage_type)
            .str(key)
            .str("cpu")
            .int(numel)
            .op(b"tQ")
            .int(offset)
            .ints(shape)
            .ints(stride)
            .op(&[0x89])
            .global("collections", "OrderedDict")
            .op(b")R")
            .op(b"tR")
    }
}

/// A state dict pickle of `(name, storage type, key, numel, offset, shape, stride)`.
type Spec<'a> = (&'a str, &'a str, &'a str, u32, u32, &'a [u32], &'a [u32]);

fn state_dict(tensors: &[Spec]) -> Vec<u8> {
    let mut p = P::default();
    p.proto(2).global("collections", "OrderedDict").op(b")R(");
    for &(name, ty, key, numel, offset, shape, stride) in tensors {
        p.str(name).tensor(ty, key, numel, offset, shape, stride);
    }
    p.op(b"u").stop()
}

fn archive(pkl: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    let names: Vec<String> = storages
        .iter()
        .map(|(k, _)| format!("archive/data/{k}"))
        .collect();
    let mut entries: Vec<(&str, &[u8])> =
        vec![("archive/data.pkl", pkl), ("archive/byteorder", b"little")];
    for (name, (_, data)) in names.iter().zip(storages) {
        entries.push((name, data));
    }
    entries.push(("archive/version", b"3\n"));
    write_zip(&entries, 64, true)
}

fn floats(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A small valid checkpoint: an F32 matrix, an F16 vector, a view into the matrix's storage, a
/// scalar and an I64 buffer.
fn small() -> Vec<u8> {
    let pkl = state_dict(&[
        ("w", "FloatStorage", "0", 6, 0, &[2, 3], &[3, 1]),
        ("h", "HalfStorage", "1", 4, 0, &[4], &[1]),
        ("row", "FloatStorage", "0", 6, 3, &[3], &[1]),
        ("s", "FloatStorage", "2", 1, 0, &[], &[]),
        ("n", "LongStorage", "3", 2, 0, &[2], &[1]),
    ]);
    archive(
        &pkl,
        &[
            ("0", &floats(&[1., 2., 3., 4., 5., 6.])),
            ("1", &[0x00, 0x3c, 0x00, 0x40, 0x00, 0x42, 0x00, 0x44]),
            ("2", &floats(&[7.5])),
            ("3", &[1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]),
        ],
    )
}

fn bytes_of<'a>(file: &'a [u8], t: &TorchTensor) -> &'a [u8] {
    &file[t.range.start as usize..t.range.end as usize]
}

fn err_of(file: &[u8]) -> String {
    read(file).unwrap_err().to_string()
}

#[test]
fn a_state_dict_is_read_in_place() {
    let file = small();
    let c = read(file.as_slice()).unwrap();
    assert_eq!(c.archive, "archive");
    let got: Vec<(&str, DType, &[usize])> = c
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice()))
        .collect();
    assert_eq!(
        got,
        [
            ("w", DType::F32, &[2usize, 3][..]),
            ("h", DType::F16, &[4][..]),
            ("row", DType::F32, &[3][..]),
            ("s", DType::F32, &[][..]),
            ("n", DType::I64, &[2][..]),
        ]
    );
    assert_eq!(
        bytes_of(&file, &c.tensors[0]),
        floats(&[1., 2., 3., 4., 5., 6.])
    );
    assert_eq!(bytes_of(&file, &c.tensors[2]), floats(&[4., 5., 6.]));
    assert_eq!(bytes_of(&file, &c.tensors[3]), floats(&[7.5]));
    assert_eq!(c.tensors[0].range.start % 64, 0, "storages are aligned");
}

#[test]
fn nested_dicts_name_tensors_with_dots_and_plain_values_are_skipped() {
    let mut p = P::default();
    p.proto(2)
        .op(b"}(")
        .str("epoch")
        .int(3)
        .str("model")
        .op(b"}(");
    p.str("enc")
        .op(b"}")
        .str("w")
        .tensor("FloatStorage", "0", 2, 0, &[2], &[1])
        .op(b"s");
    p.op(b"u").str("opt").op(b"](").int(1);
    p.tensor("FloatStorage", "0", 2, 1, &[1], &[1]);
    p.op(b"e").str("lr").op(b"G").op(&0.1f64.to_be_bytes());
    p.op(b"u");
    let pkl = p.stop();
    let file = archive(&pkl, &[("0", &floats(&[1., 2.]))]);
    let c = read(file.as_slice()).unwrap();
    let names: Vec<&str> = c.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["model.enc.w", "opt.1"]);
    assert_eq!(bytes_of(&file, &c.tensors[1]), floats(&[2.]));
}

#[test]
fn one_saved_tensor_and_parameters_are_read() {
    let mut p = P::default();
    p.proto(2)
        .global("torch._utils", "_rebuild_parameter")
        .op(b"(");
    p.tensor("BFloat16Storage", "k", 3, 0, &[3], &[1]);
    p.op(&[0x88])
        .global("collections", "OrderedDict")
        .op(b")RtR");
    let file = archive(&p.stop(), &[("k", &[1, 2, 3, 4, 5, 6])]);
    let c = read(file.as_slice()).unwrap();
    assert_eq!(c.tensors.len(), 1);
    assert_eq!(c.tensors[0].name, ROOT_TENSOR_NAME);
    assert_eq!(c.tensors[0].dtype, DType::BF16);
}

#[test]
fn protocol_4_opcodes_are_read() {
    // SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL, FRAME, as pickle protocol 4 writes them.
    let mut p = P::default();
    p.proto(4)
        .op(&[0x95])
        .op(&100u64.to_le_bytes())
        .op(b"}\x94(");
    p.op(&[0x8c, 1]).op(b"a").op(&[0x94]);
    p.op(&[0x8c, 12])
        .op(b"torch._utils")
        .op(&[0x8c, 18])
        .op(b"_rebuild_tensor_v2")
        .op(&[0x93, 0x94]);
    p.op(b"((")
        .str("storage")
        .global("torch", "IntStorage")
        .str("0")
        .str("cpu")
        .int(1)
        .op(b"tQ");
    p.int(0)
        .op(b")")
        .op(b")")
        .op(&[0x89])
        .op(b"}")
        .op(b"tR")
        .op(b"u");
    let file = archive(&p.stop(), &[("0", &[9, 0, 0, 0])]);
    let c = read(file.as_slice()).unwrap();
    assert_eq!(c.tensors[0].name, "a");
    assert_eq!(c.tensors[0].dtype, DType::I32);
    assert_eq!(c.tensors[0].shape, Vec::<usize>::new());
}

#[test]
fn forbidden_globals_are_named_and_never_called() {
    for pkl in [
        P::default()
            .proto(2)
            .global("os", "system")
            .str("echo hi")
            .op(&[0x85])
            .op(b"R")
            .stop(),
        P::default()
            .proto(4)
            .op(&[0x8c, 2])
            .op(b"os")
            .op(&[0x8c, 6])
            .op(b"system")
            .op(&[0x93])
            .str("echo hi")
            .op(&[0x85, b'R'])
            .stop(),
        P::default().proto(2).global("builtins", "eval").stop(),
    ] {
        let e = read(archive(&pkl, &[]).as_slice()).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Unsupported { .. }), "{msg}");
        assert!(msg.contains("data.pkl: forbidden global '"), "{msg}");
        assert!(
            msg.contains("it never runs code from a checkpoint"),
            "{msg}"
        );
    }
    let e = err_of(&archive(
        &P::default().proto(2).global("os", "system").stop(),
        &[],
    ));
    assert!(e.contains("'os.system'"), "{e}");
    let e = err_of(&archive(
        &P::default()
            .proto(2)
            .global("torch.storage", "_load_from_bytes")
            .stop(),
        &[],
    ));
    assert!(
        e.contains("forbidden global 'torch.storage._load_from_bytes'"),
        "{e}"
    );
}

#[test]
fn object_building_opcodes_and_calls_of_plain_values_are_refused() {
    let cases: [(Vec<u8>, &str); 7] = [
        (
            P::default()
                .proto(2)
                .global("collections", "OrderedDict")
                .op(b")")
                .op(&[0x81])
                .stop(),
            "NEWOBJ",
        ),
        (
            P::default().proto(2).op(b"(").op(b"ios\nsystem\n").stop(),
            "INST",
        ),
        (P::default().proto(2).op(&[0x82, 1]).stop(), "EXT1"),
        (
            P::default().proto(2).str("f").op(b")R").stop(),
            "REDUCE (a call) of a string",
        ),
        (P::default().proto(2).op(b"]").op(b"}b").stop(), "BUILD"),
        (
            P::default()
                .proto(2)
                .global("torch", "FloatStorage")
                .op(b")R")
                .stop(),
            "a call of torch.FloatStorage",
        ),
        (P::default().proto(2).op(b"S'x'\n.").stop(), "STRING"),
    ];
    for (pkl, fragment) in cases {
        let e = err_of(&archive(&pkl, &[]));
        assert!(e.contains(fragment), "{fragment}: {e}");
    }
    let e = err_of(&archive(&P::default().proto(1).op(b"N").stop(), &[]));
    assert!(e.contains("pickle protocol 1"), "{e}");
}

#[test]
fn absurd_memo_indices_stack_and_marks_are_errors() {
    let e = err_of(&archive(
        &P::default().proto(2).op(b"j\xff\xff\xff\xff").stop(),
        &[],
    ));
    assert!(e.contains("memo index 4294967295 was never stored"), "{e}");
    // A stored index is found, however large.
    let pkl = P::default()
        .proto(2)
        .op(b"N")
        .op(b"r\xff\xff\xff\xff")
        .op(b"0j\xff\xff\xff\xff")
        .stop();
    assert!(read(archive(&pkl, &[]).as_slice())
        .unwrap()
        .tensors
        .is_empty());
    let e = err_of(&archive(&P::default().proto(2).op(b"s").stop(), &[]));
    assert!(e.contains("stack underflow"), "{e}");
    let e = err_of(&archive(
        &P::default().proto(2).op(&vec![b'('; MAX_MARKS + 1]).stop(),
        &[],
    ));
    assert!(e.contains("open MARKs"), "{e}");
    let e = err_of(&archive(
        &P::default().proto(2).op(&vec![b'N'; MAX_STACK + 1]).stop(),
        &[],
    ));
    assert!(e.contains("stack deeper"), "{e}");
    let e = err_of(&archive(&P::default().proto(2).op(b"N").0.clone(), &[]));
    assert!(e.contains("ends before its STOP"), "{e}");
    let e = err_of(&archive(
        &P::default().proto(2).op(b"X\xff\xff\xff\x7f").stop(),
        &[],
    ));
    assert!(e.contains("truncated or lies about a length"), "{e}");
}

#[test]
fn deep_nesting_and_shared_containers_are_bounded() {
    // 200 000 lists, each holding the previous one (built through the memo with a constant stack).
    let mut p = P::default();
    p.proto(2).op(b"]q\x00");
    for _ in 0..200_000 {
        p.op(b"]h\x00aq\x000");
        p.op(b"h\x00");
        p.op(b"0");
    }
    p.op(b"h\x00");
    let e = err_of(&archive(&p.stop(), &[]));
    assert!(e.contains("nested more than"), "{e}");
    // A list holding the previous one twice, 60 deep: 2^60 paths through 60 lists.
    let mut p = P::default();
    p.proto(2).op(b"]q\x00");
    for _ in 0..60 {
        p.op(b"](h\x00h\x00eq\x000");
    }
    p.op(b"h\x00");
    let e = err_of(&archive(&p.stop(), &[]));
    assert!(e.contains("items to visit"), "{e}");
    // A list holding itself.
    let e = err_of(&archive(
        &P::default().proto(2).op(b"]q\x00h\x00a").stop(),
        &[],
    ));
    assert!(e.contains("nested more than"), "{e}");
}

#[test]
fn tensor_errors_name_the_tensor() {
    let one =
        |spec: Spec, storages: &[(&str, &[u8])]| err_of(&archive(&state_dict(&[spec]), storages));
    let data = floats(&[1., 2., 3., 4., 5., 6.]);
    let e = one(
        ("t", "FloatStorage", "0", 6, 0, &[3, 2], &[1, 3]),
        &[("0", &data)],
    );
    assert!(e.contains("tensor 't': unsupported: not contiguous"), "{e}");
    let e = one(
        ("t", "ComplexFloatStorage", "0", 3, 0, &[3], &[1]),
        &[("0", &data)],
    );
    assert!(
        e.contains("tensor 't'") && e.contains("torch.ComplexFloatStorage"),
        "{e}"
    );
    let e = one(
        ("t", "FloatStorage", "9", 6, 0, &[6], &[1]),
        &[("0", &data)],
    );
    assert!(
        e.contains("tensor 't'") && e.contains("no entry 'archive/data/9'"),
        "{e}"
    );
    let e = one(
        ("t", "FloatStorage", "0", 7, 0, &[6], &[1]),
        &[("0", &data)],
    );
    assert!(
        e.contains("tensor 't'") && e.contains("its pickle says"),
        "{e}"
    );
    let e = one(
        ("t", "FloatStorage", "0", 6, 4, &[3], &[1]),
        &[("0", &data)],
    );
    assert!(
        e.contains("tensor 't'") && e.contains("run past storage"),
        "{e}"
    );
    let e = one(
        (
            "t",
            "FloatStorage",
            "0",
            6,
            0,
            &[0x7fff_ffff; 3],
            &[1, 1, 1],
        ),
        &[("0", &data)],
    );
    assert!(e.contains("tensor 't'"), "{e}");
    // A transposed matrix of one row or column is contiguous; an empty one too.
    let file = archive(
        &state_dict(&[("t", "FloatStorage", "0", 6, 0, &[1, 6], &[1, 1])]),
        &[("0", &data)],
    );
    assert!(read(file.as_slice()).is_ok());
    let file = archive(
        &state_dict(&[("t", "FloatStorage", "0", 6, 0, &[0, 6], &[1, 1])]),
        &[("0", &data)],
    );
    assert!(read(file.as_slice()).is_ok());
    // Two tensors of one name.
    let pkl = state_dict(&[
        ("t", "FloatStorage", "0", 6, 0, &[6], &[1]),
        ("t", "FloatStorage", "0", 6, 0, &[6], &[1]),
    ]);
    let e = err_of(&archive(&pkl, &[("0", &data)]));
    assert!(e.contains("tensor 't': two tensors"), "{e}");
}

#[test]
fn archive_level_refusals_say_what_was_found() {
    // Big-endian.
    let pkl = state_dict(&[]);
    let zip = write_zip(&[("a/data.pkl", &pkl), ("a/byteorder", b"big")], 64, false);
    let e = err_of(&zip);
    assert!(e.contains("big-endian"), "{e}");
    // A plain zip.
    let zip = write_zip(&[("readme.txt", b"hi")], 1, false);
    let e = err_of(&zip);
    assert!(
        e.contains("not a PyTorch checkpoint") && e.contains("readme.txt"),
        "{e}"
    );
    // A numpy .npz.
    let zip = write_zip(&[("a.npy", b"x"), ("b.npy", b"y")], 1, false);
    let e = err_of(&zip);
    assert!(e.contains("numpy .npz"), "{e}");
    // TorchScript.
    let zip = write_zip(
        &[("m/data.pkl", &pkl), ("m/code/m.py", b"def f(): pass")],
        64,
        false,
    );
    let e = err_of(&zip);
    assert!(e.contains("TorchScript"), "{e}");
    // A compressed storage: the central directory says method 8.
    let file = small();
    let mut deflated = file.clone();
    let dir = zip::read_directory(file.as_slice()).unwrap();
    let i = dir
        .entries
        .iter()
        .position(|e| e.name == "archive/data/1")
        .unwrap();
    let mut at = dir.directory_start as usize;
    for _ in 0..i {
        let n = u16::from_le_bytes([file[at + 28], file[at + 29]]) as usize;
        at += 46 + n;
    }
    deflated[at + 10] = 8;
    let e = err_of(&deflated);
    assert!(
        e.contains("tensor 'h'") && e.contains("compressed (method 8, deflate)"),
        "{e}"
    );
}

#[test]
fn every_truncation_is_an_error() {
    let file = small();
    for cut in 0..file.len() {
        assert!(read(&file[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn random_mutations_never_panic_and_ranges_stay_inside() {
    let file = small();
    let mut rng = crate::rng::Rng::new(7);
    let mut accepted = 0;
    for _ in 0..4000 {
        let mut m = file.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(m.len() as u64) as usize;
            match rng.below(4) {
                0 => m[at] = rng.next_u64() as u8,
                1 => m[at] ^= 1 << rng.below(8),
                2 => m[at] = [0, 0xFF, 0x7F, 0x80][rng.below(4) as usize],
                _ => {
                    let v = rng.next_u64() as u32;
                    let end = (at + 4).min(m.len());
                    m[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
                }
            }
        }
        if let Ok(c) = read(m.as_slice()) {
            accepted += 1;
            for t in &c.tensors {
                assert!(t.range.start <= t.range.end && t.range.end <= m.len() as u64);
                let numel: u64 = t.shape.iter().map(|&d| d as u64).product();
                assert_eq!(t.range.end - t.range.start, numel * t.dtype.size() as u64);
            }
        }
    }
    // Mutations of tensor bytes and padding leave the file valid.
    assert!(accepted > 100, "{accepted}");
}

#[test]
fn the_legacy_magic_is_what_old_torch_writes() {
    // The first bytes of a legacy file (EasyOCR's craft_mlt_25k.pth).
    let head = [
        0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e,
    ];
    assert!(head.starts_with(LEGACY_MAGIC));
}
