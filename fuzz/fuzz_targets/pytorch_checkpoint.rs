//! Any bytes as a PyTorch checkpoint (a zip with data.pkl): the zip reader and the restricted
//! unpickler must not panic, and every tensor of an accepted file must be a byte range inside the
//! file of exactly its element count x dtype size. Seed with tests/fixtures/tiny.pth; most
//! interesting inputs keep its zip structure, so `-max_len` should exceed its 7.5 KB.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowbit::io::pytorch;

fuzz_target!(|file: &[u8]| {
    let Ok(c) = pytorch::read(file) else {
        return;
    };
    for t in &c.tensors {
        assert!(t.range.start <= t.range.end && t.range.end <= file.len() as u64);
        let numel: u64 = t.shape.iter().map(|&d| d as u64).product();
        assert_eq!(t.range.end - t.range.start, numel * t.dtype.size() as u64);
    }
});
