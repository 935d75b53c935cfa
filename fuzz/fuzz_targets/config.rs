//! Config parsing must never panic, whatever the YAML: every refusal is a
//! ConfigError naming the key.
//! Run: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run config -- -max_total_time=60
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = stint::config::Config::parse(text, "fuzz.yaml", std::path::Path::new("/tmp"), &|_| None);
    }
});
