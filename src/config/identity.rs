//! age identity files: reading them, and whether they can decrypt what a
//! repository's recipients were sent.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("cannot read identity file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no age identity (AGE-SECRET-KEY-…; `age-keygen -o FILE` makes one)")]
    Empty { path: PathBuf },
}

/// The x25519 identities in an age key file (`#` comments and blank lines
/// allowed, as `age-keygen` writes them).
pub fn read_identities(path: &Path) -> Result<Vec<age::x25519::Identity>, IdentityError> {
    let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    let identities = parse_identities(&text);
    if identities.is_empty() {
        return Err(IdentityError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(identities)
}

pub fn parse_identities(text: &str) -> Vec<age::x25519::Identity> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("AGE-SECRET-KEY-"))
        .filter_map(|l| age::x25519::Identity::from_str(l).ok())
        .collect()
}

/// The public keys (`age1…`) of `identities`: what they can decrypt.
pub fn public_keys(identities: &[age::x25519::Identity]) -> Vec<String> {
    identities
        .iter()
        .map(|i| i.to_public().to_string())
        .collect()
}

/// Whether an identity holding `keys` decrypts a file sent to `recipients`:
/// age needs one of its keys among the recipients.
pub fn can_decrypt(keys: &[String], recipients: &[String]) -> bool {
    recipients
        .iter()
        .any(|r| keys.iter().any(|k| k == r.trim()))
}

/// Load-time check of `encryption.identity_file` against the configured
/// recipients; the message names the file, the keys it holds and the
/// recipients, and says what to do.
pub fn check_identity_file(path: &Path, recipients: &[String]) -> Result<(), String> {
    // No recipients is its own problem (validation names it).
    if recipients.is_empty() {
        return Ok(());
    }
    let keys = public_keys(&read_identities(path).map_err(|e| e.to_string())?);
    if can_decrypt(&keys, recipients) {
        return Ok(());
    }
    Err(format!(
        "{} holds the key for {} but the repository encrypts to {}: restores would fail (\"No matching keys found\"); point `identity_file` at the secret key of one of the recipients, or add its public key (`age-keygen -y {}`) to `recipients`",
        path.display(),
        keys.join(", "),
        recipients.join(", "),
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use age::secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn a_key_decrypts_only_what_its_public_key_received() {
        let mine = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let text = format!(
            "# created: now\n# public key: x\n{}\n",
            mine.to_string().expose_secret()
        );
        let keys = public_keys(&parse_identities(&text));
        assert_eq!(keys, [mine.to_public().to_string()]);
        let theirs = other.to_public().to_string();
        assert!(can_decrypt(&keys, &[theirs.clone(), keys[0].clone()]));
        assert!(!can_decrypt(&keys, std::slice::from_ref(&theirs)));
        assert!(!can_decrypt(&keys, &[]));
    }

    #[test]
    fn mismatch_names_file_key_and_recipients() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("age.key");
        let mine = age::x25519::Identity::generate();
        std::fs::write(&path, format!("{}\n", mine.to_string().expose_secret())).unwrap();
        let theirs = age::x25519::Identity::generate().to_public().to_string();
        let err = check_identity_file(&path, std::slice::from_ref(&theirs)).unwrap_err();
        let public = mine.to_public().to_string();
        assert!(
            err.contains(&path.display().to_string())
                && err.contains(&public)
                && err.contains(&theirs),
            "{err}"
        );
        assert!(!err.contains("AGE-SECRET-KEY"), "never the secret: {err}");
        assert!(check_identity_file(&path, &[public]).is_ok());

        std::fs::write(&path, "# no key here\n").unwrap();
        let err = check_identity_file(&path, &[theirs]).unwrap_err();
        assert!(err.contains("holds no age identity"), "{err}");
    }
}
