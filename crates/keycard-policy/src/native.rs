//! The fast path of the built-in packs: each built-in rule's Rego, written
//! out as Rust over the object's JSON, for the inputs it is sure about.
//!
//! The Rego stays the source of truth and regorus the reference:
//!
//! - Each native rule is tied to the exact text of its Rego file and of its
//!   pack's `lib.rego` (a fingerprint checked when the policy set is built).
//!   A rule whose Rego changed has no fast path until its native twin is
//!   re-checked; `native_rules_match_the_embedded_rego` fails meanwhile.
//! - A native rule answers only where it is certain to agree with regorus.
//!   Anywhere else (a field of an unexpected type, a string `%q` would escape
//!   unusually, a number that is not an integer, a value only a regex can
//!   judge, an object that may report its namespace) it answers [`Unsure`]
//!   and the whole object is evaluated by regorus, as before.
//! - An object runs natively only when every rule of its class has a native
//!   twin; every user policy and Gatekeeper template runs on regorus.
//! - `tests/fast_path.rs` compares both paths on the pod-security fixtures
//!   at every level and version and on generated corpora.
//!
//! A native rule walks the object once per list it reads and never loops
//! otherwise, so its time and memory are linear in the object's size: it
//! needs no time or memory limit of its own. Findings are gathered into the
//! same set of `[rule index, finding]` regorus values the aggregate rule
//! yields, so their order, deduplication and conversion are those of the
//! regorus path.

use std::collections::{BTreeMap, BTreeSet};

use regorus::Value as RV;
use serde_json::Value;

/// The native rule cannot be sure to agree with regorus on this input.
#[derive(Debug)]
pub(crate) struct Unsure;

type R<T> = Result<T, Unsure>;

/// A native rule: pushes the findings (`{"msg", "path", "value"}` regorus
/// objects) of its `deny` set.
pub(crate) type RuleFn = fn(&Ctx<'_>, &mut Vec<RV>) -> R<()>;

static NULL: Value = Value::Null;
static EMPTY: Value = Value::String(String::new());

/// 64-bit FNV-1a: the fingerprint of a Rego file's text.
pub(crate) fn fingerprint(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The pack helpers the native rules are written against, with the
/// fingerprint of the text they were checked with.
pub(crate) const LIBS: &[(&str, u64)] = &[
    ("packs/pss/lib.rego", 0x3232_2e7b_4dfd_76e7),
    ("packs/zero-trust/lib.rego", 0x09c5_a951_02c9_81a2),
];

/// Native rules by package: (package, lib file, fingerprint of the rule's
/// file, rule).
pub(crate) const RULES: &[(&str, &str, u64, RuleFn)] = &[
    (
        "keycard.pss.baseline.apparmor_profile",
        "packs/pss/lib.rego",
        0xffed_cd62_cde8_2785,
        pss_apparmor,
    ),
    (
        "keycard.pss.baseline.capabilities_baseline",
        "packs/pss/lib.rego",
        0x9aa5_5e41_91b2_f0af,
        pss_capabilities_baseline,
    ),
    (
        "keycard.pss.baseline.host_namespaces",
        "packs/pss/lib.rego",
        0xa31b_aed7_7c6b_9940,
        pss_host_namespaces,
    ),
    (
        "keycard.pss.baseline.host_path_volumes",
        "packs/pss/lib.rego",
        0x5ce0_7ed0_717a_54f6,
        pss_host_path_volumes,
    ),
    (
        "keycard.pss.baseline.host_ports",
        "packs/pss/lib.rego",
        0x2a18_634f_5c59_e01f,
        pss_host_ports,
    ),
    (
        "keycard.pss.baseline.host_probes_and_host_lifecycle",
        "packs/pss/lib.rego",
        0x35ee_7634_45a6_332f,
        pss_host_probes,
    ),
    (
        "keycard.pss.baseline.privileged",
        "packs/pss/lib.rego",
        0x1f2e_8fc7_35e9_664a,
        pss_privileged,
    ),
    (
        "keycard.pss.baseline.proc_mount",
        "packs/pss/lib.rego",
        0xb06a_a659_c93a_3182,
        pss_proc_mount,
    ),
    (
        "keycard.pss.baseline.seccomp_profile_baseline",
        "packs/pss/lib.rego",
        0x2124_2933_a80a_6b3a,
        pss_seccomp_baseline,
    ),
    (
        "keycard.pss.baseline.selinux_options",
        "packs/pss/lib.rego",
        0x4b16_c080_e92b_386d,
        pss_selinux,
    ),
    (
        "keycard.pss.baseline.sysctls",
        "packs/pss/lib.rego",
        0x0e42_481c_6956_0115,
        pss_sysctls,
    ),
    (
        "keycard.pss.baseline.windows_host_process",
        "packs/pss/lib.rego",
        0x0286_640b_cfab_8c1b,
        pss_windows_host_process,
    ),
    (
        "keycard.pss.restricted.allow_privilege_escalation",
        "packs/pss/lib.rego",
        0x4ab3_b733_d289_cc6c,
        pss_allow_privilege_escalation,
    ),
    (
        "keycard.pss.restricted.capabilities_restricted",
        "packs/pss/lib.rego",
        0x8c43_be04_2947_cdba,
        pss_capabilities_restricted,
    ),
    (
        "keycard.pss.restricted.proc_mount_restricted",
        "packs/pss/lib.rego",
        0xa65e_faa1_ac28_4378,
        pss_proc_mount_restricted,
    ),
    (
        "keycard.pss.restricted.restricted_volumes",
        "packs/pss/lib.rego",
        0x5476_7531_2f43_ee8c,
        pss_restricted_volumes,
    ),
    (
        "keycard.pss.restricted.run_as_non_root",
        "packs/pss/lib.rego",
        0x8705_d05f_d78e_d52d,
        pss_run_as_non_root,
    ),
    (
        "keycard.pss.restricted.run_as_user",
        "packs/pss/lib.rego",
        0xb33f_8ea2_1fd6_806b,
        pss_run_as_user,
    ),
    (
        "keycard.pss.restricted.seccomp_profile_restricted",
        "packs/pss/lib.rego",
        0x1cef_76b6_84ab_b25f,
        pss_seccomp_restricted,
    ),
    (
        "keycard.zt.allowed_registries",
        "packs/zero-trust/lib.rego",
        0x27bb_c11c_d159_74d0,
        zt_allowed_registries,
    ),
    (
        "keycard.zt.default_deny_egress",
        "packs/zero-trust/lib.rego",
        0x081e_9b4b_b931_3fd3,
        zt_default_deny,
    ),
    (
        "keycard.zt.default_deny_ingress",
        "packs/zero-trust/lib.rego",
        0xd338_774f_84ec_9311,
        zt_default_deny,
    ),
    (
        "keycard.zt.default_service_account",
        "packs/zero-trust/lib.rego",
        0xcf86_1fc0_1e9f_4245,
        zt_default_service_account,
    ),
    (
        "keycard.zt.env_secret_literal",
        "packs/zero-trust/lib.rego",
        0x89cf_36d7_6710_117c,
        zt_env_secret_literal,
    ),
    (
        "keycard.zt.host_path",
        "packs/zero-trust/lib.rego",
        0x503d_2325_1f01_2248,
        zt_host_path,
    ),
    (
        "keycard.zt.image_digest",
        "packs/zero-trust/lib.rego",
        0x0630_f449_0b6d_4816,
        zt_image_digest,
    ),
    (
        "keycard.zt.privilege_escalation",
        "packs/zero-trust/lib.rego",
        0x288a_6e7e_7752_05d6,
        zt_privilege_escalation,
    ),
    (
        "keycard.zt.privileged",
        "packs/zero-trust/lib.rego",
        0x4b4c_bb5e_8ef5_b940,
        zt_privileged,
    ),
    (
        "keycard.zt.rbac_cluster_admin",
        "packs/zero-trust/lib.rego",
        0x18e1_067c_66ce_77c0,
        zt_rbac_cluster_admin,
    ),
    (
        "keycard.zt.rbac_escalation_verbs",
        "packs/zero-trust/lib.rego",
        0xb84e_23d3_5c2f_351f,
        zt_rbac_escalation_verbs,
    ),
    (
        "keycard.zt.rbac_wildcard",
        "packs/zero-trust/lib.rego",
        0x06ba_7c0a_4383_190b,
        zt_rbac_wildcard,
    ),
    (
        "keycard.zt.read_only_root_fs",
        "packs/zero-trust/lib.rego",
        0x3b24_aaf7_2969_61ad,
        zt_read_only_root_fs,
    ),
    (
        "keycard.zt.required_labels",
        "packs/zero-trust/lib.rego",
        0x7ae2_7411_837c_61f4,
        zt_required_labels,
    ),
    (
        "keycard.zt.sa_token_automount",
        "packs/zero-trust/lib.rego",
        0xfee9_a331_8453_1d81,
        zt_sa_token_automount,
    ),
    (
        "keycard.zt.service_exposure",
        "packs/zero-trust/lib.rego",
        0x77a4_0e3a_8e55_cf2a,
        zt_service_exposure,
    ),
];

/// What the default-deny rules read from `data.keycard.inventory`.
#[derive(Default)]
pub(crate) struct NativeInventory {
    /// `first_by_namespace`: the first object of each namespace.
    first_by_namespace: BTreeMap<String, RV>,
    /// The string names of the Namespace objects.
    declared: BTreeSet<String>,
}

impl NativeInventory {
    /// From the inventory data document (`{"keycard": {"inventory": ...}}`).
    pub(crate) fn from_document(doc: &RV) -> Self {
        let inv = &doc["keycard"]["inventory"];
        let mut out = NativeInventory::default();
        if let Ok(m) = inv["first_by_namespace"].as_object() {
            for (k, v) in m.iter() {
                if let Ok(k) = k.as_string() {
                    out.first_by_namespace.insert(k.to_string(), v.clone());
                }
            }
        }
        if let Ok(a) = inv["by_kind"]["Namespace"].as_array() {
            for n in a.iter() {
                if let Ok(name) = n["metadata"]["name"].as_string() {
                    out.declared.insert(name.to_string());
                }
            }
        }
        out
    }
}

/// One container of the pod, as every rule sees it.
pub(crate) struct Container<'a> {
    kind: &'static str,
    label: &'static str,
    index: usize,
    ctr: &'a Value,
    /// `name`, or "" when absent (a present name is a string).
    name: &'a str,
    has_name: bool,
    /// `securityContext` when it is an object.
    sc: Option<&'a Value>,
}

/// The pod, checked to be of the shape every native rule is sure about.
pub(crate) struct Pod<'a> {
    spec: &'a Value,
    /// `metadata` when it is an object.
    meta: Option<&'a Value>,
    /// `metadata.annotations` as Rego reads it: absent, null or an object.
    annotations: Option<&'a Value>,
    /// `spec.securityContext` when it is an object.
    sc: Option<&'a Value>,
    containers: Vec<Container<'a>>,
    volumes: &'a [Value],
}

const CONTAINER_KINDS: [(&str, &str); 3] = [
    ("initContainers", "init container"),
    ("containers", "container"),
    ("ephemeralContainers", "ephemeral container"),
];

impl<'a> Pod<'a> {
    pub(crate) fn new(metadata: &'a Value, spec: &'a Value) -> R<Self> {
        if !spec.is_object() {
            return Err(Unsure);
        }
        let meta = match metadata {
            Value::Object(_) => Some(metadata),
            Value::Null => None,
            _ => return Err(Unsure),
        };
        let annotations = get(meta, "annotations")?;
        if annotations.is_some_and(|a| !a.is_object() && !a.is_null()) {
            return Err(Unsure);
        }
        let sc = object_or_absent(vget(spec, "securityContext"))?;
        let mut containers = Vec::new();
        for (kind, label) in CONTAINER_KINDS {
            for (index, ctr) in items(vget(spec, kind))?.iter().enumerate() {
                if !ctr.is_object() {
                    return Err(Unsure);
                }
                let (name, has_name) = match vget(ctr, "name") {
                    None => ("", false),
                    Some(Value::String(s)) => (s.as_str(), true),
                    Some(_) => return Err(Unsure),
                };
                containers.push(Container {
                    kind,
                    label,
                    index,
                    ctr,
                    name,
                    has_name,
                    sc: object_or_absent(vget(ctr, "securityContext"))?,
                });
            }
        }
        let volumes = items(vget(spec, "volumes"))?;
        if volumes.iter().any(|v| !v.is_object()) {
            return Err(Unsure);
        }
        Ok(Pod {
            spec,
            meta,
            annotations,
            sc,
            containers,
            volumes,
        })
    }
}

/// The input of one evaluation.
pub(crate) struct Ctx<'a> {
    pub(crate) object: &'a Value,
    pub(crate) pod: Option<Pod<'a>>,
    pub(crate) params: &'a Value,
    pub(crate) version: u32,
    pub(crate) restricted: bool,
    pub(crate) inventory: &'a NativeInventory,
}

// ---- Rego's reading of JSON -------------------------------------------------

/// A field of a JSON object. The objects of a pod spec are small, and a
/// short scan is cheaper than hashing the key for the map's index.
fn lookup<'a>(m: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    if m.len() <= 16 {
        m.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
    } else {
        m.get(key)
    }
}

/// `v.key` of an object, `None` for anything else.
fn vget<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => lookup(m, key),
        _ => None,
    }
}

/// `v.key` for a reference: undefined under an absent or null value; unsure
/// under any other non-object.
fn get<'a>(v: Option<&'a Value>, key: &str) -> R<Option<&'a Value>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(lookup(m, key)),
        Some(_) => Err(Unsure),
    }
}

/// A field that must be absent, null or an object; `Some` when an object.
fn object_or_absent(v: Option<&Value>) -> R<Option<&Value>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(o @ Value::Object(_)) => Ok(Some(o)),
        Some(_) => Err(Unsure),
    }
}

/// The elements `x[i]` iterates: none for absent or null, unsure for a
/// non-array.
fn items(v: Option<&Value>) -> R<&[Value]> {
    match v {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a.as_slice()),
        Some(_) => Err(Unsure),
    }
}

/// `object.get(x, [k1, k2, ...], null)`.
fn oget_path<'a>(v: &'a Value, keys: &[&str]) -> &'a Value {
    let mut at = v;
    for k in keys {
        match at {
            Value::Object(m) => match lookup(m, k) {
                Some(x) => at = x,
                None => return &NULL,
            },
            _ => return &NULL,
        }
    }
    at
}

/// `object.get(x, key, default)` for an object `x` (a non-object gives the default).
fn oget<'a>(v: Option<&'a Value>, key: &str, default: &'a Value) -> &'a Value {
    match v {
        Some(Value::Object(m)) => lookup(m, key).unwrap_or(default),
        _ => default,
    }
}

/// The zero-trust lib's `obj(x, key)`: `x[key]` when an object.
fn zobj<'a>(v: Option<&'a Value>, key: &str) -> Option<&'a Value> {
    match v {
        Some(Value::Object(m)) => lookup(m, key).filter(|x| x.is_object()),
        _ => None,
    }
}

/// The zero-trust lib's `arr(x, key)`.
fn zarr<'a>(v: Option<&'a Value>, key: &str) -> &'a [Value] {
    match v {
        Some(Value::Object(m)) => match lookup(m, key) {
            Some(Value::Array(a)) => a.as_slice(),
            _ => &[],
        },
        _ => &[],
    }
}

/// The zero-trust lib's `str(x, key)`.
fn zstr<'a>(v: Option<&'a Value>, key: &str) -> &'a str {
    match v {
        Some(Value::Object(m)) => match lookup(m, key) {
            Some(Value::String(s)) => s.as_str(),
            _ => "",
        },
        _ => "",
    }
}

fn is_true(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Bool(true)))
}

fn is_false(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Bool(false)))
}

fn is_str(v: Option<&Value>, s: &str) -> bool {
    matches!(v, Some(Value::String(x)) if x == s)
}

fn in_strs(v: &Value, set: &[&str]) -> bool {
    matches!(v, Value::String(s) if set.contains(&s.as_str()))
}

/// `v == 0`: unsure for a number that is not an integer.
fn is_zero(v: Option<&Value>) -> R<bool> {
    match v {
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(i == 0)
            } else if n.as_u64().is_some() {
                Ok(false)
            } else {
                Err(Unsure)
            }
        }
        _ => Ok(false),
    }
}

/// `sprintf("%v", [v])` for the values it is sure about.
fn fmt_v(v: &Value) -> R<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok("null".into()),
        Value::Bool(b) => Ok(b.to_string()),
        // Integers a float represents exactly, whatever regorus stores.
        Value::Number(n) => match n.as_i64() {
            Some(i) if i.unsigned_abs() <= 1 << 53 => Ok(i.to_string()),
            _ => Err(Unsure),
        },
        _ => Err(Unsure),
    }
}

/// `sprintf("%q", [s])` for printable ASCII (with the common escapes).
fn quote(s: &str) -> R<String> {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            _ => return Err(Unsure),
        }
    }
    out.push('"');
    Ok(out)
}

thread_local! {
    /// The keys of a finding, made once per thread.
    static FINDING_KEYS: [RV; 3] = [RV::from("msg"), RV::from("path"), RV::from("value")];
}

/// A `{"msg", "path", "value"}` finding.
fn finding(msg: String, path: String, value: RV) -> RV {
    let mut m = BTreeMap::new();
    FINDING_KEYS.with(|[k_msg, k_path, k_value]| {
        m.insert(k_msg.clone(), RV::from(msg));
        m.insert(k_path.clone(), RV::from(path));
        m.insert(k_value.clone(), value);
    });
    RV::from(m)
}

fn rv(v: &Value) -> RV {
    crate::engine::to_regorus(v)
}

/// The pss lib's `container_label(kind, ctr)` (and the zero-trust lib's,
/// which agree once the name is a string or absent).
fn label(c: &Container<'_>) -> R<String> {
    Ok(format!("{} {}", c.label, quote(c.name)?))
}

/// `container_path(kind, i, suffix)`.
fn cpath(c: &Container<'_>, suffix: &str) -> String {
    format!("spec.{}[{}].{}", c.kind, c.index, suffix)
}

fn annotation_path(key: &str) -> R<String> {
    Ok(format!("metadata.annotations[{}]", quote(key)?))
}

/// `object.get(vol, "name", "")` as a `%q` argument.
fn volume_name(vol: &Value) -> R<&str> {
    match vget(vol, "name") {
        None => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Unsure),
    }
}

/// `input.pod.spec.os.name == "windows"`.
fn windows(p: &Pod<'_>) -> R<bool> {
    Ok(is_str(get(get(Some(p.spec), "os")?, "name")?, "windows"))
}

fn host_users_false(p: &Pod<'_>) -> bool {
    is_false(vget(p.spec, "hostUsers"))
}

// ---- pss baseline ------------------------------------------------------------

const PROFILE_TYPES: &[&str] = &["RuntimeDefault", "Localhost"];

/// A securityContext's profile of the given field whose type is not allowed.
fn bad_profile_type<'a>(sc: Option<&'a Value>, field: &str) -> R<Option<&'a Value>> {
    match get(sc, field)? {
        Some(p @ Value::Object(_)) => {
            let t = oget(Some(p), "type", &EMPTY);
            Ok((!in_strs(t, PROFILE_TYPES)).then_some(t))
        }
        _ => Ok(None),
    }
}

fn pss_apparmor(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    let Some(p) = &cx.pod else { return Ok(()) };
    if let Some(t) = bad_profile_type(p.sc, "appArmorProfile")? {
        out.push(finding(
            format!(
                "pod must not set securityContext.appArmorProfile.type to {}",
                fmt_v(t)?
            ),
            "spec.securityContext.appArmorProfile.type".into(),
            rv(t),
        ));
    }
    for c in &p.containers {
        if let Some(t) = bad_profile_type(c.sc, "appArmorProfile")? {
            out.push(finding(
                format!(
                    "{} must not set securityContext.appArmorProfile.type to {}",
                    label(c)?,
                    fmt_v(t)?
                ),
                cpath(c, "securityContext.appArmorProfile.type"),
                rv(t),
            ));
        }
    }
    if let Some(Value::Object(ann)) = p.annotations {
        for (key, value) in ann {
            if !key.starts_with("container.apparmor.security.beta.kubernetes.io/") {
                continue;
            }
            let allowed = in_strs(value, &["", "runtime/default"])
                || matches!(value, Value::String(s) if s.starts_with("localhost/"));
            if !allowed {
                out.push(finding(
                    format!(
                        "annotation {key} must be runtime/default or localhost/<profile>, not {}",
                        fmt_v(value)?
                    ),
                    annotation_path(key)?,
                    rv(value),
                ));
            }
        }
    }
    Ok(())
}

const DEFAULT_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// `ctr.securityContext.capabilities.add`.
fn added_capabilities<'a>(c: &Container<'a>) -> R<&'a [Value]> {
    items(get(get(c.sc, "capabilities")?, "add")?)
}

fn pss_capabilities_baseline(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    let Some(p) = &cx.pod else { return Ok(()) };
    // Superseded by the restricted capabilities check.
    if cx.restricted && cx.version >= 22 {
        return Ok(());
    }
    for c in &p.containers {
        for (j, cap) in added_capabilities(c)?.iter().enumerate() {
            if in_strs(cap, DEFAULT_CAPABILITIES) {
                continue;
            }
            out.push(finding(
                format!("{} must not add capability {}", label(c)?, fmt_v(cap)?),
                cpath(c, &format!("securityContext.capabilities.add[{j}]")),
                rv(cap),
            ));
        }
    }
    Ok(())
}

fn pss_host_namespaces(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    let Some(p) = &cx.pod else { return Ok(()) };
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if is_true(vget(p.spec, field)) {
            out.push(finding(
                format!("pod must not set spec.{field}=true"),
                format!("spec.{field}"),
                RV::from(true),
            ));
        }
    }
    Ok(())
}

fn pss_host_path_volumes(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    let Some(p) = &cx.pod else { return Ok(()) };
    if cx.restricted {
        return Ok(());
    }
    for (i, vol) in p.volumes.iter().enumerate() {
        match vget(vol, "hostPath") {
            None | Some(Value::Null) => {}
            Some(source) => out.push(finding(
                format!("volume {} must not use hostPath", quote(volume_name(vol)?)?),
                format!("spec.volumes[{i}].hostPath"),
                rv(source),
            )),
        }
    }
    Ok(())
}

fn pss_host_ports(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    let Some(p) = &cx.pod else { return Ok(()) };
    for c in &p.containers {
        for (j, port) in items(vget(c.ctr, "ports"))?.iter().enumerate() {
            let Some(hp) = get(Some(port), "hostPort")? else {
                continue;
            };
            if hp.is_null() || is_zero(Some(hp))? {
                continue;
            }
            out.push(finding(
                format!("{} must not use hostPort {}", label(c)?, fmt_v(hp)?),
                cpath(c, &format!("ports[{j}].hostPort")),
                rv(hp),
            ));
        }
    }
    Ok(())
}

fn pss_host_probes(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    let Some(p) = &cx.pod else { return Ok(()) };
    if cx.version < 34 {
        return Ok(());
    }
    for c in &p.containers {
        let lifecycle = vget(c.ctr, "lifecycle");
        let handlers = [
            ("livenessProbe", vget(c.ctr, "livenessProbe")),
            ("readinessProbe", vget(c.ctr, "readinessProbe")),
            ("startupProbe", vget(c.ctr, "startupProbe")),
            ("lifecycle.postStart", get(lifecycle, "postStart")?),
            ("lifecycle.preStop", get(lifecycle, "preStop")?),
        ];
        for (handler, probe) in handlers {
            let Some(probe) = probe else { continue };
            for action in ["httpGet", "tcpSocket"] {
                let Some(host) = get(get(Some(probe), action)?, "host")? else {
                    continue;
                };
                if host.is_null() || is_str(Some(host), "") {
                    continue;
                }
                let path = format!("{handler}.{action}.host");
                out.push(finding(
                    format!("{} must not set {path}", label(c)?),
                    cpath(c, &path),
                    rv(host),
                ));
            }
        }
    }
    Ok(())
}

fn pss_privileged(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    let Some(p) = &cx.pod else { return Ok(()) };
    for c in &p.containers {
        if is_true(get(c.sc, "privileged")?) {
            out.push(finding(
                format!("{} must not set securityContext.privileged=true", label(c)?),
                cpath(c, "securityContext.privileged"),
                RV::from(true),
            ));
        }
    }
    Ok(())
}

fn proc_mounts(p: &Pod<'_>, out: &mut Vec<RV>) -> R<()> {
    for c in &p.containers {
        let Some(pm) = get(c.sc, "procMount")? else {
            continue;
        };
        if pm.is_null() || is_str(Some(pm), "Default") {
            continue;
        }
        out.push(finding(
            format!(
                "{} must not set securityContext.procMount to {}",
                label(c)?,
                fmt_v(pm)?
            ),
            cpath(c, "securityContext.procMount"),
            rv(pm),
        ));
    }
    Ok(())
}

fn pss_proc_mount(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    let Some(p) = &cx.pod else { return Ok(()) };
    let exempt = cx.version >= 35 && (cx.restricted || host_users_false(p));
    let mut found = Vec::new();
    proc_mounts(p, &mut found)?;
    if !exempt {
        out.extend(found);
    }
    Ok(())
}

fn seccomp_annotation_allowed(v: &Value) -> bool {
    in_strs(v, &["runtime/default", "docker/default"])
        || matches!(v, Value::String(s) if s.starts_with("localhost/"))
}

fn pss_seccomp_baseline(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    let Some(p) = &cx.pod else { return Ok(()) };
    if cx.version < 19 {
        const POD: &str = "seccomp.security.alpha.kubernetes.io/pod";
        const PREFIX: &str = "container.seccomp.security.alpha.kubernetes.io/";
        if let Some(v) = get(p.annotations, POD)? {
            if !seccomp_annotation_allowed(v) {
                out.push(finding(
                    format!("annotation {POD} must not be {}", fmt_v(v)?),
                    annotation_path(POD)?,
                    rv(v),
                ));
            }
        }
        if p.annotations.is_some() {
            for c in &p.containers {
                if !c.has_name {
                    continue;
                }
                let key = format!("{PREFIX}{}", c.name);
                if let Some(v) = get(p.annotations, &key)? {
                    if !seccomp_annotation_allowed(v) {
                        out.push(finding(
                            format!("annotation {key} must not be {}", fmt_v(v)?),
                            annotation_path(&key)?,
                            rv(v),
                        ));
                    }
                }
            }
        }
    }
    if cx.version >= 19 && !cx.restricted {
        if let Some(t) = bad_profile_type(p.sc, "seccompProfile")? {
            out.push(finding(
                format!(
                    "pod must not set securityContext.seccompProfile.type to {}",
                    fmt_v(t)?
                ),
                "spec.securityContext.seccompProfile.type".into(),
                rv(t),
            ));
        }
        for c in &p.containers {
            if let Some(t) = bad_profile_type(c.sc, "seccompProfile")? {
                out.push(finding(
                    format!(
                        "{} must not set securityContext.seccompProfile.type to {}",
                        label(c)?,
                        fmt_v(t)?
                    ),
                    cpath(c, "securityContext.seccompProfile.type"),
                    rv(t),
                ));
            }
        }
    }
    Ok(())
}

/// The selinux rule's `violations(opts)`: [field, value] pairs.
fn selinux_violations(opts: Option<&Value>, version: u32) -> Vec<(&'static str, &Value)> {
    const TYPE_SINCE: &[(&str, u32)] = &[
        ("", 0),
        ("container_t", 0),
        ("container_init_t", 0),
        ("container_kvm_t", 0),
        ("container_engine_t", 31),
    ];
    let mut out = Vec::new();
    let Some(Value::Object(m)) = opts else {
        return out;
    };
    for field in ["type", "user", "role"] {
        let Some(value) = lookup(m, field) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let allowed = if field == "type" {
            matches!(value, Value::String(s)
                if TYPE_SINCE.iter().any(|(t, since)| t == s && version >= *since))
        } else {
            is_str(Some(value), "")
        };
        if !allowed {
            out.push((field, value));
        }
    }
    out
}

fn pss_selinux(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    let Some(p) = &cx.pod else { return Ok(()) };
    for (field, value) in selinux_violations(get(p.sc, "seLinuxOptions")?, cx.version) {
        out.push(finding(
            format!(
                "pod must not set securityContext.seLinuxOptions.{field} to {}",
                fmt_v(value)?
            ),
            format!("spec.securityContext.seLinuxOptions.{field}"),
            rv(value),
        ));
    }
    for c in &p.containers {
        for (field, value) in selinux_violations(get(c.sc, "seLinuxOptions")?, cx.version) {
            out.push(finding(
                format!(
                    "{} must not set securityContext.seLinuxOptions.{field} to {}",
                    label(c)?,
                    fmt_v(value)?
                ),
                cpath(c, &format!("securityContext.seLinuxOptions.{field}")),
                rv(value),
            ));
        }
    }
    Ok(())
}

fn pss_sysctls(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    const SINCE: &[(&str, u32)] = &[
        ("kernel.shm_rmid_forced", 0),
        ("net.ipv4.ip_local_port_range", 0),
        ("net.ipv4.tcp_syncookies", 0),
        ("net.ipv4.ping_group_range", 0),
        ("net.ipv4.ip_unprivileged_port_start", 0),
        ("net.ipv4.ip_local_reserved_ports", 27),
        ("net.ipv4.tcp_keepalive_time", 29),
        ("net.ipv4.tcp_fin_timeout", 29),
        ("net.ipv4.tcp_keepalive_intvl", 29),
        ("net.ipv4.tcp_keepalive_probes", 29),
        ("net.ipv4.tcp_rmem", 32),
        ("net.ipv4.tcp_wmem", 32),
        ("net.ipv4.tcp_slow_start_after_idle", 37),
        ("net.ipv4.tcp_notsent_lowat", 37),
    ];
    let Some(p) = &cx.pod else { return Ok(()) };
    for (i, sysctl) in items(get(p.sc, "sysctls")?)?.iter().enumerate() {
        let Some(name) = get(Some(sysctl), "name")? else {
            continue;
        };
        let allowed = matches!(name, Value::String(s)
            if SINCE.iter().any(|(n, since)| n == s && cx.version >= *since));
        if !allowed {
            out.push(finding(
                format!("pod must not set sysctl {}", fmt_v(name)?),
                format!("spec.securityContext.sysctls[{i}].name"),
                rv(name),
            ));
        }
    }
    Ok(())
}

fn pss_windows_host_process(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    let Some(p) = &cx.pod else { return Ok(()) };
    if is_true(get(get(p.sc, "windowsOptions")?, "hostProcess")?) {
        out.push(finding(
            "pod must not set securityContext.windowsOptions.hostProcess=true".into(),
            "spec.securityContext.windowsOptions.hostProcess".into(),
            RV::from(true),
        ));
    }
    for c in &p.containers {
        if is_true(get(get(c.sc, "windowsOptions")?, "hostProcess")?) {
            out.push(finding(
                format!(
                    "{} must not set securityContext.windowsOptions.hostProcess=true",
                    label(c)?
                ),
                cpath(c, "securityContext.windowsOptions.hostProcess"),
                RV::from(true),
            ));
        }
    }
    Ok(())
}

// ---- pss restricted ----------------------------------------------------------

/// `applies` of the Linux-only restricted checks: from `since`, and from
/// v1.25 only for non-Windows pods.
fn linux_applies(cx: &Ctx<'_>, p: &Pod<'_>, since: u32) -> R<bool> {
    Ok((cx.version >= since && cx.version < 25) || (cx.version >= 25 && !windows(p)?))
}

fn pss_allow_privilege_escalation(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    let Some(p) = &cx.pod else { return Ok(()) };
    if !linux_applies(cx, p, 8)? {
        return Ok(());
    }
    for c in &p.containers {
        let value = oget_path(c.ctr, &["securityContext", "allowPrivilegeEscalation"]);
        if is_false(Some(value)) {
            continue;
        }
        out.push(finding(
            format!(
                "{} must set securityContext.allowPrivilegeEscalation=false",
                label(c)?
            ),
            cpath(c, "securityContext.allowPrivilegeEscalation"),
            rv(value),
        ));
    }
    Ok(())
}

fn pss_capabilities_restricted(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    let Some(p) = &cx.pod else { return Ok(()) };
    if !linux_applies(cx, p, 22)? {
        return Ok(());
    }
    for c in &p.containers {
        // The reference path below must be sure before object.get is read.
        let added = added_capabilities(c)?;
        let drop = oget_path(c.ctr, &["securityContext", "capabilities", "drop"]);
        let drops_all = matches!(drop, Value::Array(a) if a.iter().any(|x| is_str(Some(x), "ALL")));
        if !drops_all {
            out.push(finding(
                format!(
                    "{} must set securityContext.capabilities.drop=[\"ALL\"]",
                    label(c)?
                ),
                cpath(c, "securityContext.capabilities.drop"),
                rv(drop),
            ));
        }
        for (j, cap) in added.iter().enumerate() {
            if is_str(Some(cap), "NET_BIND_SERVICE") {
                continue;
            }
            out.push(finding(
                format!("{} must not add capability {}", label(c)?, fmt_v(cap)?),
                cpath(c, &format!("securityContext.capabilities.add[{j}]")),
                rv(cap),
            ));
        }
    }
    Ok(())
}

fn pss_proc_mount_restricted(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    let Some(p) = &cx.pod else { return Ok(()) };
    if cx.version < 35 {
        return Ok(());
    }
    proc_mounts(p, out)
}

fn pss_restricted_volumes(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    const ALLOWED: &[&str] = &[
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "image",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    let Some(p) = &cx.pod else { return Ok(()) };
    for (i, vol) in p.volumes.iter().enumerate() {
        let Value::Object(m) = vol else { continue };
        for (source, value) in m {
            if value.is_null() || ALLOWED.contains(&source.as_str()) || source == "name" {
                continue;
            }
            out.push(finding(
                format!(
                    "volume {} must not use volume type {source}",
                    quote(volume_name(vol)?)?
                ),
                format!("spec.volumes[{i}].{source}"),
                rv(value),
            ));
        }
    }
    Ok(())
}

fn pss_run_as_non_root(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    let Some(p) = &cx.pod else { return Ok(()) };
    let exempt = cx.version >= 35 && host_users_false(p);
    let pod_value = get(p.sc, "runAsNonRoot")?;
    let pod_non_root = is_true(pod_value);
    let mut found = Vec::new();
    if is_false(pod_value) {
        found.push(finding(
            "pod must not set securityContext.runAsNonRoot=false".into(),
            "spec.securityContext.runAsNonRoot".into(),
            RV::from(false),
        ));
    }
    for c in &p.containers {
        if is_false(get(c.sc, "runAsNonRoot")?) {
            found.push(finding(
                format!(
                    "{} must not set securityContext.runAsNonRoot=false",
                    label(c)?
                ),
                cpath(c, "securityContext.runAsNonRoot"),
                RV::from(false),
            ));
        }
        if !pod_non_root && oget_path(c.ctr, &["securityContext", "runAsNonRoot"]).is_null() {
            found.push(finding(
                format!(
                    "pod or {} must set securityContext.runAsNonRoot=true",
                    label(c)?
                ),
                cpath(c, "securityContext.runAsNonRoot"),
                RV::Null,
            ));
        }
    }
    if !exempt {
        out.extend(found);
    }
    Ok(())
}

fn pss_run_as_user(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    let Some(p) = &cx.pod else { return Ok(()) };
    let applies =
        (cx.version >= 23 && cx.version < 35) || (cx.version >= 35 && !host_users_false(p));
    let mut found = Vec::new();
    if is_zero(get(p.sc, "runAsUser")?)? {
        found.push(finding(
            "pod must not set securityContext.runAsUser=0".into(),
            "spec.securityContext.runAsUser".into(),
            RV::from(0u64),
        ));
    }
    for c in &p.containers {
        if is_zero(get(c.sc, "runAsUser")?)? {
            found.push(finding(
                format!("{} must not set securityContext.runAsUser=0", label(c)?),
                cpath(c, "securityContext.runAsUser"),
                RV::from(0u64),
            ));
        }
    }
    if applies {
        out.extend(found);
    }
    Ok(())
}

fn pss_seccomp_restricted(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    let Some(p) = &cx.pod else { return Ok(()) };
    if !linux_applies(cx, p, 19)? {
        return Ok(());
    }
    let pod_allowed = matches!(
        get(get(p.sc, "seccompProfile")?, "type")?,
        Some(t) if in_strs(t, PROFILE_TYPES)
    );
    if let Some(t) = bad_profile_type(p.sc, "seccompProfile")? {
        out.push(finding(
            format!(
                "pod must not set securityContext.seccompProfile.type to {}",
                fmt_v(t)?
            ),
            "spec.securityContext.seccompProfile.type".into(),
            rv(t),
        ));
    }
    for c in &p.containers {
        if let Some(t) = bad_profile_type(c.sc, "seccompProfile")? {
            out.push(finding(
                format!(
                    "{} must not set securityContext.seccompProfile.type to {}",
                    label(c)?,
                    fmt_v(t)?
                ),
                cpath(c, "securityContext.seccompProfile.type"),
                rv(t),
            ));
        }
        if !pod_allowed && oget_path(c.ctr, &["securityContext", "seccompProfile"]).is_null() {
            out.push(finding(
                format!(
                    "pod or {} must set securityContext.seccompProfile.type to RuntimeDefault or Localhost",
                    label(c)?
                ),
                cpath(c, "securityContext.seccompProfile"),
                RV::Null,
            ));
        }
    }
    Ok(())
}

// ---- zero-trust --------------------------------------------------------------

/// `param_list(name)`.
fn param_list<'a>(cx: &Ctx<'a>, name: &str) -> &'a [Value] {
    match vget(cx.params, name) {
        Some(Value::Array(a)) => a.as_slice(),
        Some(v @ Value::String(_)) => std::slice::from_ref(v),
        _ => &[],
    }
}

/// `concat(", ", [x | some x in list; is_string(x)])`.
fn join_strings(list: &[Value]) -> String {
    let v: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
    v.join(", ")
}

fn zt_metadata<'a>(cx: &Ctx<'a>) -> Option<&'a Value> {
    zobj(Some(cx.object), "metadata")
}

fn zt_kind<'a>(cx: &Ctx<'a>) -> &'a str {
    zstr(Some(cx.object), "kind")
}

/// `object_label`: Kind "namespace/name".
fn object_label(cx: &Ctx<'_>) -> R<String> {
    let meta = zt_metadata(cx);
    let ns = zstr(meta, "namespace");
    let name = zstr(meta, "name");
    let q = if ns.is_empty() {
        name.to_string()
    } else {
        format!("{ns}/{name}")
    };
    Ok(format!("{} {}", zt_kind(cx), quote(&q)?))
}

fn zt_containers<'a, 'b>(cx: &'b Ctx<'a>) -> &'b [Container<'a>] {
    cx.pod
        .as_ref()
        .map(|p| p.containers.as_slice())
        .unwrap_or(&[])
}

fn zt_windows(cx: &Ctx<'_>) -> R<bool> {
    match &cx.pod {
        Some(p) => windows(p),
        None => Ok(false),
    }
}

fn zt_allowed_registries(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    let allowed = param_list(cx, "allowed_registries");
    if allowed.is_empty() {
        return Ok(());
    }
    for c in zt_containers(cx) {
        let image = zstr(Some(c.ctr), "image");
        if image.is_empty() {
            continue;
        }
        let mut approved = false;
        for entry in allowed.iter().filter_map(Value::as_str) {
            let e = entry.trim_end_matches('/');
            if e.is_empty() || !image.starts_with(e) {
                continue;
            }
            // `substring(image, count(entry), 1)`: count is in UTF-16 units,
            // substring in characters; they agree on ASCII.
            if !e.is_ascii() {
                return Err(Unsure);
            }
            let next = image[e.len()..].chars().next();
            if next == Some('/') || (e.contains('/') && matches!(next, Some(':' | '@'))) {
                approved = true;
            }
        }
        if approved {
            continue;
        }
        let parts: Vec<&str> = image.split('/').collect();
        let qualified = parts.len() > 1 && {
            let host = parts[0];
            host.contains('.') || host.contains(':') || host == "localhost"
        };
        let why = if qualified {
            "is not from an approved registry"
        } else {
            "names no registry host, so the runtime's search list decides where it comes from"
        };
        out.push(finding(
            format!(
                "{}: image {} {} (allowed: {})",
                label(c)?,
                quote(image)?,
                why,
                join_strings(allowed)
            ),
            cpath(c, "image"),
            RV::from(image),
        ));
    }
    Ok(())
}

/// The default-deny rules report only on the object that carries its
/// namespace's finding (a Namespace object, or the first object of an
/// undeclared namespace); on those regorus decides.
fn zt_default_deny(cx: &Ctx<'_>, _out: &mut Vec<RV>) -> R<()> {
    let meta = zt_metadata(cx);
    if zt_kind(cx) == "Namespace" {
        return if zstr(meta, "name").is_empty() {
            Ok(())
        } else {
            Err(Unsure)
        };
    }
    let ns = zstr(meta, "namespace");
    if ns.is_empty() || cx.inventory.declared.contains(ns) {
        return Ok(());
    }
    match cx.inventory.first_by_namespace.get(ns) {
        None => Ok(()),
        Some(first) => {
            let same_name = match (&first["metadata"]["name"], zstr(meta, "name")) {
                (RV::String(a), b) => a.as_ref() == b,
                _ => true,
            };
            if same_name {
                // Possibly this very object: let regorus compare and report.
                Err(Unsure)
            } else {
                Ok(())
            }
        }
    }
}

fn zt_default_service_account(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    let Some(p) = &cx.pod else { return Ok(()) };
    let spec = Some(p.spec);
    if zstr(spec, "serviceAccountName").is_empty()
        && matches!(zstr(spec, "serviceAccount"), "" | "default")
    {
        out.push(finding(
            "pod names no service account, so it runs as the namespace's default account".into(),
            "spec.serviceAccountName".into(),
            rv(oget(spec, "serviceAccountName", &NULL)),
        ));
    }
    if is_str(vget(p.spec, "serviceAccountName"), "default") {
        out.push(finding(
            "pod runs as the namespace's default service account".into(),
            "spec.serviceAccountName".into(),
            RV::from("default"),
        ));
    }
    Ok(())
}

fn zt_env_secret_literal(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    const WORDS: &[&str] = &[
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "api_key",
        "apikey",
        "private_key",
        "privatekey",
        "access_key",
        "accesskey",
        "credential",
        "auth_key",
        "authkey",
    ];
    const SUFFIXES: &[&str] = &[
        "_file",
        "_path",
        "_dir",
        "_url",
        "_uri",
        "_endpoint",
        "_host",
        "_name",
        "_id",
        "_user",
        "_username",
        "_ttl",
        "_timeout",
        "_expiry",
        "_expires",
        "_lifetime",
        "_length",
        "_size",
        "_type",
        "_header",
        "_enabled",
        "_mode",
        "_version",
    ];
    // Every hint of the credential shapes: a value holding one needs the
    // shape's regex, which regorus judges.
    const HINTS: &[&str] = &[
        "AKIA",
        "ASIA",
        "PRIVATE KEY",
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
        "github_pat_",
        "xox",
        "_live_",
        "AIza",
        "eyJ",
        "://",
    ];
    for c in zt_containers(cx) {
        for (i, env) in zarr(Some(c.ctr), "env").iter().enumerate() {
            if !env.is_object() {
                continue;
            }
            let value = zstr(Some(env), "value");
            if value.is_empty() {
                continue;
            }
            let reference = value.starts_with("$(") && value.ends_with(')') && {
                // `count` is in UTF-16 units, `substring` in characters.
                let n = value.encode_utf16().count();
                !value
                    .chars()
                    .skip(2)
                    .take(n.saturating_sub(3))
                    .any(|ch| ch == ')')
            };
            if reference {
                continue;
            }
            let name = zstr(Some(env), "name");
            let n = name.to_lowercase().replace('-', "_");
            let secret_name =
                WORDS.iter().any(|w| n.contains(w)) && !SUFFIXES.iter().any(|s| n.ends_with(s));
            let why = if secret_name {
                "its name suggests a secret"
            } else if HINTS.iter().any(|h| value.contains(h)) {
                return Err(Unsure);
            } else {
                continue;
            };
            out.push(finding(
                format!(
                    "{} sets env var {} to a literal value ({why}); the value is not shown",
                    label(c)?,
                    quote(name)?
                ),
                cpath(c, &format!("env[{i}].value")),
                RV::from("[redacted]"),
            ));
        }
    }
    Ok(())
}

fn zt_host_path(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    let Some(p) = &cx.pod else { return Ok(()) };
    let prefixes = param_list(cx, "allowed_host_paths");
    for (i, vol) in p.volumes.iter().enumerate() {
        let Some(hp) = zobj(Some(vol), "hostPath") else {
            continue;
        };
        let path = zstr(Some(hp), "path");
        let traversal = path.split('/').any(|s| s == "..");
        let allowed = !traversal
            && prefixes.iter().filter_map(Value::as_str).any(|prefix| {
                if !prefix.starts_with('/') {
                    return false;
                }
                let p = path.trim_end_matches('/');
                let q = prefix.trim_end_matches('/');
                p == q || p.starts_with(&format!("{q}/"))
            });
        if allowed {
            continue;
        }
        let allowed_text = if prefixes.is_empty() {
            "none".to_string()
        } else {
            join_strings(prefixes)
        };
        out.push(finding(
            format!(
                "volume {} mounts host path {}, which is not under an allowed prefix (allowed: {allowed_text})",
                quote(zstr(Some(vol), "name"))?,
                quote(path)?
            ),
            format!("spec.volumes[{i}].hostPath.path"),
            RV::from(path),
        ));
    }
    Ok(())
}

fn zt_image_digest(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    for c in zt_containers(cx) {
        let image = zstr(Some(c.ctr), "image");
        if image.is_empty() {
            continue;
        }
        let parts: Vec<&str> = image.split('@').collect();
        let pinned = parts.len() == 2
            && [("sha256:", 64usize), ("sha512:", 128)]
                .iter()
                .any(|(alg, len)| {
                    // `count(hex) == length` and `trim(hex, "0123456789abcdef") == ""`:
                    // all lower-case hex digits, so bytes and characters agree.
                    parts[1].strip_prefix(alg).is_some_and(|hex| {
                        hex.len() == *len
                            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                    })
                });
        if pinned {
            continue;
        }
        let tag = {
            let name = parts.first().copied().unwrap_or("");
            let last = name.split('/').next_back().unwrap_or("");
            if last.contains(':') {
                last.split(':').nth(1)
            } else {
                None
            }
        };
        let problem = if image.contains('@') {
            "has a malformed digest"
        } else if tag == Some("latest") {
            "uses the mutable tag :latest"
        } else if tag.is_none_or(str::is_empty) {
            "has no tag, which means :latest"
        } else if match vget(cx.params, "require_image_digest") {
            Some(Value::Bool(b)) => *b,
            _ => true,
        } {
            "is not pinned by digest (tags are mutable)"
        } else {
            continue;
        };
        out.push(finding(
            format!("{}: image {} {problem}", label(c)?, quote(image)?),
            cpath(c, "image"),
            RV::from(image),
        ));
    }
    Ok(())
}

fn zt_privilege_escalation(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    if zt_windows(cx)? {
        return Ok(());
    }
    for c in zt_containers(cx) {
        let value = oget(c.sc, "allowPrivilegeEscalation", &NULL);
        if is_false(Some(value)) {
            continue;
        }
        out.push(finding(
            format!(
                "{} must set securityContext.allowPrivilegeEscalation=false",
                label(c)?
            ),
            cpath(c, "securityContext.allowPrivilegeEscalation"),
            rv(value),
        ));
    }
    Ok(())
}

fn zt_privileged(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    for c in zt_containers(cx) {
        if is_true(c.sc.and_then(|sc| vget(sc, "privileged"))) {
            out.push(finding(
                format!("{} runs privileged", label(c)?),
                cpath(c, "securityContext.privileged"),
                RV::from(true),
            ));
        }
        for (j, cap) in zarr(zobj(c.sc, "capabilities"), "add").iter().enumerate() {
            let Value::String(cap) = cap else { continue };
            let up = cap.to_uppercase();
            let bare = up.strip_prefix("CAP_").unwrap_or(&up);
            if bare == "SYS_ADMIN" || bare == "ALL" {
                out.push(finding(
                    format!(
                        "{} adds capability {cap}, which is as good as privileged",
                        label(c)?
                    ),
                    cpath(c, &format!("securityContext.capabilities.add[{j}]")),
                    RV::from(cap.as_str()),
                ));
            }
        }
    }
    Ok(())
}

fn zt_read_only_root_fs(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    if zt_windows(cx)? {
        return Ok(());
    }
    for c in zt_containers(cx) {
        if c.kind == "ephemeralContainers" {
            continue;
        }
        let value = oget(c.sc, "readOnlyRootFilesystem", &NULL);
        if is_true(Some(value)) {
            continue;
        }
        out.push(finding(
            format!(
                "{} must set securityContext.readOnlyRootFilesystem=true",
                label(c)?
            ),
            cpath(c, "securityContext.readOnlyRootFilesystem"),
            rv(value),
        ));
    }
    Ok(())
}

fn zt_required_labels(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    const WORKLOAD_KINDS: &[&str] = &[
        "Pod",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "ReplicationController",
        "Job",
        "CronJob",
    ];
    if !WORKLOAD_KINDS.contains(&zt_kind(cx)) {
        return Ok(());
    }
    let meta = zt_metadata(cx);
    let controlled = zarr(meta, "ownerReferences")
        .iter()
        .any(|r| r.is_object() && is_true(vget(r, "controller")));
    if controlled {
        return Ok(());
    }
    // `metadata.labels[key]`.
    let labels = get(meta, "labels")?;
    let label_of = |key: &str| get(labels, key);
    let has_label = |key: &str| -> R<bool> {
        Ok(matches!(label_of(key)?, Some(Value::String(s)) if !s.trim().is_empty()))
    };
    let required = param_list(cx, "required_labels");
    for key in required.iter().filter_map(Value::as_str) {
        if has_label(key)? {
            continue;
        }
        out.push(finding(
            format!(
                "{} has no {} label (required: {})",
                object_label(cx)?,
                quote(key)?,
                join_strings(required)
            ),
            format!("metadata.labels[{}]", quote(key)?),
            rv(oget(zobj(meta, "labels"), key, &NULL)),
        ));
    }
    if let Some(Value::Object(values)) = zobj(Some(cx.params), "allowed_label_values") {
        for (key, allowed) in values {
            let Value::Array(allowed) = allowed else {
                continue;
            };
            if allowed.is_empty() || !has_label(key)? {
                continue;
            }
            let Some(value) = label_of(key)? else {
                continue;
            };
            if allowed.contains(value) {
                continue;
            }
            let Value::String(s) = value else {
                return Err(Unsure);
            };
            out.push(finding(
                format!(
                    "{} has {key}={}, which is not one of: {}",
                    object_label(cx)?,
                    quote(s)?,
                    join_strings(allowed)
                ),
                format!("metadata.labels[{}]", quote(key)?),
                rv(value),
            ));
        }
    }
    Ok(())
}

fn zt_sa_token_automount(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    const NEED: &str = "keycard.dev/needs-api-token";
    let Some(p) = &cx.pod else { return Ok(()) };
    let spec = Some(p.spec);
    let value = oget(spec, "automountServiceAccountToken", &NULL);
    if is_false(Some(value)) {
        return Ok(());
    }
    let annotated = is_str(
        zobj(p.meta, "annotations").and_then(|a| vget(a, NEED)),
        "true",
    );
    let sa = match zstr(spec, "serviceAccountName") {
        "" => match zstr(spec, "serviceAccount") {
            "" => "default",
            s => s,
        },
        s => s,
    };
    let listed = param_list(cx, "token_service_accounts")
        .iter()
        .any(|v| is_str(Some(v), sa));
    if annotated || listed {
        return Ok(());
    }
    out.push(finding(
        format!("pod mounts a service-account token (spec.automountServiceAccountToken is not false) without declaring that it needs one (annotation {NEED}: \"true\")"),
        "spec.automountServiceAccountToken".into(),
        rv(value),
    ));
    Ok(())
}

fn zt_service_exposure(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    if zt_kind(cx) != "Service" {
        return Ok(());
    }
    let svc_type = zstr(zobj(Some(cx.object), "spec"), "type");
    let effect = match svc_type {
        "LoadBalancer" => "puts it on an external load-balancer address",
        "NodePort" => "opens its port on every node's address",
        _ => return Ok(()),
    };
    out.push(finding(
        format!(
            "{} is of type {svc_type}, which {effect}",
            object_label(cx)?
        ),
        "spec.type".into(),
        RV::from(svc_type),
    ));
    Ok(())
}

// ---- zero-trust RBAC ---------------------------------------------------------

/// `name_matches(name, patterns)`: equal to a pattern, or starting with what
/// precedes one trailing `*` of it.
fn name_matches(name: &str, patterns: &[Value]) -> bool {
    patterns
        .iter()
        .filter_map(Value::as_str)
        .any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == p,
        })
}

/// `kind in {"Role", "ClusterRole"}` and `not builtin_cluster_role`.
fn custom_role(cx: &Ctx<'_>) -> bool {
    match zt_kind(cx) {
        "Role" => true,
        "ClusterRole" => {
            let meta = zt_metadata(cx);
            let builtin = name_matches(
                zstr(meta, "name"),
                param_list(cx, "rbac_exempt_cluster_roles"),
            ) && is_str(
                zobj(meta, "labels").and_then(|l| vget(l, "kubernetes.io/bootstrapping")),
                "rbac-defaults",
            );
            !builtin
        }
        _ => false,
    }
}

/// `role_rules`, the object rules only (each with its index).
fn role_rules<'a>(cx: &Ctx<'a>) -> impl Iterator<Item = (usize, &'a Value)> {
    zarr(Some(cx.object), "rules")
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_object())
}

fn zt_rbac_wildcard(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    if !custom_role(cx) {
        return Ok(());
    }
    for (i, rule) in role_rules(cx) {
        for field in ["apiGroups", "resources", "verbs", "nonResourceURLs"] {
            for (j, item) in zarr(Some(rule), field).iter().enumerate() {
                // `item == "*"`, or a "*" anywhere in a resource.
                let Value::String(s) = item else { continue };
                if s != "*" && !(field == "resources" && s.contains('*')) {
                    continue;
                }
                out.push(finding(
                    format!(
                        "{} grants {field} {} in rules[{i}]",
                        object_label(cx)?,
                        quote(s)?
                    ),
                    format!("rules[{i}].{field}[{j}]"),
                    RV::from(s.as_str()),
                ));
            }
        }
    }
    Ok(())
}

/// `lower(verb) in {"escalate", "bind", "impersonate"}` (regorus' `lower` is
/// Rust's `to_lowercase`).
fn escalation_verb(verb: &str) -> bool {
    const VERBS: [&str; 3] = ["escalate", "bind", "impersonate"];
    if verb.is_ascii() {
        VERBS.iter().any(|v| verb.eq_ignore_ascii_case(v))
    } else {
        VERBS.contains(&verb.to_lowercase().as_str())
    }
}

fn zt_rbac_escalation_verbs(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    if !custom_role(cx) {
        return Ok(());
    }
    for (i, rule) in role_rules(cx) {
        for (j, verb) in zarr(Some(rule), "verbs").iter().enumerate() {
            let Value::String(verb) = verb else { continue };
            if !escalation_verb(verb) {
                continue;
            }
            // `resources(rule)`: an empty string is still a named resource.
            let resources = zarr(Some(rule), "resources");
            let names = if resources.iter().any(Value::is_string) {
                join_strings(resources)
            } else {
                "no named resource".to_string()
            };
            out.push(finding(
                format!(
                    "{} grants the {verb} verb on {names} in rules[{i}]",
                    object_label(cx)?
                ),
                format!("rules[{i}].verbs[{j}]"),
                RV::from(verb.as_str()),
            ));
        }
    }
    Ok(())
}

/// The zero-trust lib's `subject_label(s)` for an object `s`.
fn subject_label(s: &Value) -> R<String> {
    let name = zstr(Some(s), "name");
    let q = match vget(s, "namespace") {
        Some(Value::String(ns)) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    };
    Ok(format!("{} {}", zstr(Some(s), "kind"), quote(&q)?))
}

fn zt_rbac_cluster_admin(cx: &Ctx<'_>, out: &mut Vec<RV>) -> R<()> {
    let kind = zt_kind(cx);
    if !matches!(kind, "RoleBinding" | "ClusterRoleBinding") {
        return Ok(());
    }
    let role_ref = zobj(Some(cx.object), "roleRef");
    if !is_str(role_ref.and_then(|r| vget(r, "kind")), "ClusterRole")
        || !is_str(role_ref.and_then(|r| vget(r, "name")), "cluster-admin")
    {
        return Ok(());
    }
    let allowed_subjects = param_list(cx, "cluster_admin_subjects");
    for (j, subject) in zarr(Some(cx.object), "subjects").iter().enumerate() {
        if !subject.is_object() {
            continue;
        }
        let s = Some(subject);
        // `allowed(subject)`: an entry without a namespace matches any.
        let allowed = allowed_subjects.iter().filter(|a| a.is_object()).any(|a| {
            let (a, ns) = (Some(a), zstr(Some(a), "namespace"));
            zstr(a, "kind") == zstr(s, "kind")
                && zstr(a, "name") == zstr(s, "name")
                && (ns.is_empty() || ns == zstr(s, "namespace"))
        });
        if allowed {
            continue;
        }
        let reach = if kind == "ClusterRoleBinding" {
            " across the whole cluster".to_string()
        } else {
            format!(
                " in namespace {}",
                quote(zstr(zt_metadata(cx), "namespace"))?
            )
        };
        out.push(finding(
            format!(
                "{} binds cluster-admin to {}{reach}",
                object_label(cx)?,
                subject_label(subject)?
            ),
            format!("subjects[{j}]"),
            rv(subject),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packs;

    /// Every native rule is tied to the Rego embedded today: a change to a
    /// rule's Rego (or its pack's lib) turns its fast path off until the
    /// native twin is checked against it and its fingerprint updated here.
    #[test]
    fn native_rules_match_the_embedded_rego() {
        let mut texts = BTreeMap::new();
        for pack in packs::PACKS {
            for (path, text) in packs::rego_sources(pack) {
                let pkg = text
                    .lines()
                    .find_map(|l| l.strip_prefix("package "))
                    .map(|p| p.trim().to_string())
                    .unwrap_or_default();
                texts.insert(format!("packs/{path}"), (pkg, fingerprint(text)));
            }
        }
        let mut stale = Vec::new();
        for (lib, hash) in LIBS {
            let got = texts.get(*lib).map(|(_, h)| *h);
            if got != Some(*hash) {
                stale.push(format!("{lib}: {got:#x?}"));
            }
        }
        for (pkg, _, hash, _) in RULES {
            let got = texts.values().find(|(p, _)| p == pkg).map(|(_, h)| *h);
            if got != Some(*hash) {
                stale.push(format!("{pkg}: {got:#x?}"));
            }
        }
        assert!(stale.is_empty(), "fingerprints differ: {stale:#?}");
        // Every built-in rule with a deny set has a twin.
        for (file, (pkg, _)) in &texts {
            if file.ends_with("lib.rego") {
                continue;
            }
            assert!(
                RULES.iter().any(|(p, ..)| p == pkg),
                "{pkg} has no native twin"
            );
        }
    }

    #[test]
    fn quoting_and_formatting_are_sure_only_where_regorus_agrees() {
        assert_eq!(
            quote("a \"b\"\\\t").ok().as_deref(),
            Some("\"a \\\"b\\\"\\\\\\t\"")
        );
        assert!(quote("caf\u{e9}").is_err());
        assert!(quote("\u{7}").is_err());
        assert_eq!(fmt_v(&serde_json::json!(-3)).ok().as_deref(), Some("-3"));
        assert!(fmt_v(&serde_json::json!(1.5)).is_err());
        assert!(fmt_v(&serde_json::json!({"a": 1})).is_err());
    }
}
