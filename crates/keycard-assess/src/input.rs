//! The input of an assessment and what it covers.

use std::path::Path;

use keycard_k8s::Object;

use crate::model::{Coverage, InputProblem, SourceInfo, SourceKind};

/// Objects to assess, where they came from, and what went wrong reading them.
#[derive(Debug, Default)]
pub struct Input {
    pub objects: Vec<Object>,
    pub source: SourceInfo,
    pub problems: Vec<InputProblem>,
    /// Gaps found while reading (a forbidden or unreachable API).
    pub gaps: Vec<crate::model::Gap>,
}

impl Input {
    /// Objects already parsed (tests, the live API).
    pub fn from_objects(objects: Vec<Object>, kind: SourceKind, locations: Vec<String>) -> Input {
        let mut source = SourceInfo {
            kind,
            locations,
            objects: objects.len(),
            ..SourceInfo::default()
        };
        for o in &objects {
            *source.by_kind.entry(o.kind().to_string()).or_default() += 1;
        }
        Input {
            objects,
            source,
            ..Input::default()
        }
    }

    /// Read files and directories (`-` for stdin) with `keycard_k8s`.
    pub fn load<P: AsRef<Path>>(paths: &[P], opts: &keycard_k8s::LoadOptions) -> Input {
        let loaded = keycard_k8s::load_paths(paths, opts);
        let locations = paths
            .iter()
            .map(|p| p.as_ref().display().to_string())
            .collect();
        let mut input = Input::from_objects(loaded.objects, SourceKind::Manifests, locations);
        input.problems = loaded
            .errors
            .into_iter()
            .map(|e| InputProblem {
                file: e.file,
                line: e.line,
                message: e.message,
            })
            .collect();
        input
    }
}

/// What the input covers.
pub fn coverage(input: &Input) -> Coverage {
    Coverage {
        seen: input.source.by_kind.keys().cloned().collect(),
        gaps: input.gaps.clone(),
        input_errors: input.problems.clone(),
        unknown_kinds: Vec::new(),
    }
}
