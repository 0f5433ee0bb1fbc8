//! [`Credentials`]: who may register which agent id. Per-agent credentials, never one shared
//! secret: a token map (each token lists the ids it may register) and, with TLS, client
//! certificates whose subject alternative name equals the id.

use std::collections::{HashMap, HashSet};

use drpc_core::PeerIdentity;

use crate::error::ReverseError;
use crate::proto::Refusal;

/// The hub's credential check for registrations. Cheap to share (the hub keeps one).
///
/// ```
/// use drpc_reverse::hub::Credentials;
/// let creds = Credentials::parse_tokens("# token ids\nt1 edge-1,edge-2\nt2 edge-3\n")?;
/// assert!(creds.check("edge-2", "t1", None).is_ok());
/// assert!(creds.check("edge-3", "t1", None).is_err());
/// # Ok::<(), drpc_reverse::ReverseError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    tokens: HashMap<String, HashSet<String>>,
    mtls_san: bool,
}

impl Credentials {
    /// No credential is accepted yet: add tokens or mTLS.
    pub fn new() -> Credentials {
        Credentials::default()
    }

    /// Allows `token` to register each of `ids` (adding to what it already allows).
    pub fn with_token(
        mut self,
        token: impl Into<String>,
        ids: impl IntoIterator<Item = impl Into<String>>,
    ) -> Credentials {
        self.tokens
            .entry(token.into())
            .or_default()
            .extend(ids.into_iter().map(Into::into));
        self
    }

    /// Also accepts an agent without a token whose verified client certificate (mTLS) has a
    /// subject alternative name (DNS name or URI) equal to its id.
    pub fn with_mtls_san(mut self) -> Credentials {
        self.mtls_san = true;
        self
    }

    /// Parses a tokens file: one `TOKEN ID[,ID...]` per line; blank lines and lines starting
    /// with `#` are skipped.
    ///
    /// # Errors
    /// [`ReverseError::TokensFile`] for a line of another shape.
    pub fn parse_tokens(text: &str) -> Result<Credentials, ReverseError> {
        let mut creds = Credentials::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(token), Some(ids), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(ReverseError::TokensFile { line: i + 1 });
            };
            let ids: Vec<&str> = ids.split(',').filter(|s| !s.is_empty()).collect();
            if ids.is_empty() {
                return Err(ReverseError::TokensFile { line: i + 1 });
            }
            creds = creds.with_token(token, ids);
        }
        Ok(creds)
    }

    /// Checks that `credential` (a token, possibly empty) or the TLS `identity` allows `id`.
    ///
    /// # Errors
    /// The [`Refusal`] and its text.
    pub fn check(
        &self,
        id: &str,
        credential: &str,
        identity: Option<&PeerIdentity>,
    ) -> Result<(), (Refusal, String)> {
        if id.is_empty() {
            return Err((Refusal::Invalid, "empty agent id".into()));
        }
        if credential.is_empty() {
            if self.mtls_san
                && let Some(identity) = identity
            {
                let san = identity.dns_names.iter().chain(identity.uris.iter());
                if san.clone().any(|name| name == id) {
                    return Ok(());
                }
                return Err((
                    Refusal::IdNotAllowed,
                    format!("client certificate names no {id:?} among its alternative names"),
                ));
            }
            return Err((Refusal::MissingCredential, "no credential".into()));
        }
        match self.tokens.get(credential) {
            None => Err((Refusal::BadCredential, "unknown token".into())),
            Some(ids) if ids.contains(id) => Ok(()),
            Some(_) => Err((
                Refusal::IdNotAllowed,
                format!("token does not allow id {id:?}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file_lines() {
        let c = Credentials::parse_tokens("a x,y\n\n# c\nb z").unwrap();
        assert!(c.check("x", "a", None).is_ok());
        assert!(c.check("z", "b", None).is_ok());
        assert_eq!(
            c.check("z", "a", None).unwrap_err().0,
            Refusal::IdNotAllowed
        );
        assert_eq!(
            c.check("z", "q", None).unwrap_err().0,
            Refusal::BadCredential
        );
        assert_eq!(
            c.check("z", "", None).unwrap_err().0,
            Refusal::MissingCredential
        );
        assert_eq!(c.check("", "a", None).unwrap_err().0, Refusal::Invalid);
        assert!(matches!(
            Credentials::parse_tokens("a\n"),
            Err(ReverseError::TokensFile { line: 1 })
        ));
        assert!(matches!(
            Credentials::parse_tokens("ok x\na b c"),
            Err(ReverseError::TokensFile { line: 2 })
        ));
    }
}
