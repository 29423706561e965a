//! [`SourceError`]: one problem found in a manifest directory, located by file, document, object and
//! field so a user can find the line to fix.
//!
//! Messages never quote the contents of a Secret: Secret documents are dropped before anything looks
//! at them, and YAML syntax errors are reported by position without a source snippet.

use std::fmt;
use std::path::PathBuf;

/// One problem in a manifest directory.
///
/// Displays as `policies/bad.yaml (document 2, TrafficSplit bookstore/bookstore-split):
/// spec.backends[0].weight: must be >= 0`; parts that are unknown are left out
/// (`policies/bad.yaml: not valid UTF-8`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceError {
    /// The file, relative to the manifest directory (the directory itself for directory errors).
    pub file: PathBuf,
    /// 1-based position of the document among the file's non-empty YAML documents; 0 when the
    /// problem concerns the whole file (unreadable, YAML syntax error).
    pub document: usize,
    /// `Kind namespace/name` (`Kind name` for cluster-scoped kinds), when the document names one.
    pub object: Option<String>,
    /// JSON path of the offending field, e.g. `spec.backends[0].weight`.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl SourceError {
    /// A problem with a whole file (or the directory).
    pub fn file(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            document: 0,
            object: None,
            field: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        match (self.document, &self.object) {
            (0, None) => {}
            (0, Some(object)) => write!(f, " ({object})")?,
            (n, None) => write!(f, " (document {n})")?,
            (n, Some(object)) => write!(f, " (document {n}, {object})")?,
        }
        f.write_str(": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for SourceError {}

/// A problem inside one document, before it is placed in a file: the field (if known) and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    pub field: Option<String>,
    pub message: String,
}

impl Problem {
    pub fn at(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub fn whole(message: impl Into<String>) -> Self {
        Self {
            field: None,
            message: message.into(),
        }
    }
}

/// Collects the problems of one document.
#[derive(Debug, Default)]
pub(crate) struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::at(field, message));
    }

    pub fn push(&mut self, problem: Problem) {
        self.0.push(problem);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_document_object_and_field() {
        let e = SourceError {
            file: "policies/bad.yaml".into(),
            document: 2,
            object: Some("TrafficSplit bookstore/bookstore-split".into()),
            field: Some("spec.backends[0].weight".into()),
            message: "must be >= 0".into(),
        };
        assert_eq!(
            e.to_string(),
            "policies/bad.yaml (document 2, TrafficSplit bookstore/bookstore-split): \
             spec.backends[0].weight: must be >= 0"
        );
        assert_eq!(
            SourceError::file("a.yaml", "not valid UTF-8").to_string(),
            "a.yaml: not valid UTF-8"
        );
        let e = SourceError {
            object: None,
            field: None,
            ..e
        };
        assert_eq!(e.to_string(), "policies/bad.yaml (document 2): must be >= 0");
    }
}
