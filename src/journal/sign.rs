//! Signed checkpoints: an ed25519 key signs each checkpoint's
//! `(journal id, seq, hash)` of the head it anchors, so whoever can rewrite
//! the files, the catalog and the manifests but cannot read the key is
//! still caught by `vigil audit verify --public-key`.
//!
//! Keys are PEM: the private key PKCS#8 (`BEGIN PRIVATE KEY`), the public
//! key SPKI (`BEGIN PUBLIC KEY`), as `vigil audit keygen` and
//! `openssl genpkey -algorithm ed25519` / `openssl pkey -pubout` write them.

use crate::core::journal_record::{Actor, Entry};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde_json::json;
use thiserror::Error;

use crate::core::journal_record::{GENESIS, Record};

/// The `alg` written beside each signature.
const ALGORITHM: &str = "ed25519";

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("cannot read the journal key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not an ed25519 private key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, as `vigil audit keygen` or `openssl genpkey -algorithm ed25519` write): {reason}"
    )]
    Private { path: PathBuf, reason: String },
    #[error(
        "{path} is not an ed25519 public key in SPKI PEM (`-----BEGIN PUBLIC KEY-----`, as `vigil audit keygen` or `openssl pkey -pubout` write): {reason}"
    )]
    Public { path: PathBuf, reason: String },
    #[error("{path} already exists: a key is never overwritten; remove it or choose another path")]
    Exists { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode the new key as PEM: {0}")]
    Encode(String),
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads `journal.signing_key_file`.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    SigningKey::from_pkcs8_pem(&read(path)?).map_err(|e| KeyError::Private {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Reads the public key given to `audit verify --public-key`.
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_public_key_pem(&read(path)?).map_err(|e| KeyError::Public {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Writes a new key pair: `private` with mode 0600 (created, never
/// overwritten), and `public`. Returns the public key's PEM.
pub fn keygen(private: &Path, public: &Path) -> Result<String, KeyError> {
    for path in [private, public] {
        if path.exists() {
            return Err(KeyError::Exists {
                path: path.to_owned(),
            });
        }
    }
    let key = SigningKey::generate(&mut rand_core::OsRng);
    // PKCS#8 v1 (the seed only): OpenSSL 3.0 refuses the v2 form that
    // `SigningKey::to_pkcs8_pem` writes (it adds the public key).
    let seed = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    let private_pem = seed
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    write_new(private, private_pem.as_bytes(), 0o600)?;
    write_new(public, public_pem.as_bytes(), 0o644)?;
    Ok(public_pem)
}

/// Creates `path` with `mode` from the first byte (no window where the
/// secret is readable by others).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let wrap = |source| KeyError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(wrap)?;
    file.write_all(bytes).map_err(wrap)?;
    file.sync_all().map_err(wrap)
}

/// The bytes signed for a checkpoint anchoring `(seq, hash)` of `journal`.
fn message(journal: &str, seq: u64, hash: &str) -> Vec<u8> {
    format!("vigil journal checkpoint v1\n{journal}\n{seq}\n{hash}").into_bytes()
}

/// The `(seq, hash)` a checkpoint's data anchors (`head`; the genesis
/// before any record).
fn anchored(data: &serde_json::Value) -> (u64, String) {
    let head = data.get("head");
    let seq = head.and_then(|h| h.get("seq")).and_then(|s| s.as_u64());
    let hash = head.and_then(|h| h.get("hash")).and_then(|h| h.as_str());
    (seq.unwrap_or(0), hash.unwrap_or(GENESIS).to_owned())
}

/// The `signature` object for a checkpoint's `data` (which holds `head`).
pub fn sign_checkpoint(
    key: &SigningKey,
    journal: &str,
    data: &serde_json::Value,
) -> serde_json::Value {
    let (seq, hash) = anchored(data);
    let signature = key.sign(&message(journal, seq, &hash));
    json!({
        "alg": ALGORITHM,
        "public_key": hex::encode(key.verifying_key().as_bytes()),
        "sig": hex::encode(signature.to_bytes()),
    })
}

/// Why a checkpoint record's signature does not hold under `key`, if it does not.
pub fn check_checkpoint(record: &Record, key: &VerifyingKey) -> Option<String> {
    let Some(signature) = record.data.get("signature").filter(|s| !s.is_null()) else {
        return Some(
            "the checkpoint carries no signature, but a public key was given: it was written without `journal.signing_key_file`, or forged".into(),
        );
    };
    let bytes = signature
        .get("sig")
        .and_then(|s| s.as_str())
        .and_then(|s| hex::decode(s).ok())
        .and_then(|b| <[u8; 64]>::try_from(b).ok());
    let Some(bytes) = bytes else {
        return Some("the checkpoint's signature is not 64 bytes of hex".into());
    };
    let (seq, hash) = anchored(&record.data);
    match key.verify(
        &message(&record.journal, seq, &hash),
        &Signature::from_bytes(&bytes),
    ) {
        Ok(()) => None,
        Err(_) => Some(format!(
            "the checkpoint's signature over (journal {}, seq {seq}, hash {}) does not verify with the given public key: the journal was rewritten or the checkpoint forged (or signed by another key)",
            record.journal,
            // The hash is the record's word, not necessarily hex: cut on a char.
            hash.get(..12).unwrap_or(&hash)
        )),
    }
}

/// The event the daemon writes when it starts without a signing key on a
/// journal whose newest checkpoint is signed.
pub const SIGNING_STOPPED: &str = "journal.signing_stopped";

/// Whether `record` is a checkpoint that carries a signature (valid or not).
pub fn is_signed(record: &Record) -> bool {
    record.data.get("signature").is_some_and(|s| !s.is_null())
}

/// The newest signed checkpoint in the journal under `dir`, as `(seq,
/// public key hex)`, when nothing since says signing stopped: no unsigned
/// checkpoint and no [`SIGNING_STOPPED`] after it. Reads segments newest
/// first and stops at the first checkpoint or stop record.
pub fn signed_head(dir: &Path) -> std::io::Result<Option<(u64, String)>> {
    for (_, path) in super::segment::list(dir)?.iter().rev() {
        let (lines, _) = super::segment::read_from(path, 0)?;
        let newest = lines
            .iter()
            .rev()
            .filter(|l| {
                l.text.contains("\"journal.checkpoint\"") || l.text.contains(SIGNING_STOPPED)
            })
            .filter_map(|l| serde_json::from_str::<Record>(&l.text).ok())
            .find(|r| r.event == "journal.checkpoint" || r.event == SIGNING_STOPPED);
        if let Some(record) = newest {
            let key = record
                .data
                .get("signature")
                .and_then(|s| s.get("public_key"))
                .and_then(|k| k.as_str());
            return Ok(match (record.event.as_str(), key) {
                ("journal.checkpoint", Some(key)) => Some((record.seq, key.to_owned())),
                _ => None,
            });
        }
    }
    Ok(None)
}

/// The record of a daemon start without the key on a signed journal
/// (logged as a warning too): `audit verify` then reports unsigned
/// checkpoints as a stop, not a forgery.
pub fn signing_stopped(last_signed: u64, public_key: &str) -> Entry {
    tracing::warn!(last_signed_checkpoint = last_signed, %public_key, "the journal's checkpoints were signed and `journal.signing_key_file` is not set: checkpoints from now on are unsigned; recorded as `journal.signing_stopped`");
    Entry::at(
        chrono::Utc::now(),
        SIGNING_STOPPED,
        Actor::daemon(),
        json!({
            "last_signed_checkpoint": last_signed,
            "public_key": public_key,
            "reason": "the daemon started without `journal.signing_key_file`",
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(journal: &str, data: serde_json::Value) -> Record {
        Record {
            v: 1,
            journal: journal.into(),
            seq: 8,
            ts: chrono::Utc::now(),
            event: "journal.checkpoint".into(),
            actor: crate::core::journal_record::Actor::daemon(),
            request_id: None,
            data,
            prev: "ab".repeat(32),
            hash: String::new(),
        }
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_any_change_or_other_key_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("k.pem"), dir.path().join("k.pub"));
        keygen(&private, &public).unwrap();
        let key = load_signing_key(&private).unwrap();
        let verifying = load_verifying_key(&public).unwrap();
        let mut data = json!({ "head": { "seq": 7, "hash": "cd".repeat(32) } });
        data["signature"] = sign_checkpoint(&key, "j1", &data);
        assert_eq!(
            check_checkpoint(&checkpoint("j1", data.clone()), &verifying),
            None
        );

        assert!(check_checkpoint(&checkpoint("j2", data.clone()), &verifying).is_some());
        let mut moved = data.clone();
        moved["head"]["seq"] = json!(6);
        assert!(check_checkpoint(&checkpoint("j1", moved), &verifying).is_some());
        let mut unsigned = data.clone();
        unsigned.as_object_mut().unwrap().remove("signature");
        let why = check_checkpoint(&checkpoint("j1", unsigned), &verifying).unwrap();
        assert!(why.contains("no signature"), "{why}");
        let other = SigningKey::generate(&mut rand_core::OsRng);
        assert!(check_checkpoint(&checkpoint("j1", data), &other.verifying_key()).is_some());
    }

    #[test]
    fn keygen_writes_the_private_key_0600_and_never_overwrites() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("k.pem"), dir.path().join("k.pub"));
        keygen(&private, &public).unwrap();
        let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            std::fs::read_to_string(&private)
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        assert!(matches!(
            keygen(&private, &dir.path().join("x")),
            Err(KeyError::Exists { .. })
        ));
        let err = load_verifying_key(&private).unwrap_err();
        assert!(matches!(err, KeyError::Public { .. }), "{err}");
    }

    /// A pair from `openssl genpkey -algorithm ed25519` and `openssl pkey
    /// -pubout` (OpenSSL 3.0): vigil reads both, and writes the same forms.
    const OPENSSL_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEICUmVZ8tCjp8Lb9dYZCXSShXO7QsskNhCyaBw4T2hWAc
-----END PRIVATE KEY-----
";
    const OPENSSL_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAZOhavRzye57YiEwBqfosXRKYcTMxoSjMSaLc7ap5hQE=
-----END PUBLIC KEY-----
";

    #[test]
    fn keys_interoperate_with_openssl() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("o.pem"), dir.path().join("o.pub"));
        std::fs::write(&private, OPENSSL_PRIVATE).unwrap();
        std::fs::write(&public, OPENSSL_PUBLIC).unwrap();
        let key = load_signing_key(&private).unwrap();
        assert_eq!(key.verifying_key(), load_verifying_key(&public).unwrap());

        // What keygen writes has the same shape: PKCS#8 v1 (48 bytes of
        // DER, the seed only, which OpenSSL 3.0 reads) and SPKI.
        let (mine, mine_pub) = (dir.path().join("m.pem"), dir.path().join("m.pub"));
        keygen(&mine, &mine_pub).unwrap();
        let text = std::fs::read_to_string(&mine).unwrap();
        assert_eq!(text.len(), OPENSSL_PRIVATE.len(), "{text}");
        assert_eq!(
            load_signing_key(&mine).unwrap().verifying_key(),
            load_verifying_key(&mine_pub).unwrap()
        );
    }
}
