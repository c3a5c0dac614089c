//! SQL functions tracelake adds to the session.
//!
//! `event_names(events)`: the names of a span's events as a list of strings,
//! so that `array_has(event_names(events), 'exception')` finds spans with an
//! event of that name (DataFusion cannot project a field out of a list of
//! structs). It reuses the events' offsets and name column: no copy.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, ListArray};
use arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, exec_err};
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
