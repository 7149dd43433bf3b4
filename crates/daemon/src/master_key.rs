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

/// The file a key came from, when it came from a file.
pub fn key_file(source: &KeySource) -> Option<&Path> {
    match source {
        KeySource::File(p) | KeySource::DataDir(p) | KeySource::Generated(p) => Some(Path::new(p)),
        KeySource::Setting => None,
    }
}

/// The file a rotation writes the new key to before it re-seals anything.
pub fn next_file(key_file: &Path) -> std::path::PathBuf {
    let mut name = key_file.as_os_str().to_owned();
    name.push(".next");
    name.into()
}

fn retired_file(key_file: &Path, id: &str) -> std::path::PathBuf {
    let mut name = key_file.as_os_str().to_owned();
    name.push(format!(".retired.{id}"));
    name.into()
}

/// Keys kept beside the key file: `<file>.next` (a rotation that has not finished) and
/// `<file>.retired.<id>` (keys rotated out). They are loaded as previous keys, so a value sealed
/// with any of them still opens, whatever point a rotation stopped at.
pub fn companions(key_file: &Path) -> Result<Vec<MasterKey>, String> {
    let Some(dir) =
        key_file.parent().map(|d| if d.as_os_str().is_empty() { Path::new(".") } else { d })
    else {
        return Ok(Vec::new());
    };
    let Some(base) = key_file.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(Vec::new());
    };
    let mut keys = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(_) => return Ok(keys),
    };
    let mut paths: Vec<std::path::PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().map(|n| n.to_string_lossy().into_owned()).is_some_and(|n| {
                n == format!("{base}.next") || n.starts_with(&format!("{base}.retired."))
            })
        })
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        keys.push(MasterKey::decode(&text).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    Ok(keys)
}

/// First half of a master-key rotation: the new key, written to `<file>.next` (or read from it
/// when an earlier rotation stopped after writing it).
pub fn begin_rotation(key_file: &Path) -> Result<MasterKey, String> {
    let next = next_file(key_file);
    if next.exists() {
        let text = std::fs::read_to_string(&next)
            .map_err(|e| format!("cannot read {}: {e}", next.display()))?;
        return MasterKey::decode(&text).map_err(|e| format!("{}: {e}", next.display()));
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let text = STANDARD.encode(bytes);
    write_private(&next, &text).map_err(|e| format!("cannot write {}: {e}", next.display()))?;
    MasterKey::decode(&text)
}

/// Second half, once every stored value is sealed with the new key: the old key moves to
/// `<file>.retired.<id>` (kept, so a backup of the database taken before the rotation can still
/// be read) and the new key takes its place.
pub fn finish_rotation(key_file: &Path, old: &MasterKey) -> Result<(), String> {
    let retired = retired_file(key_file, old.id());
    std::fs::rename(key_file, &retired)
        .map_err(|e| format!("cannot move {} to {}: {e}", key_file.display(), retired.display()))?;
    let next = next_file(key_file);
    std::fs::rename(&next, key_file)
        .map_err(|e| format!("cannot move {} to {}: {e}", next.display(), key_file.display()))
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
    fn a_rotation_keeps_every_key_reachable_at_each_step() {
        let dir = tempfile::tempdir().unwrap();
        let (old, source) = MasterKey::resolve(None, None, dir.path()).unwrap();
        let file = key_file(&source).unwrap().to_owned();
        assert!(companions(&file).unwrap().is_empty());
        let new = begin_rotation(&file).unwrap();
        // Stopped here: the new key is found beside the old one, and resuming reuses it.
        assert_eq!(
            companions(&file).unwrap().iter().map(|k| k.id().to_owned()).collect::<Vec<_>>(),
            vec![new.id().to_owned()]
        );
        assert_eq!(begin_rotation(&file).unwrap().id(), new.id());
        finish_rotation(&file, &old).unwrap();
        let (current, _) = MasterKey::resolve(None, None, dir.path()).unwrap();
        assert_eq!(current.id(), new.id());
        let previous: Vec<String> =
            companions(&file).unwrap().iter().map(|k| k.id().to_owned()).collect();
        assert_eq!(previous, vec![old.id().to_owned()]);
    }

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
