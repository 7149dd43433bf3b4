//! Cells of the CSV files the product writes, made safe to open in a spreadsheet (CSV or
//! formula injection): a cell a spreadsheet would read as a formula or a command is written
//! as text, prefixed with `'`. Every CSV writer passes every cell through [`cell`] (see
//! [`record`]), so no column can forget it.

use std::borrow::Cow;

/// Characters that make a spreadsheet read a cell as a formula when they come first: `=`, `+`,
/// `-`, `@`, their full-width forms (which some spreadsheets fold to ASCII), and tab, carriage
/// return and line feed (which some spreadsheets drop before reading the rest).
const TRIGGERS: [char; 11] =
    ['=', '+', '-', '@', '\u{FF1D}', '\u{FF0B}', '\u{FF0D}', '\u{FF20}', '\t', '\r', '\n'];

/// `text` as a cell that no spreadsheet runs: prefixed with `'` when it starts with a
/// [`TRIGGERS`] character, also after leading spaces (which spreadsheets may trim). Other text
/// is returned as it is.
pub fn cell(text: &str) -> Cow<'_, str> {
    let first = text.trim_start_matches([' ', '\u{3000}', '\u{A0}']).chars().next();
    match first {
        Some(c) if TRIGGERS.contains(&c) => Cow::Owned(format!("'{text}")),
        _ => Cow::Borrowed(text),
    }
}

/// A whole record with every cell passed through [`cell`].
pub fn record<I, S>(cells: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    cells.into_iter().map(|c| cell(c.as_ref()).into_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_starts_are_defused() {
        for text in [
            "=cmd|' /C calc'!A0",
            "+1",
            "-2+3",
            "@SUM(A1)",
            "\u{FF1D}1+1",
            "\u{FF0B}1",
            "\u{FF0D}1",
            "\u{FF20}SUM(A1)",
            "\t=1",
            "\r=1",
            "\n=1",
            "  =1+1",
            "\u{3000}=1",
        ] {
            assert_eq!(cell(text), format!("'{text}"), "{text:?}");
        }
    }

    #[test]
    fn other_text_is_left_alone() {
        for text in
            ["Contoso", "", "  ", "ten_0190", "33.3", "2026-01-01T00:00:00.000Z", "a=b", "'x"]
        {
            assert!(matches!(cell(text), Cow::Borrowed(t) if t == text), "{text:?}");
        }
    }

    #[test]
    fn records_defuse_every_cell() {
        assert_eq!(record(["ok", "=1", "-"]), vec!["ok", "'=1", "'-"]);
    }
}
