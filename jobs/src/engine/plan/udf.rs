//! The scalar functions the job plans call, registered by [`register_all`]
//! on every session: the CLI's, the scheduler's and each executor's function
//! registry, so a plan that names them resolves wherever it runs.
//!
//! Each function is a row-wise evaluation over arrays; its arguments are
//! cast to the declared input types first, so `Utf8View` or `LargeUtf8`
//! columns work the same as `Utf8`.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Float64Array, Int64Array, ListArray,
    StringArray, StringBuilder, StructArray, TimestampMillisecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use datafusion::common::{Result, exec_err};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use chrono::NaiveDate;
use chrono_tz::Tz;

use crate::derive::{self, geo, measures, user_agent};
use crate::ingest::event_time;

type Eval = fn(&[ArrayRef]) -> Result<ArrayRef>;

/// One tauc scalar function: a name, its argument and return types, and a
/// row-wise evaluation. Functions are equal when their names are: the
/// names are unique, and function pointers have no stable identity.
#[derive(Debug)]
pub struct RowUdf {
    name: &'static str,
    inputs: Vec<DataType>,
    output: DataType,
    signature: Signature,
    eval: Eval,
}

impl PartialEq for RowUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for RowUdf {}

impl std::hash::Hash for RowUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl RowUdf {
    fn new(name: &'static str, inputs: Vec<DataType>, output: DataType, eval: Eval) -> Self {
        let signature = Signature::any(inputs.len(), Volatility::Immutable);
        RowUdf {
            name,
            inputs,
            output,
            signature,
            eval,
        }
    }
}

impl ScalarUDFImpl for RowUdf {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.output.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = args
            .args
            .into_iter()
            .zip(&self.inputs)
            .map(|(a, ty)| {
                let arr = a.into_array(n)?;
                // `Null` declares "any type": the function reads it itself
                if arr.data_type() == ty || ty.is_null() {
                    Ok(arr)
                } else {
                    Ok(cast(&arr, ty)?)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ColumnarValue::Array((self.eval)(&arrays)?))
    }
}

fn ts_utc() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn downcast<'a, T: 'static>(a: &'a ArrayRef, what: &str) -> Result<&'a T> {
    match a.as_any().downcast_ref::<T>() {
        Some(t) => Ok(t),
        None => exec_err!("tauc udf: argument {what} has type {}", a.data_type()),
    }
}

fn strings(a: &ArrayRef) -> Result<&StringArray> {
    downcast(a, "string")
}

fn opt_str(a: &StringArray, i: usize) -> Option<&str> {
    a.is_valid(i).then(|| a.value(i))
}

fn timestamps(a: &ArrayRef) -> Result<&TimestampMillisecondArray> {
    downcast(a, "timestamp")
}

fn opt_i64<A: Array + 'static>(a: &A, i: usize, v: impl Fn(usize) -> i64) -> Option<i64> {
    a.is_valid(i).then(|| v(i))
}

/// The time zones of a batch's rows, parsed once per distinct name: the
/// zone argument is one region's zone for long runs of rows.
#[derive(Default)]
struct Zones<'a> {
    last: Option<(&'a str, Tz)>,
}

impl<'a> Zones<'a> {
    fn get(&mut self, tz: &'a StringArray, i: usize) -> Result<Option<Tz>> {
        let Some(name) = opt_str(tz, i) else {
            return Ok(None);
        };
        if let Some((last, zone)) = self.last
            && last == name
        {
            return Ok(Some(zone));
        }
        match name.parse::<Tz>() {
            Ok(zone) => {
                self.last = Some((name, zone));
                Ok(Some(zone))
            }
            Err(_) => exec_err!("unknown time zone '{name}'"),
        }
    }
}

fn eval_event_ts(a: &[ArrayRef]) -> Result<ArrayRef> {
    let (c, s, r) = (timestamps(&a[0])?, timestamps(&a[1])?, timestamps(&a[2])?);
    let out: TimestampMillisecondArray = (0..c.len())
        .map(|i| {
            let (Some(cv), Some(rv)) =
                (opt_i64(c, i, |i| c.value(i)), opt_i64(r, i, |i| r.value(i)))
            else {
                return None;
            };
            Some(event_time::event_ts(cv, opt_i64(s, i, |i| s.value(i)), rv).0)
        })
        .collect();
    Ok(Arc::new(out.with_timezone("UTC")))
}

fn eval_ts_clamped(a: &[ArrayRef]) -> Result<ArrayRef> {
    let (c, s, r) = (timestamps(&a[0])?, timestamps(&a[1])?, timestamps(&a[2])?);
    let out: BooleanArray = (0..c.len())
        .map(|i| {
            let (Some(cv), Some(rv)) =
                (opt_i64(c, i, |i| c.value(i)), opt_i64(r, i, |i| r.value(i)))
            else {
                return None;
            };
            Some(event_time::event_ts(cv, opt_i64(s, i, |i| s.value(i)), rv).1)
        })
        .collect();
    Ok(Arc::new(out))
}

fn eval_local_ts(a: &[ArrayRef]) -> Result<ArrayRef> {
    let (ts, tz) = (timestamps(&a[0])?, strings(&a[1])?);
    let mut zones = Zones::default();
    let mut out = Vec::with_capacity(ts.len());
    for i in 0..ts.len() {
        let v = match (opt_i64(ts, i, |i| ts.value(i)), zones.get(tz, i)?) {
            (Some(t), Some(z)) => {
                event_time::local_datetime(t, z).map(|d| d.and_utc().timestamp_millis())
            }
            _ => None,
        };
        out.push(v);
    }
    Ok(Arc::new(TimestampMillisecondArray::from(out)))
}

fn eval_local_date(a: &[ArrayRef]) -> Result<ArrayRef> {
    let (ts, tz) = (timestamps(&a[0])?, strings(&a[1])?);
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
    let mut zones = Zones::default();
    let mut out = Vec::with_capacity(ts.len());
    for i in 0..ts.len() {
        let v = match (opt_i64(ts, i, |i| ts.value(i)), zones.get(tz, i)?) {
            (Some(t), Some(z)) => {
                event_time::local_date(t, z).map(|d| (d - epoch).num_days() as i32)
            }
            _ => None,
        };
        out.push(v);
    }
    Ok(Arc::new(Date32Array::from(out)))
}

fn eval_lateness_ms(a: &[ArrayRef]) -> Result<ArrayRef> {
    let (ets, r) = (timestamps(&a[0])?, timestamps(&a[1])?);
    let dt: &Date32Array = downcast(&a[2], "date")?;
    let out: Int64Array = (0..ets.len())
        .map(|i| {
            let day = dt.value_as_date(i).filter(|_| dt.is_valid(i))?;
            let e = opt_i64(ets, i, |i| ets.value(i))?;
            let c = opt_i64(r, i, |i| r.value(i))?;
            Some(event_time::lateness_ms(e, c, day))
        })
        .collect();
    Ok(Arc::new(out))
}

fn map_str(a: &[ArrayRef], f: impl Fn(&str) -> Option<String>) -> Result<ArrayRef> {
    let s = strings(&a[0])?;
    let out: StringArray = (0..s.len()).map(|i| opt_str(s, i).and_then(&f)).collect();
    Ok(Arc::new(out))
}

fn eval_norm_path(a: &[ArrayRef]) -> Result<ArrayRef> {
    map_str(a, derive::norm_path)
}

fn eval_url_host(a: &[ArrayRef]) -> Result<ArrayRef> {
    map_str(a, derive::url_host)
}

fn eval_gender(a: &[ArrayRef]) -> Result<ArrayRef> {
    let s = strings(&a[0])?;
    let out: StringArray = (0..s.len())
        .map(|i| Some(derive::gender(opt_str(s, i))))
        .collect();
    Ok(Arc::new(out))
}

fn eval_is_bot(a: &[ArrayRef]) -> Result<ArrayRef> {
    let s = strings(&a[0])?;
    let mut seen: HashMap<&str, bool> = HashMap::new();
    let out: BooleanArray = (0..s.len())
        .map(|i| {
            Some(
                opt_str(s, i)
                    .is_some_and(|ua| *seen.entry(ua).or_insert_with(|| derive::is_bot(Some(ua)))),
            )
        })
        .collect();
    Ok(Arc::new(out))
}

fn ua_fields() -> Fields {
    Fields::from(vec![
        Field::new("browser_family", DataType::Utf8, true),
        Field::new("browser_major", DataType::Utf8, true),
        Field::new("os_family", DataType::Utf8, true),
    ])
}

/// Browser and OS of each row. Traffic repeats a few thousand distinct
/// User-Agents, and one parse runs hundreds of regexes: each distinct
/// string of the batch is parsed once.
fn eval_user_agent(a: &[ArrayRef]) -> Result<ArrayRef> {
    let s = strings(&a[0])?;
    let mut seen: HashMap<&str, user_agent::UserAgent> = HashMap::new();
    let (mut family, mut major, mut os) = (
        StringBuilder::with_capacity(s.len(), s.len() * 8),
        StringBuilder::with_capacity(s.len(), s.len() * 3),
        StringBuilder::with_capacity(s.len(), s.len() * 8),
    );
    for i in 0..s.len() {
        match opt_str(s, i) {
            None => {
                family.append_null();
                major.append_null();
                os.append_null();
            }
            Some(ua) => {
                let u = seen.entry(ua).or_insert_with(|| user_agent::parse(ua));
                family.append_value(&u.browser_family);
                major.append_option(u.browser_major.as_deref());
                os.append_value(&u.os_family);
            }
        }
    }
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(family.finish()),
        Arc::new(major.finish()),
        Arc::new(os.finish()),
    ];
    Ok(Arc::new(StructArray::try_new(ua_fields(), arrays, None)?))
}

fn geo_fields() -> Fields {
    Fields::from(vec![
        Field::new("city", DataType::Utf8, true),
        Field::new("country", DataType::Utf8, true),
    ])
}

fn eval_geocode(a: &[ArrayRef]) -> Result<ArrayRef> {
    let lat: &Float64Array = downcast(&a[0], "lat")?;
    let lon: &Float64Array = downcast(&a[1], "lon")?;
    let places: Vec<Option<(String, String)>> = (0..lat.len())
        .map(|i| {
            (lat.is_valid(i) && lon.is_valid(i))
                .then(|| geo::nearest_place(lat.value(i), lon.value(i)))
        })
        .collect();
    let city: StringArray = places
        .iter()
        .map(|p| p.as_ref().map(|p| p.0.clone()))
        .collect();
    let country: StringArray = places
        .iter()
        .map(|p| p.as_ref().map(|p| p.1.clone()))
        .collect();
    let arrays: Vec<ArrayRef> = vec![Arc::new(city), Arc::new(country)];
    Ok(Arc::new(StructArray::try_new(geo_fields(), arrays, None)?))
}

fn eval_age_band(a: &[ArrayRef]) -> Result<ArrayRef> {
    let birth = strings(&a[0])?;
    let on: &Date32Array = downcast(&a[1], "date")?;
    let out: StringArray = (0..birth.len())
        .map(|i| {
            on.value_as_date(i)
                .filter(|_| on.is_valid(i))
                .map(|d| derive::age_band(opt_str(birth, i), d))
        })
        .collect();
    Ok(Arc::new(out))
}

fn eval_err_class(a: &[ArrayRef]) -> Result<ArrayRef> {
    let error = strings(&a[0])?;
    let status: &Int64Array = downcast(&a[1], "status")?;
    let out: StringArray = (0..error.len())
        .map(|i| {
            Some(derive::err_class(
                opt_str(error, i),
                opt_i64(status, i, |i| status.value(i)),
            ))
        })
        .collect();
    Ok(Arc::new(out))
}

fn eval_fingerprint(a: &[ArrayRef]) -> Result<ArrayRef> {
    let parts = a.iter().map(strings).collect::<Result<Vec<_>>>()?;
    let n = parts.first().map_or(0, |p| p.len());
    let out: StringArray = (0..n)
        .map(|i| {
            let row: Vec<Option<&str>> = parts.iter().map(|p| opt_str(p, i)).collect();
            Some(derive::fingerprint(&row))
        })
        .collect();
    Ok(Arc::new(out))
}

fn eval_hour_start(a: &[ArrayRef]) -> Result<ArrayRef> {
    let (ts, tz) = (timestamps(&a[0])?, strings(&a[1])?);
    let mut zones = Zones::default();
    let out = (0..ts.len())
        .map(|i| {
            Ok(match (opt_i64(ts, i, |i| ts.value(i)), zones.get(tz, i)?) {
                (Some(t), Some(z)) => Some(measures::hour_start(t, z)),
                _ => None,
            })
        })
        .collect::<Result<Int64Array>>()?;
    Ok(Arc::new(out))
}

/// The rows of a `List<Struct>` argument: for each list, its struct
/// fields as Int64 (field 0, the timestamp), Utf8 (field 1, the event id)
/// and, when `with_mask`, Int64 (field 2).
fn event_lists(a: &ArrayRef, with_mask: bool) -> Result<Vec<Vec<(i64, String, i64)>>> {
    let Some(list) = a.as_any().downcast_ref::<ListArray>() else {
        return exec_err!("tauc udf: expected a list of events, got {}", a.data_type());
    };
    let values = list.values();
    let Some(st) = values.as_any().downcast_ref::<StructArray>() else {
        return exec_err!(
            "tauc udf: expected structs in the list, got {}",
            values.data_type()
        );
    };
    let need = if with_mask { 3 } else { 2 };
    if st.num_columns() < need {
        return exec_err!("tauc udf: event structs need {need} fields");
    }
    let ts = cast(st.column(0), &DataType::Int64)?;
    let ts = ts.as_primitive::<Int64Type>();
    let ids = cast(st.column(1), &DataType::Utf8)?;
    let ids = ids.as_string::<i32>();
    let masks = if with_mask {
        Some(cast(st.column(2), &DataType::Int64)?)
    } else {
        None
    };
    let masks = masks.as_ref().map(|m| m.as_primitive::<Int64Type>());
    let offsets = list.value_offsets();
    Ok((0..list.len())
        .map(|i| {
            if list.is_null(i) {
                return Vec::new();
            }
            (offsets[i] as usize..offsets[i + 1] as usize)
                .filter(|&j| st.is_valid(j) && ts.is_valid(j))
                .map(|j| {
                    (
                        ts.value(j),
                        if ids.is_valid(j) {
                            ids.value(j).to_string()
                        } else {
                            String::new()
                        },
                        masks.map_or(0, |m| m.value(j)),
                    )
                })
                .collect()
        })
        .collect())
}

fn scalar_i64(a: &ArrayRef, i: usize, what: &str) -> Result<i64> {
    let v = cast(a, &DataType::Int64)?;
    let v = v.as_primitive::<Int64Type>();
    if v.is_valid(i) {
        Ok(v.value(i))
    } else {
        exec_err!("tauc udf: {what} is null")
    }
}

fn eval_funnel_reach(a: &[ArrayRef]) -> Result<ArrayRef> {
    let lists = event_lists(&a[0], true)?;
    let out = lists
        .into_iter()
        .enumerate()
        .map(|(i, mut events)| {
            let window = scalar_i64(&a[1], i, "window_ms")?;
            let steps = scalar_i64(&a[2], i, "steps")? as usize;
            Ok(Some(measures::reach(&mut events, steps, window) as i64))
        })
        .collect::<Result<Int64Array>>()?;
    Ok(Arc::new(out))
}

fn eval_dup_clicks(a: &[ArrayRef]) -> Result<ArrayRef> {
    let out: Int64Array = event_lists(&a[0], false)?
        .into_iter()
        .map(|events| {
            let mut clicks: Vec<(i64, String)> =
                events.into_iter().map(|(t, id, _)| (t, id)).collect();
            Some(measures::dup_clicks(&mut clicks))
        })
        .collect();
    Ok(Arc::new(out))
}

/// Every tauc scalar function.
pub fn all() -> Vec<ScalarUDF> {
    use DataType::{Boolean, Date32, Float64, Int64, Utf8};
    let ts = ts_utc;
    vec![
        RowUdf::new("tauc_event_ts", vec![ts(), ts(), ts()], ts(), eval_event_ts),
        RowUdf::new(
            "tauc_ts_clamped",
            vec![ts(), ts(), ts()],
            Boolean,
            eval_ts_clamped,
        ),
        RowUdf::new(
            "tauc_local_ts",
            vec![ts(), Utf8],
            DataType::Timestamp(TimeUnit::Millisecond, None),
            eval_local_ts,
        ),
        RowUdf::new("tauc_local_date", vec![ts(), Utf8], Date32, eval_local_date),
        RowUdf::new(
            "tauc_lateness_ms",
            vec![ts(), ts(), Date32],
            Int64,
            eval_lateness_ms,
        ),
        RowUdf::new("tauc_norm_path", vec![Utf8], Utf8, eval_norm_path),
        RowUdf::new("tauc_url_host", vec![Utf8], Utf8, eval_url_host),
        RowUdf::new("tauc_gender", vec![Utf8], Utf8, eval_gender),
        RowUdf::new("tauc_is_bot", vec![Utf8], Boolean, eval_is_bot),
        RowUdf::new(
            "tauc_user_agent",
            vec![Utf8],
            DataType::Struct(ua_fields()),
            eval_user_agent,
        ),
        RowUdf::new(
            "tauc_geocode",
            vec![Float64, Float64],
            DataType::Struct(geo_fields()),
            eval_geocode,
        ),
        RowUdf::new("tauc_age_band", vec![Utf8, Date32], Utf8, eval_age_band),
        RowUdf::new("tauc_err_class", vec![Utf8, Int64], Utf8, eval_err_class),
        RowUdf::new("tauc_fingerprint", vec![Utf8; 5], Utf8, eval_fingerprint),
        RowUdf::new("tauc_hour_start", vec![ts(), Utf8], Int64, eval_hour_start),
        RowUdf::new(
            "tauc_funnel_reach",
            vec![DataType::Null, Int64, Int64],
            Int64,
            eval_funnel_reach,
        ),
        RowUdf::new(
            "tauc_dup_clicks",
            vec![DataType::Null],
            Int64,
            eval_dup_clicks,
        ),
    ]
    .into_iter()
    .map(ScalarUDF::new_from_impl)
    .chain(super::row_pack::functions())
    .collect()
}

/// Registers every tauc function on a registry (a `SessionContext`, a
/// `SessionState`, or an executor's function registry).
pub fn register_all(registry: &mut dyn FunctionRegistry) -> Result<()> {
    for f in all() {
        registry.register_udf(Arc::new(f))?;
    }
    Ok(())
}
