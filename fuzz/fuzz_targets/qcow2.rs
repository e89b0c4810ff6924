#![no_main]
// Placeholder: the parser this target exercises has not landed yet.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = data;
});
