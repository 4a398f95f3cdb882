//! The number Genesys calls back: an E.164 number, normalised once when the request arrives.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An E.164 phone number, `+` then 7 to 15 digits, the first not `0` (`+14155550199`).
///
/// Made by [`CallbackNumber::parse`], which first strips the separators people write (spaces,
/// dashes, dots, parentheses), so `+1 (415) 555-0199` becomes `+14155550199`; only the
/// normalised form is kept. It is customer data: `Debug` masks the middle digits
/// (`CallbackNumber(+14…99)`) so a logged value does not carry it; `Display` shows it whole.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CallbackNumber(Box<str>);

/// Why a text is not an E.164 number. The message never repeats the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "must be an E.164 number: + then 7 to 15 digits, the first not 0, like +14155550199 \
     (spaces, dashes, dots and parentheses are ignored)"
)]
pub struct InvalidNumber;

impl CallbackNumber {
    /// Normalises and checks a number: spaces, `-`, `.`, `(` and `)` are removed, then the rest
    /// must match `^\+[1-9][0-9]{6,14}$` (ASCII digits only).
    ///
    /// # Errors
    /// [`InvalidNumber`] when the normalised text is not of that form.
    pub fn parse(text: &str) -> Result<Self, InvalidNumber> {
        let normalised: String = text
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect();
        let digits = normalised.strip_prefix('+').ok_or(InvalidNumber)?;
        let well_formed = (7..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if well_formed {
            Ok(Self(normalised.into()))
        } else {
            Err(InvalidNumber)
        }
    }

    /// The normalised number (`+14155550199`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallbackNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CallbackNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The text is ASCII (checked by `parse`), so byte slicing is on char boundaries.
        let head = self.0.get(..3).unwrap_or_default();
        let tail = self
            .0
            .get(self.0.len().saturating_sub(2)..)
            .unwrap_or_default();
        write!(f, "CallbackNumber({head}…{tail})")
    }
}

impl TryFrom<String> for CallbackNumber {
    type Error = InvalidNumber;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<CallbackNumber> for String {
    fn from(number: CallbackNumber) -> Self {
        number.0.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_are_stripped_and_the_normalised_form_is_kept() {
        for written in [
            "+1 (415) 555-0199",
            "+1.415.555.0199",
            "+14155550199",
            " +1 415 555 0199 ",
        ] {
            assert_eq!(
                CallbackNumber::parse(written).map(|n| n.to_string()),
                Ok("+14155550199".to_owned()),
                "{written:?}"
            );
        }
    }

    #[test]
    fn length_bounds() {
        assert!(CallbackNumber::parse("+1234567").is_ok(), "7 digits");
        assert!(CallbackNumber::parse("+123456").is_err(), "6 digits");
        assert!(
            CallbackNumber::parse("+123456789012345").is_ok(),
            "15 digits"
        );
        assert!(
            CallbackNumber::parse("+1234567890123456").is_err(),
            "16 digits"
        );
    }

    #[test]
    fn malformed_numbers() {
        for bad in [
            "+04155550199",
            "14155550199",
            "+1 415 CALL NOW",
            "+1415555019x",
            "+",
            "",
            "++14155550199",
            "+1\t4155550199",
            "+1/415/555/0199",
            "+١٤١٥٥٥٥٠١٩٩",
        ] {
            assert_eq!(CallbackNumber::parse(bad), Err(InvalidNumber), "{bad:?}");
        }
    }

    #[test]
    fn serde_goes_through_parse() {
        let n: CallbackNumber = serde_json::from_str(r#""+1 (415) 555-0199""#).unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), r#""+14155550199""#);
        assert!(serde_json::from_str::<CallbackNumber>(r#""+0123""#).is_err());
    }

    #[test]
    fn debug_masks_the_number() {
        let n = CallbackNumber::parse("+14155550199").unwrap();
        assert_eq!(format!("{n:?}"), "CallbackNumber(+14…99)");
    }

    #[test]
    fn the_error_message_does_not_echo_the_number() {
        let message = CallbackNumber::parse("+0 999 12345")
            .unwrap_err()
            .to_string();
        assert!(!message.contains("999"));
    }
}
