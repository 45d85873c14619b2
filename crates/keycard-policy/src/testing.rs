//! `keycard policy test`: runs `test_*` rules like `opa test`.
