//! Mail addresses as the keystore stores and looks them up.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An address split into local part (kept exactly as given) and domain (lower-cased:
/// domains are case-insensitive, RFC 5321 section 2.4).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    pub local: String,
    pub domain: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid mail address {input:?}: {why}")]
pub struct AddressError {
    pub input: String,
    pub why: &'static str,
}

impl Address {
    /// Parses `local@domain`, accepting an optional pair of angle brackets around it (as in
    /// SMTP `RCPT TO:<…>`).
    pub fn parse(input: &str) -> Result<Address, AddressError> {
        let err = |why| AddressError {
            input: input.chars().take(200).collect(),
            why,
        };
        let s = input.trim();
        let s = s
            .strip_prefix('<')
            .and_then(|s| s.strip_suffix('>'))
            .unwrap_or(s);
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s.len() > 320 {
            return Err(err("it is longer than 320 bytes"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("it contains white space or control characters"));
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err(err("it has no @"));
        };
        if local.is_empty() {
            return Err(err("the local part is empty"));
        }
        if local.len() > 64 && !local.starts_with('"') {
            return Err(err("the local part is longer than 64 bytes"));
        }
        if domain.is_empty() {
            return Err(err("the domain is empty"));
        }
        if domain.contains('@') || domain.starts_with('.') || domain.ends_with('.') {
            return Err(err("the domain is malformed"));
        }
        if domain.contains("..") || domain.contains(['<', '>', '(', ')', ',', ';', ':', '"']) {
            return Err(err("the domain is malformed"));
        }
        Ok(Address {
            local: local.to_string(),
            domain: domain.to_lowercase(),
        })
    }

    /// True when both name the same mailbox under the default rule (local part exact,
    /// domain case-insensitive).
    pub fn same_mailbox(&self, other: &Address) -> bool {
        self.domain == other.domain && self.local == other.local
    }

    /// The local part with everything from the first recipient delimiter stripped
    /// (`user+tag` → `user`), if a delimiter occurs after at least one character.
    pub fn strip_delimiter(&self, delimiters: &str) -> Option<Address> {
        if delimiters.is_empty() {
            return None;
        }
        let pos = self.local.find(|c| delimiters.contains(c))?;
        if pos == 0 {
            return None;
        }
        Some(Address {
            local: self.local[..pos].to_string(),
            domain: self.domain.clone(),
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// How recipients are matched to stored addresses (`[lookup]` in the config file).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LookupConfig {
    /// `"exact"` (default) or `"insensitive"`: how the local part is compared.
    pub local_part: LocalPartMatch,
    /// Characters that start a recipient extension, as Postfix's `recipient_delimiter`.
    /// Empty disables stripping.
    pub recipient_delimiter: String,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LocalPartMatch {
    Exact,
    Insensitive,
}

impl Default for LookupConfig {
    fn default() -> Self {
        LookupConfig {
            local_part: LocalPartMatch::Exact,
            recipient_delimiter: "+".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalizes_domain() {
        let a = Address::parse("<Alice.X@Example.ORG>").unwrap();
        assert_eq!(a.local, "Alice.X");
        assert_eq!(a.domain, "example.org");
        assert_eq!(a.to_string(), "Alice.X@example.org");
    }

    #[test]
    fn refuses_bad_addresses() {
        for bad in [
            "",
            "alice",
            "@example.org",
            "alice@",
            "a b@example.org",
            "alice@.org",
            "alice@ex..org",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn strips_delimiter() {
        let a = Address::parse("bob+lists@example.org").unwrap();
        assert_eq!(
            a.strip_delimiter("+").unwrap().to_string(),
            "bob@example.org"
        );
        assert_eq!(
            Address::parse("+x@example.org")
                .unwrap()
                .strip_delimiter("+"),
            None
        );
        assert_eq!(a.strip_delimiter(""), None);
        let b = Address::parse("bob-x@example.org").unwrap();
        assert_eq!(
            b.strip_delimiter("+-").unwrap().to_string(),
            "bob@example.org"
        );
    }
}
