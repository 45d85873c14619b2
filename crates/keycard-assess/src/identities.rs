//! Every identity, its category and its effective permissions.

use crate::model::Identity;
use crate::Context;

pub fn build(_ctx: &Context<'_>) -> Vec<Identity> {
    Vec::new()
}
