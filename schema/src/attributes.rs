//! Lossless, SQL-friendly storage of OTLP attribute sets.
//!
//! An attribute set is two maps in the same row:
//! - `attributes: Map<Utf8, Utf8>`: every key with its value as text. Strings
//!   are stored verbatim; booleans as `true`/`false`; integers in decimal;
//!   doubles in Rust's shortest round-trip form (`1.5`, `NaN`, `inf`); bytes in
//!   standard base64; arrays and key-value lists as their OTLP/JSON encoding
//!   (`{"values":[...]}`); an empty or absent value is a null.
//! - `attribute_types: Map<Utf8, Int8>`: the [type code](TypeCode) of each key
//!   whose value is *not* a string, so the common all-string set costs an empty
//!   map.
//!
//! Keys are unique within a set, as the OTLP data model requires. A set that
//! repeats a key (Jaeger tags may; fuzzing found such sets stored but then
//! unreadable, each value decoded with the first one's type) keeps the last
//! value of the key, where it first appeared — what the OpenTelemetry
//! Collector's attribute maps do with a repeated `Put`.

use std::fmt::Write as _;

use arrow_array::builder::{Int8Builder, MapBuilder, MapFieldNames, StringBuilder};
use arrow_array::{Array, Int8Array, MapArray, StringArray};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};

use crate::otlp::view::{AttributeView, ValueRef};
use crate::spans::{MAP_ENTRIES, MAP_KEY, MAP_VALUE};

/// Type code of a non-string attribute value in `*_attribute_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum TypeCode {
    Bool = 1,
    Int = 2,
    Double = 3,
    Bytes = 4,
    Array = 5,
    KvList = 6,
    /// An `AnyValue` with no value set.
    Empty = 7,
    /// A `KeyValue` without an `AnyValue`.
    Absent = 8,
}

impl TypeCode {
    fn from_i8(code: i8) -> Option<Self> {
        Some(match code {
            1 => Self::Bool,
            2 => Self::Int,
            3 => Self::Double,
            4 => Self::Bytes,
            5 => Self::Array,
            6 => Self::KvList,
            7 => Self::Empty,
            8 => Self::Absent,
            _ => return None,
        })
    }
}

/// Error decoding a stored attribute back into an OTLP value.
#[derive(Debug, thiserror::Error)]
#[error("attribute {key:?}: cannot decode {text:?} as {ty:?}")]
pub struct DecodeError {
    key: String,
    text: String,
    ty: TypeCode,
}

fn field_names() -> MapFieldNames {
    MapFieldNames {
        entry: MAP_ENTRIES.to_string(),
        key: MAP_KEY.to_string(),
        value: MAP_VALUE.to_string(),
    }
}

/// Builds the `attributes` and `attribute_types` map columns of one attribute
/// set, writing values straight into the Arrow builders.
pub(crate) struct AttributesBuilder {
    values: MapBuilder<StringBuilder, StringBuilder>,
    types: MapBuilder<StringBuilder, Int8Builder>,
}

impl AttributesBuilder {
    pub(crate) fn with_capacity(rows: usize) -> Self {
        Self {
            values: MapBuilder::with_capacity(
                Some(field_names()),
                StringBuilder::new(),
                StringBuilder::new(),
                rows,
            ),
            types: MapBuilder::with_capacity(
                Some(field_names()),
                StringBuilder::new(),
                Int8Builder::new(),
                rows,
            ),
        }
    }

    /// Appends one row holding `attrs`, each key once.
    pub(crate) fn append<A: AttributeView>(&mut self, attrs: &[A]) {
        if has_repeated_key(attrs) {
            return self.append_unique(last_values(attrs).map(|i| &attrs[i as usize]));
        }
        self.append_unique(attrs.iter());
    }

    /// Appends one row holding `attrs`, whose keys are unique.
    pub(crate) fn append_unique<'a, A: AttributeView + 'a>(
        &mut self,
        attrs: impl Iterator<Item = &'a A>,
    ) {
        for kv in attrs {
            let key = kv.key();
            self.values.keys().append_value(key);
            let code = write_value(self.values.values(), kv.value());
            if let Some(code) = code {
                self.types.keys().append_value(key);
                self.types.values().append_value(code as i8);
            }
        }
        self.end_row();
    }

    /// Ends the row whose entries were appended.
    fn end_row(&mut self) {
        // Lengths of keys and values always match: each key gets one value.
        self.values
            .append(true)
            .expect("attribute keys and values match");
        self.types
            .append(true)
            .expect("attribute keys and types match");
    }

    /// Appends `rows` rows without attributes.
    pub(crate) fn append_empty_n(&mut self, rows: usize) {
        for _ in 0..rows {
            self.end_row();
        }
    }

    /// Appends `rows` rows, each holding the one row of `row`.
    pub(crate) fn append_row_n(&mut self, row: &RowOfAttributes, rows: usize) {
        for _ in 0..rows {
            // Fails only past i32::MAX bytes of keys or texts in one
            // batch, which the builder's limit on repeated bytes keeps
            // it well under (`SpansBuilder`'s `MAX_REPEATED_BYTES`).
            let (keys, values) = self.values.entries();
            keys.append_array(&row.keys)
                .expect("attribute keys fit the batch");
            values
                .append_array(&row.values)
                .expect("attribute values fit the batch");
            let (keys, codes) = self.types.entries();
            keys.append_array(&row.type_keys)
                .expect("attribute keys fit the batch");
            codes.append_slice(&row.type_codes);
            self.end_row();
        }
    }

    /// The bytes of keys and texts written so far.
    pub(crate) fn bytes(&mut self) -> usize {
        let (keys, values) = self.values.entries();
        let (type_keys, _) = self.types.entries();
        keys.values_slice().len() + values.values_slice().len() + type_keys.values_slice().len()
    }

    pub(crate) fn finish(&mut self) -> (MapArray, MapArray) {
        (self.values.finish(), self.types.finish())
    }
}

/// The entries of one row of an attribute set, written once and copied into
/// every row that holds the set ([`AttributesBuilder::append_row_n`]): the
/// rows of a resource or a scope copy its bytes instead of writing each
/// attribute again.
pub(crate) struct RowOfAttributes {
    keys: StringArray,
    values: StringArray,
    type_keys: StringArray,
    type_codes: Vec<i8>,
}

impl RowOfAttributes {
    /// The bytes one copy of the row adds to the builder's keys and texts.
    pub(crate) fn bytes(&self) -> usize {
        self.keys.values().len() + self.values.values().len() + self.type_keys.values().len()
    }

    /// The row of `attrs`, whose keys are unique.
    pub(crate) fn new<'a, A: AttributeView + 'a>(attrs: impl Iterator<Item = &'a A>) -> Self {
        let mut one = AttributesBuilder::with_capacity(1);
        one.append_unique(attrs);
        let (values, types) = one.finish();
        let strings = |array: &dyn Array| string_column(array).clone();
        Self {
            keys: strings(values.keys()),
            values: strings(values.values()),
            type_keys: strings(types.keys()),
            type_codes: types
                .values()
                .as_any()
                .downcast_ref::<Int8Array>()
                .expect("type codes are Int8")
                .values()
                .to_vec(),
        }
    }
}

/// Whether a key appears twice; without allocating for the usual few keys.
pub(crate) fn has_repeated_key<A: AttributeView>(attrs: &[A]) -> bool {
    if attrs.len() <= 32 {
        return attrs
            .iter()
            .enumerate()
            .any(|(i, a)| attrs[i + 1..].iter().any(|b| a.key() == b.key()));
    }
    let mut seen = std::collections::HashSet::with_capacity(attrs.len());
    !attrs.iter().all(|kv| seen.insert(kv.key()))
}

/// The set with each key once (the slow path, for sets that repeat a key):
/// the index of each key's last value, in the order keys first appeared.
#[cold]
pub(crate) fn last_values<A: AttributeView>(attrs: &[A]) -> impl Iterator<Item = u32> + '_ {
    let mut last: std::collections::HashMap<&str, u32> =
        std::collections::HashMap::with_capacity(attrs.len());
    for (i, kv) in attrs.iter().enumerate() {
        last.insert(kv.key(), i as u32);
    }
    let mut seen = std::collections::HashSet::with_capacity(attrs.len());
    attrs
        .iter()
        .filter(move |kv| seen.insert(kv.key()))
        .map(move |kv| last[kv.key()])
}

/// Writes the text of `value` and returns its type code, `None` for strings.
fn write_value(out: &mut StringBuilder, value: ValueRef<'_>) -> Option<TypeCode> {
    let code = match value {
        ValueRef::Absent => {
            out.append_null();
            return Some(TypeCode::Absent);
        }
        ValueRef::Empty => {
            out.append_null();
            return Some(TypeCode::Empty);
        }
        ValueRef::Str(s) => {
            out.append_value(s);
            return None;
        }
        ValueRef::Bool(b) => {
            out.append_value(if b { "true" } else { "false" });
            return Some(TypeCode::Bool);
        }
        ValueRef::Int(i) => {
            let _ = write!(out, "{i}");
            TypeCode::Int
        }
        ValueRef::Double(d) => {
            let _ = write!(out, "{d}");
            TypeCode::Double
        }
        ValueRef::Bytes(b) => {
            out.append_value(BASE64.encode(b));
            return Some(TypeCode::Bytes);
        }
        ValueRef::Array(a) => {
            out.append_value(serde_json::to_string(a).expect("array value serializes"));
            return Some(TypeCode::Array);
        }
        ValueRef::KvList(kv) => {
            out.append_value(serde_json::to_string(kv).expect("kvlist value serializes"));
            return Some(TypeCode::KvList);
        }
    };
    out.append_value("");
    Some(code)
}

/// Decodes row `row` of an attribute set back into OTLP key-values, in stored
/// order. A null map row decodes as no attributes.
pub fn decode(
    values: &MapArray,
    types: Option<&MapArray>,
    row: usize,
) -> Result<Vec<KeyValue>, DecodeError> {
    if values.is_null(row) {
        return Ok(Vec::new());
    }
    let entries = values.value(row);
    let keys = string_column(entries.column(0));
    let texts = string_column(entries.column(1));
    let type_entries = types.filter(|t| !t.is_null(row)).map(|t| t.value(row));
    let (type_keys, type_codes) = match &type_entries {
        Some(e) if !e.is_empty() => (
            Some(string_column(e.column(0))),
            e.column(1).as_any().downcast_ref::<Int8Array>(),
        ),
        _ => (None, None),
    };
    let mut out = Vec::with_capacity(keys.len());
    for i in 0..keys.len() {
        let key = keys.value(i);
        let code = match (type_keys, type_codes) {
            (Some(tk), Some(tc)) => (0..tk.len())
                .find(|&j| tk.value(j) == key)
                .and_then(|j| TypeCode::from_i8(tc.value(j))),
            _ => None,
        };
        let text = (!texts.is_null(i)).then(|| texts.value(i));
        out.push(KeyValue {
            key: key.to_string(),
            value: decode_value(key, text, code)?,
            key_strindex: 0,
        });
    }
    Ok(out)
}

fn string_column(array: &dyn Array) -> &StringArray {
    array
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("attribute maps have Utf8 keys and values")
}

fn decode_value(
    key: &str,
    text: Option<&str>,
    code: Option<TypeCode>,
) -> Result<Option<AnyValue>, DecodeError> {
    let err = |ty: TypeCode| DecodeError {
        key: key.to_string(),
        text: text.unwrap_or_default().to_string(),
        ty,
    };
    let value = match (code, text) {
        (Some(TypeCode::Absent), _) => return Ok(None),
        (Some(TypeCode::Empty), _) | (None, None) => None,
        (None, Some(s)) => Some(Value::StringValue(s.to_string())),
        (Some(ty), None) => return Err(err(ty)),
        (Some(ty), Some(s)) => Some(match ty {
            TypeCode::Bool => Value::BoolValue(s.parse().map_err(|_| err(ty))?),
            TypeCode::Int => Value::IntValue(s.parse().map_err(|_| err(ty))?),
            TypeCode::Double => Value::DoubleValue(s.parse().map_err(|_| err(ty))?),
            TypeCode::Bytes => Value::BytesValue(BASE64.decode(s).map_err(|_| err(ty))?),
            TypeCode::Array => {
                Value::ArrayValue(serde_json::from_str::<ArrayValue>(s).map_err(|_| err(ty))?)
            }
            TypeCode::KvList => {
                Value::KvlistValue(serde_json::from_str::<KeyValueList>(s).map_err(|_| err(ty))?)
            }
            TypeCode::Empty | TypeCode::Absent => unreachable!("handled above"),
        }),
    };
    Ok(Some(AnyValue { value }))
}

#[cfg(test)]
mod tests;
