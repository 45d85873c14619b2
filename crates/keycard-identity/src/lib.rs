//! keycard's identity system: the SPIFFE CA, X509- and JWT-SVID minting, bundles and federation, registration, attestation, join tokens and rotation.
