//! Any bytes as a whole .npy file: the reader must not panic, and an accepted header must describe
//! data that fills the rest of the file exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowbit::io::npy;

fuzz_target!(|file: &[u8]| {
    let Ok(h) = npy::read_header(file) else {
        return;
    };
    assert!(h.data_start <= file.len());
    assert_eq!(file.len() - h.data_start, h.byte_len());
    // What was accepted can be written again and read back the same.
    let mut again = npy::encode_header(h.dtype, &h.shape).expect("accepted header re-encodes");
    again.extend_from_slice(&file[h.data_start..]);
    let back = npy::read_header(&again).expect("re-encoded file reads");
    assert_eq!((back.dtype, back.shape), (h.dtype, h.shape));
});
