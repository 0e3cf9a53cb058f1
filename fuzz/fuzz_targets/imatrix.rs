//! Any bytes as a llama.cpp importance matrix (GGUF or legacy .dat): the reader must not panic,
//! every accepted entry must hold finite, non-negative values, and folding an entry onto any
//! column count must give that many values or a named error. Seed with tests/fixtures/imatrix/.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowbit::io::imatrix;

fuzz_target!(|file: &[u8]| {
    let Ok(m) = imatrix::read(file) else {
        return;
    };
    for (name, values) in &m.entries {
        assert!(!values.is_empty());
        assert!(values.iter().all(|v| v.is_finite() && *v >= 0.0));
        for cols in [1, 7, values.len()] {
            if let Ok(Some(d)) = m.columns(name, cols) {
                assert_eq!(d.len(), cols);
            }
        }
    }
});
