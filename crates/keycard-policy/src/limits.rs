//! Memory limits around evaluation.
//!
//! Two bounds, both backed by the counting allocator regorus installs as the
//! process's global allocator (its `allocator-memory-limits` feature):
//!
//! - **Per evaluation** ([`crate::PolicySetBuilder::memory_limit`]): the live
//!   bytes one evaluation of one object adds on its thread, checked by
//!   regorus' bytecode VM between instructions. It covers the built-in packs
//!   and every policy that compiles to the VM. The error names the rule.
//! - **Per process** ([`set_process_memory_ceiling`]): the bytes allocated by
//!   the whole process, checked by the interpreter (Gatekeeper templates,
//!   Rego the VM does not compile), inside the builtins that build large
//!   values (`numbers.range`, string and collection builders), and by the VM
//!   too. It is the only bound on a single builtin call and on the
//!   interpreter; whichever evaluation crosses it first reports it.
//!
//! Neither bound can stop one allocation request that is itself larger than
//! the limit (the check comes after it); regorus' builtins grow values step
//! by step, so in practice the overshoot is one step.

/// Bytes currently allocated by the whole process (live, not peak), as the
/// counting allocator sees them.
pub fn allocated_bytes() -> u64 {
    regorus_mimalloc::global_allocation_stats_snapshot().allocated
}

/// Set (or with `None`, remove) the process-wide ceiling on allocated bytes
/// that regorus checks while evaluating.
pub fn set_process_memory_ceiling(bytes: Option<u64>) {
    regorus::set_global_memory_limit(bytes);
}
