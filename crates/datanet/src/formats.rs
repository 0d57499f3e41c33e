//! Formats → rows. A contribution's bytes are parsed into rows, the unit of training and
//! attribution. Row `i` of contribution content `h` has the id `(h, i)`, written `h:i`.
//!
//! - `.txt` / `.md`: paragraphs separated by blank lines; a paragraph longer than
//!   `max_row_bytes` is cut at the last whitespace (or char boundary) before the bound.
//! - `.jsonl`: one JSON object per non-empty line, one of `{"text": s}`,
//!   `{"prompt": p, "completion": c}` or `{"messages": [{"role": r, "content": c}, ...]}`.
//! - `.csv`: RFC 4180 (quoted fields, `""` escapes), a header line, and the declared text
//!   columns joined by `"\n"` into one row per record.

use serde::{Deserialize, Serialize};

/// A parsed row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Row {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// A prompt/completion pair.
    Pair {
        /// Prompt.
        prompt: String,
        /// Completion.
        completion: String,
    },
    /// A chat transcript.
    Chat {
        /// `(role, content)` messages.
        messages: Vec<ChatMessage>,
    },
}

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// The message text.
    pub content: String,
}

impl Row {
    /// The row's text as training and attribution see it (fields joined by newlines).
    pub fn text(&self) -> String {
        match self {
            Row::Text { text } => text.clone(),
            Row::Pair { prompt, completion } => format!("{prompt}\n{completion}"),
            Row::Chat { messages } => messages
                .iter()
                .map(|m| format!("{}: {}", m.role, m.content))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// A contribution's format, from its file name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `.txt` or `.md`.
    Text,
    /// `.jsonl`.
    Jsonl,
    /// `.csv` with the named text columns (all columns when empty).
    Csv {
        /// Columns whose values make up the row.
        columns: Vec<String>,
    },
}

/// Why bytes could not be parsed into rows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The file name has no supported extension, or is unsafe (path separators, `..`).
    #[error(
        "unsupported or unsafe file name {0:?} (expected a plain name ending in .txt, .md, .jsonl or .csv)"
    )]
    BadName(String),
    /// Not UTF-8.
    #[error("content is not valid UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// A JSONL line is not one of the accepted shapes.
    #[error("line {line}: {reason}")]
    Jsonl {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A CSV problem.
    #[error("csv record {record}: {reason}")]
    Csv {
        /// 1-based record number (the header is record 1).
        record: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Checks a contribution's file name and returns its format. Only a plain name is accepted:
/// no `/`, `\`, `..`, control characters or leading dot, at most 200 bytes.
pub fn format_for(name: &str, csv_columns: &[String]) -> Result<Format, FormatError> {
    let bad = || FormatError::BadName(name.to_string());
    if name.is_empty()
        || name.len() > 200
        || name.starts_with('.')
        || name.contains(['/', '\\'])
        || name.contains("..")
        || name.chars().any(char::is_control)
    {
        return Err(bad());
    }
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("txt" | "md") => Ok(Format::Text),
        Some("jsonl") => Ok(Format::Jsonl),
        Some("csv") => Ok(Format::Csv {
            columns: csv_columns.to_vec(),
        }),
        _ => Err(bad()),
    }
}

/// Parses bytes into rows.
pub fn parse(bytes: &[u8], format: &Format, max_row_bytes: usize) -> Result<Vec<Row>, FormatError> {
    let text = std::str::from_utf8(bytes).map_err(|e| FormatError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    match format {
        Format::Text => Ok(split_paragraphs(text, max_row_bytes)
            .into_iter()
            .map(|t| Row::Text { text: t })
            .collect()),
        Format::Jsonl => parse_jsonl(text),
        Format::Csv { columns } => parse_csv(text, columns),
    }
}

fn split_paragraphs(text: &str, max: usize) -> Vec<String> {
    let max = max.max(16);
    let mut out = Vec::new();
    let normalized = text.replace("\r\n", "\n");
    for para in normalized.split("\n\n") {
        let mut rest = para.trim();
        while rest.len() > max {
            let mut cut = max;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            if let Some(ws) = rest[..cut].rfind(char::is_whitespace).filter(|&w| w > 0) {
                cut = ws;
            }
            out.push(rest[..cut].trim().to_string());
            rest = rest[cut..].trim_start();
        }
        if !rest.is_empty() {
            out.push(rest.to_string());
        }
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonMessage {
    role: String,
    content: String,
}

fn parse_jsonl(text: &str) -> Result<Vec<Row>, FormatError> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let err = |reason: String| FormatError::Jsonl {
            line: line_no,
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| err(format!("invalid JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| err("expected a JSON object".into()))?;
        let str_field = |k: &str| -> Result<String, FormatError> {
            obj.get(k)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| err(format!("field {k:?} must be a string")))
        };
        let row = if obj.contains_key("messages") {
            let msgs: Vec<JsonMessage> =
                serde_json::from_value(obj["messages"].clone()).map_err(|e| {
                    err(format!(
                        "\"messages\" must be a list of {{role, content}}: {e}"
                    ))
                })?;
            if msgs.is_empty() {
                return Err(err("\"messages\" is empty".into()));
            }
            Row::Chat {
                messages: msgs
                    .into_iter()
                    .map(|m| ChatMessage {
                        role: m.role,
                        content: m.content,
                    })
                    .collect(),
            }
        } else if obj.contains_key("prompt") || obj.contains_key("completion") {
            Row::Pair {
                prompt: str_field("prompt")?,
                completion: str_field("completion")?,
            }
        } else if obj.contains_key("text") {
            Row::Text {
                text: str_field("text")?,
            }
        } else {
            return Err(err(
                "expected {\"text\"}, {\"prompt\",\"completion\"} or {\"messages\"}".into(),
            ));
        };
        rows.push(row);
    }
    Ok(rows)
}

/// Splits CSV text into records of fields (RFC 4180).
fn csv_records(text: &str) -> Result<Vec<Vec<String>>, FormatError> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut in_quotes = false;
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => in_quotes = true,
            ',' => record.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
                any = false;
            }
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err(FormatError::Csv {
            record: records.len() + 1,
            reason: "unterminated quoted field".into(),
        });
    }
    if any {
        record.push(field);
        records.push(record);
    }
    Ok(records)
}

fn parse_csv(text: &str, columns: &[String]) -> Result<Vec<Row>, FormatError> {
    let records = csv_records(text)?;
    let Some((header, body)) = records.split_first() else {
        return Ok(Vec::new());
    };
    let idx: Vec<usize> = if columns.is_empty() {
        (0..header.len()).collect()
    } else {
        columns
            .iter()
            .map(|c| {
                header
                    .iter()
                    .position(|h| h.trim() == c)
                    .ok_or_else(|| FormatError::Csv {
                        record: 1,
                        reason: format!("no column {c:?} in the header"),
                    })
            })
            .collect::<Result<_, _>>()?
    };
    let mut rows = Vec::new();
    for (i, rec) in body.iter().enumerate() {
        if rec.len() == 1 && rec[0].is_empty() {
            continue;
        }
        if rec.len() != header.len() {
            return Err(FormatError::Csv {
                record: i + 2,
                reason: format!("{} fields, header has {}", rec.len(), header.len()),
            });
        }
        let text = idx
            .iter()
            .map(|&j| rec[j].as_str())
            .collect::<Vec<_>>()
            .join("\n");
        rows.push(Row::Text { text });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(format_for("a.md", &[]), Ok(Format::Text));
        assert_eq!(format_for("A.JSONL", &[]), Ok(Format::Jsonl));
        for bad in [
            "../x.txt",
            "a/b.txt",
            "..txt",
            ".hidden.txt",
            "x.exe",
            "a\\b.txt",
            "",
        ] {
            assert!(format_for(bad, &[]).is_err(), "{bad}");
        }
    }

    #[test]
    fn paragraphs_are_split_and_bounded() -> Result<(), FormatError> {
        let text = format!("one\n\n\ntwo two\r\n\r\n{}", "word ".repeat(30));
        let rows = parse(text.as_bytes(), &Format::Text, 40)?;
        assert_eq!(rows[0].text(), "one");
        assert_eq!(rows[1].text(), "two two");
        assert!(rows[2..].iter().all(|r| r.text().len() <= 40));
        assert_eq!(rows.len(), 2 + 4);
        Ok(())
    }

    #[test]
    fn jsonl_shapes_and_line_numbers() -> Result<(), FormatError> {
        let ok = "{\"text\":\"a\"}\n\n{\"prompt\":\"p\",\"completion\":\"c\"}\n{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}\n";
        let rows = parse(ok.as_bytes(), &Format::Jsonl, 1000)?;
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].text(), "p\nc");
        assert_eq!(rows[2].text(), "user: hi");
        let bad = "{\"text\":\"a\"}\n{\"text\": 5}\n";
        let err = parse(bad.as_bytes(), &Format::Jsonl, 1000);
        assert!(matches!(err, Err(FormatError::Jsonl { line: 2, .. })));
        let err = parse(b"{\"text\":\"a\"}\n\n{oops\n", &Format::Jsonl, 1000);
        assert!(matches!(err, Err(FormatError::Jsonl { line: 3, .. })));
        assert!(matches!(
            parse(b"a\xffb", &Format::Jsonl, 10),
            Err(FormatError::NotUtf8 { offset: 1 })
        ));
        Ok(())
    }

    #[test]
    fn csv_columns() -> Result<(), FormatError> {
        let csv = "id,question,answer\n1,\"What, really?\",\"He said \"\"yes\"\"\"\n2,q2,\"multi\nline\"\n";
        let f = Format::Csv {
            columns: vec!["question".into(), "answer".into()],
        };
        let rows = parse(csv.as_bytes(), &f, 1000)?;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].text(), "What, really?\nHe said \"yes\"");
        assert_eq!(rows[1].text(), "q2\nmulti\nline");
        let f = Format::Csv {
            columns: vec!["nope".into()],
        };
        assert!(parse(csv.as_bytes(), &f, 1000).is_err());
        assert!(parse(b"a,b\n1\n", &Format::Csv { columns: vec![] }, 10).is_err());
        Ok(())
    }
}
