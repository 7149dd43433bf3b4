//! The credential vault: customer secrets (client secrets, private keys, refresh tokens) are
//! sealed with AES-256-GCM under the master key before they reach the database.
//!
//! A sealed value is text: `v1:<key id>:<nonce, base64>:<ciphertext and tag, base64>`. The key
//! id names the master key that sealed it, so the master key can be rotated: open with any
//! known key, seal with the current one, and re-seal (`rewrap`) rows that name an old key. The
//! associated data binds a ciphertext to its row (tenant, kind, row id), so a sealed secret
//! copied into another tenant's row does not open.

use std::collections::BTreeMap;

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox};

const VERSION: &str = "v1";

/// One master key: its public id and its 32 secret bytes.
pub struct MasterKeyMaterial {
    /// Public id (safe to log and store), e.g. 8 hex digits of a hash of the key.
    pub id: String,
    /// The key.
    pub bytes: SecretBox<[u8; 32]>,
}

impl std::fmt::Debug for MasterKeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKeyMaterial").field("id", &self.id).finish_non_exhaustive()
    }
}

/// What a sealed value is bound to. Opening with any other binding fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aad {
    /// The tenant the secret belongs to.
    pub tenant_id: String,
    /// What it is: `client_secret`, `private_key`, `refresh_token`.
    pub kind: String,
    /// The row that holds it.
    pub row_id: String,
}

impl Aad {
    fn bytes(&self) -> Vec<u8> {
        format!("sspr-fleet/{VERSION}|{}|{}|{}", self.tenant_id, self.kind, self.row_id)
            .into_bytes()
    }
}

/// Why a value could not be sealed or opened. Never contains the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// The text is not a sealed value of a known version.
    #[error("not a sealed value")]
    Malformed,
    /// No known master key has this id.
    #[error("sealed with master key {0}, which is not configured")]
    UnknownKey(String),
    /// Authentication failed: wrong key, wrong binding, or tampered data.
    #[error("the sealed value does not open with its key and binding")]
    Unauthentic,
}

/// Seals and opens secrets. Holds the current master key and any previous ones.
pub struct Vault {
    current: String,
    keys: BTreeMap<String, Aes256Gcm>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("current", &self.current)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Vault {
    /// A vault sealing with `current` and also opening values sealed with `previous` keys.
    pub fn new(current: &MasterKeyMaterial, previous: &[MasterKeyMaterial]) -> Self {
        let mut keys = BTreeMap::new();
        for k in previous.iter().chain(std::iter::once(current)) {
            keys.insert(k.id.clone(), Aes256Gcm::new(k.bytes.expose_secret().into()));
        }
        Self { current: current.id.clone(), keys }
    }

    /// The id of the key new values are sealed with.
    pub fn current_key_id(&self) -> &str {
        &self.current
    }

    /// Seals `secret` for the row described by `aad`.
    pub fn seal(&self, secret: &[u8], aad: &Aad) -> Result<String, VaultError> {
        let cipher = self
            .keys
            .get(&self.current)
            .ok_or_else(|| VaultError::UnknownKey(self.current.clone()))?;
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: secret, aad: &aad.bytes() })
            .map_err(|_| VaultError::Unauthentic)?;
        Ok(format!(
            "{VERSION}:{}:{}:{}",
            self.current,
            STANDARD_NO_PAD.encode(nonce),
            STANDARD_NO_PAD.encode(sealed)
        ))
    }

    /// The id of the key a sealed value names.
    pub fn key_id_of(sealed: &str) -> Result<&str, VaultError> {
        let mut parts = sealed.splitn(4, ':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(VERSION), Some(id), Some(_), Some(_)) if !id.is_empty() => Ok(id),
            _ => Err(VaultError::Malformed),
        }
    }

    /// Opens a sealed value bound to `aad`.
    pub fn open(&self, sealed: &str, aad: &Aad) -> Result<SecretBox<Vec<u8>>, VaultError> {
        let mut parts = sealed.splitn(4, ':');
        let (Some(VERSION), Some(id), Some(nonce), Some(body)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VaultError::Malformed);
        };
        let cipher = self.keys.get(id).ok_or_else(|| VaultError::UnknownKey(id.to_owned()))?;
        let nonce: [u8; 12] = STANDARD_NO_PAD
            .decode(nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(VaultError::Malformed)?;
        let body = STANDARD_NO_PAD.decode(body).map_err(|_| VaultError::Malformed)?;
        let plain = cipher
            .decrypt(&Nonce::from(nonce), Payload { msg: &body, aad: &aad.bytes() })
            .map_err(|_| VaultError::Unauthentic)?;
        Ok(SecretBox::new(Box::new(plain)))
    }

    /// Whether a sealed value should be re-sealed with the current key.
    pub fn needs_rewrap(&self, sealed: &str) -> bool {
        Self::key_id_of(sealed).is_ok_and(|id| id != self.current)
    }

    /// Opens a value sealed with any known key and seals it again with the current one.
    pub fn rewrap(&self, sealed: &str, aad: &Aad) -> Result<String, VaultError> {
        let secret = self.open(sealed, aad)?;
        self.seal(secret.expose_secret(), aad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> MasterKeyMaterial {
        MasterKeyMaterial { id: id.into(), bytes: SecretBox::new(Box::new([byte; 32])) }
    }

    fn aad(tenant: &str) -> Aad {
        Aad { tenant_id: tenant.into(), kind: "client_secret".into(), row_id: "cred_1".into() }
    }

    const SECRET: &[u8] = b"Qx8~super.secret-value_123";

    #[test]
    fn sealed_values_open_with_their_binding_only() {
        let vault = Vault::new(&key("k1", 1), &[]);
        let sealed = vault.seal(SECRET, &aad("ten_a")).unwrap();
        assert!(sealed.starts_with("v1:k1:"));
        assert!(!sealed.contains("super.secret"));
        assert_eq!(vault.open(&sealed, &aad("ten_a")).unwrap().expose_secret().as_slice(), SECRET);
        // Moved to another tenant's row, it does not open.
        assert_eq!(vault.open(&sealed, &aad("ten_b")).unwrap_err(), VaultError::Unauthentic);
        let other_kind = Aad { kind: "private_key".into(), ..aad("ten_a") };
        assert_eq!(vault.open(&sealed, &other_kind).unwrap_err(), VaultError::Unauthentic);
    }

    #[test]
    fn two_seals_of_the_same_secret_differ() {
        let vault = Vault::new(&key("k1", 1), &[]);
        assert_ne!(vault.seal(SECRET, &aad("t")).unwrap(), vault.seal(SECRET, &aad("t")).unwrap());
    }

    #[test]
    fn tampering_and_garbage_are_refused() {
        let vault = Vault::new(&key("k1", 1), &[]);
        let sealed = vault.seal(SECRET, &aad("t")).unwrap();
        let mut bytes = sealed.clone().into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(vault.open(&tampered, &aad("t")).unwrap_err(), VaultError::Unauthentic);
        for garbage in ["", "v1:k1", "v2:k1:AAAA:BBBB", "v1:k1:not-base64!:x", "plain text"] {
            assert!(vault.open(garbage, &aad("t")).is_err(), "{garbage:?}");
        }
        let wrong_key = Vault::new(&key("k1", 2), &[]);
        assert_eq!(wrong_key.open(&sealed, &aad("t")).unwrap_err(), VaultError::Unauthentic);
    }

    #[test]
    fn rotation_opens_old_values_and_rewraps_them_under_the_new_key() {
        let old = Vault::new(&key("k1", 1), &[]);
        let sealed = old.seal(SECRET, &aad("t")).unwrap();
        let rotated = Vault::new(&key("k2", 2), &[key("k1", 1)]);
        assert!(rotated.needs_rewrap(&sealed));
        assert_eq!(rotated.open(&sealed, &aad("t")).unwrap().expose_secret().as_slice(), SECRET);
        let rewrapped = rotated.rewrap(&sealed, &aad("t")).unwrap();
        assert!(rewrapped.starts_with("v1:k2:"));
        assert!(!rotated.needs_rewrap(&rewrapped));
        // Once the old key is gone, old values name it in the error; new ones still open.
        let only_new = Vault::new(&key("k2", 2), &[]);
        assert_eq!(
            only_new.open(&sealed, &aad("t")).unwrap_err(),
            VaultError::UnknownKey("k1".into())
        );
        assert_eq!(
            only_new.open(&rewrapped, &aad("t")).unwrap().expose_secret().as_slice(),
            SECRET
        );
    }

    #[test]
    fn debug_output_names_keys_but_never_shows_them() {
        let vault = Vault::new(&key("k2", 7), &[key("k1", 9)]);
        let text = format!("{vault:?} {:?}", key("k3", 5));
        assert!(text.contains("k1") && text.contains("k2") && text.contains("k3"));
        assert!(!text.contains("7, 7") && !text.contains("9, 9") && !text.contains("5, 5"));
    }
}
