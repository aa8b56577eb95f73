//! The rule for human-readable text: display names, admin names, label
//! values. Such text reaches realm names, mail subjects and bodies and
//! dashboards, so what renders differently from what it is has no place in
//! it: control characters, and Unicode *format* characters (general
//! category Cf), which include the bidirectional controls that reorder what
//! follows them (`"Acme \u{202E}gnp.exe"` shows as "Acme exe.png"), the
//! zero-width space, joiners and the byte-order mark. `char::is_control`
//! catches only the first kind.
//!
//! What is kept is normalised to NFC, so one name has one spelling
//! ("é" as one code point, not "e" and a combining accent), and trimmed.
//! The categories come from the `unicode-properties` crate (Unicode 18
//! tables), the normalisation from `unicode-normalization`; both are the
//! unicode-rs project's and already in the tree through `stringprep`.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Why a text was refused; [`TextError::problem`] is the last part of the
/// rule name (`display_name.bidi_control`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("is empty")]
    Empty,
    #[error("is {len} characters long, at most {max} are allowed")]
    TooLong { len: usize, max: usize },
    #[error("contains the control character {} at position {position}", describe(*found))]
    Control { found: char, position: usize },
    #[error("contains the bidirectional control {} at position {position}, which reorders how text shows", describe(*found))]
    Bidi { found: char, position: usize },
    #[error("contains the invisible format character {} at position {position}", describe(*found))]
    Format { found: char, position: usize },
    #[error("contains the blank letter {} at position {position}, which shows as nothing", describe(*found))]
    Invisible { found: char, position: usize },
    #[error("contains {} at position {position}, which is unassigned or for private use", describe(*found))]
    Unassigned { found: char, position: usize },
}

impl TextError {
    pub fn problem(&self) -> &'static str {
        match self {
            TextError::Empty => "empty",
            TextError::TooLong { .. } => "too_long",
            TextError::Control { .. } => "control_character",
            TextError::Bidi { .. } => "bidi_control",
            TextError::Format { .. } => "format_character",
            TextError::Invisible { .. } => "invisible_character",
            TextError::Unassigned { .. } => "unassigned_character",
        }
    }
}

/// `U+202E RIGHT-TO-LEFT OVERRIDE` for the characters people ask about,
/// `U+XXXX` for the rest.
fn describe(c: char) -> String {
    let name = match c {
        '\u{061C}' => " ARABIC LETTER MARK",
        '\u{200B}' => " ZERO WIDTH SPACE",
        '\u{200C}' => " ZERO WIDTH NON-JOINER",
        '\u{200D}' => " ZERO WIDTH JOINER",
        '\u{200E}' => " LEFT-TO-RIGHT MARK",
        '\u{200F}' => " RIGHT-TO-LEFT MARK",
        '\u{202A}' => " LEFT-TO-RIGHT EMBEDDING",
        '\u{202B}' => " RIGHT-TO-LEFT EMBEDDING",
        '\u{202C}' => " POP DIRECTIONAL FORMATTING",
        '\u{202D}' => " LEFT-TO-RIGHT OVERRIDE",
        '\u{202E}' => " RIGHT-TO-LEFT OVERRIDE",
        '\u{2060}' => " WORD JOINER",
        '\u{2066}' => " LEFT-TO-RIGHT ISOLATE",
        '\u{2067}' => " RIGHT-TO-LEFT ISOLATE",
        '\u{2068}' => " FIRST STRONG ISOLATE",
        '\u{2069}' => " POP DIRECTIONAL ISOLATE",
        '\u{FEFF}' => " BYTE ORDER MARK",
        '\u{00AD}' => " SOFT HYPHEN",
        _ => "",
    };
    format!("U+{:04X}{name}", u32::from(c))
}

/// The bidirectional controls (all of them Cf), named apart because they
/// are what spoofs a name.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Letters that are blank by design (Hangul fillers, category Lo): they
/// make a name that shows as nothing or as spaces.
fn is_blank_letter(c: char) -> bool {
    matches!(c, '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}')
}

/// The first character no human-readable text may hold, as an error.
fn refused(position: usize, c: char) -> Option<TextError> {
    if is_bidi_control(c) {
        return Some(TextError::Bidi { found: c, position });
    }
    if is_blank_letter(c) {
        return Some(TextError::Invisible { found: c, position });
    }
    match c.general_category() {
        GeneralCategory::Control | GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => {
            Some(TextError::Control { found: c, position })
        }
        GeneralCategory::Format => Some(TextError::Format { found: c, position }),
        GeneralCategory::Unassigned | GeneralCategory::PrivateUse | GeneralCategory::Surrogate => {
            Some(TextError::Unassigned { found: c, position })
        }
        _ => None,
    }
}

/// Checks `raw` against the rule and returns it normalised (NFC, trimmed):
/// at most `max_chars` characters after normalisation, empty only if
/// `allow_empty`. Positions in errors count characters of `raw`.
pub fn clean(raw: &str, max_chars: usize, allow_empty: bool) -> Result<String, TextError> {
    if let Some(error) = raw.chars().enumerate().find_map(|(position, c)| refused(position, c)) {
        return Err(error);
    }
    let kept: String = raw.nfc().collect::<String>().trim().to_owned();
    if kept.is_empty() && !allow_empty {
        return Err(TextError::Empty);
    }
    let len = kept.chars().count();
    if len > max_chars {
        return Err(TextError::TooLong { len, max: max_chars });
    }
    Ok(kept)
}

/// Whether `raw` holds no character [`clean`] refuses (for fields checked
/// by a syntax of their own, like e-mail addresses).
pub fn has_no_refused_character(raw: &str) -> bool {
    raw.chars().enumerate().all(|(position, c)| refused(position, c).is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(raw: &str) -> &'static str {
        clean(raw, 20, false).map(|_| "ok").unwrap_or_else(|e| e.problem())
    }

    #[test]
    fn the_characters_of_issue_23_are_refused_by_name() {
        assert_eq!(problem("Acme \u{202E}gnp.exe"), "bidi_control");
        for bidi in ['\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{2066}', '\u{2069}', '\u{200E}', '\u{061C}'] {
            assert_eq!(problem(&format!("Ac{bidi}me")), "bidi_control", "{bidi:?}");
        }
        assert_eq!(problem("Ac\u{200B}me"), "format_character");
        assert_eq!(problem("\u{FEFF}Acme"), "format_character");
        assert_eq!(problem("Ac\u{200D}me"), "format_character");
        assert_eq!(problem("Ac\u{00AD}me"), "format_character");
        assert_eq!(problem("Ac\u{E0041}me"), "format_character"); // tag character
        assert_eq!(problem("Acme\u{0007}"), "control_character");
        assert_eq!(problem("Ac\u{2028}me"), "control_character");
        assert_eq!(problem("Ac\u{0085}me"), "control_character");
        assert_eq!(problem("\u{3164}"), "invisible_character");
        assert_eq!(problem("Ac\u{E000}me"), "unassigned_character");
        assert_eq!(problem("Ac\u{FFFF}me"), "unassigned_character");
        assert_eq!(problem("   "), "empty");
        assert_eq!(problem(&"x".repeat(21)), "too_long");
        let err = clean("Acme \u{202E}gnp.exe", 20, false).unwrap_err().to_string();
        assert!(err.contains("U+202E RIGHT-TO-LEFT OVERRIDE") && err.contains("position 5"), "{err}");
    }

    #[test]
    fn what_is_kept_is_nfc_and_trimmed() {
        assert_eq!(clean("  Cafe\u{0301} Crème ", 20, false).unwrap(), "Café Crème");
        assert_eq!(clean("Ｆｏｏ", 20, false).unwrap(), "Ｆｏｏ", "NFC, not NFKC: width forms stay");
        assert_eq!(clean("Łódź 株式会社 🚀", 20, false).unwrap(), "Łódź 株式会社 🚀");
        assert_eq!(clean("", 20, true).unwrap(), "");
        assert_eq!(clean("O'Brien-Smith", 20, false).unwrap(), "O'Brien-Smith");
    }

    #[test]
    fn length_counts_the_normalised_text() {
        // Ten decomposed "é" are twenty code points but ten once composed.
        assert!(clean(&"e\u{0301}".repeat(10), 10, false).is_ok());
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any text is either refused with a problem, or kept in a form
            /// that holds no refused character, is NFC, trimmed and within
            /// its bound; cleaning what was kept changes nothing.
            #[test]
            fn prop_clean_refuses_or_keeps_safe_nfc_text(raw in prop_oneof![
                any::<String>(),
                "\\PC{0,40}",
                "[a-zA-Z \u{202A}-\u{202E}\u{2066}-\u{2069}\u{200B}-\u{200F}\u{FEFF}\u{0301}\u{00e9}]{0,30}",
            ], max in 0usize..50, allow_empty in any::<bool>()) {
                match clean(&raw, max, allow_empty) {
                    Ok(kept) => {
                        prop_assert!(has_no_refused_character(&kept));
                        prop_assert!(!kept.chars().any(|c| c.is_control() || is_bidi_control(c)));
                        prop_assert!(unicode_normalization::is_nfc(&kept));
                        prop_assert_eq!(kept.trim(), kept.as_str());
                        prop_assert!(kept.chars().count() <= max);
                        prop_assert!(allow_empty || !kept.is_empty());
                        prop_assert_eq!(clean(&kept, max, allow_empty), Ok(kept.clone()));
                    }
                    Err(error) => prop_assert!(!error.problem().is_empty() && !error.to_string().is_empty()),
                }
            }
        }
    }
}
