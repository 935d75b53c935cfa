//! The App's RSA key, made once per test process (RSA generation is slow),
//! and the PEM shapes GitHub and OpenSSL write it in.

use std::sync::OnceLock;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The key every emulated App signs with (one per process, shared by all
/// emulators: the App id tells them apart).
pub(super) fn app_key() -> &'static KeyPair {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    KEY.get_or_init(|| KeyPair::generate(KeySize::Rsa2048).expect("rsa keygen"))
}

fn other_key() -> &'static KeyPair {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    KEY.get_or_init(|| KeyPair::generate(KeySize::Rsa2048).expect("rsa keygen"))
}

/// A valid RSA key (PKCS#1 PEM) that is no App's: GitHub cannot verify a
/// JWT it signs.
pub fn unrelated_key_pem() -> String {
    pkcs1_pem(other_key())
}

/// `BEGIN RSA PRIVATE KEY`, the form of the `.pem` file GitHub downloads.
pub(super) fn pkcs1_pem(key: &KeyPair) -> String {
    pem("RSA PRIVATE KEY", &rsa_private_key(&pkcs8_der(key)))
}

/// `BEGIN PRIVATE KEY` (PKCS#8).
pub(super) fn pkcs8_pem(key: &KeyPair) -> String {
    pem("PRIVATE KEY", &pkcs8_der(key))
}

fn pkcs8_der(key: &KeyPair) -> Vec<u8> {
    key.as_der().expect("pkcs8 der").as_ref().to_vec()
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ascii"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 v1 `PrivateKeyInfo`
/// (RFC 5208: SEQUENCE { version, algorithm, OCTET STRING privateKey }).
fn rsa_private_key(pkcs8: &[u8]) -> Vec<u8> {
    let (tag, info, _) = der_element(pkcs8);
    assert_eq!(tag, 0x30, "PrivateKeyInfo is a SEQUENCE");
    let (_, _version, rest) = der_element(info);
    let (_, _algorithm, rest) = der_element(rest);
    let (tag, private_key, _) = der_element(rest);
    assert_eq!(tag, 0x04, "privateKey is an OCTET STRING");
    private_key.to_vec()
}

/// One DER element: (tag, contents, what follows).
fn der_element(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let first = usize::from(input[1]);
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        let len = input[2..2 + n]
            .iter()
            .fold(0usize, |len, b| (len << 8) | usize::from(*b));
        (len, 2 + n)
    };
    (tag, &input[header..header + len], &input[header + len..])
}
