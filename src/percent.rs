//! One URL component percent-encoded: everything but RFC 3986's unreserved
//! characters (`A-Z a-z 0-9 - _ . ~`), so the result is safe in a path
//! segment, a query value or a form body, and as a credential in a URL.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// What is encoded: every byte but the unreserved ones.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// `text` as one URL component.
pub fn encode(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_unreserved_characters_stay() {
        assert_eq!(super::encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(super::encode("p@ss/w rd:é"), "p%40ss%2Fw%20rd%3A%C3%A9");
    }
}
