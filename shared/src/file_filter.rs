//! Which files a search or a file list looks at: ids, content types, a name prefix, a
//! created-at range and conditions on top-level metadata keys (equality and `in`).
//!
//! A [`FileFilter`] is checked once, when it is built from a request ([`FilterInput`]),
//! and then appends its conditions to a query on `files` aliased `f`, as bound
//! parameters. Each condition has an index (migration 0008 and `online_migrations`):
//! the metadata ones use the GIN `(org_id, metadata jsonb_path_ops)` index through `@>`,
//! the name prefix a byte-order range on `(org_id, name COLLATE "C")`, the created-at
//! range `(org_id, created_at)`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

/// At most this many ids in `file_ids`.
pub const MAX_FILE_IDS: usize = 1_000;
/// At most this many content types.
pub const MAX_CONTENT_TYPES: usize = 32;
/// At most this many metadata keys in one filter.
pub const MAX_METADATA_CONDITIONS: usize = 16;
/// At most this many values in one `in`.
pub const MAX_IN_VALUES: usize = 100;
/// The longest name prefix, in characters (a file name has at most 255).
pub const MAX_NAME_PREFIX_CHARS: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("file_ids may hold at most {MAX_FILE_IDS} ids")]
    TooManyFileIds,
    #[error("content_type must hold 1 to {MAX_CONTENT_TYPES} non-empty types")]
    ContentTypes,
    #[error(
        "name_prefix must be 1 to {MAX_NAME_PREFIX_CHARS} characters without control characters"
    )]
    NamePrefix,
    #[error("created_after must be earlier than created_before")]
    EmptyCreatedRange,
    #[error("metadata filter: {0}")]
    Metadata(String),
}

/// A filter as a request states it, before it is checked.
#[derive(Debug, Clone, Default)]
pub struct FilterInput {
    pub file_ids: Option<Vec<Uuid>>,
    pub content_types: Option<Vec<String>>,
    pub name_prefix: Option<String>,
    /// Inclusive.
    pub created_after: Option<DateTime<Utc>>,
    /// Exclusive.
    pub created_before: Option<DateTime<Utc>>,
    /// `{"key": scalar}` for equality, `{"key": {"in": [scalar, ...]}}` for any of them.
    pub metadata: Option<Value>,
}

/// One condition on a top-level metadata key.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataCondition {
    /// The key holds this scalar (a string, number or boolean; numbers compare by value).
    Equals { key: String, value: Value },
    /// The key holds one of these scalars.
    In { key: String, values: Vec<Value> },
}

/// A checked filter; the default matches every file of the org.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileFilter {
    pub file_ids: Option<Vec<Uuid>>,
    pub content_types: Option<Vec<String>>,
    pub name_prefix: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub metadata: Vec<MetadataCondition>,
}

impl TryFrom<FilterInput> for FileFilter {
    type Error = FilterError;

    fn try_from(input: FilterInput) -> Result<Self, FilterError> {
        if input
            .file_ids
            .as_ref()
            .is_some_and(|ids| ids.len() > MAX_FILE_IDS)
        {
            return Err(FilterError::TooManyFileIds);
        }
        let content_types = match input.content_types {
            None => None,
            Some(types) => {
                let normalized: Vec<String> = types
                    .iter()
                    .map(|content_type| content_type.trim().to_ascii_lowercase())
                    .collect();
                if normalized.is_empty()
                    || normalized.len() > MAX_CONTENT_TYPES
                    || normalized.iter().any(String::is_empty)
                {
                    return Err(FilterError::ContentTypes);
                }
                Some(normalized)
            }
        };
        if let Some(prefix) = &input.name_prefix
            && (prefix.is_empty()
                || prefix.chars().count() > MAX_NAME_PREFIX_CHARS
                || prefix.chars().any(char::is_control))
        {
            return Err(FilterError::NamePrefix);
        }
        if let (Some(after), Some(before)) = (input.created_after, input.created_before)
            && after >= before
        {
            return Err(FilterError::EmptyCreatedRange);
        }
        let metadata = match &input.metadata {
            None => Vec::new(),
            Some(value) => metadata_conditions(value)?,
        };
        Ok(Self {
            file_ids: input.file_ids,
            content_types,
            name_prefix: input.name_prefix,
            created_after: input.created_after,
            created_before: input.created_before,
            metadata,
        })
    }
}

fn metadata_conditions(filter: &Value) -> Result<Vec<MetadataCondition>, FilterError> {
    let invalid = |message: String| FilterError::Metadata(message);
    let Value::Object(keys) = filter else {
        return Err(invalid(
            "must be an object of top-level keys, e.g. {\"team\": \"legal\"}".into(),
        ));
    };
    if keys.len() > MAX_METADATA_CONDITIONS {
        return Err(invalid(format!("at most {MAX_METADATA_CONDITIONS} keys")));
    }
    let mut conditions = Vec::new();
    for (key, wanted) in keys {
        if key.is_empty() || key.len() > crate::metadata::MAX_METADATA_KEY_BYTES {
            return Err(invalid(format!("key {key:?} is empty or too long")));
        }
        match wanted {
            Value::Object(operator) => {
                let values = match (operator.len(), operator.get("in")) {
                    (1, Some(Value::Array(values))) => values,
                    _ => {
                        return Err(invalid(format!(
                            "{key:?}: an object must be {{\"in\": [values]}}, the only operator"
                        )));
                    }
                };
                if values.is_empty() || values.len() > MAX_IN_VALUES {
                    return Err(invalid(format!(
                        "{key:?}: \"in\" takes 1 to {MAX_IN_VALUES} values"
                    )));
                }
                if let Some(bad) = values.iter().find(|value| !is_scalar(value)) {
                    return Err(invalid(format!(
                        "{key:?}: \"in\" takes strings, numbers or booleans, not {bad}"
                    )));
                }
                conditions.push(MetadataCondition::In {
                    key: key.clone(),
                    values: values.clone(),
                });
            }
            value if is_scalar(value) => conditions.push(MetadataCondition::Equals {
                key: key.clone(),
                value: value.clone(),
            }),
            other => {
                return Err(invalid(format!(
                    "{key:?}: compare with a string, number or boolean, or {{\"in\": [...]}}, not {other}"
                )));
            }
        }
    }
    Ok(conditions)
}

fn is_scalar(value: &Value) -> bool {
    matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

/// The smallest string greater than every string that starts with `prefix`, in byte
/// (C collation) order, which for UTF-8 is code point order: the prefix with its last
/// character moved to the next one. `None` when no such string exists.
pub fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut characters: Vec<char> = prefix.chars().collect();
    while let Some(last) = characters.pop() {
        let next = match last {
            // The surrogate range has no chars: skip over it.
            '\u{d7ff}' => Some('\u{e000}'),
            other => char::from_u32(other as u32 + 1),
        };
        if let Some(next) = next {
            characters.push(next);
            return Some(characters.into_iter().collect());
        }
    }
    None
}

impl FileFilter {
    /// True when it narrows the files at all.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Appends ` AND ...` conditions on `files f` to `builder`.
    pub fn push_conditions(&self, builder: &mut QueryBuilder<'_, Postgres>) {
        if let Some(file_ids) = &self.file_ids {
            builder
                .push(" AND f.id = ANY(")
                .push_bind(file_ids.clone())
                .push(")");
        }
        if let Some(content_types) = &self.content_types {
            builder
                .push(" AND f.content_type = ANY(")
                .push_bind(content_types.clone())
                .push(")");
        }
        if let Some(prefix) = &self.name_prefix {
            // A range the (org_id, name COLLATE "C") index answers, exact for prefixes.
            builder
                .push(" AND f.name COLLATE \"C\" >= ")
                .push_bind(prefix.clone());
            match prefix_upper_bound(prefix) {
                Some(upper) => {
                    builder
                        .push(" AND f.name COLLATE \"C\" < ")
                        .push_bind(upper);
                }
                None => {
                    builder
                        .push(" AND starts_with(f.name, ")
                        .push_bind(prefix.clone())
                        .push(")");
                }
            }
        }
        if let Some(after) = self.created_after {
            builder.push(" AND f.created_at >= ").push_bind(after);
        }
        if let Some(before) = self.created_before {
            builder.push(" AND f.created_at < ").push_bind(before);
        }
        let mut equalities = Map::new();
        for condition in &self.metadata {
            match condition {
                MetadataCondition::Equals { key, value } => {
                    equalities.insert(key.clone(), value.clone());
                }
                MetadataCondition::In { key, values } => {
                    // `@> ANY(array)`, not OR-ed containments: the planner turns an array
                    // into one bitmap scan of the GIN index, org and values together, where
                    // an OR of `@>` conditions ends in a scan of every row of the org.
                    let singles: Vec<Value> = values
                        .iter()
                        .map(|value| {
                            let mut single = Map::new();
                            single.insert(key.clone(), value.clone());
                            Value::Object(single)
                        })
                        .collect();
                    builder
                        .push(" AND f.metadata @> ANY(")
                        .push_bind(singles)
                        .push("::jsonb[])");
                }
            }
        }
        if !equalities.is_empty() {
            builder
                .push(" AND f.metadata @> ")
                .push_bind(Value::Object(equalities))
                .push("::jsonb");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn with_metadata(metadata: Value) -> Result<FileFilter, FilterError> {
        FileFilter::try_from(FilterInput {
            metadata: Some(metadata),
            ..FilterInput::default()
        })
    }

    #[test]
    fn metadata_filters_take_scalars_and_in_lists() {
        let filter = with_metadata(json!({"team": "legal", "year": {"in": [2023, 2024]}})).unwrap();
        assert_eq!(
            filter.metadata,
            vec![
                MetadataCondition::Equals {
                    key: "team".into(),
                    value: json!("legal")
                },
                MetadataCondition::In {
                    key: "year".into(),
                    values: vec![json!(2023), json!(2024)]
                },
            ]
        );
    }

    #[test]
    fn metadata_filters_refuse_what_they_cannot_mean() {
        for bad in [
            json!(["team"]),
            json!({"team": null}),
            json!({"team": ["legal"]}),
            json!({"team": {"eq": "legal"}}),
            json!({"team": {"in": []}}),
            json!({"team": {"in": [{"nested": 1}]}}),
            json!({"team": {"in": [1], "extra": 2}}),
            json!({"": 1}),
        ] {
            assert!(
                matches!(with_metadata(bad.clone()), Err(FilterError::Metadata(_))),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn other_fields_are_checked() {
        let ranged = |after: &str, before: &str| {
            FileFilter::try_from(FilterInput {
                created_after: Some(after.parse().unwrap()),
                created_before: Some(before.parse().unwrap()),
                ..FilterInput::default()
            })
        };
        assert_eq!(
            ranged("2024-02-01T00:00:00Z", "2024-01-01T00:00:00Z"),
            Err(FilterError::EmptyCreatedRange)
        );
        assert!(ranged("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z").is_ok());
        let prefixed = |prefix: &str| {
            FileFilter::try_from(FilterInput {
                name_prefix: Some(prefix.into()),
                ..FilterInput::default()
            })
        };
        assert_eq!(prefixed(""), Err(FilterError::NamePrefix));
        assert_eq!(prefixed("a\nb"), Err(FilterError::NamePrefix));
        let typed = FileFilter::try_from(FilterInput {
            content_types: Some(vec![" Application/PDF ".into()]),
            ..FilterInput::default()
        })
        .unwrap();
        assert_eq!(typed.content_types, Some(vec!["application/pdf".into()]));
        let too_many = FileFilter::try_from(FilterInput {
            file_ids: Some(vec![Uuid::nil(); MAX_FILE_IDS + 1]),
            ..FilterInput::default()
        });
        assert_eq!(too_many, Err(FilterError::TooManyFileIds));
        assert!(
            FileFilter::try_from(FilterInput::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_prefix_upper_bound_is_the_next_string_in_code_point_order() {
        assert_eq!(prefix_upper_bound("reports/"), Some("reports0".into()));
        assert_eq!(prefix_upper_bound("caf\u{e9}"), Some("caf\u{ea}".into()));
        assert_eq!(prefix_upper_bound("a\u{d7ff}"), Some("a\u{e000}".into()));
        assert_eq!(prefix_upper_bound("a\u{10ffff}"), Some("b".into()));
        assert_eq!(prefix_upper_bound("\u{10ffff}"), None);
        // Every name with the prefix sorts inside [prefix, upper), byte-wise.
        let upper = prefix_upper_bound("ab").unwrap();
        for name in ["ab", "ab\u{0}", "abzzz", "ab\u{10ffff}"] {
            assert!(name.as_bytes() >= b"ab".as_slice() && name.as_bytes() < upper.as_bytes());
        }
        for name in ["aa\u{10ffff}", "ac", "b"] {
            assert!(!(name.as_bytes() >= b"ab".as_slice() && name.as_bytes() < upper.as_bytes()));
        }
    }
}
