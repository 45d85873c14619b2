//! The JSON report: the [`Assessment`] as it is, pretty-printed. It is the
//! form `keycard assess diff` reads back, so nothing is dropped or renamed
//! here.

use crate::model::Assessment;

pub(super) fn render(a: &Assessment) -> String {
    // The model holds only strings, numbers and string-keyed maps, which
    // serde_json always serialises; an error here would be a bug in the
    // model, logged rather than hidden behind an empty report.
    match serde_json::to_string_pretty(a) {
        Ok(mut s) => {
            s.push('\n');
            s
        }
        Err(e) => {
            tracing::error!(error = %e, "the assessment could not be serialised to JSON");
            String::new()
        }
    }
}
