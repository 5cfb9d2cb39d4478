//! Checks of the plain fields that many resources share.

use crate::error::Violations;

/// A code such as `R01` or `street-3`: 1–64 letters, digits, `-`, `_` or `.`.
pub fn code(errors: &mut Violations, field: &str, value: &str) {
    let ok = (1..=64).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    errors.check(
        !ok,
        field,
        "must be 1-64 characters of letters, digits, '-', '_' or '.'",
    );
}

/// A human name: 1–200 characters, not blank, no control characters.
pub fn name(errors: &mut Violations, field: &str, value: &str) {
    let chars = value.chars().count();
    let ok = (1..=200).contains(&chars)
        && !value.trim().is_empty()
        && !value.chars().any(char::is_control);
    errors.check(
        !ok,
        field,
        "must be 1-200 characters, not blank, without control characters",
    );
}

/// A username: 2–64 characters of lower-case letters, digits, `.`, `_` or `-`.
pub fn username(errors: &mut Violations, field: &str, value: &str) {
    let ok = (2..=64).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    errors.check(
        !ok,
        field,
        "must be 2-64 characters of lower-case letters, digits, '.', '_' or '-'",
    );
}

/// A password: 8–256 characters.
pub fn password(errors: &mut Violations, field: &str, value: &str) {
    let chars = value.chars().count();
    errors.check(
        !(8..=256).contains(&chars),
        field,
        "must be 8-256 characters",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(f: fn(&mut Violations, &str, &str), v: &str) -> bool {
        let mut e = Violations::new();
        f(&mut e, "f", v);
        e.finish().is_ok()
    }

    #[test]
    fn fields() {
        assert!(ok(code, "R01"));
        assert!(!ok(code, ""));
        assert!(!ok(code, "a b"));
        assert!(ok(name, "第一街道"));
        assert!(!ok(name, "  "));
        assert!(!ok(name, "a\nb"));
        assert!(ok(username, "li.wei"));
        assert!(!ok(username, "Li"));
        assert!(ok(password, "12345678"));
        assert!(!ok(password, "1234567"));
    }
}
