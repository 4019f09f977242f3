//! [`AccessToken`]: a bearer token that never shows its secret.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};

/// An Entra ID access token: the secret (a JWT), when it expires and, optionally, when the issuer advises
/// refreshing it.
///
/// Cloning is cheap (a reference count). The secret is zeroized when the last clone drops (copies made
/// with [`secret`](Self::secret) are the caller's; see the crate docs for what is and is not zeroized),
/// and neither `Debug` nor `Display` ever shows it: they print a [`fingerprint`](Self::fingerprint)
/// instead.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use entra_token::AccessToken;
///
/// let token = AccessToken::new("eyJ0eXAi.secret.part", SystemTime::now() + Duration::from_secs(3600));
/// assert_eq!(token.secret(), "eyJ0eXAi.secret.part");
/// assert!(!format!("{token:?}").contains("secret.part"));
/// ```
#[derive(Clone)]
pub struct AccessToken {
    inner: Arc<Inner>,
    /// Which publication of its refresher this is (1, 2, …); 0 outside a refresher.
    generation: u64,
}

struct Inner {
    secret: SecretString,
    expires_on: SystemTime,
    refresh_on: Option<SystemTime>,
    fingerprint: Fingerprint,
}

impl AccessToken {
    /// A token with its secret and expiry.
    pub fn new(secret: impl Into<String>, expires_on: SystemTime) -> Self {
        Self::with_refresh_on(secret, expires_on, None)
    }

    /// A token with the issuer's advice of when to refresh it (`refresh_in` / `refresh_on`).
    pub fn with_refresh_on(
        secret: impl Into<String>,
        expires_on: SystemTime,
        refresh_on: Option<SystemTime>,
    ) -> Self {
        let secret: String = secret.into();
        let fingerprint = Fingerprint::of(&secret);
        AccessToken {
            inner: Arc::new(Inner {
                secret: exact_secret(secret),
                expires_on,
                refresh_on,
                fingerprint,
            }),
            generation: 0,
        }
    }

    /// The secret itself, to send as a password or bearer token. Never log it: log
    /// [`fingerprint`](Self::fingerprint).
    pub fn secret(&self) -> &str {
        self.inner.secret.expose_secret()
    }

    /// When the token stops being accepted.
    pub fn expires_on(&self) -> SystemTime {
        self.inner.expires_on
    }

    /// When the issuer advises refreshing, if it said so.
    pub fn refresh_on(&self) -> Option<SystemTime> {
        self.inner.refresh_on
    }

    /// Time left before expiry, measured with the wall clock; zero once expired.
    pub fn expires_in(&self) -> Duration {
        self.inner
            .expires_on
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }

    /// A short identifier that is safe to log: the secret's length and the last four hex digits of its
    /// SHA-256.
    pub fn fingerprint(&self) -> Fingerprint {
        self.inner.fingerprint
    }

    /// Which of its refresher's tokens this is: 1 for the first one published, then one more for every
    /// renewal, as [`TokenHandle::generation`](crate::TokenHandle::generation) counts them; 0 for a token
    /// that did not come from a refresher. Tests and logs use it to order a connection's token against
    /// the refresher's renewals without comparing clocks.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The same token, numbered as its refresher's `generation`-th publication.
    pub(crate) fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    /// Whether two handles hold the very same token (the same fetch), not merely an equal secret.
    pub fn same_as(&self, other: &AccessToken) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// The secret in a `SecretString` without a stray copy: `SecretString::from(String)` shrinks the string
/// to a `Box<str>`, which reallocates (and frees the old bytes unzeroized) when it has spare capacity.
fn exact_secret(mut secret: String) -> SecretString {
    if secret.capacity() == secret.len() {
        return SecretString::from(secret);
    }
    let mut exact = String::with_capacity(secret.len());
    exact.push_str(&secret);
    zeroize::Zeroize::zeroize(&mut secret);
    SecretString::from(exact)
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("fingerprint", &self.inner.fingerprint)
            .field("expires_in", &self.expires_in())
            .field("refresh_on", &self.inner.refresh_on.is_some())
            .field("generation", &self.generation)
            .finish()
    }
}

impl fmt::Display for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "token {}", self.inner.fingerprint)
    }
}

/// A safe-to-log summary of a secret: its length and the last 4 hex digits of its SHA-256.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    len: usize,
    tail: [u8; 2],
}

impl Fingerprint {
    /// The fingerprint of any secret text.
    pub fn of(secret: &str) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
        let bytes = digest.as_ref();
        Fingerprint {
            len: secret.len(),
            tail: [bytes[30], bytes[31]],
        }
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "len={} sha256=…{:02x}{:02x}",
            self.len, self.tail[0], self.tail[1]
        )
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let t = AccessToken::new("abc.def.ghi-secret", SystemTime::now());
        for s in [format!("{t:?}"), format!("{t}"), format!("{:?}", t.fingerprint())] {
            assert!(!s.contains("secret"), "{s}");
            assert!(!s.contains("abc.def"), "{s}");
        }
        assert!(format!("{t}").contains("len=18"));
    }

    /// The secret lives in a `SecretString`, whose drop overwrites the bytes; this fails to compile if
    /// that container ever stops guaranteeing it.
    #[test]
    fn the_secret_container_zeroizes_on_drop() {
        fn zeroized_on_drop<T: zeroize::ZeroizeOnDrop + ?Sized>() {}
        zeroized_on_drop::<SecretString>();
    }

    #[test]
    fn clones_are_the_same_token_and_new_fetches_are_not() {
        let a = AccessToken::new("x", SystemTime::now());
        let b = a.clone();
        let c = AccessToken::new("x", a.expires_on());
        assert!(a.same_as(&b));
        assert!(!a.same_as(&c));
        assert_eq!(a.fingerprint(), c.fingerprint());
    }
}
