//! User metadata on files: a JSON object set at create time and changed with a JSON merge
//! patch (RFC 7396). Checked for size, depth and key shape before it is stored, so one
//! tenant cannot bloat the files table or the metadata index.

use serde_json::{Map, Value};

/// The largest metadata object, serialized.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
/// The deepest nesting: the metadata object itself is level 1.
pub const MAX_METADATA_DEPTH: usize = 5;
/// The longest key, in bytes, at any level.
pub const MAX_METADATA_KEY_BYTES: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata must be a JSON object")]
    NotAnObject,
    #[error("metadata is {bytes} bytes as JSON; the limit is {MAX_METADATA_BYTES}")]
    TooLarge { bytes: usize },
    #[error("metadata nests {depth} levels deep; the limit is {MAX_METADATA_DEPTH}")]
    TooDeep { depth: usize },
    #[error(
        "metadata key {key:?} must be 1 to {MAX_METADATA_KEY_BYTES} bytes without control characters"
    )]
    BadKey { key: String },
}

/// Checks metadata against the limits; returns it unchanged when it passes.
pub fn validate(metadata: Value) -> Result<Value, MetadataError> {
    if !metadata.is_object() {
        return Err(MetadataError::NotAnObject);
    }
    let depth = depth_of(&metadata, MAX_METADATA_DEPTH)?;
    if depth > MAX_METADATA_DEPTH {
        return Err(MetadataError::TooDeep { depth });
    }
    let bytes = metadata.to_string().len();
    if bytes > MAX_METADATA_BYTES {
        return Err(MetadataError::TooLarge { bytes });
    }
    Ok(metadata)
}

/// Nesting depth of `value` (an object or array is one level more than its deepest child,
/// a scalar is 0), checking keys on the way. It descends at most `budget` levels, so a
/// hostile document costs no more than the limit: past it the answer is `budget + 1`.
fn depth_of(value: &Value, budget: usize) -> Result<usize, MetadataError> {
    let children: Vec<&Value> = match value {
        Value::Object(object) => {
            for key in object.keys() {
                if key.is_empty()
                    || key.len() > MAX_METADATA_KEY_BYTES
                    || key.chars().any(char::is_control)
                {
                    return Err(MetadataError::BadKey { key: key.clone() });
                }
            }
            object.values().collect()
        }
        Value::Array(items) => items.iter().collect(),
        _ => return Ok(0),
    };
    if budget == 0 {
        return Ok(1);
    }
    let mut deepest_child = 0;
    for child in children {
        deepest_child = deepest_child.max(depth_of(child, budget - 1)?);
    }
    Ok(1 + deepest_child)
}

/// Applies a JSON merge patch (RFC 7396) to `target`: `null` removes a key, an object
/// merges into an object, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_object) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target_object) = target else {
        return;
    };
    for (key, patch_value) in patch_object {
        if patch_value.is_null() {
            target_object.remove(key);
        } else {
            merge_patch(
                target_object.entry(key.clone()).or_insert(Value::Null),
                patch_value,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_object_within_the_limits_passes() {
        let metadata = json!({"team": "legal", "year": 2024, "tags": ["a", "b"], "source": {"system": "crm", "ids": [1, 2]}});
        assert_eq!(validate(metadata.clone()), Ok(metadata));
        assert_eq!(validate(json!({})), Ok(json!({})));
    }

    #[test]
    fn anything_but_an_object_is_refused() {
        for value in [json!([1]), json!("text"), json!(3), json!(null)] {
            assert_eq!(validate(value), Err(MetadataError::NotAnObject));
        }
    }

    #[test]
    fn depth_counts_objects_and_arrays() {
        // Level 1 is the object itself; five levels pass, six do not.
        let five = json!({"a": {"b": {"c": {"d": {"e": 1}}}}, "list": [[[["x"]]]]});
        assert!(validate(five).is_ok());
        let six = json!({"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}});
        assert_eq!(validate(six), Err(MetadataError::TooDeep { depth: 5 + 1 }));
        let arrays = json!({"a": [[[[["deep"]]]]]});
        assert!(matches!(
            validate(arrays),
            Err(MetadataError::TooDeep { .. })
        ));
    }

    #[test]
    fn a_hostile_nesting_is_refused_without_walking_it_all() {
        // As deep as serde_json parses (it stops at 128 levels): far past the limit.
        let mut value = json!(1);
        for _ in 0..120 {
            value = json!({ "k": value });
        }
        assert!(matches!(
            validate(value),
            Err(MetadataError::TooDeep { .. })
        ));
    }

    #[test]
    fn size_is_measured_as_serialized_json() {
        let large = json!({"text": "x".repeat(MAX_METADATA_BYTES)});
        assert!(matches!(
            validate(large),
            Err(MetadataError::TooLarge { .. })
        ));
    }

    #[test]
    fn keys_must_be_short_and_printable() {
        assert!(matches!(
            validate(json!({"": 1})),
            Err(MetadataError::BadKey { .. })
        ));
        let long_key = "k".repeat(MAX_METADATA_KEY_BYTES + 1);
        assert!(matches!(
            validate(json!({ "nested": { long_key: 1 } })),
            Err(MetadataError::BadKey { .. })
        ));
        assert!(matches!(
            validate(json!({"tab\there": 1})),
            Err(MetadataError::BadKey { .. })
        ));
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}, "keep": 1});
        merge_patch(
            &mut target,
            &json!({"a": "z", "c": {"f": null, "h": 2}, "new": [1]}),
        );
        assert_eq!(
            target,
            json!({"a": "z", "c": {"d": "e", "h": 2}, "keep": 1, "new": [1]})
        );
        merge_patch(&mut target, &json!({"c": null, "a": {"x": 1}}));
        assert_eq!(target, json!({"a": {"x": 1}, "keep": 1, "new": [1]}));
    }
}
