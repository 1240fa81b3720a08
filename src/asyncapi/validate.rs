//! Optional payload validation: an event's data is checked against its type's JSON Schema
//! (the one the AsyncAPI document publishes) before the handler runs; a mismatch is a
//! permanent error, so the message is dead-lettered with the failing path in the reason.
//!
//! ```
//! use longshore::asyncapi::ValidatedHandlers;
//! use longshore::{Consumer, DomainEvent, Subscription};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
//! struct OrderCreated { order_id: String, total_cents: u64 }
//! impl DomainEvent for OrderCreated { const EVENT_TYPE: &'static str = "order_created"; }
//!
//! let ls = longshore::connect("memory://").await?;
//! let consumer = Consumer::new(ls.subscriber.clone(), Subscription::new("billing", ["events.#"]))
//!     .on_validated(|o: OrderCreated, _ctx| async move { println!("{}", o.order_id); Ok(()) })
//!     .start()
//!     .await?;
//! # consumer.shutdown(std::time::Duration::from_secs(1)).await; Ok(()) }
//! ```
//!
//! The checker covers what `schemars` writes for Rust types: `type`, `properties`,
//! `required`, `additionalProperties`, `items`, `enum`, `const`, `minimum` / `maximum`,
//! `minLength` / `maxLength`, `anyOf` / `oneOf` / `allOf` and the integer `format`s.

use std::future::Future;
use std::sync::Arc;

use longshore_core::{Consumer, DomainEvent, HandlerContext, HandlerError, HandlerFuture};
use schemars::JsonSchema;
use serde_json::Value;

/// Registers handlers whose events are validated against their JSON Schema first.
pub trait ValidatedHandlers: Sized {
    /// Like [`Consumer::on`], after checking each event's data against `T`'s JSON Schema: a
    /// mismatch is dead-lettered with the failing path (`/lines/0/quantity: …`).
    fn on_validated<T, F, Fut>(self, handler: F) -> Self
    where
        T: DomainEvent + JsonSchema,
        F: Fn(T, HandlerContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static;
}

impl ValidatedHandlers for Consumer {
    fn on_validated<T, F, Fut>(self, handler: F) -> Self
    where
        T: DomainEvent + JsonSchema,
        F: Fn(T, HandlerContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let schema = Arc::new(super::payload_schema::<T>());
        let handler = Arc::new(handler);
        self.on_event(T::EVENT_TYPE, move |ctx: HandlerContext| -> HandlerFuture {
            let (schema, handler) = (schema.clone(), handler.clone());
            Box::pin(async move {
                if let Err(mismatch) = validate(&schema, &ctx.event.data) {
                    return Err(HandlerError::permanent(format!(
                        "data of {:?} does not match its schema at {mismatch}",
                        T::EVENT_TYPE
                    )));
                }
                // What matches the schema can still fail serde (it is stricter on numbers'
                // ranges): that too is permanent.
                let event: T = ctx.event.to_typed().map_err(HandlerError::permanent)?;
                handler(event, ctx).await
            })
        })
    }
}

/// Checks `value` against `schema`; the error is `<JSON pointer>: <what is wrong>`.
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    check(schema, value, &mut String::new())
}

fn check(schema: &Value, value: &Value, path: &mut String) -> Result<(), String> {
    let Some(s) = schema.as_object() else {
        // `true` accepts anything, `false` nothing.
        return if schema == &Value::Bool(false) {
            Err(at(path, "no value is allowed here"))
        } else {
            Ok(())
        };
    };
    if let Some(types) = s.get("type") {
        let allowed: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !allowed.is_empty() && !allowed.iter().any(|t| is_type(value, t)) {
            return Err(at(
                path,
                &format!("expected {}, found {}", allowed.join(" or "), kind(value)),
            ));
        }
    }
    if let Some(c) = s.get("const") {
        if c != value {
            return Err(at(path, &format!("expected {c}")));
        }
    }
    if let Some(Value::Array(options)) = s.get("enum") {
        if !options.contains(value) {
            return Err(at(
                path,
                &format!("{value} is not one of {}", Value::Array(options.clone())),
            ));
        }
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
            if n < min {
                return Err(at(path, &format!("{value} is less than the minimum {min}")));
            }
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
            if n > max {
                return Err(at(path, &format!("{value} is more than the maximum {max}")));
            }
        }
    }
    if let Some(text) = value.as_str() {
        let len = text.chars().count() as u64;
        if s.get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| len < m)
        {
            return Err(at(path, "the string is too short"));
        }
        if s.get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| len > m)
        {
            return Err(at(path, "the string is too long"));
        }
    }
    if let Value::Object(fields) = value {
        if let Some(Value::Array(required)) = s.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !fields.contains_key(name) {
                    return Err(at(path, &format!("the field {name:?} is missing")));
                }
            }
        }
        let properties = s.get("properties").and_then(Value::as_object);
        for (name, field) in fields {
            let sub = properties
                .and_then(|p| p.get(name))
                .or_else(|| s.get("additionalProperties"));
            if let Some(sub) = sub {
                let len = path.len();
                path.push('/');
                path.push_str(&name.replace('~', "~0").replace('/', "~1"));
                check(sub, field, path)?;
                path.truncate(len);
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, s.get("items")) {
        for (i, item) in items.iter().enumerate() {
            let len = path.len();
            path.push_str(&format!("/{i}"));
            check(item_schema, item, path)?;
            path.truncate(len);
        }
    }
    if let Some(Value::Array(all)) = s.get("allOf") {
        for sub in all {
            check(sub, value, path)?;
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(options)) = s.get(key) {
            let mut first_error = None;
            if !options
                .iter()
                .any(|o| match check(o, value, &mut path.clone()) {
                    Ok(()) => true,
                    Err(e) => {
                        first_error.get_or_insert(e);
                        false
                    }
                })
            {
                return Err(first_error.unwrap_or_else(|| at(path, "matches none of the choices")));
            }
        }
    }
    Ok(())
}

fn is_type(value: &Value, t: &str) -> bool {
    match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn at(path: &str, what: &str) -> String {
    let path = if path.is_empty() { "/" } else { path };
    format!("{path}: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    struct Line {
        sku: String,
        quantity: u32,
    }

    #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    struct Order {
        order_id: String,
        note: Option<String>,
        lines: Vec<Line>,
    }

    #[test]
    fn paths_name_what_failed() {
        let schema = crate::asyncapi::payload_schema::<Order>();
        let ok = json!({"order_id": "o", "note": null, "lines": [{"sku": "a", "quantity": 1}]});
        assert_eq!(validate(&schema, &ok), Ok(()));
        let bad = json!({"order_id": "o", "lines": [{"sku": "a", "quantity": 1}, {"sku": "b", "quantity": -2}]});
        let e = validate(&schema, &bad).unwrap_err();
        assert!(e.starts_with("/lines/1/quantity: "), "{e}");
        let e = validate(&schema, &json!({"lines": []})).unwrap_err();
        assert_eq!(e, "/: the field \"order_id\" is missing");
        let e = validate(&schema, &json!({"order_id": 7, "lines": []})).unwrap_err();
        assert_eq!(e, "/order_id: expected string, found a number");
        let e = validate(&schema, &json!({"order_id": "o", "note": 1, "lines": []})).unwrap_err();
        assert!(e.starts_with("/note: "), "{e}");
    }
}
