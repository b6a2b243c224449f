//! The value index's normalization of field values (the same function as Postgres's `arbor_normalize`).
//!
//! A value is normalized in three steps, in this order:
//!
//! 1. full Unicode lowercase (`str::to_lowercase`: SpecialCasing's
//!    unconditional mappings and the final-sigma rule; ICU's root-locale
//!    `u_strToLower` on the server);
//! 2. Unicode NFC;
//! 3. every run of White_Space characters (U+0009–U+000D, U+0020, U+0085,
//!    U+00A0, U+1680, U+2000–U+200A, U+2028, U+2029, U+202F, U+205F,
//!    U+3000) becomes one U+0020, and the result is trimmed of it.
//!
//! The server evaluates the same function in SQL (`migrations/0018`), and
//! both are tested against each other on random strings: a replica's
//! local answer and the server's answer for a partial replica must agree.
//! That is why the normalization is not a callback: an application that
//! needs another one (stemming, stripping markup) writes its own key into
//! a field of its choosing and looks that field up; the default
//! normalization leaves such a key unchanged when it is already
//! lowercase, NFC and single-spaced.

use unicode_normalization::UnicodeNormalization as _;

/// `value` normalized for the value index (see the module header).
pub fn normalize(value: &str) -> String {
    let lower = value.to_lowercase();
    let mut out = String::with_capacity(lower.len());
    let mut space = false;
    for c in lower.nfc() {
        if c.is_whitespace() {
            space = !out.is_empty();
        } else {
            if space {
                out.push(' ');
                space = false;
            }
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn case_whitespace_and_composition_are_folded() {
        assert_eq!(normalize("  Hello\t\n  World  "), "hello world");
        assert_eq!(normalize("\u{3000}A\u{00a0}\u{2009}b\u{0085}"), "a b");
        // NFC: e + combining acute is é.
        assert_eq!(normalize("Cafe\u{0301}"), "caf\u{e9}");
        assert_eq!(normalize("CAF\u{c9}"), "caf\u{e9}");
        // Final sigma.
        assert_eq!(normalize("ΟΔΟΣ"), "οδος");
        assert_eq!(normalize(""), "");
        assert_eq!(normalize(" \t "), "");
        // Not whitespace: zero-width space, NUL-free punctuation.
        assert_eq!(normalize("a\u{200b}b"), "a\u{200b}b");
        assert_eq!(normalize("=Archive"), "=archive");
    }

    #[test]
    fn normalizing_twice_changes_nothing_on_common_text() {
        for s in [
            "Ünïcödé  Text",
            "İstanbul",
            "ǅemal",
            "ΣΑΣ σας",
            "straße",
            "ＡＢＣ",
        ] {
            let once = normalize(s);
            assert_eq!(normalize(&once), once, "{s:?}");
        }
    }
}
