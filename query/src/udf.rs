//! SQL functions tracelake adds to the session.
//!
//! `event_names(events)`: the names of a span's events as a list of strings,
//! so that `array_has(event_names(events), 'exception')` finds spans with an
//! event of that name (DataFusion cannot project a field out of a list of
//! structs). It reuses the events' offsets and name column: no copy.
//!
//! `date_trunc`: DataFusion's, with a fast path for UTC timestamps.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, ListArray};
use arrow::datatypes::{
    DataType, Field, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

#[derive(Debug, PartialEq, Eq, Hash)]
struct EventNames {
    signature: Signature,
}

/// The `event_names` function.
pub fn event_names() -> ScalarUDF {
    ScalarUDF::new_from_impl(EventNames {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

fn names_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

impl ScalarUDFImpl for EventNames {
    fn name(&self) -> &str {
        "event_names"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match &args[0] {
            DataType::List(f) if matches!(f.data_type(), DataType::Struct(fields) if fields.find("name").is_some()) => {
                Ok(names_type())
            }
            other => exec_err!("event_names expects the events column, got {other}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [events] = args.args.as_slice() else {
            return exec_err!("event_names takes one argument");
        };
        let array = events.to_array(args.number_rows)?;
        let list = array.as_list::<i32>();
        let structs = list.values().as_struct();
        let Some(names) = structs.column_by_name("name") else {
            return exec_err!("event_names expects structs with a name field");
        };
        let out = ListArray::try_new(
            Arc::new(Field::new("item", DataType::Utf8, true)),
            list.offsets().clone(),
            Arc::clone(names),
            list.nulls().cloned(),
        )?;
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

/// `date_trunc`, with hours and days of UTC timestamps truncated by
/// arithmetic. DataFusion's own takes that fast path only for timestamps
/// without a time zone and converts every value through chrono for any
/// other, `UTC` included, while `start_time` is a UTC timestamp: grouping
/// 1 M spans by `date_trunc('hour', start_time)` took 75 ms, most of it
/// there. Everything else goes to DataFusion's function.
pub fn date_trunc() -> ScalarUDF {
    ScalarUDF::new_from_impl(UtcDateTrunc {
        inner: datafusion::functions::datetime::date_trunc(),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct UtcDateTrunc {
    inner: Arc<ScalarUDF>,
}

/// Units of `unit` in an hour and in a day.
fn hour_and_day(unit: TimeUnit) -> (i64, i64) {
    let per_second = match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    };
    (3600 * per_second, 86_400 * per_second)
}

impl ScalarUDFImpl for UtcDateTrunc {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        self.inner.return_type(args)
    }

    fn return_field_from_args(
        &self,
        args: datafusion::logical_expr::ReturnFieldArgs,
    ) -> Result<arrow::datatypes::FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn output_ordering(
        &self,
        input: &[datafusion::logical_expr::sort_properties::ExprProperties],
    ) -> Result<datafusion::logical_expr::sort_properties::SortProperties> {
        self.inner.output_ordering(input)
    }

    fn documentation(&self) -> Option<&datafusion::logical_expr::Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let granularity = match &args.args[0] {
            ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(g))
                | ScalarValue::Utf8View(Some(g))
                | ScalarValue::LargeUtf8(Some(g)),
            ) => g.to_ascii_lowercase(),
            _ => String::new(),
        };
        if let (ColumnarValue::Array(array), "hour" | "day") =
            (&args.args[1].clone(), granularity.as_str())
            && let DataType::Timestamp(unit, Some(tz)) = array.data_type()
            && matches!(tz.as_ref(), "UTC" | "+00:00" | "Z" | "Etc/UTC")
        {
            let (hour, day) = hour_and_day(*unit);
            let step = if granularity == "hour" { hour } else { day };
            // Times so far before 1970 that the start of their hour does
            // not fit go to DataFusion's function (which refuses them).
            let fits = |v: i64| v.div_euclid(step).checked_mul(step).is_some();
            let all_fit = match unit {
                TimeUnit::Second => array
                    .as_primitive::<TimestampSecondType>()
                    .iter()
                    .flatten()
                    .all(fits),
                TimeUnit::Millisecond => array
                    .as_primitive::<TimestampMillisecondType>()
                    .iter()
                    .flatten()
                    .all(fits),
                TimeUnit::Microsecond => array
                    .as_primitive::<TimestampMicrosecondType>()
                    .iter()
                    .flatten()
                    .all(fits),
                TimeUnit::Nanosecond => array
                    .as_primitive::<TimestampNanosecondType>()
                    .iter()
                    .flatten()
                    .all(fits),
            };
            if !all_fit {
                return self.inner.invoke_with_args(args);
            }
            let truncate = |v: i64| v.div_euclid(step) * step;
            let out: ArrayRef = match unit {
                TimeUnit::Second => Arc::new(
                    array
                        .as_primitive::<TimestampSecondType>()
                        .unary::<_, TimestampSecondType>(truncate)
                        .with_timezone(Arc::clone(tz)),
                ),
                TimeUnit::Millisecond => Arc::new(
                    array
                        .as_primitive::<TimestampMillisecondType>()
                        .unary::<_, TimestampMillisecondType>(truncate)
                        .with_timezone(Arc::clone(tz)),
                ),
                TimeUnit::Microsecond => Arc::new(
                    array
                        .as_primitive::<TimestampMicrosecondType>()
                        .unary::<_, TimestampMicrosecondType>(truncate)
                        .with_timezone(Arc::clone(tz)),
                ),
                TimeUnit::Nanosecond => Arc::new(
                    array
                        .as_primitive::<TimestampNanosecondType>()
                        .unary::<_, TimestampNanosecondType>(truncate)
                        .with_timezone(Arc::clone(tz)),
                ),
            };
            return Ok(ColumnarValue::Array(out));
        }
        self.inner.invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::TimestampMicrosecondArray;
    use arrow::datatypes::Field;
    use datafusion::config::ConfigOptions;

    use super::*;

    fn call(udf: &ScalarUDF, granularity: &str, array: ArrayRef) -> ArrayRef {
        let field = Arc::new(Field::new("t", array.data_type().clone(), true));
        let args = ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(granularity.into()))),
                ColumnarValue::Array(Arc::clone(&array)),
            ],
            arg_fields: vec![
                Arc::new(Field::new("g", DataType::Utf8, false)),
                Arc::clone(&field),
            ],
            number_rows: array.len(),
            return_field: field,
            config_options: Arc::new(ConfigOptions::default()),
        };
        match udf.invoke_with_args(args).unwrap() {
            ColumnarValue::Array(a) => a,
            ColumnarValue::Scalar(s) => s.to_array().unwrap(),
        }
    }

    #[test]
    fn utc_hours_and_days_truncate_as_datafusion_does() {
        // 2026-12-04T13:55:07.123456Z, a time before 1970, and a null.
        let values = TimestampMicrosecondArray::from(vec![
            Some(1_796_392_507_123_456),
            Some(-1_234_567_890),
            None,
        ]);
        // The earliest time: its hour's start does not fit; DataFusion's
        // function answers (an error), not a wrapped value.
        let earliest: ArrayRef = Arc::new(
            arrow::array::TimestampNanosecondArray::from(vec![Some(i64::MIN + 1)])
                .with_timezone("UTC"),
        );
        let field = Arc::new(Field::new("t", earliest.data_type().clone(), true));
        let args = ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Scalar(ScalarValue::Utf8(Some("hour".into()))),
                ColumnarValue::Array(Arc::clone(&earliest)),
            ],
            arg_fields: vec![
                Arc::new(Field::new("g", DataType::Utf8, false)),
                Arc::clone(&field),
            ],
            number_rows: 1,
            return_field: field,
            config_options: Arc::new(ConfigOptions::default()),
        };
        let ours = date_trunc()
            .invoke_with_args(args.clone())
            .map(|_| ())
            .map_err(|e| e.to_string());
        let theirs = datafusion::functions::datetime::date_trunc()
            .invoke_with_args(args)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(ours, theirs);
        let ours = date_trunc();
        let theirs = datafusion::functions::datetime::date_trunc();
        for tz in ["UTC", "+00:00"] {
            let array: ArrayRef = Arc::new(values.clone().with_timezone(tz));
            for granularity in ["hour", "day", "HOUR", "minute", "month"] {
                assert_eq!(
                    call(&ours, granularity, Arc::clone(&array)).as_ref(),
                    call(&theirs, granularity, Arc::clone(&array)).as_ref(),
                    "{granularity} in {tz}"
                );
            }
        }
    }
}
