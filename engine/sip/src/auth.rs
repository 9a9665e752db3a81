//! Digest authentication (RFC 3261 §22) when the trunk challenges an INVITE
//! with 401 or 407. The stack computes MD5 digests, with or without
//! `qop=auth`; SHA-256 (RFC 8760) is not supported by it yet.

use rsipstack::dialog::authenticate::Credential;

use crate::trunk::Credentials;

/// The stack's form of our credentials. The realm is left open so the
/// challenge's realm is answered, whatever the trunk calls itself.
pub(crate) fn credential(c: &Credentials) -> Credential {
    Credential {
        username: c.username.clone(),
        password: c.password.expose().to_string(),
        realm: None,
        auth_username: None,
    }
}
