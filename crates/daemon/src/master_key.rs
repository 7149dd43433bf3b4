//! The master key that encrypts customer secrets at rest: where it comes from, and generating
//! one on first start.

use std::{io::Write, path::Path};

use base64::{Engine, engine::general_purpose::STANDARD};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox};
use sha2::{Digest, Sha256};

/// The file name of a generated key inside the data directory.
pub const GENERATED_FILE: &str = "master.key";

/// 32 secret bytes and a public id derived from them (so each encrypted row can name the key
/// that sealed it, and rotation can find rows still sealed with an old key).
pub struct MasterKey {
    bytes: SecretBox<[u8; 32]>,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Where the key in use came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `SSPR_FLEET_MASTER_KEY` or `master_key`.
    Setting,
    /// `master_key_file`.
    File(String),
    /// A key generated earlier and found in the data directory.
    DataDir(String),
    /// A key generated now and written to the data directory.
    Generated(String),
}

impl MasterKey {
    /// Decodes base64 of exactly 32 bytes. The error never contains the input.
    pub fn decode(text: &str) -> Result<Self, String> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| {
            "expected base64 of 32 bytes (e.g. `openssl rand -base64 32`)".to_owned()
        })?;
        let bytes: [u8; 32] =
            bytes.try_into().map_err(|b: Vec<u8>| format!("expected 32 bytes, got {}", b.len()))?;
        let id = hex::encode(
            &Sha256::digest([b"sspr-fleet master key id:".as_slice(), &bytes].concat())[..4],
        );
        Ok(Self { bytes: SecretBox::new(Box::new(bytes)), id })
    }

    /// Public id of the key: 8 hex digits of a hash, safe to log and store.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key material.
    pub fn expose(&self) -> &[u8; 32] {
        self.bytes.expose_secret()
    }

    /// Resolves the key from the settings, or from the data directory, or generates one there.
    pub fn resolve(
        setting: Option<&secrecy::SecretString>,
        file: Option<&Path>,
        data_dir: &Path,
    ) -> Result<(Self, KeySource), String> {
        if let Some(value) = setting {
            return Ok((Self::decode(value.expose_secret())?, KeySource::Setting));
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read master_key_file {}: {e}", path.display()))?;
            let key = Self::decode(&text)
                .map_err(|e| format!("master_key_file {}: {e}", path.display()))?;
            return Ok((key, KeySource::File(path.display().to_string())));
        }
        let path = data_dir.join(GENERATED_FILE);
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let key = Self::decode(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            return Ok((key, KeySource::DataDir(path.display().to_string())));
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let text = STANDARD.encode(bytes);
        write_private(&path, &text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let key = Self::decode(&text)?;
        Ok((key, KeySource::Generated(path.display().to_string())))
    }
}

/// Writes a file only its owner can read, failing if it already exists.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_accepts_32_bytes_only_and_never_echoes_input() {
        let good = STANDARD.encode([7u8; 32]);
        assert!(MasterKey::decode(&good).is_ok());
        let short = STANDARD.encode([7u8; 16]);
        let err = MasterKey::decode(&short).unwrap_err();
        assert!(err.contains("got 16"), "{err}");
        assert!(!err.contains(&short));
        let err = MasterKey::decode("not base64 !!").unwrap_err();
        assert!(!err.contains("!!"));
    }

    #[test]
    fn a_generated_key_is_stored_private_and_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let (first, source) = MasterKey::resolve(None, None, dir.path()).unwrap();
        assert!(matches!(source, KeySource::Generated(_)));
        let (again, source) = MasterKey::resolve(None, None, dir.path()).unwrap();
        assert!(matches!(source, KeySource::DataDir(_)));
        assert_eq!(first.expose(), again.expose());
        assert_eq!(first.id(), again.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                std::fs::metadata(dir.path().join(GENERATED_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn debug_output_hides_the_key() {
        let key = MasterKey::decode(&STANDARD.encode([9u8; 32])).unwrap();
        let text = format!("{key:?}");
        assert!(text.contains(key.id()));
        assert!(!text.contains("9, 9"));
    }
}
