//! Input rules for registration. Each failure names the offending field so
//! the HTTP layer can answer 422 with it.

use std::borrow::Cow;

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: Cow<'static, str>,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// 3 to 64 characters of `[A-Za-z0-9_.-]`.
pub fn username(value: &str) -> Result<(), ValidationError> {
    let len = value.chars().count();
    if !(3..=64).contains(&len) {
        return Err(ValidationError::new(
            "username",
            "must be 3 to 64 characters long",
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(ValidationError::new(
            "username",
            "may contain only letters, digits, '_', '.' and '-'",
        ));
    }
    Ok(())
}

/// A pragmatic address check: one `@`, a non-empty local part, a dotted
/// domain, no whitespace or control characters, at most 254 characters.
/// Deliverability is not our business; rejecting obvious garbage is.
pub fn email(value: &str) -> Result<(), ValidationError> {
    let bad = || ValidationError::new("email", "must be a valid email address");
    if value.len() > 254 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = value.split_once('@').ok_or_else(bad)?;
    if local.is_empty() || local.len() > 64 || domain.contains('@') {
        return Err(bad());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2
        || labels.iter().any(|l| {
            l.is_empty()
                || l.len() > 63
                || l.starts_with('-')
                || l.ends_with('-')
                || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
    {
        return Err(bad());
    }
    Ok(())
}

/// Optional display name: at most 200 characters, no control characters.
pub fn full_name(value: &str) -> Result<(), ValidationError> {
    if value.chars().count() > 200 || value.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "full_name",
            "must be at most 200 characters without control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["abc", "john_doe", "a.b-c_9", &"x".repeat(64)] {
            assert!(username(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", "", "john doe", "jöhn", "a/b", &"x".repeat(65)] {
            assert_eq!(username(bad).unwrap_err().field, "username", "{bad}");
        }
    }

    #[test]
    fn emails() {
        for ok in ["john@example.com", "a.b+c@sub.example.org"] {
            assert!(email(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "john",
            "john@",
            "@example.com",
            "john@localhost",
            "jo hn@example.com",
            "a@b@example.com",
            "john@exa_mple.com",
            "john@.example.com",
        ] {
            assert_eq!(email(bad).unwrap_err().field, "email", "{bad}");
        }
    }
}
