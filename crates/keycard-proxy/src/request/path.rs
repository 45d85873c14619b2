//! Request-target normalisation: the one form of a path that policies
//! match and that the application receives, so that what was authorised is
//! what the application serves.
//!
//! [`normalize_target`] takes an origin-form request target (`/a/b?q`) and:
//!
//! 1. rejects NUL and other control characters, spaces, bytes outside ASCII, and a
//!    target that does not start with `/`;
//! 2. drops the fragment (`#...`): it never belongs in a request; keeps the
//!    query as it is (policies match the path only, the application still
//!    sees the query);
//! 3. decodes percent-encoded unreserved characters (`%61` -> `a`,
//!    `%2E` -> `.`), rejects invalid escapes (`%G1`, a lone `%`) and encoded
//!    control characters (`%00`), writes the remaining escapes in upper case
//!    (`%3a` -> `%3A`) and percent-encodes characters that may not appear
//!    raw in a path (`"`, `<`, `{`, ...; a raw space is refused);
//! 4. treats encoded slashes and backslashes (`%2F`, `%5C`) per
//!    [`EscapedSlashes`]: by default the request is rejected (Envoy's
//!    `path_with_escaped_slashes_action: REJECT_REQUEST`);
//! 5. turns a raw backslash into `/` (as Envoy and Istio do), merges
//!    repeated slashes and removes `.` and `..` segments (RFC 3986 5.2.4;
//!    `..` never climbs above the root).
//!
//! Normalising twice gives the same result as normalising once.

use std::borrow::Cow;

/// What to do with percent-encoded slashes and backslashes (`%2F`, `%5C`)
/// in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EscapedSlashes {
    /// Refuse the request (400). The default: an application that decodes
    /// `%2F` after routing would see a path that was never authorised.
    #[default]
    Reject,
    /// Decode them to `/` and send the client a redirect to the normalised
    /// path (the authorizer decides on the decoded path).
    UnescapeAndRedirect,
    /// Decode them to `/`, normalise, and forward the result.
    UnescapeAndForward,
    /// Keep them escaped as part of their segment (`%2F` stays `%2F`), for
    /// applications that never decode them.
    Keep,
}

impl EscapedSlashes {
    pub fn as_str(self) -> &'static str {
        match self {
            EscapedSlashes::Reject => "reject",
            EscapedSlashes::UnescapeAndRedirect => "unescape-and-redirect",
            EscapedSlashes::UnescapeAndForward => "unescape-and-forward",
            EscapedSlashes::Keep => "keep",
        }
    }
}

impl std::str::FromStr for EscapedSlashes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "reject" => EscapedSlashes::Reject,
            "unescape-and-redirect" => EscapedSlashes::UnescapeAndRedirect,
            "unescape-and-forward" => EscapedSlashes::UnescapeAndForward,
            "keep" => EscapedSlashes::Keep,
            _ => {
                return Err(format!(
                    "{s:?}: expected reject, unescape-and-redirect, unescape-and-forward or keep"
                ))
            }
        })
    }
}

/// How request paths are normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathOptions {
    pub escaped_slashes: EscapedSlashes,
}

/// Why a request target is refused (answer 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request target does not start with '/'")]
    NotOriginForm,
    #[error("invalid percent-escape at byte {0}")]
    InvalidEscape(usize),
    #[error("control character or space at byte {0}")]
    ControlCharacter(usize),
    #[error("non-ASCII byte at {0}")]
    NonAscii(usize),
    #[error("percent-encoded slash or backslash in the path")]
    EscapedSlash,
}

/// A normalised request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The normalised path: starts with `/`, no empty, `.` or `..` segment.
    pub path: String,
    /// The query string without its `?`, unchanged.
    pub query: Option<String>,
    /// The client should be redirected to [`Target::path_and_query`]
    /// (only with [`EscapedSlashes::UnescapeAndRedirect`]).
    pub redirect: bool,
}

impl Target {
    /// The normalised path and the query, for the upstream request.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Normalise an origin-form request target (path, optional query, optional
/// fragment). See the module docs for the steps.
pub fn normalize_target(raw: &str, opts: PathOptions) -> Result<Target, PathError> {
    let without_fragment = raw.split('#').next().unwrap_or("");
    let (path, query) = match without_fragment.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (without_fragment, None),
    };
    if let Some(q) = query {
        check_query(q, path.len() + 1)?;
    }
    let (path, redirect) = normalize_path_inner(path, opts)?;
    Ok(Target {
        path: path.into_owned(),
        query: query.map(str::to_string),
        redirect,
    })
}

/// Normalise a path without query or fragment; borrows when it is already
/// in normal form.
pub fn normalize_path(path: &str, opts: PathOptions) -> Result<Cow<'_, str>, PathError> {
    normalize_path_inner(path, opts).map(|(p, _)| p)
}

/// The path of a request target (no query, no fragment), normalised.
/// An empty target (a TCP connection: no HTTP request) stays empty and
/// matches no path.
pub(crate) fn normalize_target_path(
    raw: &str,
    opts: PathOptions,
) -> Result<Cow<'_, str>, PathError> {
    if raw.is_empty() {
        return Ok(Cow::Borrowed(raw));
    }
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    if let Some(q) = raw.get(end..) {
        let q = q.split('#').next().unwrap_or("");
        check_query(q, end)?;
    }
    normalize_path(&raw[..end], opts)
}

fn check_query(q: &str, offset: usize) -> Result<(), PathError> {
    for (i, b) in q.bytes().enumerate() {
        if b <= 0x20 || b == 0x7f {
            return Err(PathError::ControlCharacter(offset + i));
        }
        if b >= 0x80 {
            return Err(PathError::NonAscii(offset + i));
        }
    }
    Ok(())
}

#[inline]
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters that may appear raw in a path segment (RFC 3986 `pchar`
/// without `%`): unreserved, sub-delims, `:` and `@`.
#[inline]
fn is_pchar(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

/// Whether a path needs no work: every byte a pchar or `/`, no `//`, no
/// segment starting with `.` (conservative: `/.well-known` takes the slow
/// path and comes out unchanged).
#[inline]
fn is_normal(path: &[u8]) -> bool {
    if path.first() != Some(&b'/') {
        return false;
    }
    let mut prev = 0u8;
    for &b in path {
        if b == b'/' {
            if prev == b'/' {
                return false;
            }
        } else if !is_pchar(b) || (b == b'.' && prev == b'/') {
            return false;
        }
        prev = b;
    }
    true
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// One decoded unit of a path.
enum Unit {
    /// A byte that separates segments.
    Slash,
    /// Bytes of a segment, already in their normal spelling.
    Byte(u8),
    /// A percent-escape to keep, `%XY` with upper-case hex.
    Escape(u8),
}

fn normalize_path_inner(path: &str, opts: PathOptions) -> Result<(Cow<'_, str>, bool), PathError> {
    let bytes = path.as_bytes();
    if is_normal(bytes) {
        return Ok((Cow::Borrowed(path), false));
    }
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    let mut redirect = false;
    // Decode into units, then build segments.
    let mut segments: Vec<Vec<u8>> = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    // Whether the output ends with a slash after the last segment.
    let mut trailing = false;
    let mut i = 1;
    let finish =
        |seg: &mut Vec<u8>, segments: &mut Vec<Vec<u8>>, trailing: &mut bool, last: bool| {
            match seg.as_slice() {
                b"" => {
                    // An empty segment: merged into its neighbour; at the end
                    // of the path it is the trailing slash.
                    if last {
                        *trailing = true;
                    }
                }
                b"." => *trailing = true,
                b".." => {
                    segments.pop();
                    *trailing = true;
                }
                _ => {
                    segments.push(std::mem::take(seg));
                    *trailing = false;
                }
            }
            seg.clear();
        };
    while i < bytes.len() {
        let b = bytes[i];
        let unit = match b {
            b'/' | b'\\' => Unit::Slash,
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::InvalidEscape(i));
                };
                i += 2;
                let d = (h << 4) | l;
                if d < 0x20 || d == 0x7f {
                    return Err(PathError::ControlCharacter(i - 2));
                }
                if is_unreserved(d) {
                    Unit::Byte(d)
                } else if d == b'/' || d == b'\\' {
                    match opts.escaped_slashes {
                        EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                        EscapedSlashes::Keep => Unit::Escape(d),
                        EscapedSlashes::UnescapeAndForward => Unit::Slash,
                        EscapedSlashes::UnescapeAndRedirect => {
                            redirect = true;
                            Unit::Slash
                        }
                    }
                } else {
                    Unit::Escape(d)
                }
            }
            _ if b <= 0x20 || b == 0x7f => return Err(PathError::ControlCharacter(i)),
            _ if b >= 0x80 => return Err(PathError::NonAscii(i)),
            _ if is_pchar(b) => Unit::Byte(b),
            // `"`, `<`, `>`, `^`, `` ` ``, `{`, `|`, `}`, space was refused above.
            _ => Unit::Escape(b),
        };
        match unit {
            Unit::Slash => finish(&mut current, &mut segments, &mut trailing, false),
            Unit::Byte(c) => current.push(c),
            Unit::Escape(c) => current.extend_from_slice(&[
                b'%',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 15)],
            ]),
        }
        i += 1;
    }
    finish(&mut current, &mut segments, &mut trailing, true);
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        // Only ASCII bytes were pushed.
        out.push_str(std::str::from_utf8(s).unwrap_or(""));
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    Ok((Cow::Owned(out), redirect))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize_target(p, PathOptions::default()).map(|t| t.path_and_query())
    }

    #[test]
    fn table() {
        let ok = [
            ("/", "/"),
            ("/admin", "/admin"),
            ("/./admin", "/admin"),
            ("//admin", "/admin"),
            ("///admin//x///", "/admin/x/"),
            ("/a/../admin", "/admin"),
            ("/a/b/../../admin", "/admin"),
            ("/../admin", "/admin"),
            ("/../../admin/.", "/admin/"),
            ("/%61dmin", "/admin"),
            ("/%2e%2e/admin", "/admin"),
            ("/x/%2E./admin", "/admin"),
            ("/x/.%2e/admin", "/admin"),
            ("/admin?x=1", "/admin?x=1"),
            ("/admin#frag", "/admin"),
            ("/admin?x=/../y#f", "/admin?x=/../y"),
            ("/x\\..\\admin", "/admin"),
            ("/a%3ab", "/a%3Ab"),
            ("/a%3Ab", "/a%3Ab"),
            ("/a\"b", "/a%22b"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/..", "/"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a/...", "/a/..."),
            ("/%7Euser", "/~user"),
            ("/%25", "/%25"),
            ("/%252F", "/%252F"),
        ];
        for (input, want) in ok {
            assert_eq!(n(input).as_deref(), Ok(want), "{input}");
        }
        let bad = [
            "admin",
            "\\admin",
            "",
            "*",
            "/admin%2F..",
            "/admin%2f",
            "/a%5Cb",
            "/a%",
            "/a%4",
            "/a%G0",
            "/a%00b",
            "/a\0b",
            "/a b",
            "/a\tb",
            "/a\u{e9}",
            "/a?x\0",
            "/a%7f",
        ];
        for input in bad {
            assert!(n(input).is_err(), "{input:?} -> {:?}", n(input));
        }
    }

    #[test]
    fn escaped_slash_options() {
        let o = |e| PathOptions { escaped_slashes: e };
        let t = normalize_target("/admin%2F..%2Fx", o(EscapedSlashes::UnescapeAndForward)).unwrap();
        assert_eq!((t.path.as_str(), t.redirect), ("/x", false));
        let t = normalize_target("/a%2fb", o(EscapedSlashes::UnescapeAndRedirect)).unwrap();
        assert_eq!((t.path.as_str(), t.redirect), ("/a/b", true));
        let t = normalize_target("/a%2fb/..", o(EscapedSlashes::Keep)).unwrap();
        assert_eq!((t.path.as_str(), t.redirect), ("/", false));
        let t = normalize_target("/a%2fb%5c", o(EscapedSlashes::Keep)).unwrap();
        assert_eq!(t.path, "/a%2Fb%5C");
    }

    #[test]
    fn idempotent_random() {
        let alphabet: &[&str] = &[
            "/", "//", ".", "..", "%2e", "%2E", "%2f", "%5c", "\\", "a", "b", "%61", "%3a", "%7e",
            "~", "?", "#", "\"", "%", "%zz", "-", ":", "@",
        ];
        let mut seed: u64 = 0x1234_5678;
        for _ in 0..200_000 {
            let mut s = String::from("/");
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 59) as usize;
            for _ in 0..len {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                s.push_str(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            for e in [
                EscapedSlashes::Reject,
                EscapedSlashes::Keep,
                EscapedSlashes::UnescapeAndForward,
                EscapedSlashes::UnescapeAndRedirect,
            ] {
                let o = PathOptions { escaped_slashes: e };
                if let Ok(t) = normalize_target(&s, o) {
                    let again = normalize_target(&t.path_and_query(), o).unwrap();
                    assert_eq!(again.path, t.path, "{s}");
                    assert!(!again.redirect);
                    assert!(
                        is_normal(t.path.as_bytes())
                            || t.path.split('/').all(|g| g != "." && g != ".."),
                        "{s} {}",
                        t.path
                    );
                    assert!(!t.path.contains("//"), "{s}");
                    assert!(
                        t.path.split('/').all(|g| g != "." && g != ".."),
                        "{s} -> {}",
                        t.path
                    );
                }
            }
        }
    }
}
