//! Output: aligned tables for people on a terminal, JSON lines for programs (`--json`, or
//! whenever stdout is not a terminal).

use std::io::{IsTerminal, Write};

use serde_json::Value;

/// How results are printed.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    /// JSON lines instead of tables and sentences.
    pub json: bool,
}

impl Output {
    /// JSON when asked for or when stdout is not a terminal.
    pub fn new(json: bool) -> Self {
        Output {
            json: json || !std::io::stdout().is_terminal(),
        }
    }

    /// Prints one JSON value on its own line (flushed, so a reader sees it at once).
    pub fn json_line(&self, value: &Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
        let _ = out.flush();
    }

    /// Prints `value` as a JSON line, or `text` for a terminal.
    pub fn line(&self, value: &Value, text: impl FnOnce() -> String) {
        if self.json {
            self.json_line(value);
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", text());
            let _ = out.flush();
        }
    }

    /// Prints rows: one JSON object per row, or an aligned table under `headers`.
    pub fn table(&self, headers: &[&str], rows: &[Vec<String>]) {
        if self.json {
            for row in rows {
                let object: serde_json::Map<String, Value> = headers
                    .iter()
                    .zip(row)
                    .map(|(h, v)| (h.to_string(), Value::String(v.clone())))
                    .collect();
                self.json_line(&Value::Object(object));
            }
            return;
        }
        print!("{}", render_table(headers, rows));
    }
}

/// An aligned text table; cells longer than 60 characters are cut with `…`.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    const MAX: usize = 60;
    let cut = |s: &str| -> String {
        let one_line = s.replace(['\n', '\r'], " ");
        if one_line.chars().count() > MAX {
            let mut c: String = one_line.chars().take(MAX - 1).collect();
            c.push('…');
            c
        } else {
            one_line
        }
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cut(c)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &cells {
        for (i, c) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut text = String::new();
    let mut push_row = |row: Vec<String>| {
        let last = row.len().saturating_sub(1);
        for (i, c) in row.iter().enumerate() {
            text.push_str(c);
            if i < last {
                let pad = widths[i].saturating_sub(c.chars().count()) + 2;
                text.push_str(&" ".repeat(pad));
            }
        }
        text.push('\n');
    };
    push_row(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in cells {
        push_row(row);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned() {
        let t = render_table(
            &["id", "reason"],
            &[
                vec!["a".into(), "timeout".into()],
                vec!["bbbb".into(), "x".into()],
            ],
        );
        assert_eq!(t, "ID    REASON\na     timeout\nbbbb  x\n");
    }
}
