//! `keycard policy list|show|test`.

use keycard_policy::packs::{self, PACKS};
use keycard_policy::{parse_annotations, PolicySetBuilder};

use crate::cli::PolicyTestArgs;

pub fn list() -> anyhow::Result<u8> {
    let mut out = String::new();
    for p in PACKS {
        let set = PolicySetBuilder::new().pack(p.name).build()?;
        out.push_str(&format!(
            "{:<16} {:>3} rules  {}\n",
            p.name,
            set.rule_count(),
            p.title
        ));
        for (path, text) in packs::rego_sources(p) {
            let info = parse_annotations(path, text)?;
            if !p
                .prefixes
                .iter()
                .any(|pre| format!("{}.", info.package).starts_with(pre))
            {
                continue;
            }
            if let Some(m) = info.package_meta {
                let sev = m.severity.map(|s| s.as_str()).unwrap_or("-");
                out.push_str(&format!(
                    "    {:<44} {:<8} {}\n",
                    m.id.unwrap_or(info.package),
                    sev,
                    m.title
                ));
            }
        }
    }
    super::emit(&out)?;
    Ok(0)
}

pub fn show(name: &str) -> anyhow::Result<u8> {
    let pack = packs::find(name).ok_or_else(|| {
        let names: Vec<_> = PACKS.iter().map(|p| p.name).collect();
        anyhow::anyhow!(
            "unknown pack {name:?}: the built-in packs are {}",
            names.join(", ")
        )
    })?;
    super::emit(&packs::show(pack))?;
    Ok(0)
}

pub fn test(_args: PolicyTestArgs) -> anyhow::Result<u8> {
    anyhow::bail!("keycard policy test is not wired yet")
}
