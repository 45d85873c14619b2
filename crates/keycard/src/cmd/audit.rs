//! `keycard audit`: the tamper-evident decision log from the command line.
//!
//! The log lives in a data directory: `audit.db` (SQLite, mode 0600),
//! `audit.key` (the Ed25519 checkpoint signing key, mode 0600, never
//! printed) and `audit.pub` (the verifier key, to publish). Auditors verify
//! with the published key and with checkpoints exported to a place the
//! log's writer cannot change.

use std::fs;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use keycard_audit::export::{ocsf_event, otlp_request};
use keycard_audit::record::parse_rfc3339_ms;
use keycard_audit::{
    AuditError, CheckpointPolicy, DecisionLog, Ed25519Verifier, Record, RedactAction, Redaction,
    Tamper, VerifierSet,
};
use keycard_store::{AuditStore, EntryFilter, SqliteOptions, SqliteStore, StoreError};
use tracing::info;

use super::emit;

/// The decision log's commands.
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Create the log and its signing key (append does this on first use).
    Init(InitArgs),
    /// Append decision records read as JSON lines from stdin; prints each
    /// acknowledged (durably stored) record as {"index":N,"id":"..."}.
    Append(AppendArgs),
    /// Sign a checkpoint of the log now, print it, and optionally export it.
    Checkpoint(CheckpointArgs),
    /// Recompute the tree and check every record and checkpoint; exit 1 on tampering.
    Verify(VerifyArgs),
    /// Show a decision, the policy and rule that made it, and its inclusion proof.
    Why(WhyArgs),
    /// Find decisions by subject, resource, outcome, policy, point and time.
    Query(QueryArgs),
    /// Export records as JSON lines, OTLP logs (JSON) or OCSF, once or continuously.
    Export(ExportArgs),
    /// Move old records to a verifiable archive file and delete them from the log.
    Prune(PruneArgs),
    /// Print the verifier (public) key to publish.
    Key(DirArgs),
}

#[derive(Args, Debug, Clone)]
pub struct DirArgs {
    /// Data directory: audit.db, audit.key (0600), audit.pub. `--dir` is
    /// the same option, for the DIR given to `--audit-log DIR` elsewhere.
    #[arg(
        long,
        alias = "dir",
        value_name = "DIR",
        default_value = ".keycard",
        env = "KEYCARD_DATA_DIR"
    )]
    pub data_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    /// The log's name in checkpoints (also the signing key's name).
    #[arg(long, default_value = "keycard/decisions")]
    pub origin: String,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Each stdin line is one decision, for example
  {\"point\":\"admission\",\"outcome\":\"deny\",\"id\":\"d-1\",\"subject\":\"alice\",
   \"resource\":\"pods/web\",\"action\":\"create\",\"policy\":\"pss-restricted\",
   \"rule\":\"privileged\",\"reason\":\"container web is privileged\",
   \"input_digest\":\"sha256:...\",\"bundle_revision\":\"r42\"}
point: check, admission, proxy, ext_authz, control_plane; outcome: allow, deny,
audit, error. id and time are filled in when absent; admin changes add actor and
change. Records are stored in batches of --batch lines (or after --flush-ms
of quiet), each batch one durable commit; a line is acknowledged on stdout only
once it is stored.

Exit status: 0 all stored, 2 a bad line (earlier lines stay stored) or the store
failed (full disk: nothing of the failed batch was stored).")]
pub struct AppendArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    /// Records per durable commit.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Commit a partial batch after this many milliseconds without input.
    #[arg(long, default_value_t = 50)]
    pub flush_ms: u64,
    /// Store this field as a keyed hash (repeatable): subject, resource, action,
    /// reason, actor, attributes.PATH, change.PATH. The first writer's rules are
    /// persisted with the log and every later writer applies them.
    #[arg(long = "hash", value_name = "FIELD")]
    pub hash_fields: Vec<String>,
    /// Store this field as **** (repeatable; same fields as --hash).
    #[arg(long = "mask", value_name = "FIELD")]
    pub mask_fields: Vec<String>,
    /// Secret key for --hash (HMAC-SHA-256); without it, plain SHA-256.
    #[arg(long, value_name = "FILE")]
    pub hash_key_file: Option<PathBuf>,
    /// Sign a checkpoint every N records.
    #[arg(long, default_value_t = 10_000)]
    pub checkpoint_every: u64,
    /// Sign a checkpoint at least this often (seconds) while records arrive.
    #[arg(long, default_value_t = 10)]
    pub checkpoint_secs: u64,
    /// Refuse to grow the database past this size (writes then stop, as on a full disk).
    #[arg(long, value_name = "MIB")]
    pub max_size_mib: Option<u64>,
    /// Do not print acknowledgements.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct CheckpointArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    /// Also write the signed checkpoint here (keep it where the log's writer cannot change it).
    #[arg(long, value_name = "FILE")]
    pub export: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditOutput {
    Human,
    Json,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Exit status: 0 the log verifies, 1 tampering detected (the first bad record or
checkpoint is named), 2 usage error or the log cannot be read.")]
pub struct VerifyArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    /// A checkpoint exported earlier: the log must extend it.
    #[arg(long = "from", value_name = "CHECKPOINT")]
    pub from: Option<PathBuf>,
    /// The verifier key (vkey string or file) to trust; default DIR/audit.pub.
    /// Use the published key: a writer who can change the log can change audit.pub.
    #[arg(long, value_name = "VKEY|FILE")]
    pub key: Option<String>,
    /// Verify an archive written by `keycard audit prune` instead of the log.
    #[arg(long, value_name = "FILE")]
    pub archive: Option<PathBuf>,
    #[arg(long, short, value_enum, default_value_t = AuditOutput::Human)]
    pub output: AuditOutput,
}

#[derive(Args, Debug)]
pub struct WhyArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    /// The decision id.
    pub id: String,
    /// The verifier key to trust; default DIR/audit.pub.
    #[arg(long, value_name = "VKEY|FILE")]
    pub key: Option<String>,
    #[arg(long, short, value_enum, default_value_t = AuditOutput::Human)]
    pub output: AuditOutput,
}

#[derive(Args, Debug)]
pub struct FilterArgs {
    /// Subject (as stored: a hashed field is matched by its hash).
    #[arg(long)]
    pub subject: Option<String>,
    #[arg(long)]
    pub resource: Option<String>,
    /// allow, deny, audit or error.
    #[arg(long)]
    pub outcome: Option<String>,
    #[arg(long)]
    pub policy: Option<String>,
    /// check, admission, proxy, ext_authz or control_plane.
    #[arg(long)]
    pub point: Option<String>,
    /// Decisions at or after this time (RFC 3339 or a date).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Decisions before this time (RFC 3339 or a date).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryOutput {
    Table,
    Json,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// At most this many records.
    #[arg(long, default_value_t = 1000)]
    pub limit: u64,
    /// Table, or JSON lines (the stored records).
    #[arg(long, short, value_enum, default_value_t = QueryOutput::Table)]
    pub output: QueryOutput,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// The stored records, one per line (leaf hashes recomputable).
    Jsonl,
    /// OpenTelemetry logs: one OTLP/JSON ExportLogsServiceRequest per line.
    Otlp,
    /// OCSF events (Authorize Session 3003, API Activity 6003), one per line.
    Ocsf,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[arg(long, short, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
    /// Start at this record index.
    #[arg(long, default_value_t = 0)]
    pub from_index: u64,
    /// Keep running and export new records as they are appended.
    #[arg(long)]
    pub follow: bool,
    /// How often --follow looks for new records, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub poll_ms: u64,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    /// Prune records before this index, or before this time (RFC 3339).
    #[arg(long, value_name = "INDEX|TIME")]
    pub before: String,
    /// Archive file to write (must not exist); verify it with `verify --archive`.
    #[arg(long, value_name = "FILE")]
    pub archive: PathBuf,
}

/// Runs an audit command; the value is the exit code.
pub fn run(cmd: AuditCommand) -> anyhow::Result<u8> {
    match cmd {
        AuditCommand::Init(a) => init(a),
        AuditCommand::Append(a) => append(a),
        AuditCommand::Checkpoint(a) => checkpoint(a),
        AuditCommand::Verify(a) => verify(a),
        AuditCommand::Why(a) => why(a),
        AuditCommand::Query(a) => query(a),
        AuditCommand::Export(a) => export(a),
        AuditCommand::Prune(a) => prune(a),
        AuditCommand::Key(d) => {
            let v = read_verifier(&d, None)?;
            emit(&format!("{v}\n"))?;
            Ok(0)
        }
    }
}

use keycard_server::decisions;

fn db_path(d: &DirArgs) -> PathBuf {
    decisions::db_path(&d.data_dir)
}

fn key_path(d: &DirArgs) -> PathBuf {
    decisions::key_path(&d.data_dir)
}

fn pub_path(d: &DirArgs) -> PathBuf {
    decisions::pub_path(&d.data_dir)
}

/// Creates the signing key and verifier key if absent; returns whether it did.
fn ensure_key(d: &DirArgs, origin: &str) -> anyhow::Result<bool> {
    create_dir(&d.data_dir)?;
    let created = decisions::ensure_signing_key(&d.data_dir, origin)?;
    if created {
        info!(origin, "created the decision log signing key");
    }
    Ok(created)
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))
}

fn read_verifier(d: &DirArgs, key: Option<&str>) -> anyhow::Result<Ed25519Verifier> {
    let text = match key {
        Some(k) if Path::new(k).is_file() => fs::read_to_string(k)?,
        Some(k) => k.to_string(),
        None => fs::read_to_string(pub_path(d))
            .with_context(|| format!("reading the verifier key {}", pub_path(d).display()))?,
    };
    text.trim()
        .parse::<Ed25519Verifier>()
        .map_err(|e| anyhow!("not a verifier key: {e}"))
}

fn open_store(d: &DirArgs, max_size_mib: Option<u64>) -> anyhow::Result<SqliteStore> {
    create_dir(&d.data_dir)?;
    let opts = SqliteOptions {
        max_size_bytes: max_size_mib.map(|m| m * 1024 * 1024),
        read_only: false,
    };
    SqliteStore::open_with(db_path(d), &opts)
        .with_context(|| format!("opening the decision log {}", db_path(d).display()))
}

fn open_read_only(d: &DirArgs) -> Result<SqliteStore, StoreError> {
    let path = db_path(d);
    if !path.exists() {
        return Err(StoreError::ReadOnly(format!(
            "no decision log at {}",
            path.display()
        )));
    }
    SqliteStore::open_with(
        path,
        &SqliteOptions {
            read_only: true,
            max_size_bytes: None,
        },
    )
}

/// The writable decision log of a data directory, creating its key on
/// first use. Enforcement points in this binary (`keycard check`) record
/// their decisions through it: `open_log(dir, None)?.append(records)`, then
/// `checkpoint()`; on error they apply their `FailureMode`.
///
/// The log applies the redaction persisted with it (see [`log_redaction`]).
pub(crate) fn open_log(
    d: &DirArgs,
    max_size_mib: Option<u64>,
) -> anyhow::Result<DecisionLog<SqliteStore>> {
    open_log_with(d, max_size_mib, None)
}

fn open_log_with(
    d: &DirArgs,
    max_size_mib: Option<u64>,
    requested: Option<(Redaction, Option<&Path>)>,
) -> anyhow::Result<DecisionLog<SqliteStore>> {
    Ok(decisions::open_with(
        &d.data_dir,
        max_size_mib.map(|m| m * 1024 * 1024),
        requested,
    )?)
}

fn init(a: InitArgs) -> anyhow::Result<u8> {
    if !ensure_key(&a.dir, &a.origin)? {
        bail!(
            "{} already exists: the log has its key",
            key_path(&a.dir).display()
        );
    }
    open_store(&a.dir, None)?;
    let v = read_verifier(&a.dir, None)?;
    emit(&format!(
        "created {} and its signing key\nverifier key (publish it): {v}\n",
        db_path(&a.dir).display()
    ))?;
    Ok(0)
}

fn redaction(a: &AppendArgs) -> anyhow::Result<Redaction> {
    let mut r = Redaction::new();
    if let Some(f) = &a.hash_key_file {
        let key = fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        r = r.with_key(&key);
    }
    for f in &a.hash_fields {
        r = r.rule(f, RedactAction::Hash)?;
    }
    for f in &a.mask_fields {
        r = r.rule(f, RedactAction::Mask)?;
    }
    Ok(r)
}

fn append(a: AppendArgs) -> anyhow::Result<u8> {
    let requested =
        if a.hash_fields.is_empty() && a.mask_fields.is_empty() && a.hash_key_file.is_none() {
            None
        } else {
            Some((redaction(&a)?, a.hash_key_file.as_deref()))
        };
    let mut log = open_log_with(&a.dir, a.max_size_mib, requested)?.with_policy(CheckpointPolicy {
        every_records: a.checkpoint_every.max(1),
        every_ms: i64::try_from(a.checkpoint_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
    });
    let batch_size = a.batch.max(1);
    // A reader thread feeds lines so a quiet producer's records are still
    // committed after --flush-ms.
    let (tx, rx) = sync_channel::<std::io::Result<String>>(batch_size * 4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let stop = line.is_err();
            if tx.send(line).is_err() || stop {
                break;
            }
        }
    });
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut pending: Vec<Record> = Vec::with_capacity(batch_size);
    let mut first_line = 1usize;
    let mut line_no = 0usize;
    let mut bad: Option<anyhow::Error> = None;
    let flush = Duration::from_millis(a.flush_ms.max(1));
    loop {
        let (done, commit) = match rx.recv_timeout(flush) {
            Ok(Ok(line)) => {
                line_no += 1;
                if line.trim().is_empty() {
                    (false, false)
                } else {
                    match serde_json::from_str::<Record>(&line) {
                        Ok(r) => {
                            pending.push(r);
                            (false, pending.len() >= batch_size)
                        }
                        Err(e) => {
                            bad = Some(anyhow!("stdin line {line_no}: {e}"));
                            (true, true)
                        }
                    }
                }
            }
            Ok(Err(e)) => {
                bad = Some(anyhow!("reading stdin after line {line_no}: {e}"));
                (true, true)
            }
            Err(RecvTimeoutError::Timeout) => (false, !pending.is_empty()),
            Err(RecvTimeoutError::Disconnected) => (true, true),
        };
        if commit && !pending.is_empty() {
            let n = pending.len();
            let appended = match log.append(std::mem::take(&mut pending)) {
                Ok(v) => v,
                Err(e) => {
                    let what = match &e {
                        AuditError::Store(StoreError::Full(_)) => {
                            "the decision log is full (disk full or --max-size-mib reached): writes stopped"
                        }
                        AuditError::Store(StoreError::ReadOnly(_)) => {
                            "the decision log cannot be written: writes stopped"
                        }
                        _ => "appending failed",
                    };
                    out.flush()?;
                    bail!(
                        "{what}; the {n} records of stdin lines {first_line}..={line_no} were not stored: {e}"
                    );
                }
            };
            if !a.quiet {
                for r in &appended {
                    writeln!(out, "{}", serde_json::json!({"index": r.index, "id": r.id}))?;
                }
                out.flush()?;
            }
            first_line = line_no + 1;
        }
        if done {
            break;
        }
    }
    log.checkpoint()?;
    out.flush()?;
    match bad {
        Some(e) => Err(e),
        None => Ok(0),
    }
}

fn checkpoint(a: CheckpointArgs) -> anyhow::Result<u8> {
    let mut log = open_log(&a.dir, None)?;
    let note = log.checkpoint()?;
    if let Some(path) = &a.export {
        fs::write(path, &note).with_context(|| format!("writing {}", path.display()))?;
    }
    emit(&note)?;
    Ok(0)
}

fn tamper_exit(t: &Tamper, json: bool) -> anyhow::Result<u8> {
    if json {
        emit(&format!(
            "{}\n",
            serde_json::json!({"ok": false, "tampering": t.to_string()})
        ))?;
    } else {
        eprintln!("TAMPERING DETECTED: {t}");
    }
    Ok(1)
}

fn verify(a: VerifyArgs) -> anyhow::Result<u8> {
    let verifier = read_verifier(&a.dir, a.key.as_deref())?;
    let origin = keycard_audit::Verifier::name(&verifier).to_string();
    let trusted = VerifierSet::new().with(verifier)?;
    let json = a.output == AuditOutput::Json;
    if let Some(path) = &a.archive {
        let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let lines = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty());
        return match keycard_audit::verify_archive(lines, &origin, &trusted) {
            Ok(r) => {
                emit(&format!(
                    "ok: archive {} holds records {}..{}, {} checkpoints verified\n",
                    path.display(),
                    r.start,
                    r.end,
                    r.checkpoints
                ))?;
                Ok(0)
            }
            Err(AuditError::Tamper(t)) => tamper_exit(&t, json),
            Err(e) => Err(e.into()),
        };
    }
    let exported = match &a.from {
        Some(p) => Some(fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let store = match open_read_only(&a.dir) {
        Ok(s) => s,
        Err(StoreError::Corrupt(m)) => return tamper_exit(&Tamper::Damaged(m), json),
        Err(StoreError::Malformed(m)) => {
            return tamper_exit(
                &Tamper::Damaged(format!("not a keycard decision log: {m}")),
                json,
            )
        }
        Err(e) => return Err(e.into()),
    };
    if let Err(e) = store.quick_check() {
        return tamper_exit(&Tamper::Damaged(e.to_string()), json);
    }
    match keycard_audit::verify(&store, &origin, &trusted, exported.as_deref()) {
        Ok(r) => {
            if json {
                emit(&format!(
                    "{}\n",
                    serde_json::json!({
                        "ok": true,
                        "size": r.size,
                        "retained_from": r.retained_from,
                        "records_checked": r.records_checked,
                        "checkpoints_checked": r.checkpoints_checked,
                        "latest_checkpoint": r.latest.as_ref().map(|c| c.size),
                        "unsigned_tail": r.unsigned_tail,
                        "extends": r.extends,
                    })
                ))?;
            } else {
                let mut s = format!(
                    "ok: {} records verified ({}..{}), {} checkpoints signed by {origin}",
                    r.records_checked, r.retained_from, r.size, r.checkpoints_checked
                );
                if let Some(c) = &r.latest {
                    s.push_str(&format!(", latest at size {}", c.size));
                }
                if let Some(x) = r.extends {
                    s.push_str(&format!("; extends the exported checkpoint at size {x}"));
                }
                if r.unsigned_tail > 0 {
                    s.push_str(&format!(
                        "\nwarning: the last {} records are not covered by a checkpoint yet",
                        r.unsigned_tail
                    ));
                }
                emit(&format!("{s}\n"))?;
            }
            Ok(0)
        }
        Err(AuditError::Tamper(t)) => tamper_exit(&t, json),
        Err(AuditError::Store(StoreError::Corrupt(m) | StoreError::Malformed(m))) => {
            tamper_exit(&Tamper::Damaged(m), json)
        }
        Err(e) => Err(e.into()),
    }
}

/// Lower-case hex, how hashes are shown to people.
fn hex_str(h: &[u8]) -> String {
    use std::fmt::Write as _;
    h.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn why(a: WhyArgs) -> anyhow::Result<u8> {
    let verifier = read_verifier(&a.dir, a.key.as_deref())?;
    let origin = keycard_audit::Verifier::name(&verifier).to_string();
    let trusted = VerifierSet::new().with(verifier)?;
    let store = open_read_only(&a.dir)?;
    let answers = match keycard_audit::why(&store, &origin, &trusted, &a.id) {
        Ok(w) => w,
        Err(AuditError::Tamper(t)) => return tamper_exit(&t, a.output == AuditOutput::Json),
        Err(e) => return Err(e.into()),
    };
    let mut text = String::new();
    for w in &answers {
        let r = &w.record;
        if a.output == AuditOutput::Json {
            let cp = w.checkpoint.as_ref();
            text.push_str(&format!(
                "{}\n",
                serde_json::json!({
                    "index": w.index,
                    "record": r,
                    "leaf_hash": hex_str(&w.leaf),
                    "checkpoint": cp.map(|(_, note)| note),
                    "tree_size": cp.map(|(c, _)| c.size),
                    "root_hash": cp.map(|(c, _)| hex_str(&c.root)),
                    "inclusion_proof": w.proof.iter().map(|h| hex_str(h)).collect::<Vec<_>>(),
                    "verified": cp.is_some(),
                })
            ));
            continue;
        }
        text.push_str(&format!(
            "decision {} (record {})\n  time:      {}\n  point:     {}\n  subject:   {}\n  action:    {} {}\n  outcome:   {}\n  policy:    {}\n  rule:      {}\n  reason:    {}\n",
            r.id, w.index, r.time, r.point.as_str(), r.subject, r.action, r.resource,
            r.outcome.as_str(), r.policy, r.rule, r.reason
        ));
        if !r.bundle_revision.is_empty() {
            text.push_str(&format!("  bundle:    {}\n", r.bundle_revision));
        }
        if !r.input_digest.is_empty() {
            text.push_str(&format!("  input:     {}\n", r.input_digest));
        }
        if let Some(actor) = &r.actor {
            text.push_str(&format!("  actor:     {actor}\n"));
        }
        if let Some(change) = &r.change {
            text.push_str(&format!("  change:    {change}\n"));
        }
        match &w.checkpoint {
            Some((cp, _)) => {
                text.push_str(&format!(
                    "  proof:     included in the checkpoint of size {} signed by {origin} (root {}), verified\n  leaf:      {}\n",
                    cp.size,
                    hex_str(&cp.root),
                    hex_str(&w.leaf)
                ));
                for (i, h) in w.proof.iter().enumerate() {
                    text.push_str(&format!("    [{i:2}] {}\n", hex_str(h)));
                }
            }
            None => text.push_str(
                "  proof:     not yet covered by a signed checkpoint (run `keycard audit checkpoint`)\n",
            ),
        }
    }
    emit(&text)?;
    Ok(0)
}

fn filter(
    f: &FilterArgs,
    from_index: Option<u64>,
    limit: Option<u64>,
) -> anyhow::Result<EntryFilter> {
    let time = |s: &Option<String>, what: &str| -> anyhow::Result<Option<i64>> {
        s.as_deref()
            .map(|t| {
                parse_rfc3339_ms(t)
                    .ok_or_else(|| anyhow!("--{what} {t:?} is not an RFC 3339 time or a date"))
            })
            .transpose()
    };
    Ok(EntryFilter {
        subject: f.subject.clone(),
        resource: f.resource.clone(),
        outcome: f.outcome.clone(),
        policy: f.policy.clone(),
        point: f.point.clone(),
        since_ms: time(&f.since, "since")?,
        until_ms: time(&f.until, "until")?,
        from_index,
        limit,
    })
}

fn cell(s: &str, width: usize) -> String {
    let mut c: String = s.chars().take(width).collect();
    if s.chars().count() > width {
        c.pop();
        c.push('…');
    }
    format!("{c:<width$}")
}

fn query(a: QueryArgs) -> anyhow::Result<u8> {
    let store = open_read_only(&a.dir)?;
    let f = filter(&a.filter, None, Some(a.limit))?;
    let rows = keycard_audit::query(&store, &f)?;
    let mut text = String::new();
    match a.output {
        QueryOutput::Json => {
            for (_, r) in &rows {
                text.push_str(&String::from_utf8_lossy(&r.to_canonical_json()?));
                text.push('\n');
            }
        }
        QueryOutput::Table => {
            text.push_str(&format!(
                "{:>8}  {:<24}  {:<13}  {:<7}  {:<32}  {:<28}  {}\n",
                "INDEX", "TIME", "POINT", "OUTCOME", "SUBJECT", "ACTION RESOURCE", "POLICY/RULE"
            ));
            for (i, r) in &rows {
                text.push_str(&format!(
                    "{:>8}  {:<24}  {:<13}  {:<7}  {}  {}  {}/{}\n",
                    i,
                    r.time,
                    r.point.as_str(),
                    r.outcome.as_str(),
                    cell(&r.subject, 32),
                    cell(&format!("{} {}", r.action, r.resource), 28),
                    r.policy,
                    r.rule
                ));
            }
            if rows.len() as u64 == a.limit {
                text.push_str(&format!(
                    "(first {} matches; raise --limit for more)\n",
                    a.limit
                ));
            }
        }
    }
    emit(&text)?;
    Ok(0)
}

fn export(a: ExportArgs) -> anyhow::Result<u8> {
    let store = open_read_only(&a.dir)?;
    let origin = match read_verifier(&a.dir, None) {
        Ok(v) => keycard_audit::Verifier::name(&v).to_string(),
        Err(_) => "keycard/decisions".to_string(),
    };
    let mut next = a.from_index;
    const PAGE: u64 = 1000;
    loop {
        let f = filter(&a.filter, Some(next), Some(PAGE))?;
        let entries = store.query(&f)?;
        let mut text = String::new();
        let mut parsed = Vec::with_capacity(entries.len());
        for e in &entries {
            next = e.index + 1;
            match a.format {
                ExportFormat::Jsonl => {
                    text.push_str(&String::from_utf8_lossy(&e.data));
                    text.push('\n');
                }
                _ => {
                    let r = Record::from_json(&e.data)
                        .with_context(|| format!("record {}", e.index))?;
                    parsed.push((e.index, r));
                }
            }
        }
        match a.format {
            ExportFormat::Jsonl => {}
            ExportFormat::Otlp if !parsed.is_empty() => {
                text.push_str(&format!("{}\n", otlp_request(&origin, &parsed)));
            }
            ExportFormat::Otlp => {}
            ExportFormat::Ocsf => {
                for (i, r) in &parsed {
                    text.push_str(&format!("{}\n", ocsf_event(&origin, *i, r)));
                }
            }
        }
        emit(&text)?;
        if (entries.len() as u64) < PAGE {
            if !a.follow {
                return Ok(0);
            }
            std::thread::sleep(Duration::from_millis(a.poll_ms.max(10)));
        }
    }
}

fn prune(a: PruneArgs) -> anyhow::Result<u8> {
    let mut log = open_log(&a.dir, None)?;
    let boundary = if a.before.bytes().all(|b| b.is_ascii_digit()) {
        a.before
            .parse::<u64>()
            .with_context(|| format!("--before {}", a.before))?
    } else {
        let t = parse_rfc3339_ms(&a.before).ok_or_else(|| {
            anyhow!(
                "--before {:?} is neither an index nor an RFC 3339 time",
                a.before
            )
        })?;
        let first = log.store().query(&EntryFilter {
            since_ms: Some(t),
            limit: Some(1),
            ..EntryFilter::default()
        })?;
        first.first().map_or(log.size(), |e| e.index)
    };
    let mut o = fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let file = o.open(&a.archive).with_context(|| {
        format!(
            "creating the archive {} (it must not exist)",
            a.archive.display()
        )
    })?;
    let mut out = SyncOnFlush(BufWriter::new(file));
    let r = match log.prune(boundary, &mut out) {
        Ok(r) => r,
        Err(e) => {
            drop(out);
            let _ = fs::remove_file(&a.archive);
            return Err(e.into());
        }
    };
    emit(&format!(
        "archived records {}..{} to {} and pruned them; {} records remain\n\
         verify the archive with: keycard audit verify --archive {}\n",
        r.start,
        r.end,
        a.archive.display(),
        log.size() - r.end,
        a.archive.display(),
    ))?;
    Ok(0)
}

/// A writer whose flush reaches the disk: the archive must be durable
/// before the records it holds are deleted.
struct SyncOnFlush(BufWriter<fs::File>);

impl Write for SyncOnFlush {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()?;
        self.0.get_ref().sync_all()
    }
}
