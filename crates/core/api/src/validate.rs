//! Semantic validation: the rules a CRD schema cannot express (regexes that must compile, CIDRs that must
//! parse, cross-field rules such as "a TrafficTarget lives in its destination's namespace").
//!
//! Every error names the offending field by its JSON path (`spec.backends[1].weight`), the way
//! `kubectl` reports schema errors, so a user can find the line to fix. Validators never panic, whatever
//! the input.

use std::fmt;
use std::net::IpAddr;

use crate::duration::GoDuration;

/// Something that can check its own semantic rules.
pub trait Validate {
    /// `Ok(())` when every rule holds, otherwise every broken rule (not only the first).
    fn validate(&self) -> Result<(), ValidationErrors>;
}

/// One broken rule: the field's JSON path and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// JSON path of the field, e.g. `spec.destination.namespace` or `spec.backends[1].weight`.
    pub field: String,
    /// What is wrong, e.g. `must be >= 0`.
    pub message: String,
}

/// All broken rules of one object, in field order.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ValidationErrors {
    /// The broken rules.
    pub fn iter(&self) -> impl Iterator<Item = &FieldError> {
        self.0.iter()
    }

    /// The paths of the offending fields.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|e| e.field.as_str())
    }

    /// The error for `field`, if that field broke a rule.
    pub fn get(&self, field: &str) -> Option<&FieldError> {
        self.0.iter().find(|e| e.field == field)
    }

    /// Number of broken rules.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no rule was broken.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl IntoIterator for ValidationErrors {
    type Item = FieldError;
    type IntoIter = std::vec::IntoIter<FieldError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Collects broken rules while a validator walks an object.
#[derive(Debug, Default)]
pub(crate) struct Errors(Vec<FieldError>);

impl Errors {
    pub(crate) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Adds the errors of a nested validation.
    pub(crate) fn extend(&mut self, result: Result<(), ValidationErrors>) {
        if let Err(e) = result {
            self.0.extend(e.0);
        }
    }

    pub(crate) fn finish(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.0))
        }
    }

    pub(crate) fn non_empty(&mut self, field: impl Into<String>, value: &str) {
        if value.trim().is_empty() {
            self.add(field, "must not be empty");
        }
    }

    pub(crate) fn one_of(&mut self, field: impl Into<String>, value: &str, allowed: &[&str]) {
        if !allowed.contains(&value) {
            self.add(
                field,
                format!("must be one of {} (got {value:?})", allowed.join(", ")),
            );
        }
    }

    pub(crate) fn port(&mut self, field: impl Into<String>, port: i64) {
        if !(1..=65535).contains(&port) {
            self.add(field, format!("must be a port between 1 and 65535 (got {port})"));
        }
    }

    pub(crate) fn positive_duration(&mut self, field: impl Into<String>, d: &GoDuration) {
        if d.is_zero() {
            self.add(field, "must be greater than 0s");
        }
    }

    pub(crate) fn cidr(&mut self, field: impl Into<String>, value: &str) {
        if let Err(reason) = parse_cidr(value) {
            self.add(
                field,
                format!("must be a CIDR range such as 10.0.0.0/8 ({reason})"),
            );
        }
    }

    pub(crate) fn regex(&mut self, field: impl Into<String>, pattern: &str) {
        if let Err(reason) = compile_regex(pattern) {
            self.add(field, format!("invalid regular expression: {reason}"));
        }
    }
}

/// Parses `a.b.c.d/n` or `x::y/n`; on failure says why.
pub fn parse_cidr(value: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) = value
        .split_once('/')
        .ok_or_else(|| format!("{value:?} has no /prefix-length"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| format!("prefix length {prefix:?} must be between 0 and {max}"))?;
    Ok((addr, prefix))
}

/// Compiles a user regex with a bounded size, so a hostile pattern costs an error, not memory.
/// Envoy uses RE2; the `regex` crate accepts the same syntax minus a few rarely used escapes.
pub(crate) fn compile_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map_err(|e| {
            // The crate prints a multi-line caret diagram; keep it on one line.
            e.to_string()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_field() {
        let errs = ValidationErrors(vec![
            FieldError {
                field: "spec.backends[1].weight".into(),
                message: "must be >= 0".into(),
            },
            FieldError {
                field: "spec.service".into(),
                message: "must not be empty".into(),
            },
        ]);
        assert_eq!(
            errs.to_string(),
            "spec.backends[1].weight: must be >= 0; spec.service: must not be empty"
        );
        assert_eq!(
            errs.fields().collect::<Vec<_>>(),
            ["spec.backends[1].weight", "spec.service"]
        );
    }

    #[test]
    fn cidrs() {
        assert!(parse_cidr("10.0.0.0/8").is_ok());
        assert!(parse_cidr("fd00::/64").is_ok());
        assert!(parse_cidr("10.0.0.0").is_err());
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("300.0.0.0/8").is_err());
        assert!(parse_cidr("/").is_err());
    }

    #[test]
    fn regex_errors_are_one_line() {
        let e = compile_regex("(").unwrap_err();
        assert!(!e.contains('\n'), "{e}");
    }
}
