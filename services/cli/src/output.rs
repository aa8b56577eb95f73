//! What goes to stdout: tables with aligned columns, JSON, or JSON lines.
//! Logs and progress go to stderr ([`log`]).

use std::io::{IsTerminal as _, Write as _};

use serde_json::Value;

use crate::cli::Format;

/// A line for people on stderr.
pub fn log(line: impl std::fmt::Display) {
    eprintln!("landlord: {line}");
}

/// Whether stdout and stderr are both terminals: progress bars then, JSON
/// lines otherwise.
pub fn interactive() -> bool {
    std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

/// A column: its header and how to read it from an item.
pub type Column = (&'static str, fn(&Value) -> String);

/// A JSON value as a cell: strings bare, null empty.
pub fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn write_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a message.
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// One JSON value on a line of its own.
pub fn json_line(value: &Value) {
    write_stdout(&format!("{value}\n"));
}

/// Rows with aligned columns; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        text.trim_end().to_owned() + "\n"
    };
    let mut text = line(headers.to_vec());
    for row in rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

/// A list of items: a table of `columns`, a JSON array, or a line each.
pub fn items(format: Format, items: &[Value], columns: &[Column]) {
    match format {
        Format::Json => write_stdout(&format!("{}\n", pretty(&Value::Array(items.to_vec())))),
        Format::Jsonl => items.iter().for_each(json_line),
        Format::Table => {
            let headers: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
            let rows: Vec<Vec<String>> = items.iter().map(|i| columns.iter().map(|(_, f)| f(i)).collect()).collect();
            write_stdout(&table(&headers, &rows));
        }
    }
}

/// One item: `fields` as `name: value` lines, or the whole JSON.
pub fn item(format: Format, item: &Value, fields: &[Column]) {
    match format {
        Format::Json => write_stdout(&format!("{}\n", pretty(item))),
        Format::Jsonl => json_line(item),
        Format::Table => {
            let width = fields.iter().map(|(h, _)| h.len()).max().unwrap_or(0) + 1;
            let text: String = fields
                .iter()
                .map(|(name, f)| format!("{:<width$} {}\n", format!("{name}:"), f(item)).trim_end().to_owned() + "\n")
                .collect();
            write_stdout(&text);
        }
    }
}

/// Plain text for the table format (a heading, a blank line…).
pub fn text(format: Format, text: &str) {
    if format == Format::Table {
        write_stdout(text);
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_to_the_widest_cell() {
        let rows = vec![
            vec!["acme".to_owned(), "ACTIVE".to_owned(), "x".to_owned()],
            vec!["a".to_owned(), "FAILED".to_owned(), String::new()],
        ];
        assert_eq!(table(&["KEY", "STATUS", "NOTE"], &rows), "KEY   STATUS  NOTE\nacme  ACTIVE  x\na     FAILED\n");
    }

    #[test]
    fn cells_are_bare_strings() {
        assert_eq!(cell(Some(&Value::String("a".into()))), "a");
        assert_eq!(cell(Some(&Value::Null)), "");
        assert_eq!(cell(Some(&serde_json::json!(3))), "3");
    }
}
