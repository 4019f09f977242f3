//! [`LocalAuth`]: how local clients prove who they are.

use secrecy::SecretString;

use crate::peer;

/// How local clients prove who they are.
#[derive(Clone)]
#[non_exhaustive]
pub enum LocalAuth {
    /// Processes running as one of these user ids (by default the proxy's own): unix-socket peer
    /// credentials, and on loopback TCP the owner of the client's socket in the kernel's table. No
    /// password is asked for.
    Peer {
        /// The user ids allowed.
        uids: Vec<u32>,
    },
    /// Whoever sends this secret as the password (over TLS beyond loopback).
    Secret(SecretString),
}

impl LocalAuth {
    /// Peer authentication for the proxy's own user id.
    pub fn own_user() -> Self {
        LocalAuth::Peer {
            uids: vec![peer::own_uid()],
        }
    }

    /// A new random local secret (32 bytes, URL-safe base64): give it to clients out of band, for example
    /// in a file only they can read.
    pub fn generate_secret() -> SecretString {
        use base64::Engine as _;
        use rand::RngCore as _;
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(&mut bytes[..]);
        SecretString::from(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..]))
    }
}

impl std::fmt::Debug for LocalAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LocalAuth::Peer { uids } => f.debug_struct("Peer").field("uids", uids).finish(),
            LocalAuth::Secret(_) => f.write_str("Secret(…)"),
        }
    }
}
