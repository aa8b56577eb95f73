//! The admin user's temporary password: random, and hard to leak.
//!
//! [`TemporaryPassword`] comes from the operating system's CSPRNG (ring's
//! `SystemRandom`). It has no `Display`, its `Debug` is redacted, and the
//! only way to read it is [`TemporaryPassword::expose`]: for the request
//! that creates the user and, sealed, for the welcome mail's secret store.
//! It never goes into a step result, an event or a log line.

use ring::rand::{SecureRandom as _, SystemRandom};

const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
const DIGITS: &[u8] = b"23456789";
const SYMBOLS: &[u8] = b"-_.!@#%+=";
const LENGTH: usize = 24;

/// A temporary password; see the module docs.
pub struct TemporaryPassword(String);

impl std::fmt::Debug for TemporaryPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TemporaryPassword(redacted)")
    }
}

impl TemporaryPassword {
    /// 24 characters, with a lower-case letter, an upper-case letter, a
    /// digit and a symbol so that common realm password policies accept it
    /// (about 140 bits).
    pub fn generate() -> Result<Self, ring::error::Unspecified> {
        let alphabet: Vec<u8> = [LOWER, UPPER, DIGITS, SYMBOLS].concat();
        let random = SystemRandom::new();
        loop {
            let mut bytes = [0u8; 64];
            random.fill(&mut bytes)?;
            // Rejection sampling keeps every character equally likely.
            let limit = 256 - 256 % alphabet.len();
            let password: String = bytes
                .iter()
                .filter(|b| usize::from(**b) < limit)
                .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
                .take(LENGTH)
                .collect();
            let has = |set: &[u8]| password.bytes().any(|c| set.contains(&c));
            if password.len() == LENGTH && has(LOWER) && has(UPPER) && has(DIGITS) && has(SYMBOLS) {
                return Ok(Self(password));
            }
        }
    }

    /// A password generated earlier and kept in the secret store.
    pub fn kept(password: String) -> Self {
        Self(password)
    }

    /// The password itself, for the one request that sets it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_mixed_distinct_and_redacted() {
        let a = TemporaryPassword::generate().unwrap();
        let b = TemporaryPassword::generate().unwrap();
        assert_eq!(a.expose().len(), LENGTH);
        assert_ne!(a.expose(), b.expose());
        assert_eq!(format!("{a:?}"), "TemporaryPassword(redacted)");
    }
}
