//! Tool schemas every client accepts silently: schemars writes Rust-specific `format` values
//! (`uint64`, `int32`, `double`, ...) that are not JSON Schema formats, and ajv-based clients
//! (the TypeScript SDK, so MCP Inspector and Claude Code) print a warning for each on every
//! connection. [`StandardFormats`] turns them into `minimum`/`maximum` and drops the rest;
//! [`standardize_tool`] applies it to a tool's input and output schema.

use schemars::transform::{transform_subschemas, Transform};
use schemars::Schema;
use serde_json::{Map, Value};

/// The formats JSON Schema 2020-12 defines (Validation, section 7.3); any other `format` is
/// removed.
pub const STANDARD_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// The range a Rust integer format stands for, as JSON numbers a client can hold exactly
/// (a 64-bit bound past 2^53 is left out: it says nothing a JavaScript client could check).
fn range_of(format: &str) -> Option<(Option<i64>, Option<i64>)> {
    Some(match format {
        "uint8" => (Some(0), Some(u8::MAX as i64)),
        "uint16" => (Some(0), Some(u16::MAX as i64)),
        "uint32" => (Some(0), Some(u32::MAX as i64)),
        "uint64" | "uint" | "uint128" => (Some(0), None),
        "int8" => (Some(i8::MIN as i64), Some(i8::MAX as i64)),
        "int16" => (Some(i16::MIN as i64), Some(i16::MAX as i64)),
        "int32" => (Some(i32::MIN as i64), Some(i32::MAX as i64)),
        _ => return None,
    })
}

/// Keep the tighter of an existing bound and the format's.
fn tighten(obj: &mut Map<String, Value>, key: &str, bound: i64, lower: bool) {
    let keep_existing =
        obj.get(key).and_then(Value::as_f64).is_some_and(|v| if lower { v >= bound as f64 } else { v <= bound as f64 });
    if !keep_existing {
        obj.insert(key.into(), Value::from(bound));
    }
}

/// A schemars transform: non-standard `format` values become `minimum`/`maximum` (integer
/// widths) or are dropped (`double`, `float`, ...), in every subschema.
#[derive(Debug, Clone, Copy, Default)]
pub struct StandardFormats;

impl Transform for StandardFormats {
    fn transform(&mut self, schema: &mut Schema) {
        if let Some(obj) = schema.as_object_mut() {
            let format = obj.get("format").and_then(Value::as_str).map(str::to_owned);
            if let Some(format) = format {
                if !STANDARD_FORMATS.contains(&format.as_str()) {
                    obj.remove("format");
                    if let Some((min, max)) = range_of(&format) {
                        if let Some(min) = min {
                            tighten(obj, "minimum", min, true);
                        }
                        if let Some(max) = max {
                            tighten(obj, "maximum", max, false);
                        }
                    }
                }
            }
        }
        transform_subschemas(self, schema);
    }
}

/// Apply [`StandardFormats`] to one JSON schema object.
pub fn standardize(schema: &Map<String, Value>) -> Map<String, Value> {
    let mut s = Schema::from(schema.clone());
    StandardFormats.transform(&mut s);
    match s.to_value() {
        Value::Object(o) => o,
        _ => schema.clone(),
    }
}

/// Apply [`StandardFormats`] to a tool's input and output schema.
pub fn standardize_tool(tool: &mut rmcp::model::Tool) {
    tool.input_schema = std::sync::Arc::new(standardize(&tool.input_schema));
    if let Some(out) = &tool.output_schema {
        tool.output_schema = Some(std::sync::Arc::new(standardize(out)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rust_formats_become_ranges_and_standard_ones_stay() {
        let s = json!({
            "type": "object",
            "properties": {
                "a": {"type": "integer", "format": "uint32", "minimum": 0},
                "b": {"type": ["integer", "null"], "format": "uint64", "minimum": 0},
                "c": {"type": "number", "format": "double"},
                "d": {"type": "integer", "format": "uint16", "minimum": 1},
                "e": {"type": "string", "format": "date-time"},
                "f": {"type": "array", "items": {"type": "integer", "format": "int32"}}
            },
            "$defs": {"X": {"type": "integer", "format": "uint8"}}
        });
        let out = Value::Object(standardize(s.as_object().unwrap()));
        assert_eq!(out["properties"]["a"], json!({"type": "integer", "minimum": 0, "maximum": 4294967295u64}));
        assert_eq!(out["properties"]["b"], json!({"type": ["integer", "null"], "minimum": 0}));
        assert_eq!(out["properties"]["c"], json!({"type": "number"}));
        assert_eq!(out["properties"]["d"], json!({"type": "integer", "minimum": 1, "maximum": 65535}));
        assert_eq!(out["properties"]["e"], json!({"type": "string", "format": "date-time"}));
        assert_eq!(
            out["properties"]["f"]["items"],
            json!({"type": "integer", "minimum": -2147483648i64, "maximum": 2147483647})
        );
        assert_eq!(out["$defs"]["X"], json!({"type": "integer", "minimum": 0, "maximum": 255}));
    }
}
