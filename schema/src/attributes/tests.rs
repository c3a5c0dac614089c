use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};

use super::*;

fn kv(key: &str, value: Option<Value>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value }),
        key_strindex: 0,
    }
}

fn roundtrip(attrs: &[KeyValue]) -> (Vec<KeyValue>, MapArray) {
    let mut builder = AttributesBuilder::with_capacity(1);
    builder.append(attrs);
    let (values, types) = builder.finish();
    (decode(&values, Some(&types), 0).unwrap(), values)
}

#[test]
fn every_value_type_round_trips() {
    let attrs = vec![
        kv("s", Some(Value::StringValue("GET".into()))),
        kv("s_digits", Some(Value::StringValue("42".into()))),
        kv("b", Some(Value::BoolValue(true))),
        kv("i", Some(Value::IntValue(-9_007_199_254_740_993))),
        kv("d", Some(Value::DoubleValue(0.1))),
        kv("inf", Some(Value::DoubleValue(f64::NEG_INFINITY))),
        kv("bytes", Some(Value::BytesValue(vec![0, 1, 255]))),
        kv(
            "arr",
            Some(Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(Value::IntValue(1)),
                    },
                    AnyValue {
                        value: Some(Value::StringValue("x".into())),
                    },
                    AnyValue { value: None },
                ],
            })),
        ),
        kv(
            "kv",
            Some(Value::KvlistValue(KeyValueList {
                values: vec![kv("nested", Some(Value::BoolValue(false)))],
            })),
        ),
        kv("empty", None),
        KeyValue {
            key: "absent".into(),
            value: None,
            key_strindex: 0,
        },
    ];
    let (decoded, _) = roundtrip(&attrs);
    assert_eq!(decoded, attrs);
}

#[test]
fn text_values_are_readable_in_sql() {
    let attrs = vec![
        kv("http.route", Some(Value::StringValue("/users/{id}".into()))),
        kv("http.response.status_code", Some(Value::IntValue(200))),
        kv("ratio", Some(Value::DoubleValue(1.5))),
    ];
    let (_, values) = roundtrip(&attrs);
    let entries = values.value(0);
    let texts = entries
        .column(1)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let texts: Vec<_> = texts.iter().map(Option::unwrap).collect();
    assert_eq!(texts, ["/users/{id}", "200", "1.5"]);
}

#[test]
fn all_string_sets_store_no_types() {
    let mut builder = AttributesBuilder::with_capacity(1);
    builder.append(&[kv("a", Some(Value::StringValue("1".into())))]);
    let (_, types) = builder.finish();
    assert_eq!(types.value(0).len(), 0);
}

/// Found by fuzzing (docs/fuzzing.md): `k = 1` then `k = "x"` in one span
/// was stored with one type for both and could not be read back. A repeated
/// key keeps its last value, where it first appeared.
#[test]
fn a_repeated_key_keeps_its_last_value_and_reads_back() {
    let attrs = [
        kv("k", Some(Value::IntValue(1))),
        kv("other", Some(Value::BoolValue(true))),
        kv("k", Some(Value::StringValue("x".into()))),
    ];
    let (back, _) = roundtrip(&attrs);
    assert_eq!(
        back,
        vec![
            kv("k", Some(Value::StringValue("x".into()))),
            kv("other", Some(Value::BoolValue(true))),
        ]
    );
    // Past the small-set fast path too.
    let mut many: Vec<KeyValue> = (0..40)
        .map(|i| kv(&format!("k{i}"), Some(Value::IntValue(i))))
        .collect();
    many.push(kv("k7", Some(Value::StringValue("last".into()))));
    let (back, _) = roundtrip(&many);
    assert_eq!(back.len(), 40);
    assert_eq!(back[7], kv("k7", Some(Value::StringValue("last".into()))));
}

/// A row written once ([`RowOfAttributes`]), then copied with
/// `append_row_n`, writes what appending the set row by row writes: after rows already in the builder (the copied
/// offsets shift), with nulls, type codes, a repeated key and no attributes.
#[test]
fn rows_copied_from_one_row_equal_rows_appended_one_by_one() {
    let every_kind = vec![
        kv("s", Some(Value::StringValue("GET".into()))),
        kv("i", Some(Value::IntValue(-7))),
        kv("empty", None),
        KeyValue {
            key: "absent".into(),
            value: None,
            key_strindex: 0,
        },
        kv("s", Some(Value::StringValue("last wins".into()))),
        kv("d", Some(Value::DoubleValue(2.5))),
    ];
    let strings = vec![
        kv("a", Some(Value::StringValue("x".into()))),
        kv("b", Some(Value::StringValue(String::new()))),
    ];
    let sets: [&[KeyValue]; 3] = [&every_kind, &strings, &[]];
    let (mut copied, mut appended) = (
        AttributesBuilder::with_capacity(0),
        AttributesBuilder::with_capacity(0),
    );
    for (set, rows) in sets.iter().zip([3, 4, 2]).chain(sets.iter().zip([1, 5, 0])) {
        let row = if has_repeated_key(set) {
            RowOfAttributes::new(last_values(set).map(|i| &set[i as usize]))
        } else {
            RowOfAttributes::new(set.iter())
        };
        copied.append_row_n(&row, rows);
        for _ in 0..rows {
            appended.append(set);
        }
    }
    let (copied, appended) = (copied.finish(), appended.finish());
    assert_eq!(copied.0.len(), 15);
    assert_eq!(copied, appended);
    let first = decode(&copied.0, Some(&copied.1), 2).unwrap();
    assert_eq!(first.len(), 5, "the repeated key once");
    assert_eq!(decode(&copied.0, Some(&copied.1), 14).unwrap(), strings);
}
