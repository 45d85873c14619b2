#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Signed notes and checkpoints: the published Go `sumdb/note` vector (so our
//! output interoperates with Go witnesses and verifiers), round trips, and
//! tampering.

use keycard_audit::checkpoint::{Checkpoint, CheckpointError};
use keycard_audit::merkle::{leaf_hash, verify_consistency, verify_inclusion};
use keycard_audit::note::{
    self, key_id, Ed25519Signer, Ed25519Verifier, Note, NoteError, Signer, VerifierSet,
    MAX_NOTE_LEN, MAX_SIGNATURES,
};
use keycard_audit::{LeafStore, Log, MemoryStore};

// The example of golang.org/x/mod/sumdb/note (package doc and note_test.go).
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

fn peter_note() -> String {
    format!("{TEXT}\n{PETER_SIG}")
}

fn trust(keys: &[&str]) -> VerifierSet {
    let mut set = VerifierSet::new();
    for k in keys {
        set.add(k.parse::<Ed25519Verifier>().unwrap()).unwrap();
    }
    set
}

#[test]
fn go_vector_keys_round_trip() {
    let signer = Ed25519Signer::from_private_key(PETER_SKEY).unwrap();
    assert_eq!(signer.name(), "PeterNeumann");
    assert_eq!(signer.key_id(), 0xc74f20a3);
    assert_eq!(signer.to_private_key(), PETER_SKEY);
    assert_eq!(signer.verifier().to_string(), PETER_VKEY);

    let v: Ed25519Verifier = PETER_VKEY.parse().unwrap();
    assert_eq!(v, signer.verifier());
    assert_eq!(key_id("PeterNeumann", 0x01, &v.public_key()), 0xc74f20a3);

    // Go's example derives EnochRoot's key from an all-zero seed.
    let enoch = Ed25519Signer::from_seed("EnochRoot", &[0; 32]).unwrap();
    assert_eq!(enoch.verifier().to_string(), ENOCH_VKEY);
}

#[test]
fn go_vector_signature_is_reproduced_byte_for_byte() {
    // Ed25519 is deterministic, so matching Go's bytes proves the format.
    let peter = Ed25519Signer::from_private_key(PETER_SKEY).unwrap();
    let enoch = Ed25519Signer::from_seed("EnochRoot", &[0; 32]).unwrap();
    assert_eq!(note::sign(TEXT, &[&peter]).unwrap(), peter_note());
    assert_eq!(
        note::sign(TEXT, &[&peter, &enoch]).unwrap(),
        format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}")
    );
}

#[test]
fn go_vector_opens() {
    let opened = note::open(peter_note().as_bytes(), &trust(&[PETER_VKEY])).unwrap();
    assert_eq!(opened.text, TEXT);
    assert_eq!(opened.verified.len(), 1);
    assert_eq!(opened.verified[0].key_id, 0xc74f20a3);
    assert!(opened.unverified.is_empty());

    // Doubly signed: trusting only Enoch verifies Enoch's and leaves Peter's
    // unchecked rather than failing.
    let both = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    let opened = note::open(both.as_bytes(), &trust(&[ENOCH_VKEY])).unwrap();
    assert_eq!(opened.verified[0].name, "EnochRoot");
    assert_eq!(opened.unverified[0].name, "PeterNeumann");
    let opened = note::open(both.as_bytes(), &trust(&[ENOCH_VKEY, PETER_VKEY])).unwrap();
    assert_eq!(opened.verified.len(), 2);
}

#[test]
fn edited_text_is_rejected() {
    let tampered = peter_note().replace("cryptography", "cryptographY");
    assert!(matches!(
        note::open(tampered.as_bytes(), &trust(&[PETER_VKEY])),
        Err(NoteError::InvalidSignature {
            key_id: 0xc74f20a3,
            ..
        })
    ));
    // An extra line smuggled into the text.
    let tampered = format!("{TEXT}and one more line\n\n{PETER_SIG}");
    assert!(matches!(
        note::open(tampered.as_bytes(), &trust(&[PETER_VKEY])),
        Err(NoteError::InvalidSignature { .. })
    ));
}

#[test]
fn unknown_or_wrong_keys_do_not_verify() {
    // Only Enoch trusted, only Peter signed: nothing known signed it.
    assert!(matches!(
        note::open(peter_note().as_bytes(), &trust(&[ENOCH_VKEY])),
        Err(NoteError::NoKnownSignature)
    ));
    // Same name, different key (hence different ID): ignored, not trusted.
    let impostor = Ed25519Signer::from_seed("PeterNeumann", &[42; 32]).unwrap();
    let forged = note::sign(TEXT, &[&impostor]).unwrap();
    assert!(matches!(
        note::open(forged.as_bytes(), &trust(&[PETER_VKEY])),
        Err(NoteError::NoKnownSignature)
    ));
    // An impostor claiming Peter's name *and* key ID: the key check fails.
    let sig = impostor.sign(TEXT.as_bytes()).unwrap();
    let mut blob = 0xc74f20a3u32.to_be_bytes().to_vec();
    blob.extend_from_slice(&sig);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
    let forged = format!("{TEXT}\n\u{2014} PeterNeumann {b64}\n");
    assert!(matches!(
        note::open(forged.as_bytes(), &trust(&[PETER_VKEY])),
        Err(NoteError::InvalidSignature { .. })
    ));
    // No verifiers at all.
    assert!(matches!(
        note::open(peter_note().as_bytes(), &VerifierSet::new()),
        Err(NoteError::NoKnownSignature)
    ));
}

#[test]
fn truncated_or_malformed_signatures_are_rejected() {
    let full = peter_note();
    let v = trust(&[PETER_VKEY]);
    // Signature truncated to 63 bytes, re-encoded as valid base64: parses,
    // then fails verification as a known key's bad signature.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let blob = PETER_SIG.trim_end().rsplit(' ').next().unwrap();
    let mut bytes = b64.decode(blob).unwrap();
    bytes.pop();
    let short = full.replace(blob, &b64.encode(&bytes));
    assert!(matches!(
        note::open(short.as_bytes(), &v),
        Err(NoteError::InvalidSignature { .. })
    ));
    // Base64 cut mid-quantum.
    let cut = full.replace("JnAM=\n", "\n");
    assert!(matches!(
        note::open(cut.as_bytes(), &v),
        Err(NoteError::MalformedSignatureLine { .. })
    ));
    // Final newline cut.
    assert!(matches!(
        note::open(&full.as_bytes()[..full.len() - 1], &v),
        Err(NoteError::MalformedSignatureLine { .. })
    ));
    // Only a key ID, no signature.
    let id_only = format!("{TEXT}\n\u{2014} PeterNeumann x08go/w==\n");
    assert!(matches!(
        note::open(id_only.as_bytes(), &v),
        Err(NoteError::MalformedSignatureLine { .. })
    ));
    // Hyphen instead of em dash, missing blank line, no signatures at all.
    let hyphen = full.replace('\u{2014}', "-");
    assert!(matches!(
        note::open(hyphen.as_bytes(), &v),
        Err(NoteError::MalformedSignatureLine { .. })
    ));
    let no_blank = format!("{TEXT}{PETER_SIG}");
    assert!(note::open(no_blank.as_bytes(), &v).is_err());
    assert!(matches!(
        note::open(format!("{TEXT}\n").as_bytes(), &v),
        Err(NoteError::NoSignatures)
    ));
    // Control characters and invalid UTF-8 anywhere.
    let cr = full.replace("problem,\n", "problem,\r\n");
    assert!(matches!(
        note::open(cr.as_bytes(), &v),
        Err(NoteError::ControlCharacter { byte: b'\r', .. })
    ));
    let mut bad_utf8 = full.clone().into_bytes();
    bad_utf8[3] = 0xff;
    assert!(matches!(note::open(&bad_utf8, &v), Err(NoteError::NotUtf8)));
}

#[test]
fn limits_are_enforced_before_verification() {
    let v = trust(&[PETER_VKEY]);
    let huge = format!("{}\n\n{PETER_SIG}", "a".repeat(MAX_NOTE_LEN));
    assert!(matches!(
        note::open(huge.as_bytes(), &v),
        Err(NoteError::TooLarge { .. })
    ));
    let many = format!("{TEXT}\n{}", PETER_SIG.repeat(MAX_SIGNATURES + 1));
    assert!(matches!(
        Note::parse(many.as_bytes()),
        Err(NoteError::TooManySignatures { .. })
    ));
    // At the limit is fine (and the spec's minimum of 16 is covered).
    let ok = format!("{TEXT}\n{}", PETER_SIG.repeat(MAX_SIGNATURES));
    assert_eq!(
        Note::parse(ok.as_bytes()).unwrap().signatures.len(),
        MAX_SIGNATURES
    );
    const { assert!(MAX_SIGNATURES >= 16) };
}

#[test]
fn key_strings_reject_mangling() {
    // Every proper substring of the verifier key must fail to parse.
    let b = PETER_VKEY;
    for i in 0..b.len() {
        for j in i + 1..=b.len() {
            if (i, j) != (0, b.len()) && b.is_char_boundary(i) && b.is_char_boundary(j) {
                assert!(
                    b[i..j].parse::<Ed25519Verifier>().is_err(),
                    "{:?}",
                    &b[i..j]
                );
            }
        }
    }
    // Wrong key ID, wrong algorithm byte, renamed key.
    assert!(matches!(
        PETER_VKEY
            .replace("c74f20a3", "c74f20a4")
            .parse::<Ed25519Verifier>(),
        Err(NoteError::KeyIdMismatch { .. })
    ));
    assert!(matches!(
        PETER_VKEY
            .replace("+ARpc", "+AhpC")
            .parse::<Ed25519Verifier>(),
        Err(NoteError::UnsupportedAlgorithm(0x02))
    ));
    assert!(matches!(
        PETER_VKEY
            .replace("PeterNeumann", "PeterNeuman")
            .parse::<Ed25519Verifier>(),
        Err(NoteError::KeyIdMismatch { .. })
    ));
    assert!(Ed25519Signer::from_private_key(&PETER_SKEY.replace("c74f20a3", "00000000")).is_err());
    assert!(Ed25519Signer::from_private_key(PETER_VKEY).is_err());
    // A small-order public key (the identity point) is refused.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert!(Ed25519Verifier::new("weak", &identity).is_err());
    // Duplicate (name, id) in a verifier set.
    let mut set = trust(&[PETER_VKEY]);
    assert!(matches!(
        set.add(PETER_VKEY.parse::<Ed25519Verifier>().unwrap()),
        Err(NoteError::DuplicateVerifier { .. })
    ));
}

#[test]
fn generated_keys_round_trip_through_strings() {
    let s = Ed25519Signer::generate("keycard.example/decisions").unwrap();
    let s2 = Ed25519Signer::from_private_key(&s.to_private_key()).unwrap();
    assert_eq!(s.verifier(), s2.verifier());
    let v: Ed25519Verifier = s.verifier().to_string().parse().unwrap();
    let msg = note::sign("hello\n\nworld\n", &[&s2]).unwrap();
    let opened = note::open(msg.as_bytes(), &VerifierSet::new().with(v).unwrap()).unwrap();
    // Blank lines inside the text survive: the last blank line separates.
    assert_eq!(opened.text, "hello\n\nworld\n");
    assert!(Ed25519Signer::generate("bad name").is_err());
}

#[test]
fn checkpoint_round_trip_and_tamper() {
    let signer = Ed25519Signer::from_seed("keycard.example/decisions", &[3; 32]).unwrap();
    let trusted = VerifierSet::new().with(signer.verifier()).unwrap();
    let mut cp = Checkpoint::new("keycard.example/decisions", 42, leaf_hash(b"root"));
    cp.extensions.push("Timestamp: 1700000000".to_owned());
    let signed = cp.sign(&[&signer]).unwrap();
    let (got, _) =
        Checkpoint::open(signed.as_bytes(), "keycard.example/decisions", &trusted).unwrap();
    assert_eq!(got, cp);

    // Another log's name.
    assert!(matches!(
        Checkpoint::open(signed.as_bytes(), "keycard.example/other", &trusted),
        Err(CheckpointError::OriginMismatch { .. })
    ));
    // Size changed in the signed text.
    let tampered = signed.replacen("\n42\n", "\n43\n", 1);
    assert!(matches!(
        Checkpoint::open(tampered.as_bytes(), "keycard.example/decisions", &trusted),
        Err(CheckpointError::Note(NoteError::InvalidSignature { .. }))
    ));
    // A properly signed note whose body is not a checkpoint.
    let not_cp = note::sign("keycard.example/decisions\n042\nAAAA\n", &[&signer]).unwrap();
    assert!(matches!(
        Checkpoint::open(not_cp.as_bytes(), "keycard.example/decisions", &trusted),
        Err(CheckpointError::BadSize(_))
    ));
}

#[test]
fn log_appends_proves_and_signs() {
    let origin = "keycard.example/decisions";
    let signer = Ed25519Signer::from_seed(origin, &[5; 32]).unwrap();
    let trusted = VerifierSet::new().with(signer.verifier()).unwrap();
    let mut log = Log::open(origin, MemoryStore::new()).unwrap();

    let first = log.sign_checkpoint(&signer).unwrap();
    let (cp0, _) = Checkpoint::open(first.as_bytes(), origin, &trusted).unwrap();
    assert_eq!(cp0.size, 0);

    for i in 0..10u32 {
        assert_eq!(
            log.append(format!("decision {i}").as_bytes()).unwrap(),
            u64::from(i)
        );
    }
    let batch: Vec<Vec<u8>> = (10..25u32)
        .map(|i| format!("decision {i}").into_bytes())
        .collect();
    assert_eq!(
        log.append_batch(batch.iter().map(Vec::as_slice)).unwrap(),
        10
    );
    let mid = log.sign_checkpoint(&signer).unwrap();
    log.append(b"decision 25").unwrap();
    let last = log.sign_checkpoint(&signer).unwrap();

    let (cp1, _) = Checkpoint::open(mid.as_bytes(), origin, &trusted).unwrap();
    let (cp2, _) = Checkpoint::open(last.as_bytes(), origin, &trusted).unwrap();
    assert_eq!((cp1.size, cp2.size), (25, 26));

    // The auditor's checks: inclusion against the old checkpoint, and the new
    // checkpoint extends the old one.
    let leaf = leaf_hash(b"decision 7");
    let proof = log.inclusion_proof(7, cp1.size).unwrap();
    verify_inclusion(&leaf, 7, cp1.size, &proof, &cp1.root).unwrap();
    let proof = log.consistency_proof(cp1.size, cp2.size).unwrap();
    verify_consistency(cp1.size, cp2.size, &cp1.root, &cp2.root, &proof).unwrap();

    // Reopening from the store rebuilds the same tree.
    let store = log.store().clone();
    assert_eq!(store.size().unwrap(), 26);
    let reopened = Log::open(origin, store).unwrap();
    assert_eq!(reopened.root(), log.root());
    assert_eq!(reopened.root_at(25).unwrap(), cp1.root);
}

/// A store that fails on demand, to check that a failed write leaves the
/// log unchanged.
struct FlakyStore {
    inner: MemoryStore,
    fail: bool,
}

#[derive(Debug)]
struct Down;

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("store is down")
    }
}

impl std::error::Error for Down {}

impl LeafStore for FlakyStore {
    type Error = Down;
    fn append(&mut self, leaves: &[[u8; 32]]) -> Result<(), Down> {
        if self.fail {
            return Err(Down);
        }
        self.inner.append(leaves).map_err(|_| Down)
    }
    fn read(&self, start: u64, end: u64) -> Result<Vec<[u8; 32]>, Down> {
        self.inner.read(start, end).map_err(|_| Down)
    }
    fn size(&self) -> Result<u64, Down> {
        self.inner.size().map_err(|_| Down)
    }
}

#[test]
fn failed_store_write_leaves_the_log_unchanged() {
    let mut inner = MemoryStore::new();
    inner.append(&[leaf_hash(b"a")]).unwrap();
    let mut log = Log::open("o", FlakyStore { inner, fail: true }).unwrap();
    let root = log.root();
    let err = log.append(b"b").unwrap_err();
    assert!(err.to_string().contains("store is down"), "{err}");
    assert!(log.append_batch([b"c".as_slice()]).is_err());
    assert_eq!(log.size(), 1);
    assert_eq!(log.root(), root);
    assert_eq!(log.store().inner.size().unwrap(), 1);
}
