//! Any bytes as a whole `.lowbit` file through `lowbit::decompress` (and `lowbit::inspect`): no
//! panic, an error that names the file, or a restored file exactly as long as the summary says.
//! Allocation beyond the format's limits shows up as libFuzzer's out-of-memory report; run with
//! `-malloc_limit_mb=64` to hold it to the bound of tests/mutations.rs. Seed corpus: the valid
//! containers of tests/mutations.rs, written by
//!   LOWBIT_FUZZ_CORPUS=fuzz/corpus/decompress cargo test --no-default-features --test mutations
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|file: &[u8]| {
    let mut out = Vec::new();
    match lowbit::decompress(file, "fuzz.lowbit", &mut lowbit::NoProgress, &mut out) {
        Ok(summary) => {
            assert_eq!(out.len() as u64, summary.bytes_written);
            // What decodes is a valid container: inspect reads it too.
            let inspection =
                lowbit::inspect(file, "fuzz.lowbit").expect("a decodable file inspects");
            assert!(matches!(inspection, lowbit::Inspection::Lowbit { .. }));
        }
        Err(e) => {
            assert!(e.to_string().contains("fuzz.lowbit"), "unnamed error: {e}");
            let _ = lowbit::inspect(file, "fuzz.lowbit");
        }
    }
});
