//! HTTP/1.1 message bodies: the framing shared by keycard's own client to
//! the app (`app_h1`) and its own inbound server (`server_h1`).
//!
//! A body is delimited by an exact length, by the chunked coding, or by
//! the end of the connection (responses only). The decoder is a state
//! machine over a byte buffer: every step either yields a frame, consumes
//! bytes, moves the state on, or asks for more bytes. It is strict where
//! smuggling lives: chunk-size lines take hex digits and `;` extensions
//! only, never a bare LF, and chunk data must end in CRLF.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::body::Frame;

use super::inbound::connection_tokens;

/// A chunk-size line, with its extensions.
pub(crate) const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Header fields in a head or a trailer section.
pub(crate) const MAX_FIELDS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FramingError {
    #[error("{0}")]
    Malformed(&'static str),
    #[error("a header or trailer section over {0} bytes")]
    TooLarge(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Exactly this many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// Until the peer closes the connection.
    Close,
    /// No more body.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// At a chunk-size line.
    Size,
    /// In a chunk's data, this many bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
}

pub(crate) enum Step {
    Frame(Frame<Bytes>),
    /// Read more bytes, then step again.
    More,
    /// The state moved on without a frame: step again.
    Again,
    End,
}

/// Where a body is, and how large its trailer section may be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decoder {
    pub kind: Kind,
    pub max_trailers: usize,
}

impl Decoder {
    pub fn new(kind: Kind, max_trailers: usize) -> Self {
        Decoder { kind, max_trailers }
    }

    pub fn is_done(&self) -> bool {
        self.kind == Kind::Done
    }

    /// One step of the body over the bytes read so far.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, FramingError> {
        match self.kind {
            Kind::Done => Ok(Step::End),
            Kind::Length(left) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = (buf.len() as u64).min(left);
                let data = buf.split_to(n as usize).freeze();
                self.kind = match left - n {
                    0 => Kind::Done,
                    l => Kind::Length(l),
                };
                Ok(Step::Frame(Frame::data(data)))
            }
            Kind::Close => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                Ok(Step::Frame(Frame::data(buf.split().freeze())))
            }
            Kind::Chunked(c) => self.step_chunked(c, buf),
        }
    }

    fn step_chunked(&mut self, c: Chunk, buf: &mut BytesMut) -> Result<Step, FramingError> {
        let bad = FramingError::Malformed;
        match c {
            Chunk::Size => {
                let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                    if buf.len() > MAX_CHUNK_LINE || buf.contains(&b'\n') {
                        return Err(bad("bad chunk size line"));
                    }
                    return Ok(Step::More);
                };
                if end > MAX_CHUNK_LINE {
                    return Err(bad("bad chunk size line"));
                }
                let size = parse_chunk_size(&buf[..end])?;
                buf.advance(end + 2);
                self.kind = Kind::Chunked(if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                });
                Ok(Step::Again)
            }
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = (buf.len() as u64).min(left);
                let data = buf.split_to(n as usize).freeze();
                self.kind = Kind::Chunked(match left - n {
                    0 => Chunk::DataEnd,
                    l => Chunk::Data(l),
                });
                Ok(Step::Frame(Frame::data(data)))
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Step::More);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(bad("chunk data not followed by CRLF"));
                }
                buf.advance(2);
                self.kind = Kind::Chunked(Chunk::Size);
                Ok(Step::Again)
            }
            Chunk::Trailers => {
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                    self.kind = Kind::Done;
                    return Ok(Step::End);
                }
                let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
                match httparse::parse_headers(buf, &mut fields) {
                    Ok(httparse::Status::Complete((n, fields))) => {
                        let mut trailers = HeaderMap::with_capacity(fields.len());
                        for f in fields.iter() {
                            let (Ok(k), Ok(v)) = (
                                HeaderName::from_bytes(f.name.as_bytes()),
                                HeaderValue::from_bytes(f.value),
                            ) else {
                                return Err(bad("bad trailer field"));
                            };
                            trailers.append(k, v);
                        }
                        buf.advance(n);
                        self.kind = Kind::Done;
                        Ok(Step::Frame(Frame::trailers(trailers)))
                    }
                    Ok(httparse::Status::Partial) if buf.len() <= self.max_trailers => {
                        Ok(Step::More)
                    }
                    Ok(httparse::Status::Partial) => Err(FramingError::TooLarge(self.max_trailers)),
                    Err(_) => Err(bad("bad trailer section")),
                }
            }
        }
    }
}

/// A `Content-Length` value (or several, comma-separated or repeated):
/// digits only, and all the same.
pub(crate) fn content_length(h: &HeaderMap) -> Result<Option<u64>, FramingError> {
    let mut length = None;
    for v in h.get_all(http::header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|b| *b == b',') {
            let n = parse_decimal(part.trim_ascii())
                .ok_or(FramingError::Malformed("bad content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(FramingError::Malformed("differing content-lengths"));
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// The codings of the `Transfer-Encoding` fields, in order.
pub(crate) fn transfer_codings(h: &HeaderMap) -> Vec<&[u8]> {
    h.get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether a `Connection` field lists `token`.
pub(crate) fn connection_has(h: &HeaderMap, token: &str) -> bool {
    connection_tokens(h).any(|t| t.eq_ignore_ascii_case(token))
}

pub(crate) fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |n, b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// A chunk-size line without its CRLF: hex digits, then optional
/// extensions after `;`. Returns the size.
pub(crate) fn parse_chunk_size(line: &[u8]) -> Result<u64, FramingError> {
    let bad = FramingError::Malformed("bad chunk size");
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(bad);
    }
    // Extensions follow `;`, after optional spaces or tabs (never a bare LF).
    let rest = &line[digits..];
    let ext_at = rest
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(rest.len());
    let ext = &rest[ext_at..];
    if !(rest.is_empty() || ext.first() == Some(&b';')) {
        return Err(bad);
    }
    if ext.iter().any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f) {
        return Err(bad);
    }
    line[..digits].iter().try_fold(0u64, |n, b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return Err(bad),
        };
        Ok((n << 4) | u64::from(d))
    })
}

/// One header field line.
pub(crate) fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Write a chunk-size line for `n` bytes (lower-case hex, then CRLF).
pub(crate) fn chunk_line(out: &mut Vec<u8>, n: usize) {
    use std::io::Write;
    let _ = write!(out, "{n:x}\r\n");
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod tests {
    use super::*;
    use keycard_core::XorShift as Rng;

    /// A body over bytes fed in pieces, as reads would deliver them; None
    /// when the input ran out before the body ended.
    pub(crate) fn decode_in_pieces(
        kind: Kind,
        input: &[u8],
        cuts: &[usize],
    ) -> Result<Option<Vec<u8>>, FramingError> {
        let mut d = Decoder::new(kind, 4096);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        let mut cuts = cuts.iter().copied().chain([input.len()]);
        // Every step consumes bytes or moves the state on: this bounds them.
        for _ in 0..(4 * input.len() + 16) {
            match d.step(&mut buf)? {
                Step::Frame(f) => {
                    if let Ok(data) = f.into_data() {
                        out.extend_from_slice(&data);
                    }
                }
                Step::Again => {}
                Step::End => return Ok(Some(out)),
                Step::More => {
                    let Some(cut) = cuts.next() else {
                        return Ok(None);
                    };
                    let cut = cut.clamp(fed, input.len());
                    buf.extend_from_slice(&input[fed..cut]);
                    fed = cut;
                }
            }
            if d.is_done() {
                return Ok(Some(out));
            }
        }
        panic!("the decoder made no progress on {input:?}");
    }

    #[test]
    fn chunked_decoding_does_not_depend_on_how_reads_split_the_bytes() {
        let body: &[u8] = b"1a;x=y\r\nabcdefghijklmnopqrstuvwxyz\r\n3\r\n123\r\n\
                            0\r\nx-t: 1\r\n\r\n";
        let whole = decode_in_pieces(Kind::Chunked(Chunk::Size), body, &[])
            .unwrap()
            .unwrap();
        assert_eq!(whole, b"abcdefghijklmnopqrstuvwxyz123");
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let mut cuts: Vec<usize> = (0..rng.below(8)).map(|_| rng.below(body.len())).collect();
            cuts.sort_unstable();
            let got = decode_in_pieces(Kind::Chunked(Chunk::Size), body, &cuts).unwrap();
            assert_eq!(got.as_deref(), Some(&whole[..]), "cuts {cuts:?}");
        }
    }

    #[test]
    fn mangled_chunked_bodies_end_in_an_error_or_less_data_never_a_panic() {
        let seed: &[u8] = b"5\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\na: b\r\n\r\n";
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..4000 {
            let input = mangle(&mut rng, seed);
            if let Ok(Some(out)) = decode_in_pieces(
                Kind::Chunked(Chunk::Size),
                &input,
                &[rng.below(input.len())],
            ) {
                assert!(out.len() <= input.len());
            }
        }
    }

    /// `seed` with one to four random edits (bytes changed, removed, added).
    pub(crate) fn mangle(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
        let mut input = seed.to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(input.len());
            match rng.below(4) {
                0 => input[at] = rng.next_u64() as u8,
                1 => input[at] = b"\r\n:;0f \t"[rng.below(8)],
                2 => {
                    input.remove(at);
                }
                _ => input.insert(at, rng.next_u64() as u8),
            }
        }
        input
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"0").unwrap(), 0);
        assert_eq!(parse_chunk_size(b"fF").unwrap(), 255);
        assert_eq!(parse_chunk_size(b"ffffffffffffffff").unwrap(), u64::MAX);
        assert_eq!(parse_chunk_size(b"a;name=value").unwrap(), 10);
        assert_eq!(parse_chunk_size(b"a \t;name").unwrap(), 10);
        for bad in [
            &b""[..],
            b";x",
            b"g",
            b"1 2",
            b"a\n;x",
            b"a;\rx",
            b"-1",
            b"0x1",
        ] {
            assert!(parse_chunk_size(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_decimal(b"18446744073709551615"), None);
        assert_eq!(parse_decimal(b"1234"), Some(1234));
        let mut line = Vec::new();
        chunk_line(&mut line, 255);
        assert_eq!(line, b"ff\r\n");
    }

    #[test]
    fn lengths_must_be_digits_and_agree() {
        let h = |vals: &[&str]| {
            let mut m = HeaderMap::new();
            for v in vals {
                m.append(http::header::CONTENT_LENGTH, v.parse().unwrap());
            }
            content_length(&m)
        };
        assert_eq!(h(&[]), Ok(None));
        assert_eq!(h(&["12"]), Ok(Some(12)));
        assert_eq!(h(&["12", "12"]), Ok(Some(12)));
        assert_eq!(h(&["12, 12"]), Ok(Some(12)));
        for bad in [
            &["12", "13"][..],
            &["+1"],
            &["1 2"],
            &["0x1"],
            &[""],
            &["-1"],
        ] {
            assert!(h(bad).is_err(), "{bad:?}");
        }
    }
}
