//! How a `mprelay report …` command prints: a table for a person (the default), JSON (the same
//! documents as the admin API where it has one) or CSV for other tools: a header row, then one
//! row per record, quoted as RFC 4180 says (fields with a comma, quote, CR or LF in double
//! quotes, quotes doubled, CRLF line ends). The JSON and CSV fields are listed in the README and
//! do not change meaning; new ones are only ever added.

use std::fmt::{Display, Write as _};

use clap::{Args, ValueEnum};
use serde::Serialize;

/// What a report prints as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned text for a person.
    #[default]
    Table,
    /// One JSON document.
    Json,
    /// A header row, then one row per record (RFC 4180).
    Csv,
}

/// The `--format` option every report takes.
#[derive(Debug, Clone, Copy, Args)]
pub struct FormatArg {
    /// table (for a person), json or csv (for other tools; fields in the README).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// What a report prints in `format`: only the one asked for is built.
pub fn render(
    format: Format,
    table: impl FnOnce() -> String,
    json_doc: impl FnOnce() -> serde_json::Value,
    csv: impl FnOnce() -> String,
) -> String {
    match format {
        Format::Table => table(),
        Format::Json => json(&json_doc()),
        Format::Csv => csv(),
    }
}

/// `value` as pretty JSON, ending with a newline.
pub fn json(value: &impl Serialize) -> String {
    // Serializing the store's plain records (strings, numbers, options, vectors) cannot fail.
    let mut out = serde_json::to_string_pretty(value).expect("report records serialize");
    out.push('\n');
    out
}

/// A CSV document being built: the header row first, then [`Csv::row`] per record.
pub struct Csv {
    out: String,
    columns: usize,
}

impl Csv {
    pub fn new(header: &[&str]) -> Self {
        let mut csv = Csv {
            out: String::new(),
            columns: header.len(),
        };
        csv.push(header.iter().map(|h| h as &dyn Display));
        csv
    }

    /// Adds a record; it has as many fields as the header.
    pub fn row(&mut self, fields: &[&dyn Display]) {
        debug_assert_eq!(
            fields.len(),
            self.columns,
            "a CSV row has the header's fields"
        );
        self.push(fields.iter().copied());
    }

    pub fn finish(self) -> String {
        self.out
    }

    fn push<'a>(&mut self, fields: impl Iterator<Item = &'a dyn Display>) {
        for (i, f) in fields.enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            let text = f.to_string();
            if text.contains([',', '"', '\r', '\n']) {
                let _ = write!(self.out, "\"{}\"", text.replace('"', "\"\""));
            } else {
                self.out.push_str(&text);
            }
        }
        self.out.push_str("\r\n");
    }
}

/// An optional text field as CSV shows it: empty when absent.
pub fn opt<T: Display>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_rfc_4180_says_and_nothing_else() {
        let mut csv = Csv::new(&["a", "b", "c"]);
        csv.row(&[&"plain", &"with, comma", &"say \"hi\"\nbye"]);
        csv.row(&[&1, &"", &opt::<String>(&None)]);
        assert_eq!(
            csv.finish(),
            "a,b,c\r\nplain,\"with, comma\",\"say \"\"hi\"\"\nbye\"\r\n1,,\r\n"
        );
    }
}
