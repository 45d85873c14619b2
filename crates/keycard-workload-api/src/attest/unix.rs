//! Unix attestation: uid and gid from the connection's peer credentials,
//! the binary's path and SHA-256 from `/proc/<pid>/exe`, user and group
//! names from `/etc/passwd` and `/etc/group`.

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use keycard_core::Selector;
use sha2::{Digest, Sha256};

use super::{AttestError, Attestor, PeerCred};

/// Binaries larger than this are not hashed (no `unix:sha256` selector).
const MAX_HASH_BYTES: u64 = 1 << 30;
/// Hash cache entries kept before the cache is emptied.
const MAX_HASH_CACHE: usize = 1024;
/// `/etc/passwd` and `/etc/group` larger than this are not read.
const MAX_NAME_DB_BYTES: u64 = 16 << 20;

/// Identifies one version of a file: `(dev, inode, mtime s, mtime ns, size)`.
type FileKey = (u64, u64, i64, i64, u64);

/// The Unix workload attestor.
#[derive(Debug)]
pub struct UnixAttestor {
    proc_root: PathBuf,
    etc_root: PathBuf,
    hashes: Mutex<HashMap<FileKey, String>>,
    users: Mutex<Option<(FileKey, HashMap<u32, String>)>>,
    groups: Mutex<Option<(FileKey, HashMap<u32, String>)>>,
}

impl Default for UnixAttestor {
    fn default() -> Self {
        Self::new()
    }
}

impl UnixAttestor {
    /// Reads `/proc` and `/etc`.
    pub fn new() -> Self {
        Self::with_roots("/proc", "/etc")
    }

    /// Reads `proc_root/<pid>/...` and `etc_root/{passwd,group}` (for tests).
    pub fn with_roots(proc_root: impl Into<PathBuf>, etc_root: impl Into<PathBuf>) -> Self {
        UnixAttestor {
            proc_root: proc_root.into(),
            etc_root: etc_root.into(),
            hashes: Mutex::new(HashMap::new()),
            users: Mutex::new(None),
            groups: Mutex::new(None),
        }
    }

    fn proc_err(pid: i32, what: &'static str, e: &std::io::Error) -> AttestError {
        match e.kind() {
            ErrorKind::NotFound => AttestError::ProcessGone { pid },
            _ if e.raw_os_error() == Some(3) => AttestError::ProcessGone { pid },
            _ => AttestError::Proc {
                pid,
                what,
                reason: e.to_string(),
            },
        }
    }

    /// The process start time (clock ticks after boot, field 22 of `stat`).
    fn start_time(&self, pid: i32) -> Result<u64, AttestError> {
        let path = self.proc_root.join(pid.to_string()).join("stat");
        let text = std::fs::read_to_string(&path).map_err(|e| Self::proc_err(pid, "stat", &e))?;
        parse_start_time(&text).ok_or_else(|| AttestError::Proc {
            pid,
            what: "stat",
            reason: "no start time field".into(),
        })
    }

    /// The effective uid and gid the kernel reports for the process now.
    fn status_ids(&self, pid: i32) -> Result<(Option<u32>, Option<u32>), AttestError> {
        let path = self.proc_root.join(pid.to_string()).join("status");
        let text = std::fs::read_to_string(&path).map_err(|e| Self::proc_err(pid, "status", &e))?;
        let effective = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        };
        Ok((effective("Uid:"), effective("Gid:")))
    }

    fn binary_hash(&self, exe: &Path) -> Result<Option<String>, std::io::Error> {
        let mut file = std::fs::File::open(exe)?;
        let meta = file.metadata()?;
        if meta.len() > MAX_HASH_BYTES {
            tracing::debug!(size = meta.len(), "binary too large to hash");
            return Ok(None);
        }
        let key = file_key(&meta);
        if let Ok(cache) = self.hashes.lock() {
            if let Some(h) = cache.get(&key) {
                return Ok(Some(h.clone()));
            }
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let hash = hex::encode(hasher.finalize());
        if let Ok(mut cache) = self.hashes.lock() {
            if cache.len() >= MAX_HASH_CACHE {
                cache.clear();
            }
            cache.insert(key, hash.clone());
        }
        Ok(Some(hash))
    }

    fn name_of(
        &self,
        db: &Mutex<Option<(FileKey, HashMap<u32, String>)>>,
        file: &str,
        id: u32,
    ) -> Option<String> {
        let path = self.etc_root.join(file);
        let meta = std::fs::metadata(&path).ok()?;
        if meta.len() > MAX_NAME_DB_BYTES {
            return None;
        }
        let key = file_key(&meta);
        let mut guard = db.lock().ok()?;
        let fresh = matches!(&*guard, Some((k, _)) if *k == key);
        if !fresh {
            let text = std::fs::read_to_string(&path).ok()?;
            *guard = Some((key, parse_name_db(&text)));
        }
        guard.as_ref().and_then(|(_, m)| m.get(&id).cloned())
    }
}

fn file_key(meta: &std::fs::Metadata) -> FileKey {
    (
        meta.dev(),
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.size(),
    )
}

/// Field 22 (`starttime`) of `/proc/<pid>/stat`. The command name (field 2)
/// is in parentheses and may itself hold spaces and parentheses, so fields
/// are counted from the last `)`.
pub(crate) fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts at field 3 (state); starttime is field 22.
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// `name:x:id:...` lines (`/etc/passwd`, `/etc/group`) into id -> name; the
/// first line for an id wins.
pub(crate) fn parse_name_db(text: &str) -> HashMap<u32, String> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut parts = line.split(':');
        let (Some(name), Some(_), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        if let Ok(id) = id.parse::<u32>() {
            out.entry(id).or_insert_with(|| name.to_string());
        }
    }
    out
}

fn push(out: &mut Vec<Selector>, kind: &str, value: String) {
    match Selector::new(kind, &value) {
        Ok(s) => out.push(s),
        Err(e) => tracing::debug!(error = %e, "skipping selector"),
    }
}

impl Attestor for UnixAttestor {
    fn attest(&self, peer: &PeerCred) -> Result<Vec<Selector>, AttestError> {
        let pid = peer.pid;
        if pid <= 0 {
            return Err(AttestError::NoPid);
        }
        let started = self.start_time(pid)?;
        // The process the pid names now must be the one that connected: it
        // still runs with the credentials the socket reported.
        let (uid, gid) = self.status_ids(pid)?;
        if uid.is_some_and(|u| u != peer.uid) || gid.is_some_and(|g| g != peer.gid) {
            return Err(AttestError::ProcessGone { pid });
        }

        let mut out = Vec::with_capacity(6);
        push(&mut out, "unix", format!("uid:{}", peer.uid));
        push(&mut out, "unix", format!("gid:{}", peer.gid));
        if let Some(name) = self.name_of(&self.users, "passwd", peer.uid) {
            push(&mut out, "unix", format!("user:{name}"));
        }
        if let Some(name) = self.name_of(&self.groups, "group", peer.gid) {
            push(&mut out, "unix", format!("group:{name}"));
        }

        let exe = self.proc_root.join(pid.to_string()).join("exe");
        match std::fs::read_link(&exe) {
            Ok(path) => {
                let path = path.to_string_lossy().into_owned();
                push(&mut out, "unix", format!("path:{path}"));
                match self.binary_hash(&exe) {
                    Ok(Some(hash)) => push(&mut out, "unix", format!("sha256:{hash}")),
                    Ok(None) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        return Err(AttestError::ProcessGone { pid })
                    }
                    Err(e) => tracing::debug!(pid, error = %e, "cannot hash the binary"),
                }
            }
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                // Not allowed to look (agent not root): fewer selectors, so
                // entries that need the path simply do not match.
                tracing::debug!(pid, "cannot read the binary path: permission denied");
            }
            Err(e) => return Err(Self::proc_err(pid, "exe", &e)),
        }

        // Guard against pid reuse while we were looking.
        if self.start_time(pid)? != started {
            return Err(AttestError::ProcessGone { pid });
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat =
            "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("garbage"), None);
        assert_eq!(parse_start_time("1 (x) S 1 2"), None);
    }

    #[test]
    fn name_db_parses_passwd_and_group() {
        let db = parse_name_db(
            "# c\nroot:x:0:0:root:/root:/bin/sh\nbad\n:x:5:\nwww:x:33:33::/:/x\nalias:x:0:0\n",
        );
        assert_eq!(db.get(&0).map(String::as_str), Some("root"));
        assert_eq!(db.get(&33).map(String::as_str), Some("www"));
        assert_eq!(db.len(), 2);
    }

    #[test]
    fn attests_this_process() {
        let me = std::process::id() as i32;
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let id = |k: &str| -> u32 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap()
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse()
                .unwrap()
        };
        let peer = PeerCred {
            pid: me,
            uid: id("Uid:"),
            gid: id("Gid:"),
        };
        let a = UnixAttestor::new();
        let sel: Vec<String> = a
            .attest(&peer)
            .unwrap()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(sel.contains(&format!("unix:uid:{}", peer.uid)));
        assert!(sel.contains(&format!("unix:gid:{}", peer.gid)));
        let exe = std::env::current_exe().unwrap();
        assert!(
            sel.contains(&format!("unix:path:{}", exe.display())),
            "{sel:?}"
        );
        let want = hex::encode(Sha256::digest(std::fs::read(&exe).unwrap()));
        assert!(sel.contains(&format!("unix:sha256:{want}")));
        // Cached: the second answer is the same.
        assert_eq!(a.attest(&peer).unwrap().len(), sel.len());

        // Credentials that do not match the process: refused.
        let wrong = PeerCred {
            uid: peer.uid.wrapping_add(1),
            ..peer
        };
        assert!(matches!(
            a.attest(&wrong),
            Err(AttestError::ProcessGone { .. })
        ));
        assert_eq!(
            a.attest(&PeerCred { pid: 0, ..peer }).unwrap_err(),
            AttestError::NoPid
        );
    }

    #[test]
    fn a_gone_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = UnixAttestor::with_roots(dir.path(), dir.path());
        let peer = PeerCred {
            pid: 4242,
            uid: 0,
            gid: 0,
        };
        assert_eq!(
            a.attest(&peer).unwrap_err(),
            AttestError::ProcessGone { pid: 4242 }
        );
    }
}
