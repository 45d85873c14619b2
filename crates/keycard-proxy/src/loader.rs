//! Loading policy directories and reloading them on change. An invalid
//! file keeps the last good policy set in force; the error is logged,
//! counted and kept for `/readyz` and the reload metric.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use keycard_k8s::{parse_str, LoadOptions};

use crate::engine::PolicySet;
use crate::policy::{Compiler, Mode, PolicyError};

/// Largest policy file read.
pub const MAX_POLICY_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Most policy files in a directory.
pub const MAX_POLICY_FILES: usize = 10_000;

/// Why a policy directory could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<PolicyError>),
}

/// Compile policies from text (YAML, multi-document, or JSON).
pub fn compile_str(name: &str, text: &str, default_mode: Mode) -> Result<PolicySet, LoadError> {
    let mut policies = Vec::new();
    let errors = compile_into(name, text, default_mode, &mut policies);
    if !errors.is_empty() {
        return Err(LoadError::Invalid(errors));
    }
    let set = PolicySet::new(policies);
    Ok(set)
}

fn compile_into(
    name: &str,
    text: &str,
    default_mode: Mode,
    out: &mut Vec<crate::policy::Policy>,
) -> Vec<PolicyError> {
    let opts = LoadOptions {
        max_file_bytes: MAX_POLICY_FILE_BYTES,
        max_objects: 100_000,
    };
    let (objects, load_errors) = parse_str(name, text, &opts);
    let mut errors: Vec<PolicyError> = load_errors
        .into_iter()
        .map(|e| PolicyError {
            file: e.file,
            line: e.line.unwrap_or(1),
            field: "(document)".into(),
            message: e.message,
        })
        .collect();
    for obj in objects {
        let mut c = Compiler {
            file: name,
            line: obj.source.line,
            default_mode,
            errors: Vec::new(),
        };
        if let Some(p) = c.policy(&obj.value) {
            out.push(p);
        }
        errors.extend(c.errors);
    }
    errors
}

/// The policy files of a directory (recursive; hidden entries skipped), in name order.
fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |p: &Path, e: std::io::Error| LoadError::Io {
        path: p.display().to_string(),
        message: e.to_string(),
    };
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| io(&d, e))? {
            let entry = entry.map_err(|e| io(&d, e))?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let ft = entry.file_type().map_err(|e| io(&path, e))?;
            if ft.is_dir() {
                stack.push(path);
            } else if keycard_k8s::is_manifest_path(&path) {
                out.push(path);
                if out.len() > MAX_POLICY_FILES {
                    return Err(LoadError::Io {
                        path: dir.display().to_string(),
                        message: format!("more than {MAX_POLICY_FILES} policy files"),
                    });
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Read a directory's files: (path, text) plus a fingerprint of everything read.
fn read_dir_texts(dir: &Path) -> Result<(Vec<(String, String)>, u64), LoadError> {
    let mut h = DefaultHasher::new();
    let mut texts = Vec::new();
    for path in policy_files(dir)? {
        let name = path.display().to_string();
        let text = read_limited(&path, MAX_POLICY_FILE_BYTES)?;
        name.hash(&mut h);
        text.hash(&mut h);
        texts.push((name, text));
    }
    Ok((texts, h.finish()))
}

/// Read a whole UTF-8 file of at most `limit` bytes.
pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<String, LoadError> {
    use std::io::Read;
    let io = |e: std::io::Error| LoadError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut buf = Vec::new();
    f.take(limit + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > limit {
        return Err(LoadError::Io {
            path: path.display().to_string(),
            message: format!("larger than {limit} bytes"),
        });
    }
    String::from_utf8(buf).map_err(|_| LoadError::Io {
        path: path.display().to_string(),
        message: "not UTF-8".into(),
    })
}

/// Load and compile every policy file under a directory.
pub fn load_dir(dir: &Path, default_mode: Mode) -> Result<PolicySet, LoadError> {
    let (texts, _) = read_dir_texts(dir)?;
    compile_texts(&texts, default_mode)
}

fn compile_texts(texts: &[(String, String)], default_mode: Mode) -> Result<PolicySet, LoadError> {
    let mut policies = Vec::new();
    let mut errors = Vec::new();
    for (name, text) in texts {
        errors.extend(compile_into(name, text, default_mode, &mut policies));
    }
    let mut seen = std::collections::HashMap::new();
    for p in &policies {
        if let Some((file, line)) = seen.insert(p.name.clone(), (p.file.clone(), p.line)) {
            errors.push(PolicyError {
                file: p.file.to_string(),
                line: p.line,
                field: "metadata.name".into(),
                message: format!("duplicate policy {} (also at {file}:{line})", p.name),
            });
        }
    }
    if !errors.is_empty() {
        return Err(LoadError::Invalid(errors));
    }
    let mut set = PolicySet::new(policies);
    set.files = texts.iter().map(|(n, _)| n.clone()).collect();
    Ok(set)
}

/// What a reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    /// A new set is in force, with this many policies.
    Reloaded(usize),
    /// The files are invalid; the previous set stays in force.
    Failed(String),
}

/// The policy set in force, reloaded from its directory on change.
pub struct PolicyStore {
    dir: PathBuf,
    default_mode: Mode,
    current: RwLock<Arc<PolicySet>>,
    fingerprint: Mutex<u64>,
    last_error: RwLock<Option<String>>,
    generation: AtomicU64,
    reload_errors: AtomicU64,
}

impl PolicyStore {
    /// Load a directory; fails when the initial set is invalid.
    pub fn open(dir: impl Into<PathBuf>, default_mode: Mode) -> Result<Self, LoadError> {
        let dir = dir.into();
        let (texts, fp) = read_dir_texts(&dir)?;
        let set = compile_texts(&texts, default_mode)?;
        Ok(PolicyStore {
            dir,
            default_mode,
            current: RwLock::new(Arc::new(set)),
            fingerprint: Mutex::new(fp),
            last_error: RwLock::new(None),
            generation: AtomicU64::new(1),
            reload_errors: AtomicU64::new(0),
        })
    }

    /// A fixed set (tests, embedding); reloads find nothing to do.
    pub fn fixed(set: PolicySet) -> Self {
        PolicyStore {
            dir: PathBuf::new(),
            default_mode: Mode::Enforce,
            current: RwLock::new(Arc::new(set)),
            fingerprint: Mutex::new(0),
            last_error: RwLock::new(None),
            generation: AtomicU64::new(1),
            reload_errors: AtomicU64::new(0),
        }
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<PolicySet> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Increments on every successful reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Failed reloads since start.
    pub fn reload_errors(&self) -> u64 {
        self.reload_errors.load(Ordering::Relaxed)
    }

    /// The error of the last reload, if it failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.read().ok().and_then(|g| g.clone())
    }

    /// Re-read the directory; swap in the new set when it changed and is valid.
    pub fn reload_if_changed(&self) -> Reload {
        if self.dir.as_os_str().is_empty() {
            return Reload::Unchanged;
        }
        let fail = |msg: String| {
            self.reload_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(dir = %self.dir.display(), error = %msg, "policy reload failed; the last good policy set stays in force");
            if let Ok(mut g) = self.last_error.write() {
                *g = Some(msg.clone());
            }
            Reload::Failed(msg)
        };
        let (texts, fp) = match read_dir_texts(&self.dir) {
            Ok(x) => x,
            Err(e) => return fail(e.to_string()),
        };
        {
            let Ok(mut last) = self.fingerprint.lock() else {
                return Reload::Unchanged;
            };
            if *last == fp {
                return Reload::Unchanged;
            }
            // Remember the fingerprint even when invalid: an error is
            // reported once per change, not once per poll.
            *last = fp;
        }
        match compile_texts(&texts, self.default_mode) {
            Ok(set) => {
                let n = set.len();
                if let Ok(mut g) = self.current.write() {
                    *g = Arc::new(set);
                }
                if let Ok(mut g) = self.last_error.write() {
                    *g = None;
                }
                self.generation.fetch_add(1, Ordering::Relaxed);
                tracing::info!(dir = %self.dir.display(), policies = n, "policies reloaded");
                Reload::Reloaded(n)
            }
            Err(e) => fail(e.to_string()),
        }
    }
}
