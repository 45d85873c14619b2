//! keycard's enforcement points: the authorization model, JWT validation, the ext_authz server and the mTLS proxy.
