//! Legacy trust assumptions.

use crate::model::{Finding, Inventory};
use crate::Context;

pub fn find(_ctx: &Context<'_>, _inventory: &Inventory) -> Vec<Finding> {
    Vec::new()
}
