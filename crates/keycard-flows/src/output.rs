//! Printing connections in the connlist notation.

use std::fmt::Write;

use crate::eval::Connection;

/// One line per connection, `src => dst : conn`, each ending in a newline.
/// With `explain`, the deciding policies and rules follow each line,
/// indented.
pub fn format_connlist(conns: &[Connection], explain: bool) -> String {
    let mut out = String::new();
    for c in conns {
        let _ = writeln!(out, "{} => {} : {}", c.src, c.dst, c.conn);
        if explain {
            for e in &c.explanation {
                let _ = writeln!(out, "    {e}");
            }
        }
    }
    out
}

/// `[{"src", "dst", "conn"}]`, as the connlist's JSON output.
pub fn format_json(conns: &[Connection]) -> serde_json::Value {
    serde_json::Value::Array(
        conns
            .iter()
            .map(|c| serde_json::json!({"src": c.src, "dst": c.dst, "conn": c.conn}))
            .collect(),
    )
}
