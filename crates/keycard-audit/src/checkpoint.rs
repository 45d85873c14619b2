//! C2SP tlog checkpoints (`c2sp.org/tlog-checkpoint`): the signed statement
//! "the log called *origin* had *size* entries with root *hash*".
//!
//! The body is exactly
//!
//! ```text
//! <origin>
//! <decimal size, no leading zeros>
//! <base64 root hash>
//! [extension lines, each non-empty]
//! ```
//!
//! and is carried as the text of a [signed note](crate::note). Parsing is
//! strict (one canonical encoding per checkpoint) so that two different
//! byte strings can never claim the same tree head.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use thiserror::Error;

use crate::merkle::{Hash, HASH_LEN};
use crate::note::{self, NoteError, Signer, VerifiedNote, VerifierSet};

/// Why a checkpoint was refused.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// The signed-note layer refused the input.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// Fewer than the three mandatory lines.
    #[error("checkpoint needs origin, size and root lines")]
    MissingLines,
    /// The origin line is empty.
    #[error("checkpoint origin is empty")]
    EmptyOrigin,
    /// The size line is not a canonical decimal `u64`.
    #[error("checkpoint size {0:?} is not a decimal number without leading zeros")]
    BadSize(String),
    /// The root line is not canonical base64 of 32 bytes.
    #[error("checkpoint root {0:?} is not base64 of a 32-byte hash")]
    BadRoot(String),
    /// An extension line is empty.
    #[error("checkpoint extension line {0} is empty")]
    EmptyExtension(usize),
    /// A field would break the line structure when written.
    #[error("checkpoint {0} must not contain a newline")]
    NewlineInField(&'static str),
    /// The checkpoint is for a different log than expected.
    #[error("checkpoint is for log {found:?}, expected {expected:?}")]
    OriginMismatch {
        /// Origin we expected.
        expected: String,
        /// Origin in the checkpoint.
        found: String,
    },
}

/// A tree head: which log, how many entries, and the root over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Log identity, e.g. `keycard.example/decisions`. Should equal the key
    /// name of the log's signing key.
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// RFC 9162 root hash of the first `size` leaves.
    pub root: Hash,
    /// Optional opaque extension lines (not recommended by the spec, since
    /// monitors cannot audit them).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint without extension lines.
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Self {
        Self {
            origin: origin.into(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The note text, final newline included.
    pub fn to_text(&self) -> Result<String, CheckpointError> {
        if self.origin.is_empty() {
            return Err(CheckpointError::EmptyOrigin);
        }
        if self.origin.contains('\n') {
            return Err(CheckpointError::NewlineInField("origin"));
        }
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for (i, e) in self.extensions.iter().enumerate() {
            if e.is_empty() {
                return Err(CheckpointError::EmptyExtension(i + 1));
            }
            if e.contains('\n') {
                return Err(CheckpointError::NewlineInField("extension line"));
            }
            s.push_str(e);
            s.push('\n');
        }
        Ok(s)
    }

    /// Parses a note text (as returned by [`note::open`]) into a checkpoint.
    pub fn from_text(text: &str) -> Result<Self, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::MissingLines)?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(CheckpointError::MissingLines);
        };
        if origin.is_empty() {
            return Err(CheckpointError::EmptyOrigin);
        }
        let size = parse_size(size)?;
        let root = parse_root(root)?;
        let mut extensions = Vec::new();
        for (i, line) in lines.enumerate() {
            if line.is_empty() {
                return Err(CheckpointError::EmptyExtension(i + 1));
            }
            extensions.push(line.to_owned());
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// Signs the checkpoint and returns the signed note.
    pub fn sign(&self, signers: &[&dyn Signer]) -> Result<String, CheckpointError> {
        Ok(note::sign(&self.to_text()?, signers)?)
    }

    /// Verifies a signed checkpoint for the log `origin` and parses it.
    ///
    /// The origin is checked because a valid signature only says that *some*
    /// log with that key signed it; accepting another log's checkpoint would
    /// let a key shared by two logs splice their histories.
    pub fn open(
        msg: &[u8],
        origin: &str,
        verifiers: &VerifierSet,
    ) -> Result<(Self, VerifiedNote), CheckpointError> {
        let verified = note::open(msg, verifiers)?;
        let cp = Self::from_text(&verified.text)?;
        if cp.origin != origin {
            return Err(CheckpointError::OriginMismatch {
                expected: origin.to_owned(),
                found: cp.origin,
            });
        }
        Ok((cp, verified))
    }
}

fn parse_size(s: &str) -> Result<u64, CheckpointError> {
    let bad = || CheckpointError::BadSize(s.to_owned());
    let digits_ok = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits_ok || (s.len() > 1 && s.starts_with('0')) {
        return Err(bad());
    }
    s.parse().map_err(|_| bad())
}

fn parse_root(s: &str) -> Result<Hash, CheckpointError> {
    let bad = || CheckpointError::BadRoot(s.to_owned());
    // The STANDARD engine requires padding and canonical trailing bits, so
    // each hash has exactly one accepted spelling.
    let bytes = B64.decode(s).map_err(|_| bad())?;
    <[u8; HASH_LEN]>::try_from(bytes.as_slice()).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn spec_example_body_parses() {
        // The example body from the tlog-checkpoint spec.
        let text =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let cp = Checkpoint::from_text(text).unwrap();
        assert_eq!(cp.origin, "example.com/behind-the-sofa");
        assert_eq!(cp.size, 20_852_163);
        assert_eq!(cp.to_text().unwrap(), text);
    }

    #[test]
    fn sizes_must_be_canonical() {
        for ok in ["0", "1", "18446744073709551615"] {
            assert!(parse_size(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "01",
            "+1",
            "-1",
            " 1",
            "1 ",
            "0x10",
            "18446744073709551616",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn roots_must_be_canonical_32_bytes() {
        let good = B64.encode([9u8; 32]);
        assert!(parse_root(&good).is_ok());
        assert!(parse_root(good.trim_end_matches('=')).is_err());
        assert!(parse_root(&B64.encode([9u8; 31])).is_err());
        // Same 32 bytes with a non-zero unused bit: a second spelling, refused.
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut other = good.clone().into_bytes();
        let i = other.len() - 2;
        let v = alphabet.find(other[i] as char).unwrap();
        assert_eq!(v & 0b11, 0);
        other[i] = alphabet.as_bytes()[v | 1];
        assert!(parse_root(std::str::from_utf8(&other).unwrap()).is_err());
    }

    #[test]
    fn bodies_with_missing_or_empty_lines_are_refused() {
        let root = B64.encode([0u8; 32]);
        for text in [
            "origin\n5\n".to_owned(),
            format!("\n5\n{root}\n"),
            format!("origin\n5\n{root}\n\n"),
            format!("origin\n5\n{root}"),
        ] {
            assert!(Checkpoint::from_text(&text).is_err(), "{text:?}");
        }
        let with_ext = format!("origin\n5\n{root}\nfoo bar\n");
        let cp = Checkpoint::from_text(&with_ext).unwrap();
        assert_eq!(cp.extensions, vec!["foo bar".to_owned()]);
        assert_eq!(cp.to_text().unwrap(), with_ext);
    }
}
