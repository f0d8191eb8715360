//! Validated namespace and table names.
//!
//! Names end up in object-store paths and in the pointer database, so they
//! are checked once, at the edge: no empty names, no `/` or `\`, no `.`
//! (namespace levels are stored joined by `.`, as Iceberg's JDBC catalog
//! does), no control characters, nothing longer than [`MAX_NAME_BYTES`].

use std::fmt;

use crate::error::{ApiError, Result};

/// Longest accepted name of one namespace level or table, in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Deepest accepted namespace.
pub const MAX_NAMESPACE_LEVELS: usize = 16;
/// Separator of namespace levels in URL paths (the REST spec's default).
pub const PATH_SEPARATOR: char = '\u{1f}';

/// Checks one name (a namespace level or a table name).
pub fn validate_name(name: &str, what: &str) -> Result<()> {
    let problem = if name.is_empty() {
        Some("must not be empty".to_string())
    } else if name.len() > MAX_NAME_BYTES {
        Some(format!("is longer than {MAX_NAME_BYTES} bytes"))
    } else if name.chars().any(char::is_control) {
        Some("contains a control character".to_string())
    } else {
        name.chars()
            .find(|c| matches!(c, '/' | '\\' | '.'))
            .map(|c| format!("contains the character '{c}'"))
    };
    match problem {
        Some(p) => Err(ApiError::bad_request(format!(
            "Invalid {what} {:?}: it {p}; use letters, digits, '_' and '-'",
            truncate(name)
        ))),
        None => Ok(()),
    }
}

fn truncate(name: &str) -> String {
    name.chars().take(64).collect()
}

/// A namespace: one or more validated levels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(Vec<String>);

impl Namespace {
    /// Validates the levels of a namespace.
    pub fn new(levels: Vec<String>) -> Result<Self> {
        if levels.is_empty() {
            return Err(ApiError::bad_request(
                "Namespace must have at least one level",
            ));
        }
        if levels.len() > MAX_NAMESPACE_LEVELS {
            return Err(ApiError::bad_request(format!(
                "Namespace has {} levels; at most {MAX_NAMESPACE_LEVELS} are allowed",
                levels.len()
            )));
        }
        for level in &levels {
            validate_name(level, "namespace level")?;
        }
        let joined = levels.iter().map(String::len).sum::<usize>() + levels.len() - 1;
        if joined > MAX_NAME_BYTES {
            return Err(ApiError::bad_request(format!(
                "Namespace {:?} is {joined} bytes long; at most {MAX_NAME_BYTES} are allowed in all",
                truncate(&levels.join("."))
            )));
        }
        Ok(Self(levels))
    }

    /// Parses the `{namespace}` path parameter (levels joined by 0x1F).
    pub fn from_path(param: &str) -> Result<Self> {
        Self::new(param.split(PATH_SEPARATOR).map(str::to_string).collect())
    }

    /// Parses the database form (levels joined by `.`), as written by
    /// [`Namespace::to_db`]; rows written by other tools that do not parse
    /// are skipped by the caller.
    pub fn from_db(value: &str) -> Result<Self> {
        Self::new(value.split('.').map(str::to_string).collect())
    }

    /// The levels.
    pub fn levels(&self) -> &[String] {
        &self.0
    }

    /// The database form: levels joined by `.` (Iceberg JDBC catalog layout).
    pub fn to_db(&self) -> String {
        self.0.join(".")
    }

    /// Whether `self` is a direct child of `parent` (or a top-level namespace
    /// when `parent` is `None`).
    pub fn is_child_of(&self, parent: Option<&Namespace>) -> bool {
        match parent {
            None => self.0.len() == 1,
            Some(p) => self.0.len() == p.0.len() + 1 && self.0.starts_with(&p.0),
        }
    }

    /// Whether `self` lies strictly below `ancestor`.
    pub fn is_descendant_of(&self, ancestor: &Namespace) -> bool {
        self.0.len() > ancestor.0.len() && self.0.starts_with(&ancestor.0)
    }

    /// The parent namespace, if any.
    pub fn parent(&self) -> Option<Namespace> {
        (self.0.len() > 1).then(|| Namespace(self.0[..self.0.len() - 1].to_vec()))
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_db())
    }
}

/// A table's full name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    /// Its namespace.
    pub namespace: Namespace,
    /// Its name within the namespace.
    pub name: String,
}

impl TableName {
    /// Validates a table name in a namespace.
    pub fn new(namespace: Namespace, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        validate_name(&name, "table name")?;
        Ok(Self { namespace, name })
    }

    /// Builds from the wire form `{"namespace": [...], "name": "..."}`.
    pub fn from_wire(ident: &TableIdentWire) -> Result<Self> {
        Self::new(Namespace::new(ident.namespace.clone())?, ident.name.clone())
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

/// The REST spec's `TableIdentifier`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TableIdentWire {
    /// Namespace levels.
    pub namespace: Vec<String>,
    /// Table name.
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_path_tricks_and_control_characters() {
        for bad in [
            "",
            "a/b",
            "..",
            "a.b",
            "x\u{0}",
            "x\u{1f}y",
            "a\\b",
            &"x".repeat(256),
        ] {
            assert!(validate_name(bad, "name").is_err(), "{bad:?} accepted");
        }
        for good in ["bronze", "demand_2024", "Site-A", "ünïcode"] {
            assert!(validate_name(good, "name").is_ok(), "{good:?} rejected");
        }
    }

    #[test]
    fn path_form_splits_on_unit_separator() -> Result<()> {
        let ns = Namespace::from_path("a\u{1f}b")?;
        assert_eq!(ns.levels(), ["a", "b"]);
        assert_eq!(ns.to_db(), "a.b");
        assert!(ns.is_child_of(Some(&Namespace::from_path("a")?)));
        assert!(!ns.is_child_of(None));
        assert_eq!(ns.parent(), Some(Namespace::from_path("a")?));
        Ok(())
    }
}
