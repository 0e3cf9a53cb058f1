//! Any bytes as a whole .safetensors file: the reader must not panic, and an accepted header must
//! describe only ranges inside the file, in file order, without overlaps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowbit::io::safetensors;

fuzz_target!(|file: &[u8]| {
    let Ok(h) = safetensors::read_header(file) else {
        return;
    };
    let len = file.len() as u64;
    assert!(h.data_start <= len);
    let mut previous_end = 0;
    for (i, t) in h.tensors.iter().enumerate() {
        assert!(t.start <= t.end && h.data_start + t.end <= len);
        assert_eq!(t.end - t.start, t.numel() * t.dtype.size() as u64);
        if t.start < t.end {
            assert!(t.start >= previous_end, "overlap");
            previous_end = t.end;
        }
        let _ = safetensors::tensor_bytes(file, &h, i);
    }
    // What was accepted can be written again and read back the same.
    let plan: Vec<_> = h
        .tensors
        .iter()
        .map(|t| safetensors::PlannedTensor {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
        })
        .collect();
    let mut again =
        safetensors::encode_header(&plan, &h.metadata).expect("accepted header re-encodes");
    for i in 0..h.tensors.len() {
        again.extend_from_slice(safetensors::tensor_bytes(file, &h, i));
    }
    let back = safetensors::read_header(&again).expect("re-encoded file reads");
    assert_eq!(back.metadata, h.metadata);
    assert_eq!(back.tensors.len(), h.tensors.len());
});
