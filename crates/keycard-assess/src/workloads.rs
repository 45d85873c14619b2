//! Workloads, the identity each runs as, data stores and who reaches them,
//! namespaces.

use crate::model::Inventory;
use crate::Context;

pub fn build(_ctx: &Context<'_>, _inventory: &mut Inventory) {}
