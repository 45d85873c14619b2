//! Reports: JSON, Markdown, HTML, SARIF.

use crate::model::Assessment;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Markdown,
    Html,
    Sarif,
}

pub fn render(a: &Assessment, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(a).unwrap_or_default(),
        _ => String::new(),
    }
}
