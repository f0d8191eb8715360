//! Column types of the schema contract, written as in Spark and Iceberg:
//! `string`, `long`, `timestamptz`, ..., and nested `list<double>`,
//! `map<string, long>`, `struct<lat: double, lon: double>` (any depth).

use std::fmt;

/// The type of a contract column.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum ColumnType {
    /// UTF-8 text.
    String,
    /// 32-bit integer.
    Int,
    /// 64-bit integer.
    Long,
    /// 32-bit float.
    Float,
    /// 64-bit float.
    Double,
    /// true/false.
    Boolean,
    /// Calendar date.
    Date,
    /// Instant with an offset, stored as UTC microseconds.
    Timestamptz,
    /// An exact decimal: `decimal(precision, scale)`, precision 1 to 38.
    Decimal {
        /// Digits in all.
        precision: u8,
        /// Digits after the point.
        scale: u8,
    },
    /// A JSON array: `list<element>`.
    List(Box<ColumnType>),
    /// A JSON object with any keys: `map<string, value>` (JSON keys are
    /// text, so the key type is always `string`).
    Map(Box<ColumnType>),
    /// A JSON object with named fields: `struct<name: type, ...>`.
    Struct(Vec<StructField>),
}

/// One field of a `struct<...>` type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StructField {
    /// The key it is read from, and its name in the table.
    pub name: String,
    /// Its type.
    pub kind: ColumnType,
}

impl ColumnType {
    /// Whether the type holds other values (list, map, struct).
    pub fn is_nested(&self) -> bool {
        matches!(self, Self::List(_) | Self::Map(_) | Self::Struct(_))
    }

    fn primitive(word: &str) -> Option<Self> {
        Some(match word {
            "string" => Self::String,
            "int" => Self::Int,
            "long" => Self::Long,
            "float" => Self::Float,
            "double" => Self::Double,
            "boolean" => Self::Boolean,
            "date" => Self::Date,
            "timestamptz" => Self::Timestamptz,
            _ => return None,
        })
    }
}

const PRIMITIVES: &str = "string, int, long, float, double, boolean, date, timestamptz, list<T>, map<string, T>, struct<name: T, ...>";

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::String => f.write_str("string"),
            Self::Int => f.write_str("int"),
            Self::Long => f.write_str("long"),
            Self::Float => f.write_str("float"),
            Self::Double => f.write_str("double"),
            Self::Boolean => f.write_str("boolean"),
            Self::Date => f.write_str("date"),
            Self::Timestamptz => f.write_str("timestamptz"),
            Self::Decimal { precision, scale } => write!(f, "decimal({precision}, {scale})"),
            Self::List(element) => write!(f, "list<{element}>"),
            Self::Map(value) => write!(f, "map<string, {value}>"),
            Self::Struct(fields) => {
                f.write_str("struct<")?;
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}: {}", field.name, field.kind)?;
                }
                f.write_str(">")
            }
        }
    }
}

impl From<ColumnType> for String {
    fn from(value: ColumnType) -> Self {
        value.to_string()
    }
}

impl TryFrom<String> for ColumnType {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        value.parse()
    }
}

impl std::str::FromStr for ColumnType {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut parser = Parser { text, at: 0 };
        let kind = parser.kind().map_err(|e| format!("type {text:?}: {e}"))?;
        parser.skip_space();
        if parser.at < text.len() {
            return Err(format!(
                "type {text:?}: unexpected {:?} after {kind}",
                &text[parser.at..]
            ));
        }
        Ok(kind)
    }
}

/// A recursive-descent reader of type text.
struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.at..]
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    /// A word of letters, digits and `_` (a type name or a field name).
    fn word(&mut self) -> &str {
        self.skip_space();
        let rest = &self.text[self.at..];
        let len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        self.at += len;
        &rest[..len]
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        self.skip_space();
        if self.rest().starts_with(c) {
            self.at += c.len_utf8();
            Ok(())
        } else {
            let found = self.rest().chars().next();
            Err(match found {
                Some(f) => format!("expected '{c}' but found '{f}'"),
                None => format!("expected '{c}' but the type ended"),
            })
        }
    }

    fn kind(&mut self) -> Result<ColumnType, String> {
        let word = self.word().to_ascii_lowercase();
        if let Some(kind) = ColumnType::primitive(&word) {
            return Ok(kind);
        }
        match word.as_str() {
            "list" | "array" => {
                self.expect('<')?;
                let element = self.kind()?;
                self.expect('>')?;
                Ok(ColumnType::List(Box::new(element)))
            }
            "map" => {
                self.expect('<')?;
                let key = self.kind()?;
                if key != ColumnType::String {
                    return Err(format!(
                        "map keys are always string (JSON object keys are text), not {key}"
                    ));
                }
                self.expect(',')?;
                let value = self.kind()?;
                self.expect('>')?;
                Ok(ColumnType::Map(Box::new(value)))
            }
            "struct" => self.struct_fields(),
            "decimal" | "numeric" => self.decimal(),
            "" => Err(format!("expected a type; types are {PRIMITIVES}")),
            other => Err(format!("unknown type {other:?}; types are {PRIMITIVES}")),
        }
    }

    /// `(precision, scale)` after `decimal`: 1 <= precision <= 38 (what
    /// Iceberg and Arrow's 128-bit decimals hold), scale <= precision.
    fn decimal(&mut self) -> Result<ColumnType, String> {
        self.expect('(')?;
        let precision = self.word().to_string();
        self.expect(',')?;
        let scale = self.word().to_string();
        self.expect(')')?;
        let (Ok(precision), Ok(scale)) = (precision.parse::<u8>(), scale.parse::<u8>()) else {
            return Err(format!(
                "decimal needs whole numbers: decimal(precision, scale), not decimal({precision}, {scale})"
            ));
        };
        if !(1..=38).contains(&precision) || scale > precision {
            return Err(format!(
                "decimal({precision}, {scale}): precision must be 1 to 38 and scale at most the precision"
            ));
        }
        Ok(ColumnType::Decimal { precision, scale })
    }

    fn struct_fields(&mut self) -> Result<ColumnType, String> {
        self.expect('<')?;
        let mut fields: Vec<StructField> = Vec::new();
        loop {
            let name = self.word().to_string();
            if name.is_empty() {
                return Err("expected a field name in struct<...>".into());
            }
            if fields.iter().any(|f| f.name == name) {
                return Err(format!("struct field {name:?} is named twice"));
            }
            self.expect(':')?;
            let kind = self.kind()?;
            fields.push(StructField { name, kind });
            self.skip_space();
            if self.rest().starts_with('>') {
                self.at += 1;
                return Ok(ColumnType::Struct(fields));
            }
            self.expect(',')?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_types_read_and_print_back() {
        for (text, shown) in [
            ("double", "double"),
            ("LIST<long>", "list<long>"),
            ("array<string>", "list<string>"),
            ("map<string,double>", "map<string, double>"),
            ("DECIMAL(10,2)", "decimal(10, 2)"),
            ("list<numeric(38, 0)>", "list<decimal(38, 0)>"),
            (
                "struct<lat:double, lon: double, tags: list<string>>",
                "struct<lat: double, lon: double, tags: list<string>>",
            ),
            (
                " list< struct<id: int, m: map<string, list<date>>> > ",
                "list<struct<id: int, m: map<string, list<date>>>>",
            ),
        ] {
            let kind: ColumnType = text.parse().expect(text);
            assert_eq!(kind.to_string(), shown);
            assert_eq!(shown.parse::<ColumnType>(), Ok(kind));
        }
    }

    #[test]
    fn bad_types_say_what_is_wrong() {
        for (text, says) in [
            ("money", "unknown type \"money\""),
            ("decimal", "expected '(' but the type ended"),
            ("list<long", "expected '>' but the type ended"),
            ("map<long, string>", "map keys are always string"),
            ("struct<a: int, a: long>", "named twice"),
            ("struct<: int>", "expected a field name"),
            ("list<long> x", "unexpected"),
            ("", "expected a type"),
            ("decimal(39, 2)", "precision must be 1 to 38"),
            ("decimal(4, 5)", "scale at most the precision"),
            ("decimal(x, 1)", "whole numbers"),
        ] {
            let err = text.parse::<ColumnType>().expect_err(text);
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
