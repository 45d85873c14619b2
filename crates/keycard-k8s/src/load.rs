use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::object::Object;

/// Limits on what the loader accepts. Nesting depth (128) and YAML alias
/// expansion are bounded by the parsers themselves.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Largest file (or stdin) read, in bytes.
    pub max_file_bytes: u64,
    /// Most objects kept from one run; the rest are reported as an error.
    pub max_objects: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_file_bytes: 64 * 1024 * 1024,
            max_objects: 2_000_000,
        }
    }
}

/// A file, document or object that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", file, line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct LoadError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

/// Everything read from a set of paths: the objects that could be used and
/// an error for each file, document or object that could not.
#[derive(Debug, Default)]
pub struct Loaded {
    pub objects: Vec<Object>,
    pub errors: Vec<LoadError>,
    /// How many files were read.
    pub files: usize,
}

/// Whether a directory walk picks up this file.
pub fn is_manifest_path(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Read every path: `-` is stdin, a directory is walked recursively for
/// `*.yaml`, `*.yml` and `*.json` (hidden directories are skipped, files
/// are read in name order), and a file is read whatever its name.
pub fn load_paths<P: AsRef<Path>>(paths: &[P], opts: &LoadOptions) -> Loaded {
    let mut out = Loaded::default();
    for p in paths {
        let p = p.as_ref();
        if p == Path::new("-") {
            let mut buf = Vec::new();
            let res = std::io::stdin()
                .lock()
                .take(opts.max_file_bytes + 1)
                .read_to_end(&mut buf);
            match res {
                Err(e) => out
                    .errors
                    .push(err("-", None, format!("cannot read stdin: {e}"))),
                Ok(_) if buf.len() as u64 > opts.max_file_bytes => out.errors.push(err(
                    "-",
                    None,
                    format!(
                        "input is larger than the limit of {} bytes",
                        opts.max_file_bytes
                    ),
                )),
                Ok(_) => parse_bytes("-", &buf, None, opts, &mut out),
            }
            continue;
        }
        let mut files = Vec::new();
        match fs::metadata(p) {
            Ok(m) if m.is_dir() => walk(p, &mut files, &mut out.errors),
            Ok(_) => files.push(p.to_path_buf()),
            Err(e) => {
                out.errors.push(err(
                    &p.display().to_string(),
                    None,
                    format!("cannot read: {e}"),
                ));
                continue;
            }
        }
        // Files are parsed in parallel and merged in name order, so the
        // result is the same as reading them one by one.
        use rayon::prelude::*;
        let parts: Vec<Loaded> = files
            .par_iter()
            .map(|f| {
                let mut part = Loaded::default();
                read_file(f, opts, &mut part);
                part
            })
            .collect();
        for part in parts {
            out.objects.extend(part.objects);
            out.errors.extend(part.errors);
            out.files += part.files;
        }
    }
    if out.objects.len() > opts.max_objects {
        out.objects.truncate(opts.max_objects);
        out.errors.push(err(
            "-",
            None,
            format!(
                "more than {} objects: the rest were not read",
                opts.max_objects
            ),
        ));
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<LoadError>) {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(err(
                &dir.display().to_string(),
                None,
                format!("cannot read directory: {e}"),
            ));
            return;
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let Ok(ft) = e.file_type() else { continue };
        let hidden = e.file_name().to_string_lossy().starts_with('.');
        if ft.is_dir() {
            if !hidden {
                walk(&path, files, errors);
            }
        } else if (ft.is_file() || ft.is_symlink()) && is_manifest_path(&path) {
            files.push(path);
        }
    }
}

fn read_file(path: &Path, opts: &LoadOptions, out: &mut Loaded) {
    let name = path.display().to_string();
    let size = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if size > opts.max_file_bytes {
        out.errors.push(err(
            &name,
            None,
            format!(
                "file is {size} bytes, larger than the limit of {} bytes",
                opts.max_file_bytes
            ),
        ));
        return;
    }
    match fs::read(path) {
        Ok(bytes) => {
            let json = path.extension().and_then(|e| e.to_str()) == Some("json");
            parse_bytes(&name, &bytes, Some(json), opts, out)
        }
        Err(e) => out
            .errors
            .push(err(&name, None, format!("cannot read: {e}"))),
    }
}

fn parse_bytes(name: &str, bytes: &[u8], json: Option<bool>, opts: &LoadOptions, out: &mut Loaded) {
    out.files += 1;
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            out.errors
                .push(err(name, Some(line), "file is not valid UTF-8".into()));
            return;
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let json = json.unwrap_or_else(|| text.trim_start().starts_with(['{', '[']));
    let file: Arc<str> = Arc::from(name);
    if json {
        parse_json(&file, text, out);
    } else {
        parse_yaml(&file, text, out);
    }
    let _ = opts;
}

/// Parse text as multi-document YAML (or JSON, by its first character).
/// Returns the objects and the errors; one bad document does not stop the
/// others from being read.
pub fn parse_str(name: &str, text: &str, opts: &LoadOptions) -> (Vec<Object>, Vec<LoadError>) {
    let mut out = Loaded::default();
    parse_bytes(name, text.as_bytes(), None, opts, &mut out);
    (out.objects, out.errors)
}

fn err(file: &str, line: Option<usize>, message: String) -> LoadError {
    LoadError {
        file: file.to_string(),
        line,
        message,
    }
}

/// Split YAML text into documents at `---` and `...` markers, keeping the
/// 1-based line each document starts at. Splitting first means one bad
/// document does not hide the others.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut start = 1;
    let mut in_doc = true;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let lineno = i + 1;
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_start = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        let is_end = bare == "..." || bare.starts_with("... ");
        if is_start {
            if !cur.is_empty() {
                docs.push((start, std::mem::take(&mut cur)));
            }
            start = lineno;
            in_doc = true;
            // Content after the marker on the same line belongs to the document.
            cur.push_str("   ");
            cur.push_str(&line[3..]);
            continue;
        }
        if is_end {
            if !cur.is_empty() {
                docs.push((start, std::mem::take(&mut cur)));
            }
            in_doc = false;
            continue;
        }
        if !in_doc {
            if bare.trim().is_empty() || bare.starts_with('#') || bare.starts_with('%') {
                continue;
            }
            in_doc = true;
            start = lineno;
        }
        if cur.is_empty() {
            start = lineno;
        }
        cur.push_str(line);
    }
    if !cur.is_empty() {
        docs.push((start, cur));
    }
    docs
}

/// Line (1-based, within `doc`) of the first line with content.
fn first_content_line(doc: &str) -> usize {
    for (i, l) in doc.lines().enumerate() {
        let t = l.trim();
        if !t.is_empty() && !t.starts_with('#') {
            return i + 1;
        }
    }
    1
}

fn parse_yaml(file: &Arc<str>, text: &str, out: &mut Loaded) {
    for (start, doc) in split_documents(text) {
        if doc.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#')
        }) {
            continue;
        }
        let line = start + first_content_line(&doc) - 1;
        if let Some((at, why)) = too_deep(&doc) {
            out.errors.push(err(file, Some(start + at - 1), why));
            continue;
        }
        match yaml_serde::from_str::<Value>(&doc) {
            Ok(v) => add_document(file, line, v, Some(&doc), start, out),
            Err(e) => {
                let at = e
                    .location()
                    .map(|l| start + l.line().saturating_sub(1))
                    .unwrap_or(line);
                out.errors.push(err(
                    file,
                    Some(at),
                    format!("invalid YAML: {}", yaml_message(&e)),
                ));
            }
        }
    }
}

/// Most nesting of flow collections (`[`, `{`) and most indentation a
/// document may have. The YAML parser's own recursion limit applies only
/// after it has tokenised the whole document, which takes time quadratic in
/// the depth; this cheap scan refuses absurd nesting before that.
const MAX_FLOW_DEPTH: usize = 128;
const MAX_INDENT: usize = 1024;

fn too_deep(doc: &str) -> Option<(usize, String)> {
    let mut depth = 0usize;
    for (i, line) in doc.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if indent > MAX_INDENT {
            return Some((
                i + 1,
                format!("indented more than {MAX_INDENT} columns: nesting too deep"),
            ));
        }
        // A new block-level entry at column 0 ends any flow collection left
        // open by brackets inside plain scalars.
        if indent == 0 && line.starts_with(|c: char| c.is_alphanumeric() || c == '-') {
            depth = 0;
        }
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match quote {
                Some('"') if c == '\\' => {
                    chars.next();
                }
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '#' if prev == ' ' || prev == '\t' => break,
                    '"' | '\'' if matches!(prev, ' ' | '[' | '{' | ',' | ':') => quote = Some(c),
                    '[' | '{' => {
                        depth += 1;
                        if depth > MAX_FLOW_DEPTH {
                            return Some((
                                i + 1,
                                format!("collections nested deeper than {MAX_FLOW_DEPTH} levels"),
                            ));
                        }
                    }
                    ']' | '}' => depth = depth.saturating_sub(1),
                    _ => {}
                },
            }
            prev = c;
        }
    }
    None
}

fn yaml_message(e: &yaml_serde::Error) -> String {
    let s = e.to_string();
    // Drop the parser's own "at line X column Y": we report lines of the file.
    match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn parse_json(file: &Arc<str>, text: &str, out: &mut Loaded) {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let mut prev = 0;
    loop {
        let next = stream.next();
        let Some(res) = next else { break };
        match res {
            Ok(v) => {
                let begin = prev + text[prev..].len() - text[prev..].trim_start().len();
                let line = text[..begin].matches('\n').count() + 1;
                prev = stream.byte_offset();
                add_document(file, line, v, None, line, out);
            }
            Err(e) => {
                out.errors.push(err(
                    file,
                    Some(e.line()),
                    format!("invalid JSON: {}", json_message(&e)),
                ));
                break;
            }
        }
    }
}

fn json_message(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

fn add_document(
    file: &Arc<str>,
    line: usize,
    v: Value,
    yaml: Option<&str>,
    doc_start: usize,
    out: &mut Loaded,
) {
    match &v {
        Value::Null => return,
        Value::Object(_) => {}
        other => {
            out.errors.push(err(
                file,
                Some(line),
                format!("document is {}, not a Kubernetes object", type_name(other)),
            ));
            return;
        }
    }
    let is_list = v
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && v.get("items").is_some_and(Value::is_array);
    if is_list {
        let Value::Object(mut map) = v else { return };
        let Some(Value::Array(items)) = map.remove("items") else {
            return;
        };
        // Typed lists (`PodList` from the API) leave kind and apiVersion off
        // their items: they are implied by the list.
        let item_kind = map
            .get("kind")
            .and_then(Value::as_str)
            .and_then(|k| k.strip_suffix("List"))
            .filter(|k| !k.is_empty())
            .map(str::to_string);
        let list_api = map
            .get("apiVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        let lines = yaml
            .map(|d| list_item_lines(d, doc_start))
            .filter(|l| l.len() == items.len())
            .unwrap_or_else(|| vec![line; items.len()]);
        for (mut item, l) in items.into_iter().zip(lines) {
            if let (Some(kind), Value::Object(m)) = (&item_kind, &mut item) {
                m.entry("kind")
                    .or_insert_with(|| Value::String(kind.clone()));
                if let Some(api) = &list_api {
                    m.entry("apiVersion")
                        .or_insert_with(|| Value::String(api.clone()));
                }
            }
            match &item {
                Value::Object(_) => add_object(file, l, item, out),
                Value::Null => {}
                other => out.errors.push(err(
                    file,
                    Some(l),
                    format!("List item is {}, not a Kubernetes object", type_name(other)),
                )),
            }
        }
        return;
    }
    add_object(file, line, v, out);
}

fn add_object(file: &Arc<str>, line: usize, v: Value, out: &mut Loaded) {
    let api = v
        .get("apiVersion")
        .map(|a| a.as_str().filter(|s| !s.is_empty()));
    let kind = v.get("kind").map(|a| a.as_str().filter(|s| !s.is_empty()));
    let missing = match (api, kind) {
        (Some(Some(_)), Some(Some(_))) => None,
        (None, _) => Some("has no apiVersion"),
        (Some(None), _) => Some("has an apiVersion that is not a non-empty string"),
        (_, None) => Some("has no kind"),
        (_, Some(None)) => Some("has a kind that is not a non-empty string"),
    };
    if let Some(why) = missing {
        out.errors
            .push(err(file, Some(line), format!("object {why}")));
        return;
    }
    if let Some(md) = v.get("metadata") {
        if !md.is_object() {
            out.errors
                .push(err(file, Some(line), "metadata is not a mapping".into()));
            return;
        }
    }
    out.objects.push(Object::new(v, file.clone(), line));
}

/// Lines where the items of a YAML `List` start (`items:` at column 0 and
/// `- ` entries at the first item's indentation).
fn list_item_lines(doc: &str, doc_start: usize) -> Vec<usize> {
    let mut lines = Vec::new();
    let mut in_items = false;
    let mut indent: Option<usize> = None;
    for (i, l) in doc.lines().enumerate() {
        if !in_items {
            if l.trim_end() == "items:" {
                in_items = true;
            }
            continue;
        }
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            continue;
        }
        let ind = l.len() - l.trim_start().len();
        if ind == 0 && !l.starts_with('-') {
            break;
        }
        if l[ind..].starts_with("- ") || &l[ind..] == "-" {
            match indent {
                None => {
                    indent = Some(ind);
                    lines.push(doc_start + i);
                }
                Some(x) if x == ind => lines.push(doc_start + i),
                _ => {}
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Vec<Object>, Vec<LoadError>) {
        parse_str("t.yaml", text, &LoadOptions::default())
    }

    #[test]
    fn multi_document_lines() {
        let text = "# Source: chart/templates/a.yaml\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\n# comment\napiVersion: v1\nkind: Secret\nmetadata: {name: b}\n...\n";
        let (objs, errs) = parse(text);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0].source.line, 3);
        assert_eq!(objs[1].source.line, 9);
        assert_eq!(objs[1].name(), "b");
    }

    #[test]
    fn bad_document_does_not_hide_others() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: [unclosed\n---\n- just\n- a list\n---\nkind: Foo\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: ok}\n";
        let (objs, errs) = parse(text);
        assert_eq!(
            objs.iter().map(Object::name).collect::<Vec<_>>(),
            vec!["a", "ok"]
        );
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].message.starts_with("invalid YAML"), "{}", errs[0]);
        assert!(
            errs[0].line.unwrap() >= 5 && errs[0].line.unwrap() <= 7,
            "{}",
            errs[0]
        );
        assert_eq!(errs[1].line, Some(8));
        assert!(errs[1].message.contains("sequence"));
        assert_eq!(errs[2].line, Some(11));
        assert!(errs[2].message.contains("apiVersion"));
    }

    #[test]
    fn list_items_are_unwrapped_with_lines() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ServiceAccount\n  metadata: {name: a}\n- apiVersion: v1\n  kind: ServiceAccount\n  metadata:\n    name: b\nmetadata: {}\n";
        let (objs, errs) = parse(text);
        assert!(errs.is_empty());
        assert_eq!(objs.len(), 2);
        assert_eq!((objs[0].source.line, objs[1].source.line), (4, 7));
    }

    #[test]
    fn typed_list_items_take_their_kind_from_the_list() {
        let text = "apiVersion: v1\nkind: PodList\nitems:\n- metadata: {name: a}\n  spec: {}\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: b}\n";
        let (objs, errs) = parse(text);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            objs.iter()
                .map(|o| (o.kind(), o.api_version()))
                .collect::<Vec<_>>(),
            vec![("Pod", "v1"), ("Pod", "v1")]
        );
        let (_, errs) = parse("apiVersion: v1\nkind: List\nitems:\n- metadata: {name: a}\n");
        assert!(errs[0].message.contains("no apiVersion"), "{errs:?}");
    }

    #[test]
    fn json_stream_and_list() {
        let text = "{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"p\"}}]}\n\n{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"n\"}}\n{bad";
        let (objs, errs) = parse_str("x.json", text, &LoadOptions::default());
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[1].source.line, 3);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, Some(4));
    }

    #[test]
    fn alias_bomb_and_deep_nesting_are_refused() {
        let mut bomb = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
        let mut prev = "a";
        for n in names {
            bomb.push_str(&format!("{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
            prev = n;
        }
        bomb.push_str("apiVersion: v1\nkind: ConfigMap\n");
        let (objs, errs) = parse(&bomb);
        assert!(objs.is_empty());
        assert_eq!(errs.len(), 1);
        let deep = format!(
            "apiVersion: v1\nkind: ConfigMap\ndata: {}{}\n",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let (objs, errs) = parse(&deep);
        assert!(objs.is_empty());
        assert!(errs[0].message.contains("nested deeper"), "{}", errs[0]);
        assert_eq!(errs[0].line, Some(3));
        // Just under the pre-scan limit, the parser's own limit still holds.
        let deep = format!(
            "apiVersion: v1\nkind: ConfigMap\ndata: {}{}\n",
            "[".repeat(128),
            "]".repeat(128)
        );
        let (_, errs) = parse(&deep);
        assert!(errs[0].message.contains("recursion"), "{}", errs[0]);
        // Brackets inside quotes and plain scalars are not nesting.
        let ok = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: a}}\ndata:\n  a: \"{}\"\n  b: '{}'\n  c: x [y\n", "[".repeat(500), "{".repeat(500));
        let (objs, errs) = parse(&ok);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(objs.len(), 1);
        let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let (_, errs) = parse_str("d.json", &deep_json, &LoadOptions::default());
        assert_eq!(errs.len(), 1);
    }

    #[test]
    fn directories_are_walked_and_limits_hold() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::write(
            sub.join("a.yml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.json"),
            "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"b\"}}",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
        std::fs::write(
            dir.path().join(".git/c.yaml"),
            "apiVersion: v1\nkind: Namespace\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("big.yaml"), "x".repeat(2000)).unwrap();
        let opts = LoadOptions {
            max_file_bytes: 1000,
            ..LoadOptions::default()
        };
        let loaded = load_paths(&[dir.path()], &opts);
        let names: Vec<_> = loaded.objects.iter().map(Object::name).collect();
        assert_eq!(names, vec!["b", "a"]);
        assert_eq!(loaded.errors.len(), 1);
        assert!(loaded.errors[0].message.contains("limit"));
        let missing = load_paths(&[dir.path().join("nope.yaml")], &opts);
        assert!(missing.errors[0].to_string().contains("nope.yaml"));
    }
}
