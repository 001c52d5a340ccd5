//! Any bytes a plugin could print: decoding its result gives outputs or a clear failure.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let stdout = String::from_utf8_lossy(&data[..split]);
    let stderr = String::from_utf8_lossy(data.get(split + 1..).unwrap_or_default());
    let code = data.first().copied().unwrap_or(0) as i32 % 3;
    let _ = ripcord::provider::plugin::decode("ripcord-plugin-fuzz", &stdout, &stderr, code);
});
