//! The CISA Zero Trust Maturity Model v2 stage per pillar.

use crate::model::{Finding, Inventory, Maturity};
use crate::Context;

pub fn score(_ctx: &Context<'_>, _inventory: &Inventory, _findings: &[Finding]) -> Maturity {
    Maturity::default()
}
