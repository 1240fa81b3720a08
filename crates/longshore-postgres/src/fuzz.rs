//! Fuzz targets for what another writer of the tables or a user controls: a stored row's
//! columns (any JSON in `headers`, any text there, any bytes in the payload) and URLs.
//! Property tests: `PROPTEST_CASES` inputs each (see `scripts/fuzz.sh`).

use proptest::prelude::*;
use serde_json::Value;

use crate::config::PgConfig;
use crate::mapping::{headers_from_json, stored_message};

/// Any JSON value, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A headers object whose values are mostly strings, sometimes anything.
fn headers_object() -> impl Strategy<Value = Value> {
    let value = prop_oneof![
        4 => ".{0,24}".prop_map(Value::String),
        1 => json(),
    ];
    prop::collection::btree_map(".{0,16}", value, 0..12)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// What a stored header value reads as, when it can be read.
fn readable(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

proptest! {
    #[test]
    fn fuzz_pg_stored_row(
        headers in prop_oneof![headers_object(), json()],
        payload in prop::collection::vec(any::<u8>(), 0..256),
        id in ".{0,40}",
        key in prop::option::of(".{0,20}"),
    ) {
        let text = headers.to_string();
        let (message, failed) = match stored_message(id.clone(), key.clone(), &text, payload.clone()) {
            Ok(m) => (m, None),
            Err(u) => (*u.kept, Some(u.reason)),
        };
        // Whatever the headers, the id, key and payload are kept.
        prop_assert_eq!(&message.id, &id);
        prop_assert_eq!(&message.key, &key);
        prop_assert_eq!(&message.payload[..], &payload[..]);
        match &headers {
            Value::Object(object) => {
                let all_readable = object.values().all(|v| readable(v).is_some());
                prop_assert_eq!(failed.is_none(), all_readable, "{:?}", failed);
                // Every readable header is kept, as its text; nothing else.
                for (name, value) in object {
                    prop_assert_eq!(message.headers.get(name).cloned(), readable(value));
                }
                prop_assert_eq!(message.headers.len(), object.values().filter(|v| readable(v).is_some()).count());
            }
            _ => {
                let reason = failed.unwrap_or_default();
                prop_assert!(reason.starts_with("headers are "), "{}", reason);
                prop_assert!(message.headers.is_empty());
            }
        }
    }

    #[test]
    fn fuzz_pg_headers_text(text in ".{0,200}") {
        // Any text at all: a result, never a panic; an error names the headers.
        if let Err((_, reason)) = headers_from_json(&text) {
            prop_assert!(reason.starts_with("headers"), "{}", reason);
        }
    }

    #[test]
    fn fuzz_pg_url(
        url in "postgres(ql)?://([a-z]{0,6}:s3cr3t[a-z/?#]{0,4}@)?[a-z0-9.:\\[\\]]{0,20}(/[a-z]{0,8})?(\\?.{0,40})?|.{0,80}"
    ) {
        match PgConfig::from_url(&url) {
            Ok(config) => {
                prop_assert!(config.max_connections > 0);
                prop_assert!(crate::Schema::new(config.schema.name()).is_ok());
                prop_assert!(!format!("{config:?}").contains("s3cr3t"), "{}", url);
            }
            Err(e) => prop_assert!(!e.to_string().contains("s3cr3t"), "{}", e),
        }
    }
}
