//! C2SP signed notes (`c2sp.org/signed-note`) with Ed25519 signatures.
//!
//! A signed note is a text ending in a newline, a blank line, and one or more
//! lines `— <key name> <base64(key ID || signature)>`. The key ID is the first
//! four bytes of `SHA-256(name || 0x0A || 0x01 || public key)` for Ed25519, so
//! a verifier can pick the right key without trying them all, and the same
//! name can rotate keys.
//!
//! Opening a note follows the spec's trust rules: signatures from keys we do
//! not know are ignored (that is how witnesses cosign and keys rotate), a
//! signature from a known key that fails is a hard error, and at least one
//! known key must have signed. Input is bounded ([`MAX_NOTE_LEN`],
//! [`MAX_SIGNATURES`]) before any cryptography runs.
//!
//! Keys have two string forms, compatible with Go's `sumdb/note`:
//! a verifier key `name+<8 hex key ID>+base64(0x01 || public key)` and a
//! private key `PRIVATE+KEY+name+<8 hex key ID>+base64(0x01 || seed)`.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Signature type byte of Ed25519 signatures in the signed-note spec.
pub const ALG_ED25519: u8 = 0x01;

/// Largest signed note we will parse, in bytes. Checkpoints are a few hundred
/// bytes; this leaves room for the 16 post-quantum-sized signatures (about
/// 5 kB each) that the spec requires verifiers to accept.
pub const MAX_NOTE_LEN: usize = 256 * 1024;

/// Most signature lines we will parse. The spec requires at least 16.
pub const MAX_SIGNATURES: usize = 100;

const SIG_PREFIX: &str = "\u{2014} ";
const PRIVATE_PREFIX: &str = "PRIVATE+KEY+";
const ED25519_SIG_LEN: usize = 64;

/// Why a note, key or signature was refused.
#[derive(Debug, Error)]
pub enum NoteError {
    /// The note is larger than [`MAX_NOTE_LEN`].
    #[error("note is {len} bytes, more than the limit of {max}")]
    TooLarge {
        /// Size of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The note is not valid UTF-8.
    #[error("note is not valid UTF-8")]
    NotUtf8,
    /// The note contains an ASCII control character other than newline.
    #[error("note contains control character {byte:#04x} at byte {offset}")]
    ControlCharacter {
        /// The offending byte.
        byte: u8,
        /// Where it is.
        offset: usize,
    },
    /// No blank line separates the text from signatures.
    #[error("note has no blank line before its signatures")]
    MissingSeparator,
    /// The text to sign is empty or does not end in a newline.
    #[error("note text must be non-empty and end with a newline")]
    BadText,
    /// There are no signature lines.
    #[error("note has no signatures")]
    NoSignatures,
    /// More signature lines than [`MAX_SIGNATURES`].
    #[error("note has more than {max} signatures")]
    TooManySignatures {
        /// The limit.
        max: usize,
    },
    /// A signature line does not match `— name base64`.
    #[error("malformed signature line {line}: {reason}")]
    MalformedSignatureLine {
        /// 1-based line number within the signature block.
        line: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// A key name is empty or contains a space or `+`.
    #[error("invalid key name {0:?}: must be non-empty without spaces or '+'")]
    BadKeyName(String),
    /// A key string could not be parsed.
    #[error("malformed key: {0}")]
    MalformedKey(&'static str),
    /// The key is for a signature type we do not implement.
    #[error("unsupported signature type {0:#04x}")]
    UnsupportedAlgorithm(u8),
    /// The key ID in a key string does not match the key.
    #[error("key ID {claimed:08x} does not match the key (expected {computed:08x})")]
    KeyIdMismatch {
        /// Key ID written in the string.
        claimed: u32,
        /// Key ID derived from name and key.
        computed: u32,
    },
    /// A known key's signature did not verify: the note was altered or forged.
    #[error("invalid signature by known key {name}+{key_id:08x}")]
    InvalidSignature {
        /// Key name.
        name: String,
        /// Key ID.
        key_id: u32,
    },
    /// None of the signatures is by a known key.
    #[error("note is not signed by any known key")]
    NoKnownSignature,
    /// Two verifiers with the same name and key ID were registered.
    #[error("two verifiers share name {name} and key ID {key_id:08x}")]
    DuplicateVerifier {
        /// Key name.
        name: String,
        /// Key ID.
        key_id: u32,
    },
    /// The operating system's random number generator failed.
    #[error("could not generate a key: {0}")]
    Random(String),
    /// A [`Signer`] failed to sign.
    #[error("signer {name} failed: {reason}")]
    SignerFailed {
        /// Key name.
        name: String,
        /// What went wrong.
        reason: String,
    },
}

/// The C2SP key ID: the first four bytes (big-endian) of
/// `SHA-256(name || 0x0A || alg || public key)`.
pub fn key_id(name: &str, alg: u8, public_key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', alg]);
    h.update(public_key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Checks the spec's key-name rule: non-empty, no Unicode spaces, no `+`.
/// Names end up in signature lines and key strings, where a space or plus
/// would make parsing ambiguous.
pub fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err(NoteError::BadKeyName(name.to_owned()));
    }
    Ok(())
}

/// Something that can sign notes: a local key today, an HSM or KMS later.
pub trait Signer {
    /// Key name written in the signature line.
    fn name(&self) -> &str;
    /// Key ID written in front of the signature.
    fn key_id(&self) -> u32;
    /// Signs `msg` (the note text, final newline included).
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, NoteError>;
}

/// Something that can check one key's signatures on notes.
pub trait Verifier {
    /// Key name this verifier answers to.
    fn name(&self) -> &str;
    /// Key ID this verifier answers to.
    fn key_id(&self) -> u32;
    /// Whether `sig` is this key's valid signature over `msg`.
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool;
}

/// An Ed25519 note signing key.
#[derive(Clone)]
pub struct Ed25519Signer {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl fmt::Debug for Ed25519Signer {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ed25519Signer")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

impl Ed25519Signer {
    /// Generates a fresh key named `name` from the operating system's RNG.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| NoteError::Random(e.to_string()))?;
        let signer = Self::from_seed(name, &seed);
        seed.fill(0);
        signer
    }

    /// A key from a 32-byte RFC 8032 seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        check_key_name(name)?;
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(name, ALG_ED25519, key.verifying_key().as_bytes());
        Ok(Self {
            name: name.to_owned(),
            key_id,
            key,
        })
    }

    /// Parses `PRIVATE+KEY+name+hexid+base64(0x01 || seed)`.
    pub fn from_private_key(s: &str) -> Result<Self, NoteError> {
        let rest = s
            .strip_prefix(PRIVATE_PREFIX)
            .ok_or(NoteError::MalformedKey(
                "private key must start with PRIVATE+KEY+",
            ))?;
        let (name, claimed, material) = split_key_string(rest)?;
        let (alg, seed) = material
            .split_first()
            .ok_or(NoteError::MalformedKey("empty key material"))?;
        if *alg != ALG_ED25519 {
            return Err(NoteError::UnsupportedAlgorithm(*alg));
        }
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| NoteError::MalformedKey("Ed25519 seed must be 32 bytes"))?;
        let signer = Self::from_seed(name, &seed)?;
        if signer.key_id != claimed {
            return Err(NoteError::KeyIdMismatch {
                claimed,
                computed: signer.key_id,
            });
        }
        Ok(signer)
    }

    /// The private key string (`PRIVATE+KEY+...`). It is a secret: store it
    /// like one.
    pub fn to_private_key(&self) -> String {
        let mut material = Vec::with_capacity(33);
        material.push(ALG_ED25519);
        material.extend_from_slice(self.key.as_bytes());
        let s = format!(
            "{PRIVATE_PREFIX}{}+{:08x}+{}",
            self.name,
            self.key_id,
            B64.encode(&material)
        );
        material.fill(0);
        s
    }

    /// The matching verifier.
    pub fn verifier(&self) -> Ed25519Verifier {
        Ed25519Verifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }
}

impl Signer for Ed25519Signer {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.key_id
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, NoteError> {
        Ok(self.key.sign(msg).to_bytes().to_vec())
    }
}

/// An Ed25519 note verifier key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ed25519Verifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl Ed25519Verifier {
    /// A verifier from a name and a 32-byte public key. Small-order keys are
    /// refused: they admit signatures valid for many messages.
    pub fn new(name: &str, public_key: &[u8; 32]) -> Result<Self, NoteError> {
        check_key_name(name)?;
        let key = VerifyingKey::from_bytes(public_key)
            .map_err(|_| NoteError::MalformedKey("not a valid Ed25519 public key"))?;
        if key.is_weak() {
            return Err(NoteError::MalformedKey(
                "Ed25519 public key has small order",
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, ALG_ED25519, public_key),
            key,
        })
    }

    /// The raw public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }
}

impl FromStr for Ed25519Verifier {
    type Err = NoteError;

    /// Parses `name+hexid+base64(0x01 || public key)`.
    fn from_str(s: &str) -> Result<Self, NoteError> {
        let (name, claimed, material) = split_key_string(s)?;
        let (alg, key) = material
            .split_first()
            .ok_or(NoteError::MalformedKey("empty key material"))?;
        if *alg != ALG_ED25519 {
            return Err(NoteError::UnsupportedAlgorithm(*alg));
        }
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| NoteError::MalformedKey("Ed25519 public key must be 32 bytes"))?;
        let v = Self::new(name, &key)?;
        if v.key_id != claimed {
            return Err(NoteError::KeyIdMismatch {
                claimed,
                computed: v.key_id,
            });
        }
        Ok(v)
    }
}

impl fmt::Display for Ed25519Verifier {
    /// The verifier key string, safe to publish.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut material = Vec::with_capacity(33);
        material.push(ALG_ED25519);
        material.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            B64.encode(material)
        )
    }
}

impl Verifier for Ed25519Verifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.key_id
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(bytes) = <[u8; ED25519_SIG_LEN]>::try_from(sig) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&bytes);
        // Strict verification rejects non-canonical and small-order
        // components, so one message has exactly one valid signature encoding.
        self.key.verify_strict(msg, &sig).is_ok()
    }
}

/// Splits `name+hexid+base64` (the base64 may itself contain `+`).
fn split_key_string(s: &str) -> Result<(&str, u32, Vec<u8>), NoteError> {
    let (name, rest) = s
        .split_once('+')
        .ok_or(NoteError::MalformedKey("expected name+keyid+key"))?;
    let (id, material) = rest
        .split_once('+')
        .ok_or(NoteError::MalformedKey("expected name+keyid+key"))?;
    check_key_name(name)?;
    if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NoteError::MalformedKey("key ID must be 8 hex digits"));
    }
    let id = u32::from_str_radix(id, 16)
        .map_err(|_| NoteError::MalformedKey("key ID must be 8 hex digits"))?;
    let material = B64
        .decode(material)
        .map_err(|_| NoteError::MalformedKey("key material is not base64"))?;
    Ok((name, id, material))
}

/// The set of keys a reader trusts, looked up by (name, key ID).
#[derive(Default)]
pub struct VerifierSet {
    by_key: HashMap<(String, u32), Box<dyn Verifier + Send + Sync>>,
}

impl fmt::Debug for VerifierSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.by_key.keys().map(|(n, id)| format!("{n}+{id:08x}")))
            .finish()
    }
}

impl VerifierSet {
    /// An empty set (opens nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a trusted key. Two keys with the same name and ID are refused:
    /// the spec identifies a key by that pair.
    pub fn add<V: Verifier + Send + Sync + 'static>(&mut self, v: V) -> Result<(), NoteError> {
        let k = (v.name().to_owned(), v.key_id());
        if self.by_key.contains_key(&k) {
            return Err(NoteError::DuplicateVerifier {
                name: k.0,
                key_id: k.1,
            });
        }
        self.by_key.insert(k, Box::new(v));
        Ok(())
    }

    /// Builder form of [`VerifierSet::add`].
    pub fn with<V: Verifier + Send + Sync + 'static>(mut self, v: V) -> Result<Self, NoteError> {
        self.add(v)?;
        Ok(self)
    }

    /// Number of trusted keys.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    fn get(&self, name: &str, key_id: u32) -> Option<&(dyn Verifier + Send + Sync)> {
        self.by_key
            .get(&(name.to_owned(), key_id))
            .map(|b| b.as_ref())
    }
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name.
    pub name: String,
    /// Key ID.
    pub key_id: u32,
    /// The signature bytes, without the key ID.
    pub signature: Vec<u8>,
}

impl NoteSignature {
    fn to_line(&self) -> String {
        let mut blob = Vec::with_capacity(4 + self.signature.len());
        blob.extend_from_slice(&self.key_id.to_be_bytes());
        blob.extend_from_slice(&self.signature);
        format!("{SIG_PREFIX}{} {}\n", self.name, B64.encode(blob))
    }
}

/// A parsed but *unverified* note. Its text must not be acted on; use
/// [`open`] to get a [`VerifiedNote`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The signed text, final newline included.
    pub text: String,
    /// Every signature line, in order.
    pub signatures: Vec<NoteSignature>,
}

/// A note with at least one valid signature from a trusted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedNote {
    /// The signed text, final newline included.
    pub text: String,
    /// Signatures by trusted keys, each checked.
    pub verified: Vec<NoteSignature>,
    /// Signatures by keys not in the verifier set, not checked (witness
    /// cosignatures or rotated keys, for instance).
    pub unverified: Vec<NoteSignature>,
}

/// Checks the characters of a note or its text: valid UTF-8 is given by
/// `&str`; control characters other than newline are forbidden.
fn check_chars(s: &str) -> Result<(), NoteError> {
    match s
        .bytes()
        .enumerate()
        .find(|(_, b)| *b < 0x20 && *b != b'\n')
    {
        Some((offset, byte)) => Err(NoteError::ControlCharacter { byte, offset }),
        None => Ok(()),
    }
}

/// Signs `text` with every signer and returns the signed note.
///
/// `text` must be non-empty, end in a newline and contain no control
/// characters other than newline; the note is checked against
/// [`MAX_NOTE_LEN`] so that we never emit what we would refuse to read.
pub fn sign(text: &str, signers: &[&dyn Signer]) -> Result<String, NoteError> {
    if text.is_empty() || !text.ends_with('\n') {
        return Err(NoteError::BadText);
    }
    check_chars(text)?;
    if signers.is_empty() {
        return Err(NoteError::NoSignatures);
    }
    if signers.len() > MAX_SIGNATURES {
        return Err(NoteError::TooManySignatures {
            max: MAX_SIGNATURES,
        });
    }
    let mut out = String::with_capacity(text.len() + 1 + 100 * signers.len());
    out.push_str(text);
    out.push('\n');
    for s in signers {
        check_key_name(s.name())?;
        let sig = NoteSignature {
            name: s.name().to_owned(),
            key_id: s.key_id(),
            signature: s.sign(text.as_bytes())?,
        };
        out.push_str(&sig.to_line());
    }
    if out.len() > MAX_NOTE_LEN {
        return Err(NoteError::TooLarge {
            len: out.len(),
            max: MAX_NOTE_LEN,
        });
    }
    Ok(out)
}

impl Note {
    /// Parses a signed note's structure without verifying anything.
    pub fn parse(msg: &[u8]) -> Result<Self, NoteError> {
        if msg.len() > MAX_NOTE_LEN {
            return Err(NoteError::TooLarge {
                len: msg.len(),
                max: MAX_NOTE_LEN,
            });
        }
        let msg = std::str::from_utf8(msg).map_err(|_| NoteError::NotUtf8)?;
        check_chars(msg)?;
        // The text ends at the last blank line: signature lines are never
        // empty, so everything after it is the signature block.
        let split = msg.rfind("\n\n").ok_or(NoteError::MissingSeparator)?;
        let text = &msg[..split + 1];
        let block = &msg[split + 2..];
        if block.is_empty() {
            return Err(NoteError::NoSignatures);
        }
        let Some(block) = block.strip_suffix('\n') else {
            return Err(NoteError::MalformedSignatureLine {
                line: block.split('\n').count(),
                reason: "missing final newline",
            });
        };
        let mut signatures = Vec::new();
        for (i, line) in block.split('\n').enumerate() {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures {
                    max: MAX_SIGNATURES,
                });
            }
            signatures.push(parse_signature_line(line, i + 1)?);
        }
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }
}

fn parse_signature_line(line: &str, n: usize) -> Result<NoteSignature, NoteError> {
    let bad = |reason| NoteError::MalformedSignatureLine { line: n, reason };
    let rest = line
        .strip_prefix(SIG_PREFIX)
        .ok_or_else(|| bad("must start with an em dash and a space"))?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or_else(|| bad("expected key name, space, signature"))?;
    check_key_name(name).map_err(|_| bad("invalid key name"))?;
    if b64.contains(' ') {
        return Err(bad("unexpected space after signature"));
    }
    let blob = B64
        .decode(b64)
        .map_err(|_| bad("signature is not base64"))?;
    if blob.len() < 5 {
        return Err(bad("signature shorter than key ID plus one byte"));
    }
    let (id, sig) = blob.split_at(4);
    let key_id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
    Ok(NoteSignature {
        name: name.to_owned(),
        key_id,
        signature: sig.to_vec(),
    })
}

/// Parses and verifies a signed note against the trusted keys.
///
/// Signatures by unknown keys are ignored; a signature by a known key that
/// does not verify rejects the whole note; at least one known key must have
/// signed.
pub fn open(msg: &[u8], verifiers: &VerifierSet) -> Result<VerifiedNote, NoteError> {
    let note = Note::parse(msg)?;
    let mut verified = Vec::new();
    let mut unverified = Vec::new();
    for sig in note.signatures {
        match verifiers.get(&sig.name, sig.key_id) {
            None => unverified.push(sig),
            Some(v) => {
                if !v.verify(note.text.as_bytes(), &sig.signature) {
                    return Err(NoteError::InvalidSignature {
                        name: sig.name,
                        key_id: sig.key_id,
                    });
                }
                if !verified.contains(&sig) {
                    verified.push(sig);
                }
            }
        }
    }
    if verified.is_empty() {
        return Err(NoteError::NoKnownSignature);
    }
    Ok(VerifiedNote {
        text: note.text,
        verified,
        unverified,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn key_name_rules() {
        assert!(check_key_name("example.com/log").is_ok());
        for bad in ["", "a b", "a+b", "tab\there", "nbsp\u{00a0}x"] {
            assert!(check_key_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sign_refuses_bad_text() {
        let s = Ed25519Signer::from_seed("k", &[7; 32]).unwrap();
        assert!(matches!(sign("no newline", &[&s]), Err(NoteError::BadText)));
        assert!(matches!(sign("", &[&s]), Err(NoteError::BadText)));
        assert!(matches!(
            sign("bell\u{7}\n", &[&s]),
            Err(NoteError::ControlCharacter { byte: 7, .. })
        ));
        assert!(matches!(sign("ok\n", &[]), Err(NoteError::NoSignatures)));
    }

    #[test]
    fn debug_does_not_leak_the_private_key() {
        let s = Ed25519Signer::from_seed("k", &[7; 32]).unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("0707"), "{dbg}");
        assert!(!dbg.contains(&B64.encode([7u8; 32])));
    }
}
