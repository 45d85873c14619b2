//! Flow ingestion: keycard's own flow records and Cilium Hubble flows in,
//! aggregated edges out.
//!
//! Three input shapes are read line by line, and may be mixed:
//!
//! - keycard flow records ([`FlowRecord`]), which the proxy writes;
//! - bare Hubble `Flow` objects, one per line (`hubble observe -o json`);
//! - Hubble `GetFlowsResponse` lines, `{"flow": {...}, "node_name": ...}`
//!   (`-o jsonpb`, the flow exporter's files). Their `lost_events`,
//!   `node_status`, `agent_event` and `debug_event` lines are counted and
//!   skipped.
//!
//! A connection is usually observed several times: Hubble reports it at the
//! source's node (`EGRESS`) and at the destination's (`INGRESS`), once per
//! trace point and per packet, plus the replies. Replies are dropped, and
//! observations with the same addresses, ports and protocol are one
//! connection while they come less than a window apart (sliding). A
//! connection denied at either end is denied. Inputs from several nodes
//! are merged by time, so the two ends of one connection meet even though
//! each file is ordered on its own.
//!
//! Memory is bounded: lines are read one at a time (and refused past a
//! length limit), connections are held only while their window is open
//! (and at most [`IngestOptions::max_pending`] of them), and edges are
//! counted, not stored per flow.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{self, BufRead, Write};
use std::sync::mpsc::{sync_channel, Receiver, Sender, SyncSender};

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::conn::Protocol;
use crate::inventory::Inventory;
use crate::selector::Labels;
use crate::time::{format_rfc3339, parse_rfc3339, Nanos};

/// Whether the connection went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allowed,
    Denied,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
        }
    }
}

/// One end of an edge: a workload, or an address outside the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Peer {
    Workload {
        namespace: String,
        kind: String,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service_account: Option<String>,
        /// The SPIFFE ID, when the flow source knows it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identity: Option<String>,
    },
    External {
        address: String,
    },
}

impl Peer {
    /// `ns/name[Kind]` as the connlist prints it, or `address[External]`.
    pub fn display(&self) -> String {
        match self {
            Peer::Workload {
                namespace,
                kind,
                name,
                ..
            } => format!("{namespace}/{name}[{kind}]"),
            Peer::External { address } => format!("{address}[External]"),
        }
    }

    /// `(namespace, kind, name)` of a workload peer.
    pub fn workload(&self) -> Option<(&str, &str, &str)> {
        match self {
            Peer::Workload {
                namespace,
                kind,
                name,
                ..
            } => Some((namespace, kind, name)),
            Peer::External { .. } => None,
        }
    }

    pub fn address(&self) -> Option<&str> {
        match self {
            Peer::External { address } => Some(address),
            Peer::Workload { .. } => None,
        }
    }
}

mod protocol_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::conn::Protocol;

    pub fn serialize<S: Serializer>(p: &Protocol, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
        let s = String::deserialize(d)?;
        Protocol::parse(&s.to_ascii_uppercase())
            .ok_or_else(|| serde::de::Error::custom(format!("unsupported protocol {s:?}")))
    }
}

/// Observed traffic from one peer to another on one port: the unit of the
/// dependency graph, of policy generation and of simulation. Written and
/// read as JSON lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    pub src: Peer,
    pub dst: Peer,
    #[serde(with = "protocol_serde")]
    pub protocol: Protocol,
    pub port: u16,
    pub verdict: Verdict,
    /// Connections (not packets, not observations).
    pub count: u64,
    #[serde(default)]
    pub bytes: u64,
    pub first_seen: String,
    pub last_seen: String,
}

/// A workload named by a flow record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordWorkload {
    pub kind: String,
    pub name: String,
}

/// One end of a keycard flow record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordEndpoint {
    /// SPIFFE ID (`spiffe://trust-domain/ns/NS/sa/SA`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<RecordWorkload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// keycard's own flow record, one JSON object per line, as the proxy
/// writes it: one record per connection, from the side that saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowRecord {
    /// RFC 3339.
    pub time: String,
    pub src: RecordEndpoint,
    pub dst: RecordEndpoint,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    #[serde(default)]
    pub bytes: u64,
    /// `allow` or `deny`.
    pub verdict: String,
    /// The policy (and rule) that decided, `ns/name#rule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// A line that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{file}:{line}: {message}")]
pub struct LineError {
    pub file: String,
    pub line: u64,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: io::Error,
    },
    /// The first bad line, when bad lines are fatal.
    #[error("{0}")]
    Strict(LineError),
    #[error("more than {0} distinct edges; raise the limit or split the input")]
    TooManyEdges(usize),
}

/// Limits and knobs of ingestion.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Longest line read; longer lines are reported and skipped unread.
    pub max_line_bytes: usize,
    /// Observations of one 5-tuple closer than this are one connection.
    pub window: Nanos,
    /// Most connections held open for deduplication at once.
    pub max_pending: usize,
    /// Most distinct edges.
    pub max_edges: usize,
    /// How many line errors are kept for the report (all are counted).
    pub max_errors_kept: usize,
    /// Stop at the first bad line.
    pub strict: bool,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            max_line_bytes: 1 << 20,
            window: 5_000_000_000,
            max_pending: 1 << 20,
            max_edges: 1 << 20,
            max_errors_kept: 100,
            strict: false,
        }
    }
}

/// What ingestion saw, for the summary line and `--strict`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    pub lines: u64,
    /// Observations used (after replies and skipped events).
    pub flows: u64,
    pub replies: u64,
    /// `lost_events`, `node_status`, `agent_event`, `debug_event` lines.
    pub non_flow_events: u64,
    /// Events the lost_events lines say were lost.
    pub events_lost: u64,
    /// Flows that are not connections NetworkPolicy can decide (ICMP,
    /// socket-LB traces, drops for reasons other than policy, errors).
    pub ignored: u64,
    /// Observations merged into a connection already seen.
    pub duplicates: u64,
    pub connections: u64,
    pub edges: u64,
    /// Connections flushed early because too many were open at once.
    pub window_overflows: u64,
    pub error_count: u64,
    pub errors: Vec<LineError>,
}

// ---- Hubble JSON, borrowed where possible --------------------------------

/// A line: a `GetFlowsResponse` (`{"flow": ...}` and the other events), a
/// bare flow (its fields at the top), or a keycard record (`src`/`dst`).
#[derive(Deserialize, Default)]
struct HLine<'a> {
    #[serde(borrow, default)]
    flow: Option<HFlow<'a>>,
    #[serde(default)]
    lost_events: Option<HLost>,
    #[serde(default)]
    node_status: Option<IgnoredAny>,
    #[serde(default)]
    agent_event: Option<IgnoredAny>,
    #[serde(default)]
    debug_event: Option<IgnoredAny>,
    #[serde(default)]
    src: Option<IgnoredAny>,
    #[serde(default)]
    dst: Option<IgnoredAny>,
    #[serde(borrow, default)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    verdict: Option<Cow<'a, str>>,
    #[serde(borrow, default, alias = "dropReasonDesc")]
    drop_reason_desc: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "IP", alias = "ip")]
    ip: Option<HIp<'a>>,
    #[serde(default)]
    l4: Option<HL4>,
    #[serde(borrow, default)]
    source: Option<HEndpoint<'a>>,
    #[serde(borrow, default)]
    destination: Option<HEndpoint<'a>>,
    #[serde(borrow, default, rename = "Type", alias = "type")]
    flow_type: Option<Cow<'a, str>>,
    #[serde(borrow, default, alias = "trafficDirection")]
    traffic_direction: Option<Cow<'a, str>>,
    #[serde(default, alias = "isReply")]
    is_reply: Option<bool>,
    #[serde(default)]
    reply: Option<bool>,
}

/// The fields of a Hubble `Flow` that ingestion reads.
#[derive(Deserialize, Default)]
struct HFlow<'a> {
    #[serde(borrow, default)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    verdict: Option<Cow<'a, str>>,
    #[serde(borrow, default, alias = "dropReasonDesc")]
    drop_reason_desc: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "IP", alias = "ip")]
    ip: Option<HIp<'a>>,
    #[serde(default)]
    l4: Option<HL4>,
    #[serde(borrow, default)]
    source: Option<HEndpoint<'a>>,
    #[serde(borrow, default)]
    destination: Option<HEndpoint<'a>>,
    #[serde(borrow, default, rename = "Type", alias = "type")]
    flow_type: Option<Cow<'a, str>>,
    #[serde(default, alias = "isReply")]
    is_reply: Option<bool>,
    #[serde(default)]
    reply: Option<bool>,
}

impl<'a> HLine<'a> {
    /// The flow of a bare `Flow` line.
    fn into_flow(self) -> HFlow<'a> {
        HFlow {
            time: self.time,
            verdict: self.verdict,
            drop_reason_desc: self.drop_reason_desc,
            ip: self.ip,
            l4: self.l4,
            source: self.source,
            destination: self.destination,
            flow_type: self.flow_type,
            is_reply: self.is_reply,
            reply: self.reply,
        }
    }
}

#[derive(Deserialize, Default)]
struct HLost {
    #[serde(default, alias = "numEventsLost")]
    num_events_lost: Option<u64>,
}

#[derive(Deserialize, Default)]
struct HIp<'a> {
    #[serde(borrow, default)]
    source: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    destination: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct HL4 {
    #[serde(default, rename = "TCP", alias = "tcp")]
    tcp: Option<HPorts>,
    #[serde(default, rename = "UDP", alias = "udp")]
    udp: Option<HPorts>,
    #[serde(default, rename = "SCTP", alias = "sctp")]
    sctp: Option<HPorts>,
    #[serde(default, rename = "ICMPv4", alias = "icmpv4")]
    icmpv4: Option<IgnoredAny>,
    #[serde(default, rename = "ICMPv6", alias = "icmpv6")]
    icmpv6: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
struct HPorts {
    #[serde(default, alias = "sourcePort")]
    source_port: Option<u32>,
    #[serde(default, alias = "destinationPort")]
    destination_port: Option<u32>,
}

#[derive(Deserialize, Default)]
struct HEndpoint<'a> {
    #[serde(borrow, default)]
    namespace: Option<Cow<'a, str>>,
    #[serde(borrow, default, alias = "podName")]
    pod_name: Option<Cow<'a, str>>,
    /// Kept raw: read only the first time a block meets the pod.
    #[serde(borrow, default)]
    labels: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    workloads: Option<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize, Default)]
struct HWorkload<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
}

/// Kubernetes labels of a Hubble endpoint (`k8s:app=web`), without the
/// Cilium-internal ones.
fn hubble_labels<L: AsRef<str>>(labels: &[L]) -> (Labels, Option<String>) {
    let mut out = Labels::new();
    let mut sa = None;
    for l in labels {
        let Some(kv) = l.as_ref().strip_prefix("k8s:") else {
            continue;
        };
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        if k == "io.cilium.k8s.policy.serviceaccount" {
            sa = Some(v.to_string());
            continue;
        }
        if k.starts_with("io.cilium.k8s.") || k.starts_with("io.kubernetes.pod.namespace") {
            continue;
        }
        out.insert(k.to_string(), v.to_string());
    }
    (out, sa)
}

/// Without an inventory: `web-5d9f7c6b8-x2x7q` is taken for Deployment
/// `web`, any other pod for itself.
fn guess_owner(pod: &str) -> (String, String) {
    let strip = |s: &str| -> Option<String> {
        let (base, suffix) = s.rsplit_once('-')?;
        let ok = !suffix.is_empty()
            && !base.is_empty()
            && suffix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        ok.then(|| base.to_string())
    };
    if let Some(rs) = strip(pod) {
        let hash = rs.rsplit_once('-').map(|(_, h)| h).unwrap_or("");
        if (6..=10).contains(&hash.len()) && hash.bytes().any(|b| b.is_ascii_digit()) {
            if let Some(base) = strip(&rs) {
                return ("Deployment".into(), base);
            }
        }
    }
    ("Pod".into(), pod.to_string())
}

/// An address in canonical form (an IPv4-mapped IPv6 address is the IPv4
/// address, so two spellings do not split edges) and its numeric value for
/// the 5-tuple.
fn parse_ip(s: &str) -> Option<(std::net::IpAddr, u128)> {
    let ip: std::net::IpAddr = s.trim().parse().ok()?;
    let ip = match ip {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => std::net::IpAddr::V6(v6),
        },
        v4 => v4,
    };
    let n = match ip {
        // IPv4 as its mapped IPv6 form: no canonical IPv6 address is
        // there, so 1.2.3.4 and ::102:304 are different keys.
        std::net::IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        std::net::IpAddr::V6(v6) => u128::from(v6),
    };
    Some((ip, n))
}

/// Canonical text of an address and its numeric value.
fn parse_addr(s: &str) -> Option<(String, u128)> {
    parse_ip(s).map(|(ip, n)| (ip.to_string(), n))
}

/// Hash maps keyed by small ids and 5-tuples: a fast hash, seeded per
/// process so a crafted input cannot aim at collisions.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

// ---- the ingester --------------------------------------------------------

/// One observation, resolved: small and owned so several inputs can be
/// merged by time.
#[derive(Debug, Clone, Copy)]
struct Obs {
    time: Nanos,
    src: u32,
    dst: u32,
    src_addr: u128,
    dst_addr: u128,
    src_port: u16,
    dst_port: u16,
    proto: Protocol,
    verdict: Verdict,
    bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ConnKey {
    src: u32,
    dst: u32,
    src_addr: u128,
    dst_addr: u128,
    src_port: u16,
    dst_port: u16,
    proto: Protocol,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    verdict: Verdict,
    first: Nanos,
    last: Nanos,
    bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct EdgeKey {
    src: u32,
    dst: u32,
    proto: Protocol,
    port: u16,
    verdict: Verdict,
}

#[derive(Debug, Clone, Copy)]
struct Agg {
    count: u64,
    bytes: u64,
    first: Nanos,
    last: Nanos,
}

/// What one line turned out to be, once resolved.
enum Parsed {
    Obs(Obs),
    Skip,
    Error(String),
}

/// Why a line was skipped without being an error.
#[derive(Debug, Clone, Copy)]
enum SkipKind {
    Blank,
    Reply,
    Ignored,
    NonFlow { lost: u64 },
}

/// One end of a parsed Hubble flow, not yet resolved to a peer.
#[derive(Debug, Clone)]
enum End {
    /// A pod: an index into the block's [`PodDesc`]s, and its address.
    Pod { desc: u32, addr: u128 },
    /// No pod: the address (canonical).
    Addr(std::net::IpAddr, u128),
    /// Neither, or an unreadable address.
    Bad(String),
}

/// Where a text sits in its block's bytes.
type Span = (u32, u32);

/// A pod named by the flows of one block, with what resolving it needs.
/// Names without escapes (nearly all) are spans of the block's bytes, so
/// meeting a pod costs no allocation; its labels and workloads are read
/// only if the ingester has not resolved the pod before.
#[derive(Debug, Clone)]
enum PodDesc {
    Span {
        block: u32,
        ns: Span,
        pod: Span,
        labels: Option<Span>,
        workloads: Option<Span>,
    },
    Owned {
        ns: String,
        pod: String,
        labels: Option<String>,
        workloads: Option<String>,
    },
}

fn span_of(data: &[u8], s: &str) -> Option<Span> {
    let start = (s.as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
    let end = start.checked_add(s.len())?;
    (end <= data.len()).then_some((u32::try_from(start).ok()?, u32::try_from(end).ok()?))
}

fn text_at(data: &[u8], (a, b): Span) -> &str {
    data.get(a as usize..b as usize)
        .and_then(|t| std::str::from_utf8(t).ok())
        .unwrap_or("")
}

/// The `(kind, name)` of a Hubble endpoint's first workload.
fn workload_hint(raw: Option<&str>) -> Option<(String, String)> {
    let w: Vec<HWorkload<'_>> = serde_json::from_str(raw?).ok()?;
    let w = w.first()?;
    Some((
        w.kind.as_deref()?.to_string(),
        w.name.as_deref()?.to_string(),
    ))
}

fn raw_labels(raw: Option<&str>) -> Vec<Cow<'_, str>> {
    raw.and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default()
}

/// A Hubble flow, parsed (on any thread) but not yet resolved.
#[derive(Debug, Clone)]
struct RawObs {
    time: Nanos,
    src: End,
    dst: End,
    src_port: u16,
    dst_port: u16,
    proto: Protocol,
    verdict: Verdict,
}

/// One line, parsed. Parsing needs nothing from the ingester, so blocks
/// of lines are parsed in parallel; resolving, deduplicating and counting
/// then run on one thread in input order, so the result does not depend
/// on how the work was split.
#[derive(Debug)]
enum Item {
    Hubble(RawObs),
    Record(Box<FlowRecord>),
    Skip(SkipKind),
    Error(String),
    TooLong,
}

/// Lines read from one input: their bytes back to back.
struct Block {
    data: Vec<u8>,
    /// `None`: a line longer than the limit (its bytes were not kept).
    lines: Vec<Option<(usize, usize)>>,
}

struct ParsedBlock {
    items: Vec<Item>,
    pods: Vec<PodDesc>,
}

/// A block for a parsing thread, and where to send it back parsed.
struct Job {
    block: Block,
    reply: SyncSender<(Block, ParsedBlock)>,
}

fn parser_gone(file: &str) -> IngestError {
    IngestError::Io {
        file: file.to_string(),
        source: io::Error::other("a flow parsing thread stopped"),
    }
}

/// Bytes of input per block.
const BLOCK_BYTES: usize = 1 << 20;

/// One input being read.
pub struct FlowSource<'r> {
    name: String,
    reader: Box<dyn BufRead + 'r>,
    line: u64,
    next: Option<Obs>,
    done: bool,
    eof: bool,
    /// Blocks handed to the parsing threads, in input order.
    pending: std::collections::VecDeque<Receiver<(Block, ParsedBlock)>>,
    /// Parsed lines not yet consumed, in order.
    items: std::collections::VecDeque<Item>,
    /// The pods the queued items refer to, and how each resolved.
    pods: Vec<PodDesc>,
    resolved: Vec<Option<Result<u32, String>>>,
    /// The bytes of the blocks the queued items come from.
    round: Vec<Vec<u8>>,
    /// Block buffers to read into again.
    spare: Vec<Vec<u8>>,
}

impl<'r> FlowSource<'r> {
    pub fn new(name: impl Into<String>, reader: impl BufRead + 'r) -> Self {
        FlowSource {
            name: name.into(),
            reader: Box::new(reader),
            line: 0,
            next: None,
            done: false,
            eof: false,
            pending: std::collections::VecDeque::new(),
            items: std::collections::VecDeque::new(),
            pods: Vec::new(),
            resolved: Vec::new(),
            round: Vec::new(),
            spare: Vec::new(),
        }
    }
}

/// Reads whole lines into a block of about `target` bytes; lines longer
/// than `max` are marked and skipped without being kept. `None` at the end.
fn read_block<R: BufRead + ?Sized>(
    r: &mut R,
    max: usize,
    target: usize,
    mut data: Vec<u8>,
) -> io::Result<Option<Block>> {
    data.clear();
    data.reserve(target + target / 4);
    let mut b = Block {
        data,
        lines: Vec::new(),
    };
    let mut start = 0usize;
    let mut too_long = false;
    let mut in_line = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            if in_line {
                b.lines.push((!too_long).then_some((start, b.data.len())));
            }
            break;
        }
        in_line = true;
        let (chunk, used, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (&avail[..i], i + 1, true),
            None => (avail, avail.len(), false),
        };
        if !too_long {
            if b.data.len() - start + chunk.len() > max {
                too_long = true;
                b.data.truncate(start);
            } else {
                b.data.extend_from_slice(chunk);
            }
        }
        r.consume(used);
        if done {
            b.lines.push((!too_long).then_some((start, b.data.len())));
            start = b.data.len();
            too_long = false;
            in_line = false;
            if b.data.len() >= target {
                break;
            }
        }
    }
    Ok((!b.lines.is_empty()).then_some(b))
}

/// Parses every line of a block.
fn parse_block(b: &Block) -> ParsedBlock {
    let block = 0;
    let mut pods = Vec::new();
    let mut seen: FastMap<(&str, &str), u32> = FastMap::default();
    let items = b
        .lines
        .iter()
        .map(|l| match l {
            None => Item::TooLong,
            Some((s, e)) => b.data.get(*s..*e).map_or(Item::TooLong, |line| {
                parse_item(line, &b.data, block, &mut pods, &mut seen)
            }),
        })
        .collect();
    ParsedBlock { items, pods }
}

/// Classifies and parses one line.
fn parse_item<'a>(
    line: &'a [u8],
    data: &[u8],
    block: u32,
    pods: &mut Vec<PodDesc>,
    seen: &mut FastMap<(&'a str, &'a str), u32>,
) -> Item {
    let Ok(text) = std::str::from_utf8(line) else {
        return Item::Error("not UTF-8".into());
    };
    let text = text.trim();
    if text.is_empty() {
        return Item::Skip(SkipKind::Blank);
    }
    let l: HLine<'a> = match serde_json::from_str(text) {
        Ok(l) => l,
        Err(e) => return Item::Error(format!("malformed JSON: {e}")),
    };
    if let Some(lost) = &l.lost_events {
        return Item::Skip(SkipKind::NonFlow {
            lost: lost.num_events_lost.unwrap_or(0),
        });
    }
    if l.node_status.is_some() || l.agent_event.is_some() || l.debug_event.is_some() {
        return Item::Skip(SkipKind::NonFlow { lost: 0 });
    }
    if let Some(f) = l.flow {
        return parse_hubble(f, l.time, (data, block), pods, seen);
    }
    if l.src.is_some() || l.dst.is_some() {
        return match serde_json::from_str::<FlowRecord>(text) {
            Ok(r) => Item::Record(Box::new(r)),
            Err(e) => Item::Error(format!("invalid flow record: {e}")),
        };
    }
    if l.verdict.is_some()
        || l.source.is_some()
        || l.ip.is_some()
        || l.l4.is_some()
        || l.traffic_direction.is_some()
    {
        return parse_hubble(l.into_flow(), None, (data, block), pods, seen);
    }
    Item::Error("neither a Hubble flow nor a keycard flow record".into())
}

fn hubble_end<'a>(
    e: Option<HEndpoint<'a>>,
    addr: Option<&str>,
    (data, block): (&[u8], u32),
    pods: &mut Vec<PodDesc>,
    seen: &mut FastMap<(&'a str, &'a str), u32>,
) -> End {
    if let Some(e) = e {
        let not_list =
            |v: Option<&serde_json::value::RawValue>| v.is_some_and(|v| !v.get().starts_with('['));
        if not_list(e.labels) || not_list(e.workloads) {
            return End::Bad("labels and workloads must be lists".into());
        }
        if let Some(pod) = e.pod_name.as_deref().filter(|p| !p.is_empty()) {
            let n = addr.and_then(parse_ip).map_or(0, |(_, n)| n);
            let ns = e.namespace.as_deref().unwrap_or("default");
            // Names without escapes borrow from the line and are shared by
            // every flow of the block; escaped ones (rare) get their own.
            let key: Option<(&'a str, &'a str)> = match (&e.namespace, &e.pod_name) {
                (Some(Cow::Borrowed(ns)), Some(Cow::Borrowed(p))) => Some((*ns, *p)),
                (None, Some(Cow::Borrowed(p))) => Some(("default", *p)),
                _ => None,
            };
            let add = |pods: &mut Vec<PodDesc>| {
                fn raw(v: Option<&serde_json::value::RawValue>) -> Option<&str> {
                    v.map(|v| v.get())
                }
                let spans = (
                    span_of(data, ns),
                    span_of(data, pod),
                    raw(e.labels).map(|l| span_of(data, l)),
                    raw(e.workloads).map(|w| span_of(data, w)),
                );
                pods.push(match spans {
                    (Some(ns), Some(pod), labels, workloads)
                        if key.is_some()
                            && labels.is_none_or(|l| l.is_some())
                            && workloads.is_none_or(|w| w.is_some()) =>
                    {
                        PodDesc::Span {
                            block,
                            ns,
                            pod,
                            labels: labels.flatten(),
                            workloads: workloads.flatten(),
                        }
                    }
                    _ => PodDesc::Owned {
                        ns: ns.to_string(),
                        pod: pod.to_string(),
                        labels: raw(e.labels).map(str::to_string),
                        workloads: raw(e.workloads).map(str::to_string),
                    },
                });
                u32::try_from(pods.len() - 1).unwrap_or(u32::MAX)
            };
            let desc = match key {
                Some(k) => match seen.get(&k) {
                    Some(d) => *d,
                    None => {
                        let d = add(pods);
                        seen.insert(k, d);
                        d
                    }
                },
                None => add(pods),
            };
            return End::Pod { desc, addr: n };
        }
    }
    match addr {
        Some(a) if !a.is_empty() => match parse_ip(a) {
            Some((ip, n)) => End::Addr(ip, n),
            None => End::Bad(format!("invalid address {a:?}")),
        },
        _ => End::Bad("an endpoint has neither a pod nor an address".into()),
    }
}

fn parse_hubble<'a>(
    f: HFlow<'a>,
    outer_time: Option<Cow<'a, str>>,
    at: (&[u8], u32),
    pods: &mut Vec<PodDesc>,
    seen: &mut FastMap<(&'a str, &'a str), u32>,
) -> Item {
    if f.is_reply == Some(true) || (f.is_reply.is_none() && f.reply == Some(true)) {
        return Item::Skip(SkipKind::Reply);
    }
    let verdict = match f.verdict.as_deref() {
        Some("FORWARDED" | "REDIRECTED" | "TRANSLATED" | "TRACED" | "AUDIT") => Verdict::Allowed,
        Some("DROPPED") => {
            // Only policy drops say anything about policy.
            match f.drop_reason_desc.as_deref() {
                None => Verdict::Denied,
                Some(d) if d.contains("POLICY") || d.contains("AUTH") => Verdict::Denied,
                Some(_) => return Item::Skip(SkipKind::Ignored),
            }
        }
        Some("ERROR" | "VERDICT_UNKNOWN") => return Item::Skip(SkipKind::Ignored),
        Some(v) => return Item::Error(format!("unknown verdict {v:?}")),
        None => return Item::Error("a flow without a verdict".into()),
    };
    if f.flow_type.as_deref() == Some("SOCK") {
        // Socket-LB traces name the Service address before translation.
        return Item::Skip(SkipKind::Ignored);
    }
    let Some(t) = f.time.as_deref().or(outer_time.as_deref()) else {
        return Item::Error("a flow without a time".into());
    };
    let Some(time) = parse_rfc3339(t) else {
        return Item::Error(format!("invalid time {t:?}"));
    };
    let Some(l4) = &f.l4 else {
        return Item::Skip(SkipKind::Ignored);
    };
    let (proto, ports) = match (&l4.tcp, &l4.udp, &l4.sctp) {
        (Some(p), _, _) => (Protocol::Tcp, p),
        (_, Some(p), _) => (Protocol::Udp, p),
        (_, _, Some(p)) => (Protocol::Sctp, p),
        _ => {
            if l4.icmpv4.is_none() && l4.icmpv6.is_none() {
                return Item::Error("l4 names no known protocol".into());
            }
            return Item::Skip(SkipKind::Ignored);
        }
    };
    let port16 = |p: Option<u32>| -> Result<u16, String> {
        u16::try_from(p.unwrap_or(0)).map_err(|_| format!("port {} out of range", p.unwrap_or(0)))
    };
    let (src_port, dst_port) = match (port16(ports.source_port), port16(ports.destination_port)) {
        (Ok(s), Ok(d)) => (s, d),
        (Err(e), _) | (_, Err(e)) => return Item::Error(e),
    };
    if dst_port == 0 {
        return Item::Error("a flow without a destination port".into());
    }
    let ip_src = f.ip.as_ref().and_then(|i| i.source.as_deref());
    let ip_dst = f.ip.as_ref().and_then(|i| i.destination.as_deref());
    let src = hubble_end(f.source, ip_src, at, pods, seen);
    let dst = hubble_end(f.destination, ip_dst, at, pods, seen);
    Item::Hubble(RawObs {
        time,
        src,
        dst,
        src_port,
        dst_port,
        proto,
        verdict,
    })
}

/// Reads one line into `buf` (without the newline), keeping at most `max`
/// bytes. `None` at end of input, else whether the line was too long.
fn read_line_limited<R: BufRead + ?Sized>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<bool>> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(any.then_some(too_long));
        }
        any = true;
        let (chunk, used, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (&avail[..i], i + 1, true),
            None => (avail, avail.len(), false),
        };
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        r.consume(used);
        if done {
            return Ok(Some(too_long));
        }
    }
}

/// Streams flow lines into aggregated edges. See the module docs.
pub struct Ingester<'i> {
    inv: Option<&'i Inventory>,
    opts: IngestOptions,
    peers: Vec<Peer>,
    peer_ids: FastMap<Peer, u32>,
    /// `ns\0pod` -> peer or why not.
    cache: FastMap<String, Result<u32, String>>,
    /// External address -> peer.
    ext_cache: FastMap<u128, u32>,
    key_buf: String,
    open: FastMap<ConnKey, Open>,
    edges: FastMap<EdgeKey, Agg>,
    clock: Nanos,
    since_sweep: u64,
    report: IngestReport,
}

const CACHE_LIMIT: usize = 1 << 20;

impl<'i> Ingester<'i> {
    pub fn new(inv: Option<&'i Inventory>, opts: IngestOptions) -> Self {
        Ingester {
            inv,
            opts,
            peers: Vec::new(),
            peer_ids: FastMap::default(),
            cache: FastMap::default(),
            ext_cache: FastMap::default(),
            key_buf: String::new(),
            open: FastMap::default(),
            edges: FastMap::default(),
            clock: Nanos::MIN,
            since_sweep: 0,
            report: IngestReport::default(),
        }
    }

    /// A peer's id. Workloads are keyed by namespace, kind and name only:
    /// one input may know the service account or SPIFFE ID and another
    /// not, and that must not split one workload's edges.
    fn intern(&mut self, p: Peer) -> u32 {
        let key = match &p {
            Peer::Workload {
                namespace,
                kind,
                name,
                ..
            } => Peer::Workload {
                namespace: namespace.clone(),
                kind: kind.clone(),
                name: name.clone(),
                service_account: None,
                identity: None,
            },
            ext => ext.clone(),
        };
        if let Some(&id) = self.peer_ids.get(&key) {
            if let (
                Some(Peer::Workload {
                    service_account,
                    identity,
                    ..
                }),
                Peer::Workload {
                    service_account: sa,
                    identity: idn,
                    ..
                },
            ) = (self.peers.get_mut(id as usize), p)
            {
                if service_account.is_none() {
                    *service_account = sa;
                }
                if identity.is_none() {
                    *identity = idn;
                }
            }
            return id;
        }
        let id = u32::try_from(self.peers.len()).unwrap_or(u32::MAX);
        self.peers.push(p);
        self.peer_ids.insert(key, id);
        id
    }

    fn workload_peer(&mut self, i: usize, identity: Option<String>) -> Option<u32> {
        let w = self.inv?.workloads.get(i)?;
        let p = Peer::Workload {
            namespace: w.namespace.clone(),
            kind: w.kind.clone(),
            name: w.name.clone(),
            service_account: w.service_account.clone(),
            identity,
        };
        Some(self.intern(p))
    }

    fn external(&mut self, addr: &str) -> Result<(u32, u128), String> {
        let (text, n) = parse_addr(addr).ok_or_else(|| format!("invalid address {addr:?}"))?;
        Ok((self.intern(Peer::External { address: text }), n))
    }

    /// Resolves a pod to its workload peer, cached per pod.
    fn pod_peer(
        &mut self,
        ns: &str,
        pod: &str,
        hint: &dyn Fn() -> Option<(String, String)>,
        labels: &dyn Fn() -> (Labels, Option<String>),
    ) -> Result<u32, String> {
        self.key_buf.clear();
        self.key_buf.push_str(ns);
        self.key_buf.push('\0');
        self.key_buf.push_str(pod);
        if let Some(r) = self.cache.get(self.key_buf.as_str()) {
            return r.clone();
        }
        let key = self.key_buf.clone();
        let r = match self.inv {
            Some(inv) => {
                let (l, _) = labels();
                let hint = hint();
                let hint = hint.as_ref().map(|(k, n)| (k.as_str(), n.as_str()));
                match inv.resolve_pod(ns, pod, hint, &l) {
                    Some(i) => self
                        .workload_peer(i, None)
                        .ok_or_else(|| "inventory index out of range".to_string()),
                    None => Err(format!("pod {ns}/{pod} is not in the inventory")),
                }
            }
            None => {
                let (kind, name) = match hint() {
                    Some((k, n)) if !k.is_empty() && !n.is_empty() => (k, n),
                    _ => guess_owner(pod),
                };
                let (_, sa) = labels();
                Ok(self.intern(Peer::Workload {
                    namespace: ns.to_string(),
                    kind,
                    name,
                    service_account: sa,
                    identity: None,
                }))
            }
        };
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(key, r.clone());
        r
    }

    /// Resolves one end of a parsed Hubble flow.
    fn resolve_end(
        &mut self,
        end: &End,
        pods: &[PodDesc],
        blocks: &[Vec<u8>],
        resolved: &mut [Option<Result<u32, String>>],
    ) -> Result<(u32, u128), String> {
        match end {
            End::Pod { desc, addr } => {
                let i = *desc as usize;
                if let Some(Some(r)) = resolved.get(i) {
                    return r.clone().map(|id| (id, *addr));
                }
                let Some(d) = pods.get(i) else {
                    return Err("internal: unknown pod".into());
                };
                let r = match d {
                    PodDesc::Span {
                        block,
                        ns,
                        pod,
                        labels,
                        workloads,
                    } => {
                        let data = blocks
                            .get(*block as usize)
                            .map_or(&[][..], |b| b.as_slice());
                        let raw = |s: &Option<Span>| s.map(|s| text_at(data, s));
                        self.pod_peer(
                            text_at(data, *ns),
                            text_at(data, *pod),
                            &|| workload_hint(raw(workloads)),
                            &|| hubble_labels(&raw_labels(raw(labels))),
                        )
                    }
                    PodDesc::Owned {
                        ns,
                        pod,
                        labels,
                        workloads,
                    } => self.pod_peer(ns, pod, &|| workload_hint(workloads.as_deref()), &|| {
                        hubble_labels(&raw_labels(labels.as_deref()))
                    }),
                };
                if let Some(slot) = resolved.get_mut(i) {
                    *slot = Some(r.clone());
                }
                r.map(|id| (id, *addr))
            }
            End::Addr(ip, n) => {
                let id = match self.ext_cache.get(n) {
                    Some(id) => *id,
                    None => {
                        let id = self.intern(Peer::External {
                            address: ip.to_string(),
                        });
                        if self.ext_cache.len() >= CACHE_LIMIT {
                            self.ext_cache.clear();
                        }
                        self.ext_cache.insert(*n, id);
                        id
                    }
                };
                Ok((id, *n))
            }
            End::Bad(m) => Err(m.clone()),
        }
    }

    /// Resolves a parsed Hubble flow to an observation.
    fn resolve_hubble(
        &mut self,
        o: &RawObs,
        pods: &[PodDesc],
        blocks: &[Vec<u8>],
        resolved: &mut [Option<Result<u32, String>>],
    ) -> Parsed {
        let (src, src_addr) = match self.resolve_end(&o.src, pods, blocks, resolved) {
            Ok(x) => x,
            Err(e) => return Parsed::Error(format!("source: {e}")),
        };
        let (dst, dst_addr) = match self.resolve_end(&o.dst, pods, blocks, resolved) {
            Ok(x) => x,
            Err(e) => return Parsed::Error(format!("destination: {e}")),
        };
        Parsed::Obs(Obs {
            time: o.time,
            src,
            dst,
            src_addr,
            dst_addr,
            src_port: o.src_port,
            dst_port: o.dst_port,
            proto: o.proto,
            verdict: o.verdict,
            bytes: 0,
        })
    }

    fn record_endpoint(&mut self, e: &RecordEndpoint) -> Result<(u32, u128), String> {
        let n = e
            .address
            .as_deref()
            .and_then(parse_addr)
            .map(|(_, n)| n)
            .unwrap_or(0);
        let ns_from_id = e.identity.as_deref().and_then(spiffe_ns_sa);
        let ns = e
            .namespace
            .clone()
            .or_else(|| ns_from_id.as_ref().map(|(ns, _)| ns.clone()));
        if let Some(w) = &e.workload {
            let ns = ns.ok_or_else(|| "a workload without a namespace".to_string())?;
            return match self.inv {
                Some(inv) => match inv.find(&ns, &w.kind, &w.name) {
                    Some(i) => self
                        .workload_peer(i, e.identity.clone())
                        .map(|id| (id, n))
                        .ok_or_else(|| "inventory index out of range".into()),
                    None => Err(format!(
                        "workload {ns}/{}[{}] is not in the inventory",
                        w.name, w.kind
                    )),
                },
                None => Ok((
                    self.intern(Peer::Workload {
                        namespace: ns,
                        kind: w.kind.clone(),
                        name: w.name.clone(),
                        service_account: e.service_account.clone(),
                        identity: e.identity.clone(),
                    }),
                    n,
                )),
            };
        }
        if let (Some(pod), Some(ns)) = (&e.pod, &ns) {
            let labels = || (Labels::new(), e.service_account.clone());
            return self.pod_peer(ns, pod, &|| None, &labels).map(|id| (id, n));
        }
        if let (Some(inv), Some((ns, sa))) = (self.inv, &ns_from_id) {
            let found: Vec<usize> = inv
                .workloads
                .iter()
                .enumerate()
                .filter(|(_, w)| &w.namespace == ns && w.service_account.as_deref() == Some(sa))
                .map(|(i, _)| i)
                .collect();
            if let [i] = found[..] {
                return self
                    .workload_peer(i, e.identity.clone())
                    .map(|id| (id, n))
                    .ok_or_else(|| "inventory index out of range".into());
            }
        }
        match &e.address {
            Some(a) => self.external(a),
            None => Err("an endpoint has neither a workload, a pod nor an address".into()),
        }
    }

    fn parse_record(&mut self, r: &FlowRecord) -> Parsed {
        let Some(time) = parse_rfc3339(&r.time) else {
            return Parsed::Error(format!("invalid time {:?}", r.time));
        };
        let verdict = match r.verdict.to_ascii_lowercase().as_str() {
            "allow" | "allowed" | "forwarded" => Verdict::Allowed,
            "deny" | "denied" | "dropped" => Verdict::Denied,
            v => return Parsed::Error(format!("unknown verdict {v:?}")),
        };
        let Some(proto) = Protocol::parse(&r.protocol.to_ascii_uppercase()) else {
            self.report.ignored += 1;
            return Parsed::Skip;
        };
        let Some(dst_port) = r.dst.port.filter(|&p| p != 0) else {
            return Parsed::Error("the destination has no port".into());
        };
        let (src, src_addr) = match self.record_endpoint(&r.src) {
            Ok(x) => x,
            Err(e) => return Parsed::Error(format!("src: {e}")),
        };
        let (dst, dst_addr) = match self.record_endpoint(&r.dst) {
            Ok(x) => x,
            Err(e) => return Parsed::Error(format!("dst: {e}")),
        };
        Parsed::Obs(Obs {
            time,
            src,
            dst,
            src_addr,
            dst_addr,
            src_port: r.src.port.unwrap_or(0),
            dst_port,
            proto,
            verdict,
            bytes: r.bytes,
        })
    }

    fn error(&mut self, file: &str, line: u64, message: String) -> Result<(), IngestError> {
        let e = LineError {
            file: file.to_string(),
            line,
            message,
        };
        tracing::debug!(%e, "skipped a line");
        self.report.error_count += 1;
        if self.opts.strict {
            return Err(IngestError::Strict(e));
        }
        if self.report.errors.len() < self.opts.max_errors_kept {
            self.report.errors.push(e);
        }
        Ok(())
    }

    /// Keeps `depth` blocks of a source read ahead and handed to the
    /// parsing threads.
    fn read_ahead(
        &self,
        s: &mut FlowSource<'_>,
        jobs: &Sender<Job>,
        depth: usize,
    ) -> Result<(), IngestError> {
        while s.pending.len() < depth && !s.eof {
            let buf = s.spare.pop().unwrap_or_default();
            match read_block(&mut s.reader, self.opts.max_line_bytes, BLOCK_BYTES, buf) {
                Ok(Some(block)) => {
                    let (reply, parsed) = sync_channel(1);
                    if jobs.send(Job { block, reply }).is_err() {
                        return Err(parser_gone(&s.name));
                    }
                    s.pending.push_back(parsed);
                }
                Ok(None) => s.eof = true,
                Err(e) => {
                    return Err(IngestError::Io {
                        file: s.name.clone(),
                        source: e,
                    })
                }
            }
        }
        Ok(())
    }

    /// Takes the next parsed block of a source, in input order. False at
    /// the end of the input.
    fn refill(
        &self,
        s: &mut FlowSource<'_>,
        jobs: &Sender<Job>,
        depth: usize,
    ) -> Result<bool, IngestError> {
        self.read_ahead(s, jobs, depth)?;
        let Some(next) = s.pending.pop_front() else {
            return Ok(false);
        };
        let (block, parsed) = next.recv().map_err(|_| parser_gone(&s.name))?;
        // The previous block's buffer is reused; this one's stays until
        // its lines are resolved (its pods are spans of it).
        s.spare.append(&mut s.round);
        s.round.push(block.data);
        s.items = parsed.items.into();
        s.pods = parsed.pods;
        s.resolved.clear();
        s.resolved.resize(s.pods.len(), None);
        // Keep the parsers busy while this block is resolved.
        self.read_ahead(s, jobs, depth)?;
        Ok(true)
    }

    /// Advances a source to its next observation (or its end).
    fn fill(
        &mut self,
        s: &mut FlowSource<'_>,
        jobs: &Sender<Job>,
        depth: usize,
    ) -> Result<(), IngestError> {
        while s.next.is_none() && !s.done {
            let Some(item) = s.items.pop_front() else {
                if !self.refill(s, jobs, depth)? {
                    s.done = true;
                }
                continue;
            };
            s.line += 1;
            self.report.lines += 1;
            let parsed = match item {
                Item::TooLong => Parsed::Error(format!(
                    "line longer than {} bytes",
                    self.opts.max_line_bytes
                )),
                Item::Error(m) => Parsed::Error(m),
                Item::Skip(kind) => {
                    match kind {
                        SkipKind::Blank => {}
                        SkipKind::Reply => self.report.replies += 1,
                        SkipKind::Ignored => self.report.ignored += 1,
                        SkipKind::NonFlow { lost } => {
                            self.report.non_flow_events += 1;
                            self.report.events_lost += lost;
                        }
                    }
                    Parsed::Skip
                }
                Item::Record(r) => self.parse_record(&r),
                Item::Hubble(o) => self.resolve_hubble(&o, &s.pods, &s.round, &mut s.resolved),
            };
            match parsed {
                Parsed::Obs(o) => s.next = Some(o),
                Parsed::Skip => {}
                Parsed::Error(m) => self.error(&s.name, s.line, m)?,
            }
        }
        Ok(())
    }

    /// Reads every source to its end, merging them by time.
    ///
    /// Lines are parsed on one thread per CPU, a block of about 1 MiB at a
    /// time, a few blocks ahead of the one being resolved; resolution,
    /// deduplication and counting run on the calling thread in input
    /// order, so the result is the same however the parsing was split.
    pub fn run(&mut self, mut sources: Vec<FlowSource<'_>>) -> Result<(), IngestError> {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let depth = workers * 2;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        std::thread::scope(|scope| {
            let mut handles = Vec::with_capacity(workers);
            for _ in 0..workers {
                let queue = std::sync::Arc::clone(&queue);
                handles.push(scope.spawn(move || loop {
                    let job = match queue.lock() {
                        Ok(q) => q.recv(),
                        Err(_) => return,
                    };
                    let Ok(Job { block, reply }) = job else {
                        return;
                    };
                    let parsed = parse_block(&block);
                    // The ingester stopped early (an error): nobody waits.
                    let _ = reply.send((block, parsed));
                }));
            }
            let result = self.merge(&mut sources, &jobs, depth);
            // Closing the queue ends the parsing threads. Joining them
            // explicitly waits for the threads to exit, thread-locals
            // included (the scope alone returns once the closures are
            // done, before the channel's per-thread state is freed, which
            // leak checkers report as a leak).
            drop(jobs);
            for h in handles {
                // As the scope would: a parser's panic is not swallowed.
                if let Err(p) = h.join() {
                    std::panic::resume_unwind(p);
                }
            }
            result
        })
    }

    fn merge(
        &mut self,
        sources: &mut [FlowSource<'_>],
        jobs: &Sender<Job>,
        depth: usize,
    ) -> Result<(), IngestError> {
        loop {
            for s in sources.iter_mut() {
                self.fill(s, jobs, depth)?;
            }
            let next = sources
                .iter_mut()
                .filter(|s| s.next.is_some())
                .min_by_key(|s| s.next.map(|o| o.time));
            let Some(s) = next else { break };
            if let Some(o) = s.next.take() {
                self.observe(o)?;
            }
        }
        Ok(())
    }

    /// Reads one input (convenience for a single file or a test string).
    pub fn ingest_reader(&mut self, name: &str, r: impl BufRead) -> Result<(), IngestError> {
        self.run(vec![FlowSource::new(name, r)])
    }

    fn observe(&mut self, o: Obs) -> Result<(), IngestError> {
        self.report.flows += 1;
        self.clock = self.clock.max(o.time);
        let key = ConnKey {
            src: o.src,
            dst: o.dst,
            src_addr: o.src_addr,
            dst_addr: o.dst_addr,
            src_port: o.src_port,
            dst_port: o.dst_port,
            proto: o.proto,
        };
        let window = self.opts.window;
        let mut expired = None;
        match self.open.get_mut(&key) {
            // Without a source port one record is one connection.
            Some(c) if o.src_port != 0 && (o.time - c.last).abs() <= window => {
                self.report.duplicates += 1;
                c.last = c.last.max(o.time);
                c.first = c.first.min(o.time);
                c.bytes = c.bytes.max(o.bytes);
                if o.verdict == Verdict::Denied {
                    c.verdict = Verdict::Denied;
                }
            }
            Some(c) => {
                // The same 5-tuple again after the window: a new connection.
                expired = Some(*c);
                *c = Open {
                    verdict: o.verdict,
                    first: o.time,
                    last: o.time,
                    bytes: o.bytes,
                };
            }
            None => {
                self.open.insert(
                    key,
                    Open {
                        verdict: o.verdict,
                        first: o.time,
                        last: o.time,
                        bytes: o.bytes,
                    },
                );
            }
        }
        if let Some(c) = expired {
            self.close(key, c)?;
        }
        self.since_sweep += 1;
        if self.since_sweep >= 16_384 || self.open.len() > self.opts.max_pending {
            self.since_sweep = 0;
            self.sweep(false)?;
            if self.open.len() > self.opts.max_pending {
                self.report.window_overflows += self.open.len() as u64;
                self.sweep(true)?;
            }
        }
        Ok(())
    }

    /// Closes the connections whose window has passed (all with `all`).
    fn sweep(&mut self, all: bool) -> Result<(), IngestError> {
        let horizon = self.clock.saturating_sub(self.opts.window);
        let done: Vec<(ConnKey, Open)> = self
            .open
            .iter()
            .filter(|(_, c)| all || c.last < horizon)
            .map(|(k, c)| (*k, *c))
            .collect();
        for (k, c) in done {
            self.open.remove(&k);
            self.close(k, c)?;
        }
        Ok(())
    }

    fn close(&mut self, k: ConnKey, c: Open) -> Result<(), IngestError> {
        self.report.connections += 1;
        let ek = EdgeKey {
            src: k.src,
            dst: k.dst,
            proto: k.proto,
            port: k.dst_port,
            verdict: c.verdict,
        };
        if let Some(a) = self.edges.get_mut(&ek) {
            a.count += 1;
            a.bytes = a.bytes.saturating_add(c.bytes);
            a.first = a.first.min(c.first);
            a.last = a.last.max(c.last);
            return Ok(());
        }
        if self.edges.len() >= self.opts.max_edges {
            return Err(IngestError::TooManyEdges(self.opts.max_edges));
        }
        self.edges.insert(
            ek,
            Agg {
                count: 1,
                bytes: c.bytes,
                first: c.first,
                last: c.last,
            },
        );
        Ok(())
    }

    /// Closes every open connection and returns the edges, sorted.
    pub fn finish(mut self) -> Result<(Vec<Edge>, IngestReport), IngestError> {
        self.sweep(true)?;
        let mut edges: Vec<Edge> = Vec::with_capacity(self.edges.len());
        for (k, a) in &self.edges {
            let (Some(src), Some(dst)) = (
                self.peers.get(k.src as usize),
                self.peers.get(k.dst as usize),
            ) else {
                continue;
            };
            edges.push(Edge {
                src: src.clone(),
                dst: dst.clone(),
                protocol: k.proto,
                port: k.port,
                verdict: k.verdict,
                count: a.count,
                bytes: a.bytes,
                first_seen: format_rfc3339(a.first),
                last_seen: format_rfc3339(a.last),
            });
        }
        sort_edges(&mut edges);
        self.report.edges = edges.len() as u64;
        Ok((edges, self.report))
    }

    /// The number of connections currently held open (for tests of the
    /// memory bound).
    pub fn open_connections(&self) -> usize {
        self.open.len()
    }
}

/// `spiffe://td/ns/NS/sa/SA` -> (NS, SA).
fn spiffe_ns_sa(id: &str) -> Option<(String, String)> {
    let rest = id.strip_prefix("spiffe://")?;
    let (_, path) = rest.split_once('/')?;
    let parts: Vec<&str> = path.split('/').collect();
    match parts[..] {
        ["ns", ns, "sa", sa] => Some((ns.to_string(), sa.to_string())),
        _ => None,
    }
}

/// Sorts edges into their stable output order.
pub fn sort_edges(edges: &mut [Edge]) {
    edges.sort_by(|a, b| {
        (&a.src, &a.dst, a.protocol, a.port, a.verdict)
            .cmp(&(&b.src, &b.dst, b.protocol, b.port, b.verdict))
    });
}

/// Writes edges as JSON lines.
pub fn write_edges(w: &mut dyn Write, edges: &[Edge]) -> io::Result<()> {
    for e in edges {
        serde_json::to_writer(&mut *w, e)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// Reads an edges file; bad lines are returned as errors, not fatal.
pub fn read_edges(
    name: &str,
    r: impl BufRead,
    max_line_bytes: usize,
) -> io::Result<(Vec<Edge>, Vec<LineError>)> {
    let mut r = r;
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut line = 0u64;
    while let Some(too_long) = read_line_limited(&mut r, &mut buf, max_line_bytes)? {
        line += 1;
        let err = |m: String| LineError {
            file: name.to_string(),
            line,
            message: m,
        };
        if too_long {
            errors.push(err(format!("line longer than {max_line_bytes} bytes")));
            continue;
        }
        let Ok(text) = std::str::from_utf8(&buf) else {
            errors.push(err("not UTF-8".into()));
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Edge>(text) {
            Ok(e) => out.push(e),
            Err(e) => errors.push(err(format!("invalid edge: {e}"))),
        }
    }
    Ok((out, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingest(text: &str) -> (Vec<Edge>, IngestReport) {
        let mut ing = Ingester::new(None, IngestOptions::default());
        ing.ingest_reader("t.jsonl", text.as_bytes()).unwrap();
        ing.finish().unwrap()
    }

    const EGRESS: &str = r#"{"flow":{"time":"2024-05-01T10:00:00.100Z","verdict":"FORWARDED","IP":{"source":"10.0.1.5","destination":"10.0.2.9","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":40000,"destination_port":5432,"flags":{"SYN":true}}},"source":{"namespace":"shop","pod_name":"web-5d9f7c6b8-x2x7q","labels":["k8s:app=web"],"workloads":[{"name":"web","kind":"Deployment"}]},"destination":{"namespace":"shop","pod_name":"db-0","labels":["k8s:app=db"]},"Type":"L3_L4","traffic_direction":"EGRESS","is_reply":false},"node_name":"n1","time":"2024-05-01T10:00:00.100Z"}"#;

    #[test]
    fn both_ends_of_one_connection_count_once() {
        let ingress = EGRESS
            .replace("EGRESS", "INGRESS")
            .replace("00.100Z", "00.101Z");
        let reply = EGRESS.replace(r#""is_reply":false"#, r#""is_reply":true"#);
        let text = format!("{EGRESS}\n{ingress}\n{reply}\n");
        let (edges, rep) = ingest(&text);
        assert_eq!(edges.len(), 1, "{edges:?}");
        let e = &edges[0];
        assert_eq!(e.count, 1);
        assert_eq!(e.src.display(), "shop/web[Deployment]");
        assert_eq!(e.dst.display(), "shop/db-0[Pod]");
        assert_eq!(e.port, 5432);
        assert_eq!(e.first_seen, "2024-05-01T10:00:00.1Z");
        assert_eq!(e.last_seen, "2024-05-01T10:00:00.101Z");
        assert_eq!(rep.replies, 1);
        assert_eq!(rep.duplicates, 1);
    }

    #[test]
    fn a_drop_at_either_end_denies() {
        let ingress = EGRESS
            .replace("EGRESS", "INGRESS")
            .replace("FORWARDED", "DROPPED");
        let (edges, _) = ingest(&format!("{EGRESS}\n{ingress}\n"));
        assert_eq!(edges.len(), 1);
        assert_eq!(edges[0].verdict, Verdict::Denied);
    }

    #[test]
    fn keycard_records_are_strict() {
        let ok = r#"{"time":"2024-05-01T10:00:00Z","src":{"namespace":"a","workload":{"kind":"Deployment","name":"x"},"address":"10.0.0.1","port":1234},"dst":{"address":"203.0.113.7","port":443},"protocol":"TCP","bytes":10,"verdict":"allow"}"#;
        let unknown = ok.replace(r#""bytes":10"#, r#""bytes":10,"extra":1"#);
        let mut ing = Ingester::new(None, IngestOptions::default());
        ing.ingest_reader("r.jsonl", format!("{ok}\n{unknown}\n").as_bytes())
            .unwrap();
        let (edges, rep) = ing.finish().unwrap();
        assert_eq!(edges.len(), 1);
        assert_eq!(edges[0].dst.display(), "203.0.113.7[External]");
        assert_eq!(edges[0].bytes, 10);
        assert_eq!(rep.error_count, 1);
        assert_eq!(rep.errors[0].line, 2);
        assert!(
            rep.errors[0].message.contains("unknown field"),
            "{:?}",
            rep.errors
        );
    }

    #[test]
    fn fuzz_hubble_flow_leak_reproducer() {
        // fuzz/hubble_flow found `}  ` as a flow body: a bad line whose
        // parser threads outlived the scope (a reported leak). It must be
        // one error per line, and the threads joined before returning.
        let body = "}  ";
        let text = format!("{{\"flow\":{body},\"node_name\":\"n1\"}}\n").repeat(2);
        let mut ing = Ingester::new(None, IngestOptions::default());
        ing.ingest_reader("fuzz.jsonl", text.as_bytes()).unwrap();
        let (edges, rep) = ing.finish().unwrap();
        assert!(edges.is_empty());
        assert_eq!(rep.lines, 2);
        assert_eq!(rep.errors.len(), 2, "{:?}", rep.errors);
    }

    #[test]
    fn long_lines_are_refused_unread() {
        let opts = IngestOptions {
            max_line_bytes: 64,
            ..IngestOptions::default()
        };
        let mut ing = Ingester::new(None, opts);
        let text = format!("{}\n{EGRESS}\n", "x".repeat(1000));
        ing.ingest_reader("t", text.as_bytes()).unwrap();
        let (_, rep) = ing.finish().unwrap();
        assert_eq!(rep.error_count, 2);
        assert!(rep.errors[0].message.contains("longer than 64"));
    }

    #[test]
    fn owners_are_guessed_without_inventory() {
        assert_eq!(
            guess_owner("web-5d9f7c6b8-x2x7q"),
            ("Deployment".into(), "web".into())
        );
        assert_eq!(guess_owner("db-0"), ("Pod".into(), "db-0".into()));
        assert_eq!(
            spiffe_ns_sa("spiffe://td/ns/a/sa/b"),
            Some(("a".into(), "b".into()))
        );
    }
}
