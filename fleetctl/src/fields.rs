//! Small accessors over the API's JSON. Models stay `serde_json::Value` so that fields the
//! API adds later pass through `--json` untouched and never break parsing; a missing or
//! null field reads as `None` (or `-` in text).

use serde_json::Value;

/// A string field.
pub fn string_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// A non-negative integer field.
pub fn count_field(value: &Value, key: &str) -> Option<u64> {
    value.get(key).and_then(Value::as_u64)
}

/// A number field.
pub fn number_field(value: &Value, key: &str) -> Option<f64> {
    value.get(key).and_then(Value::as_f64)
}

/// A boolean field.
pub fn bool_field(value: &Value, key: &str) -> Option<bool> {
    value.get(key).and_then(Value::as_bool)
}

/// An array field; empty when missing.
pub fn list_field<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Any field as display text: strings as they are, numbers and booleans printed, objects
/// and arrays as compact JSON, null or missing as `-`.
pub fn text_field(value: &Value, key: &str) -> String {
    value.get(key).map(display_value).unwrap_or_else(dash)
}

/// A JSON value as display text (see [`text_field`]).
pub fn display_value(value: &Value) -> String {
    match value {
        Value::Null => dash(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// An id field that may be a string or a number, as text.
pub fn id_field(value: &Value, key: &str) -> Option<String> {
    match value.get(key) {
        Some(Value::String(id)) => Some(id.clone()),
        Some(Value::Number(id)) => Some(id.to_string()),
        _ => None,
    }
}

fn dash() -> String {
    "-".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accessors_tolerate_missing_null_and_wrong_types() {
        let value = json!({"name": "a", "count": 3, "ratio": 0.5, "on": true,
            "items": [1, 2], "nothing": null, "object": {"k": 1}, "id": 7});
        assert_eq!(string_field(&value, "name"), Some("a"));
        assert_eq!(string_field(&value, "count"), None);
        assert_eq!(count_field(&value, "count"), Some(3));
        assert_eq!(count_field(&value, "missing"), None);
        assert_eq!(number_field(&value, "ratio"), Some(0.5));
        assert_eq!(bool_field(&value, "on"), Some(true));
        assert_eq!(list_field(&value, "items").len(), 2);
        assert!(list_field(&value, "nothing").is_empty());
        assert_eq!(text_field(&value, "nothing"), "-");
        assert_eq!(text_field(&value, "missing"), "-");
        assert_eq!(text_field(&value, "object"), r#"{"k":1}"#);
        assert_eq!(text_field(&value, "on"), "true");
        assert_eq!(id_field(&value, "id").as_deref(), Some("7"));
        assert_eq!(id_field(&value, "name").as_deref(), Some("a"));
        assert_eq!(id_field(&value, "nothing"), None);
    }
}
