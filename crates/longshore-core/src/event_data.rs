//! An event's data: JSON kept as the text it arrived as until something reads it.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;
use std::sync::OnceLock;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// An event's data, as JSON.
///
/// A decoded event keeps its data as the JSON text it arrived as (sharing the message's payload
/// bytes, not a copy of them). A typed handler reads its
/// struct straight from that text ([`Event::to_typed`](crate::Event::to_typed)), so no
/// [`Value`] tree is built that nobody reads: on a ~250-byte event that tree was most of the
/// cost of decoding it.
///
/// Reading the data as a [`Value`] (`event.data["order_id"]`, `event.data.get("sku")`, through
/// `Deref`, as with [`std::sync::LazyLock`]) parses it once, on first use. Text that is JSON
/// but not a [`Value`] (nested deeper than 128, a number beyond `f64`, a lone surrogate) reads
/// as `null` that way; [`Data::try_value`] says why instead. The consumer runtime checks this
/// before an untyped handler sees the event, so handlers never meet it.
///
/// Data built from a [`Value`] (`Event::new`) is kept as that value. Equality compares the
/// JSON values, whatever form each side is kept in.
#[derive(Clone)]
pub struct Data {
    /// The JSON text, when the data arrived as text (decoded) or was written from a typed
    /// event (`Event::from_typed`).
    raw: Option<Text>,
    /// The parsed value: given when built from a value, parsed from `raw` on first read.
    value: OnceLock<Value>,
}

/// Where kept JSON text lives.
#[derive(Clone)]
enum Text {
    /// Text of its own: read from a store, or written from a typed event.
    Owned(Box<RawValue>),
    /// The data's bytes inside the payload it was decoded from, shared rather than copied
    /// (a decoded event is read once and dropped, and the payload outlives it anyway);
    /// checked to be UTF-8 and one JSON value when it was decoded.
    Shared(Bytes),
}

impl Text {
    /// The text. Shared bytes are checked as UTF-8 again (safe code cannot skip that):
    /// cheaper than the copy it saves.
    fn get(&self) -> Cow<'_, str> {
        match self {
            Text::Owned(raw) => Cow::Borrowed(raw.get()),
            Text::Shared(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => Cow::Borrowed(text),
                // Not reached: the bytes were checked when decoded.
                Err(_) => String::from_utf8_lossy(bytes),
            },
        }
    }
}

/// What `Deref` shows for text that does not parse into a [`Value`].
static NULL: Value = Value::Null;

impl Data {
    /// Data kept as JSON text (decoded, or written from a typed event).
    fn from_raw(raw: Box<RawValue>) -> Self {
        Data {
            raw: Some(Text::Owned(raw)),
            value: OnceLock::new(),
        }
    }

    /// Data kept as a slice of the payload it was decoded from: `bytes` must be UTF-8 and
    /// one JSON value (as `serde_json` found them in the payload).
    pub(crate) fn from_payload(bytes: Bytes) -> Self {
        Data {
            raw: Some(Text::Shared(bytes)),
            value: OnceLock::new(),
        }
    }

    /// Data from JSON text, kept as that text (checked to be JSON, not parsed into a
    /// [`Value`]): how the stores read their rows.
    pub fn from_json(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Data::from_raw)
    }

    /// Writes a typed value straight to JSON text (no [`Value`] in between).
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(Data::from_raw)
    }

    /// Reads the data as `T`, from the text when it is kept as text.
    pub fn to_typed<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        match (&self.raw, self.value.get()) {
            (Some(raw), _) => serde_json::from_str(&raw.get()),
            (None, Some(value)) => T::deserialize(value),
            (None, None) => T::deserialize(&NULL),
        }
    }

    /// The data as a [`Value`], parsed on first use; the error says why text that is JSON
    /// does not parse into one.
    pub fn try_value(&self) -> Result<&Value, serde_json::Error> {
        if let Some(value) = self.value.get() {
            return Ok(value);
        }
        let parsed = match &self.raw {
            Some(raw) => serde_json::from_str(&raw.get())?,
            None => Value::Null,
        };
        // Two threads may parse at once; both get the one value that was set first.
        Ok(self.value.get_or_init(|| parsed))
    }

    /// The data as an owned [`Value`].
    pub fn into_value(self) -> Value {
        match (self.value.into_inner(), self.raw) {
            (Some(value), _) => value,
            (None, Some(raw)) => serde_json::from_str(&raw.get()).unwrap_or(Value::Null),
            (None, None) => Value::Null,
        }
    }

    /// The data as compact JSON text.
    pub fn json(&self) -> Cow<'_, str> {
        match (&self.raw, self.value.get()) {
            (Some(raw), _) => raw.get(),
            (None, Some(value)) => value.to_string().into(),
            (None, None) => "null".into(),
        }
    }
}

impl From<Value> for Data {
    fn from(value: Value) -> Self {
        Data {
            raw: None,
            value: OnceLock::from(value),
        }
    }
}

impl Deref for Data {
    type Target = Value;

    /// The data as a [`Value`], parsed on first use (`null` if the text is no value; see
    /// [`Data::try_value`]).
    fn deref(&self) -> &Value {
        self.try_value().unwrap_or(&NULL)
    }
}

impl PartialEq for Data {
    fn eq(&self, other: &Data) -> bool {
        if let (Some(a), Some(b)) = (&self.raw, &other.raw) {
            if a.get() == b.get() {
                return true;
            }
        }
        **self == **other
    }
}

impl PartialEq<Value> for Data {
    fn eq(&self, other: &Value) -> bool {
        **self == *other
    }
}

impl PartialEq<Data> for Value {
    fn eq(&self, other: &Data) -> bool {
        *self == **other
    }
}

impl Serialize for Data {
    /// Writes the kept text as is (byte for byte as it arrived), or the value. Kept text goes
    /// through serde_json's raw-value support: serialise `Data` with serde_json (to text or to
    /// a `Value`); other formats would see it as a struct.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (&self.raw, self.value.get()) {
            (Some(Text::Owned(raw)), _) => raw.serialize(serializer),
            // Borrowed as a raw value for serde_json to write as is: that reads the text
            // through once more, here only (writing a decoded event out again).
            (Some(shared), _) => serde_json::from_str::<&RawValue>(&shared.get())
                .map_err(serde::ser::Error::custom)?
                .serialize(serializer),
            (None, Some(value)) => value.serialize(serializer),
            (None, None) => NULL.serialize(serializer),
        }
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.raw, self.value.get()) {
            (Some(raw), _) => write!(f, "Data({})", raw.get()),
            (None, Some(value)) => write!(f, "Data({value:?})"),
            (None, None) => write!(f, "Data(null)"),
        }
    }
}

impl fmt::Display for Data {
    /// Compact JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decoded(text: &str) -> Data {
        Data::from_raw(RawValue::from_string(text.into()).unwrap())
    }

    #[test]
    fn text_and_value_compare_by_value() {
        let raw = decoded(r#"{ "a": 1, "b": [true] }"#);
        assert_eq!(raw, Data::from(json!({"b": [true], "a": 1})));
        assert_eq!(raw, json!({"a": 1, "b": [true]}));
        assert_ne!(raw, decoded(r#"{"a": 2, "b": [true]}"#));
        assert_eq!(raw["b"][0], json!(true));
    }

    #[test]
    fn kept_text_is_written_back_byte_for_byte() {
        let raw = decoded(r#"{"big":123456789012345678901234567890,"f":1.0}"#);
        assert_eq!(
            serde_json::to_string(&raw).unwrap(),
            r#"{"big":123456789012345678901234567890,"f":1.0}"#
        );
        assert_eq!(raw.to_string(), raw.json());
    }

    #[test]
    fn text_that_is_no_value_reads_as_null_and_says_why() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let data = decoded(&deep);
        assert!(data.try_value().is_err());
        assert_eq!(*data, Value::Null);
        assert!(data.to_typed::<Value>().is_err());
    }

    #[test]
    fn data_shared_with_its_payload_behaves_as_owned_text() {
        let text = r#"{"a":[1,{"b":"c\u00e9"}],"big":123456789012345678901234567890}"#;
        let payload = Bytes::from(format!(r#"{{"data":{text}}}"#));
        let shared = Data::from_payload(payload.slice(8..8 + text.len()));
        let owned = decoded(text);
        assert_eq!(shared, owned);
        assert_eq!(shared.json(), text);
        assert_eq!(serde_json::to_string(&shared).unwrap(), text);
        assert_eq!(format!("{shared:?}"), format!("{owned:?}"));
        assert_eq!(shared.to_typed::<Value>().unwrap(), *owned);
        assert_eq!(shared["a"][1]["b"], json!("c\u{e9}"));
        assert_eq!(shared.clone().into_value(), owned.into_value());
    }

    #[test]
    fn typed_data_round_trips_without_a_value() {
        #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
        struct T {
            a: u32,
        }
        let data = Data::from_serialize(&T { a: 7 }).unwrap();
        assert!(data.value.get().is_none());
        assert_eq!(data.to_typed::<T>().unwrap(), T { a: 7 });
        assert_eq!(data, json!({"a": 7}));
    }
}
