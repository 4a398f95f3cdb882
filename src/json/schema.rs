//! Compiled JSON Schemas: data actions' inputs and outputs, ingested events. Each is compiled
//! once, when the configuration is loaded, never per request.
//!
//! A schema is given inline or as a file relative to the config folder. It must be
//! self-contained: `$ref`s to other files or URLs are not resolved (the gateway never fetches a
//! schema at run time), so such a schema is a load problem.
//!
//! Violations become `details` entries of the error body: `fieldName` is the JSON pointer of the
//! offending value, `errorCode` the schema keyword, `message` a description that never quotes
//! the offending value. A `required` violation is reported at the pointer of the **missing
//! property** (`/orderId`), not at its parent, and an unexpected property at its own
//! pointer.
//!
//! At most [`MAX_VIOLATIONS`] are listed. The validator builds all of an instance's errors
//! before the first can be read, so a large instance (more than [`FULL_REPORT_NODES`] values)
//! is reported with its first violation only: a 1 MiB array of bad elements costs one error,
//! not a million.

use std::sync::Arc;

use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

use crate::config::{ConfigSource, SchemaSource};
use crate::error::{ErrorDetail, escape_pointer};

/// At most this many violations are listed in one answer.
pub const MAX_VIOLATIONS: usize = 50;

/// Instances with more JSON values than this are reported with their first violation only
/// (see [`Schema::violations`]).
pub const FULL_REPORT_NODES: usize = 4096;

/// A compiled JSON Schema and the document it was compiled from.
#[derive(Clone)]
pub struct Schema {
    validator: Arc<jsonschema::Validator>,
    document: Arc<Value>,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema").finish_non_exhaustive()
    }
}

impl Schema {
    /// Compiles a schema document.
    ///
    /// # Errors
    /// A message when the document is not a valid JSON Schema (or refers to another document).
    pub fn compile(document: Value) -> Result<Self, String> {
        let validator = jsonschema::validator_for(&document)
            .map_err(|err| format!("not a valid JSON Schema: {}", err.masked()))?;
        Ok(Self {
            validator: Arc::new(validator),
            document: Arc::new(document),
        })
    }

    /// Reads a schema source: the inline document, or the JSON file it names (relative to the
    /// config folder).
    ///
    /// # Errors
    /// A message when the file cannot be read or is not JSON.
    pub fn load(source: &SchemaSource, config: &ConfigSource) -> Result<Value, String> {
        match source {
            SchemaSource::Inline(doc) => Ok(doc.clone()),
            SchemaSource::File(path) => {
                let full = config.resolve(path);
                let text = std::fs::read(&full)
                    .map_err(|err| format!("cannot read {}: {err}", full.display()))?;
                serde_json::from_slice(&text)
                    .map_err(|err| format!("{} is not JSON: {err}", full.display()))
            }
        }
    }

    /// The schema document (used as the contract when publishing to Genesys).
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// Whether `instance` is valid (the fast path: no error is built).
    pub fn is_valid(&self, instance: &Value) -> bool {
        self.validator.is_valid(instance)
    }

    /// The violations of `instance` (at most [`MAX_VIOLATIONS`]), empty when it is valid.
    ///
    /// An instance of more than [`FULL_REPORT_NODES`] values is reported with its first
    /// violation only: listing them would make the validator build every error first (one per
    /// element of a large array, say), and memory would grow with the input.
    pub fn violations(&self, instance: &Value) -> Vec<ErrorDetail> {
        if self.validator.is_valid(instance) {
            return Vec::new();
        }
        let mut out = Vec::new();
        if more_values_than(instance, FULL_REPORT_NODES) {
            // `validate` stops at the first error.
            if let Err(error) = self.validator.validate(instance) {
                push_details(&error, &mut out);
            }
        } else {
            for error in self.validator.iter_errors(instance) {
                push_details(&error, &mut out);
                if out.len() >= MAX_VIOLATIONS {
                    break;
                }
            }
        }
        out.truncate(MAX_VIOLATIONS);
        out
    }
}

/// Adds the details of one validation error: one per missing or unexpected property, else one.
fn push_details(error: &jsonschema::ValidationError<'_>, out: &mut Vec<ErrorDetail>) {
    let at = error.instance_path().as_str();
    match error.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), |s| escape_pointer(s).into_owned());
            out.push(ErrorDetail::new(
                format!("{at}/{name}"),
                "required",
                format!("{property} is a required property"),
            ));
        }
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            for name in unexpected.iter().take(MAX_VIOLATIONS) {
                out.push(ErrorDetail::new(
                    format!("{at}/{}", escape_pointer(name)),
                    error.kind().keyword(),
                    format!("\"{name}\" is not an allowed property"),
                ));
            }
        }
        kind => out.push(ErrorDetail::new(
            at,
            kind.keyword(),
            error.masked().to_string(),
        )),
    }
}

/// Whether `value` holds more than `limit` JSON values (itself included); stops counting at
/// `limit`.
fn more_values_than(value: &Value, limit: usize) -> bool {
    let mut counted = 1usize;
    let mut pending = vec![value];
    while let Some(v) = pending.pop() {
        counted += match v {
            Value::Array(items) => items.len(),
            Value::Object(map) => map.len(),
            _ => 0,
        };
        if counted > limit {
            return true;
        }
        match v {
            Value::Array(items) => pending.extend(items),
            Value::Object(map) => pending.extend(map.values()),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Schema {
        Schema::compile(json!({
            "type": "object",
            "required": ["orderId", "a/b"],
            "additionalProperties": false,
            "properties": {
                "orderId": {"type": "string", "minLength": 1},
                "a/b": {"type": "integer"},
                "qty": {"type": "integer", "maximum": 10},
                "lines": {"type": "array", "items": {"type": "object", "required": ["sku"]}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn required_is_reported_at_the_missing_property() {
        let v = schema().violations(&json!({"lines": [{}]}));
        let mut fields: Vec<(&str, &str)> = v
            .iter()
            .map(|d| (d.field_name.as_str(), d.error_code.as_str()))
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                ("/a~1b", "required"),
                ("/lines/0/sku", "required"),
                ("/orderId", "required")
            ]
        );
    }

    #[test]
    fn violations_name_pointer_and_keyword_without_values() {
        let v = schema()
            .violations(&json!({"orderId": "", "a/b": 1, "qty": 11, "extra": "secret-value"}));
        let mut found: Vec<(&str, &str)> = v
            .iter()
            .map(|d| (d.field_name.as_str(), d.error_code.as_str()))
            .collect();
        found.sort_unstable();
        assert_eq!(
            found,
            [
                ("/extra", "additionalProperties"),
                ("/orderId", "minLength"),
                ("/qty", "maximum")
            ]
        );
        assert!(
            v.iter()
                .all(|d| !d.message.contains("secret-value") && !d.message.contains("11"))
        );
        assert!(
            schema()
                .violations(&json!({"orderId": "o", "a/b": 2}))
                .is_empty()
        );
    }

    #[test]
    fn a_large_instance_reports_its_first_violation_only() {
        let schema = Schema::compile(json!({
            "type": "object",
            "properties": {"list": {"type": "array", "items": {"required": ["a"]}}}
        }))
        .unwrap();
        let small = json!({"list": vec![json!({}); 100]});
        assert_eq!(schema.violations(&small).len(), MAX_VIOLATIONS);
        let large = json!({"list": vec![json!({}); FULL_REPORT_NODES]});
        let v = schema.violations(&large);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].field_name, "/list/0/a");
        assert!(!more_values_than(&json!([1, [2, 3]]), 5));
        assert!(more_values_than(&json!([1, [2, 3]]), 4));
    }

    #[test]
    fn invalid_and_external_schemas_are_refused() {
        assert!(Schema::compile(json!({"type": "nonsense"})).is_err());
        assert!(Schema::compile(json!({"$ref": "https://example.com/s.json"})).is_err());
        assert!(Schema::compile(json!({"$ref": "other.json"})).is_err());
    }
}
