//! Any bytes as a GGUF file: the reader must not panic, every tensor of an accepted file must be a
//! byte range inside the file of exactly its blocks' bytes, disjoint from the others, and every
//! type lowbit dequantizes must give one value per element. Seed with tests/fixtures/gguf/.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowbit::io::gguf;

fuzz_target!(|file: &[u8]| {
    let Ok(f) = gguf::read(file) else {
        return;
    };
    for t in &f.tensors {
        assert!(t.range.start <= t.range.end && t.range.end <= file.len() as u64);
        let blocks = t.numel() / t.ggml_type.block_len() as u64;
        assert_eq!(
            t.range.end - t.range.start,
            blocks * t.ggml_type.block_bytes() as u64
        );
        if gguf::supported(t.ggml_type) && t.range.end - t.range.start <= 1 << 20 {
            let raw = &file[t.range.start as usize..t.range.end as usize];
            let values = gguf::dequantize(t.ggml_type, raw).expect("whole blocks");
            assert_eq!(values.len() as u64, t.numel());
        }
    }
    // Checkpoint::parse on top: the type refusals and the F32 view.
    let _ = lowbit::checkpoint::Checkpoint::parse(file);
});
