//! Where CA private keys live: the [`KeyStore`] seam, with files (mode 0600
//! in a 0700 directory) now and a KMS later, and an in-memory fake.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use zeroize::Zeroizing;

/// Why a key could not be loaded, stored or deleted.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// A key name outside `[A-Za-z0-9._-]{1,128}` (or starting with `.`).
    #[error("key name {0:?} is not allowed: use 1-128 of [A-Za-z0-9._-], not starting with '.'")]
    BadName(String),
    /// The key directory or file has permissions that let others read it.
    #[error("{path} is readable by other users (mode {mode:o}); keycard needs 0700 for the key directory and 0600 for key files")]
    Permissions { path: PathBuf, mode: u32 },
    /// A file-system error.
    #[error("key store I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The stored bytes are not a usable key.
    #[error("key {name} is malformed: {reason}")]
    Malformed { name: String, reason: String },
}

/// A private key as PKCS#8 DER. Its bytes are wiped on drop and never
/// printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey(Zeroizing<Vec<u8>>);

impl PrivateKey {
    /// Wraps PKCS#8 DER bytes.
    pub fn from_pkcs8_der(der: Vec<u8>) -> Self {
        PrivateKey(Zeroizing::new(der))
    }
    /// The PKCS#8 DER bytes.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.0
    }
    /// PEM (`PRIVATE KEY`) text, for handing a generated key to a workload.
    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(pem::encode(&pem::Pem::new("PRIVATE KEY", self.0.to_vec())))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(<{} bytes redacted>)", self.0.len())
    }
}

/// Named private keys (PKCS#8 DER). Implementations are shared between
/// threads and must never log key material.
pub trait KeyStore: Send + Sync {
    /// The key named `name`, if stored.
    fn load(&self, name: &str) -> Result<Option<PrivateKey>, KeyStoreError>;
    /// Stores (creates or replaces) the key named `name`, durably.
    fn store(&self, name: &str, key: &PrivateKey) -> Result<(), KeyStoreError>;
    /// Deletes the key named `name`; deleting a missing key is not an error.
    fn delete(&self, name: &str) -> Result<(), KeyStoreError>;
}

fn check_name(name: &str) -> Result<(), KeyStoreError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KeyStoreError::BadName(name.to_string()))
    }
}

/// Keys in memory, for tests and `keycard up --ephemeral`-style runs.
#[derive(Default)]
pub struct MemoryKeyStore {
    keys: Mutex<HashMap<String, PrivateKey>>,
}

impl MemoryKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl fmt::Debug for MemoryKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.keys.lock().map(|k| k.len()).unwrap_or(0);
        write!(f, "MemoryKeyStore({n} keys)")
    }
}

impl KeyStore for MemoryKeyStore {
    fn load(&self, name: &str) -> Result<Option<PrivateKey>, KeyStoreError> {
        check_name(name)?;
        Ok(self
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned())
    }
    fn store(&self, name: &str, key: &PrivateKey) -> Result<(), KeyStoreError> {
        check_name(name)?;
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), key.clone());
        Ok(())
    }
    fn delete(&self, name: &str) -> Result<(), KeyStoreError> {
        check_name(name)?;
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        Ok(())
    }
}

/// Keys as files `<dir>/<name>.key` (PKCS#8 DER). The directory is created
/// with mode 0700 and each file is written to a temporary file created with
/// mode 0600, synced, then renamed into place, so a key is never readable by
/// others, not even for an instant, and a crash leaves the old key or the new.
#[derive(Debug, Clone)]
pub struct FileKeyStore {
    dir: PathBuf,
}

impl FileKeyStore {
    /// Opens (creating if needed) the key directory. An existing directory
    /// that group or others can access is refused.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, KeyStoreError> {
        let dir = dir.as_ref().to_path_buf();
        let io = |source| KeyStoreError::Io {
            path: dir.clone(),
            source,
        };
        if !dir.exists() {
            let mut b = fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                b.mode(0o700);
            }
            b.create(&dir).map_err(io)?;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&dir).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyStoreError::Permissions { path: dir, mode });
            }
        }
        Ok(FileKeyStore { dir })
    }

    /// The directory holding the keys.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> Result<PathBuf, KeyStoreError> {
        check_name(name)?;
        Ok(self.dir.join(format!("{name}.key")))
    }
}

impl KeyStore for FileKeyStore {
    fn load(&self, name: &str) -> Result<Option<PrivateKey>, KeyStoreError> {
        let path = self.path(name)?;
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(KeyStoreError::Io { path, source }),
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyStoreError::Permissions { path, mode });
            }
        }
        if meta.len() > 64 * 1024 {
            return Err(KeyStoreError::Malformed {
                name: name.to_string(),
                reason: format!("{} bytes is too large for a private key", meta.len()),
            });
        }
        let bytes = fs::read(&path).map_err(|source| KeyStoreError::Io { path, source })?;
        Ok(Some(PrivateKey::from_pkcs8_der(bytes)))
    }

    fn store(&self, name: &str, key: &PrivateKey) -> Result<(), KeyStoreError> {
        let path = self.path(name)?;
        let tmp = self.dir.join(format!(
            ".{name}.{}.tmp",
            hex::encode(rand::random::<[u8; 8]>())
        ));
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| KeyStoreError::Io { path: p, source }
        };
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let result = (|| {
            let mut f = opts.open(&tmp).map_err(io(&tmp))?;
            f.write_all(key.pkcs8_der()).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
            fs::rename(&tmp, &path).map_err(io(&path))?;
            if let Ok(d) = fs::File::open(&self.dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        if result.is_ok() {
            tracing::debug!(key = name, dir = %self.dir.display(), "stored private key");
        }
        result
    }

    fn delete(&self, name: &str) -> Result<(), KeyStoreError> {
        let path = self.path(name)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(KeyStoreError::Io { path, source }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_key_bytes() {
        let k = PrivateKey::from_pkcs8_der(vec![0xAB; 40]);
        let s = format!("{k:?}");
        assert!(!s.to_lowercase().contains("ab"), "{s}");
        assert!(s.contains("redacted"));
    }

    #[test]
    fn bad_names_are_refused() {
        let m = MemoryKeyStore::new();
        for n in ["", "../x", "a/b", ".hidden", &"x".repeat(129)] {
            assert!(matches!(m.load(n), Err(KeyStoreError::BadName(_))), "{n}");
        }
    }

    #[test]
    fn memory_store_round_trips() {
        let m = MemoryKeyStore::new();
        let k = PrivateKey::from_pkcs8_der(vec![1, 2, 3]);
        assert!(m.load("a").unwrap().is_none());
        m.store("a", &k).unwrap();
        assert_eq!(m.load("a").unwrap().unwrap(), k);
        m.delete("a").unwrap();
        assert!(m.load("a").unwrap().is_none());
    }

    #[cfg(unix)]
    #[test]
    fn file_store_modes_and_round_trip() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let ks = FileKeyStore::open(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let k = PrivateKey::from_pkcs8_der(vec![9; 100]);
        ks.store("ca-root", &k).unwrap();
        let file = dir.join("ca-root.key");
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(ks.load("ca-root").unwrap().unwrap(), k);
        // Replace keeps the mode and leaves no temporary files behind.
        ks.store("ca-root", &PrivateKey::from_pkcs8_der(vec![7; 10]))
            .unwrap();
        assert_eq!(ks.load("ca-root").unwrap().unwrap().pkcs8_der(), &[7; 10]);
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["ca-root.key".to_string()]);
        // A key file made world-readable is refused, not used.
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            ks.load("ca-root"),
            Err(KeyStoreError::Permissions { .. })
        ));
        ks.delete("ca-root").unwrap();
        ks.delete("ca-root").unwrap();
        assert!(ks.load("ca-root").unwrap().is_none());
    }

    #[cfg(unix)]
    #[test]
    fn an_open_key_directory_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            FileKeyStore::open(&dir),
            Err(KeyStoreError::Permissions { .. })
        ));
    }
}
