//! The built-in packs, embedded in the binary at build time from `packs/`.

include!(concat!(env!("OUT_DIR"), "/packs.rs"));

/// A built-in pack: a directory of Rego under `packs/` and the package
/// prefixes whose rules it reports.
#[derive(Debug)]
pub struct Pack {
    pub name: &'static str,
    pub title: &'static str,
    pub dir: &'static str,
    pub prefixes: &'static [&'static str],
}

pub const PACKS: &[Pack] = &[
    Pack {
        name: "pss-baseline",
        title: "Kubernetes Pod Security Standards, baseline level (v1.0 to the latest)",
        dir: "pss",
        prefixes: &["keycard.pss.baseline."],
    },
    Pack {
        name: "pss-restricted",
        title: "Kubernetes Pod Security Standards, restricted level (includes baseline)",
        dir: "pss",
        prefixes: &["keycard.pss.baseline.", "keycard.pss.restricted."],
    },
    Pack {
        name: "zero-trust",
        title:
            "Zero-trust hygiene: supply chain, identity, least privilege, segmentation, exposure",
        dir: "zero-trust",
        prefixes: &["keycard.zt."],
    },
];

/// The packs `keycard check` uses when none is named.
pub const DEFAULT_PACKS: &[&str] = &["pss-restricted", "zero-trust"];

pub fn find(name: &str) -> Option<&'static Pack> {
    PACKS.iter().find(|p| p.name == name)
}

fn in_dir<'a>(dir: &'a str) -> impl Iterator<Item = (&'static str, &'static str)> + 'a {
    PACK_FILES.iter().copied().filter(move |(path, _)| {
        path.strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// The policy sources of a pack (tests excluded).
pub fn rego_sources(pack: &Pack) -> Vec<(&'static str, &'static str)> {
    in_dir(pack.dir)
        .filter(|(p, _)| p.ends_with(".rego") && !p.ends_with("_test.rego"))
        .collect()
}

/// Every Rego source of a pack, tests included.
pub fn all_rego_sources(pack: &Pack) -> Vec<(&'static str, &'static str)> {
    in_dir(pack.dir)
        .filter(|(p, _)| p.ends_with(".rego"))
        .collect()
}

/// The parameter defaults of a pack (`params.yaml`), if it has any.
pub fn default_params(pack: &Pack) -> Option<&'static str> {
    in_dir(pack.dir)
        .find(|(p, _)| p.ends_with("/params.yaml"))
        .map(|(_, t)| t)
}

/// The full source of a pack, for `keycard policy show`.
pub fn show(pack: &Pack) -> String {
    let mut out = String::new();
    for (path, text) in rego_sources(pack) {
        out.push_str(&format!("# ---- packs/{path}\n{text}"));
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    if let Some(params) = default_params(pack) {
        out.push_str(&format!("# ---- packs/{}/params.yaml\n", pack.dir));
        for l in params.lines() {
            out.push_str(&format!("# {l}\n"));
        }
    }
    out
}
