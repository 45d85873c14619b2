//! `keycard assess diff OLD NEW` reads JSON reports back, and those files
//! come from anywhere (a CI artefact, a colleague's laptop). Any bytes must
//! be refused with an error, or become an assessment that diffs against
//! itself and renders in every report and diff format: never a panic or a
//! hang.
#![no_main]
use keycard_assess::diff::{diff, parse_assessment, DiffFormat};
use keycard_assess::report::{render, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Reports of real clusters are large, but the parser's and the
    // renderers' work is linear; a bound keeps each run short.
    if data.len() > 256 * 1024 {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(a) = parse_assessment(text, "fuzz.json") else {
        return;
    };
    let d = diff(&a, &a);
    let _ = d.regressed();
    for f in [DiffFormat::Text, DiffFormat::Markdown, DiffFormat::Json] {
        let _ = d.render(f);
    }
    for f in Format::ALL {
        let _ = render(&a, f);
    }
    // The JSON report is the contract `assess diff` reads: whatever was
    // read must be written back in a form that reads again.
    let json = render(&a, Format::Json);
    if let Err(e) = parse_assessment(&json, "rendered.json") {
        panic!("a parsed assessment renders to JSON that does not parse: {e}");
    }
    // And against an empty assessment of the same schema, both ways.
    let mut empty = a.clone();
    empty.findings.clear();
    empty.inventory = Default::default();
    empty.compliance.clear();
    let _ = diff(&a, &empty).render(DiffFormat::Text);
    let _ = diff(&empty, &a).render(DiffFormat::Json);
});
