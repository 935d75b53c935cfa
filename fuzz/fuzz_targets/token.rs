//! Token parsing must never panic on attacker input.
//! Run: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run token -- -max_total_time=60
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        stint::identity::fuzz_offline_checks(text);
    }
});
