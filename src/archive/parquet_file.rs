//! The archive's Parquet files: their schema, writing a file from rows,
//! reading rows back; and the Parquet input and outputs of `adclick
//! reconcile` ([`for_each_payload`], [`write_counts`], [`write_top`]).
//!
//! Written with the parquet crate's low-level column API (no arrow: too
//! heavy to build here), Snappy pages, dictionary encoding where it pays
//! (subjects, ad ids, countries). One row group per file up to a million rows.
//!
//! # Columns
//!
//! | column | type | both datasets? |
//! |---|---|---|
//! | `seq` | INT64, required | the stream sequence |
//! | `received_at` | INT64 TIMESTAMP(MILLIS, UTC), required | when JetStream stored the message |
//! | `subject` | STRING, required | `clicks.p.<partition>.<ad_id>` / `rejected.<reason>` |
//! | `payload` | BYTE_ARRAY, required | the raw bytes: a recount decodes them with the live decoder |
//! | `valid` | BOOLEAN, required | clicks only: the live decoder accepts the payload with this subject |
//! | `invalid_reason` | STRING | clicks only: the decoder's reason when not `valid` |
//! | `reason` | STRING | rejects only: the `Adclick-Reject-Reason` header |
//! | `click_id`, `ad_id`, `user_id`, `ip`, `country` | STRING | the payload's field when it is a string |
//! | `ts` | INT64 TIMESTAMP(MILLIS, UTC) | the payload's `ts` when an integer in [0, year 9999] |
//!
//! The parsed columns are for analysts: filled whenever the payload is a
//! JSON object (valid or not, so an invalid click still shows its id), as
//! sent (`country` not upper-cased); null when the field is absent, of
//! another type, or the payload is not an object. Count with `WHERE valid`
//! (clicks). `valid` is the decoder's verdict alone: whether a click was
//! too late or from the future depends on the watermark, and those are in
//! the rejects dataset.

use super::{ArchiveError, Dataset};
use bytes::Bytes;
use parquet::basic::{Compression, LogicalType, Type as PhysicalType};
use parquet::column::reader::ColumnReaderImpl;
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DataType, Int32Type, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, RowGroupReader};
use parquet::file::serialized_reader::SerializedFileReader;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{ColumnDescPtr, Type as SchemaType};
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// The last millisecond of year 9999: a `ts` beyond it (or below 0) is not
/// an event time the archive files by (nor a `dt=` it could name).
pub const MAX_TS_MS: i64 = 253_402_300_799_999;

/// Rows per row group (and per write of the reconcile outputs).
const ROW_GROUP_ROWS: usize = 1 << 20;

/// One message as the archiver buffers it (owned; the payload shares the
/// NATS client's buffer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The stream sequence.
    pub seq: u64,
    /// When JetStream stored it, epoch ms.
    pub received_ms: i64,
    /// The subject.
    pub subject: Bytes,
    /// The raw payload.
    pub payload: Bytes,
    /// The `Adclick-Reject-Reason` header (rejects).
    pub reason: Option<Bytes>,
}

/// The payload's fields an analyst queries, as found (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields {
    /// `click_id`.
    pub click_id: Option<Bytes>,
    /// `ad_id`.
    pub ad_id: Option<Bytes>,
    /// `ts`, epoch ms, within [0, [`MAX_TS_MS`]].
    pub ts: Option<i64>,
    /// `user_id`.
    pub user_id: Option<Bytes>,
    /// `ip`.
    pub ip: Option<Bytes>,
    /// `country`.
    pub country: Option<Bytes>,
}

/// A JSON value read loosely: text, an integer, or anything else.
enum Loose<'a> {
    Text(Cow<'a, str>),
    Int(i64),
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Loose<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Loose::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Loose::Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Loose::Text(Cow::Owned(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Loose::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v).map_or(Loose::Other, Loose::Int))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Loose::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Loose::Other)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Loose::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Loose::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Loose::Other)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The fields read, borrowed from the payload where unescaped.
#[derive(Deserialize)]
struct LooseFields<'a> {
    #[serde(borrow, default)]
    click_id: Option<Loose<'a>>,
    #[serde(borrow, default)]
    ad_id: Option<Loose<'a>>,
    #[serde(borrow, default)]
    ts: Option<Loose<'a>>,
    #[serde(borrow, default)]
    user_id: Option<Loose<'a>>,
    #[serde(borrow, default)]
    ip: Option<Loose<'a>>,
    #[serde(borrow, default)]
    country: Option<Loose<'a>>,
}

/// `text` as bytes of `payload` when it lies inside it (no copy), else a copy.
fn bytes_of(payload: &Bytes, text: &str) -> Bytes {
    let (start, end) = (
        payload.as_ptr() as usize,
        payload.as_ptr() as usize + payload.len(),
    );
    let at = text.as_ptr() as usize;
    if at >= start && at + text.len() <= end {
        payload.slice(at - start..at - start + text.len())
    } else {
        Bytes::copy_from_slice(text.as_bytes())
    }
}

impl Fields {
    /// The fields of `payload` (all `None` unless it is a JSON object).
    pub fn of(payload: &Bytes) -> Fields {
        let Ok(wire) = serde_json::from_slice::<LooseFields<'_>>(payload) else {
            return Fields::default();
        };
        let text = |v: Option<Loose<'_>>| match v {
            Some(Loose::Text(Cow::Borrowed(s))) => Some(bytes_of(payload, s)),
            Some(Loose::Text(Cow::Owned(s))) => Some(Bytes::from(s)),
            _ => None,
        };
        Fields {
            ts: match wire.ts {
                Some(Loose::Int(ts)) if (0..=MAX_TS_MS).contains(&ts) => Some(ts),
                _ => None,
            },
            click_id: text(wire.click_id),
            ad_id: text(wire.ad_id),
            user_id: text(wire.user_id),
            ip: text(wire.ip),
            country: text(wire.country),
        }
    }
}

/// The live decoder's verdict on a message of the clicks stream: `Ok` if it
/// would be counted (as far as the payload goes), else its reject reason.
pub fn verdict(message: &Message) -> Result<(), String> {
    use adclick_actors::testing::decode;
    let subject = std::str::from_utf8(&message.subject).unwrap_or("");
    match decode::split_subject(subject) {
        Some((_, ad)) => decode::decode(ad, message.seq, &message.payload).map(|_| ()),
        None => Err(format!("subject `{subject}` is not a click subject")),
    }
}

/// A nullable column: the present values, and a definition level per row
/// (1 present, 0 null).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Nullable<T> {
    /// The values of the rows that have one, in row order.
    pub values: Vec<T>,
    /// Per row: 1 when it has a value, 0 when null.
    pub defined: Vec<i16>,
}

impl<T> Nullable<T> {
    fn push(&mut self, value: Option<T>) {
        match value {
            Some(v) => {
                self.values.push(v);
                self.defined.push(1);
            }
            None => self.defined.push(0),
        }
    }

    /// The values row by row (`None` for a null).
    pub fn rows(&self) -> impl Iterator<Item = Option<&T>> + '_ {
        let mut values = self.values.iter();
        self.defined
            .iter()
            .map(move |d| if *d > 0 { values.next() } else { None })
    }
}

/// The rows of one archive file, column by column: what a flush writes and
/// [`read_rows`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Rows {
    /// Which dataset's columns.
    pub dataset: Dataset,
    /// `seq`.
    pub seq: Vec<i64>,
    /// `received_at`, epoch ms.
    pub received_at: Vec<i64>,
    /// `subject`.
    pub subject: Vec<ByteArray>,
    /// `payload`.
    pub payload: Vec<ByteArray>,
    /// `valid` (clicks).
    pub valid: Vec<bool>,
    /// `invalid_reason` (clicks).
    pub invalid_reason: Nullable<ByteArray>,
    /// `reason` (rejects).
    pub reason: Nullable<ByteArray>,
    /// `click_id`.
    pub click_id: Nullable<ByteArray>,
    /// `ad_id`.
    pub ad_id: Nullable<ByteArray>,
    /// `ts`, epoch ms.
    pub ts: Nullable<i64>,
    /// `user_id`.
    pub user_id: Nullable<ByteArray>,
    /// `ip`.
    pub ip: Nullable<ByteArray>,
    /// `country`.
    pub country: Nullable<ByteArray>,
}

/// The columns, in file order per dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Col {
    Seq,
    ReceivedAt,
    Subject,
    Payload,
    Valid,
    InvalidReason,
    Reason,
    ClickId,
    AdId,
    Ts,
    UserId,
    Ip,
    Country,
}

const CLICK_COLUMNS: [Col; 12] = [
    Col::Seq,
    Col::ReceivedAt,
    Col::Subject,
    Col::Payload,
    Col::Valid,
    Col::InvalidReason,
    Col::ClickId,
    Col::AdId,
    Col::Ts,
    Col::UserId,
    Col::Ip,
    Col::Country,
];

const REJECT_COLUMNS: [Col; 11] = [
    Col::Seq,
    Col::ReceivedAt,
    Col::Subject,
    Col::Payload,
    Col::Reason,
    Col::ClickId,
    Col::AdId,
    Col::Ts,
    Col::UserId,
    Col::Ip,
    Col::Country,
];

impl Col {
    fn of(dataset: Dataset) -> &'static [Col] {
        match dataset {
            Dataset::Clicks => &CLICK_COLUMNS,
            Dataset::Rejects => &REJECT_COLUMNS,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Col::Seq => "seq",
            Col::ReceivedAt => "received_at",
            Col::Subject => "subject",
            Col::Payload => "payload",
            Col::Valid => "valid",
            Col::InvalidReason => "invalid_reason",
            Col::Reason => "reason",
            Col::ClickId => "click_id",
            Col::AdId => "ad_id",
            Col::Ts => "ts",
            Col::UserId => "user_id",
            Col::Ip => "ip",
            Col::Country => "country",
        }
    }

    /// The column's line of the Parquet message type.
    fn schema(self) -> String {
        let name = self.name();
        match self {
            Col::Seq => format!("required int64 {name};"),
            Col::ReceivedAt => format!("required int64 {name} (TIMESTAMP(MILLIS,true));"),
            Col::Subject => format!("required binary {name} (STRING);"),
            Col::Payload => format!("required binary {name};"),
            Col::Valid => format!("required boolean {name};"),
            Col::Ts => format!("optional int64 {name} (TIMESTAMP(MILLIS,true));"),
            _ => format!("optional binary {name} (STRING);"),
        }
    }
}

/// The Parquet schema of a dataset's files.
pub fn schema(dataset: Dataset) -> Result<SchemaType, ParquetError> {
    let columns: String = Col::of(dataset).iter().map(|c| c.schema()).collect();
    parquet::schema::parser::parse_message_type(&format!(
        "message adclick_{} {{ {columns} }}",
        dataset.name()
    ))
}

fn byte_array(bytes: Option<&Bytes>) -> Option<ByteArray> {
    bytes.map(|b| ByteArray::from(b.clone()))
}

impl Rows {
    /// No rows.
    pub fn new(dataset: Dataset) -> Rows {
        Rows {
            dataset,
            seq: Vec::new(),
            received_at: Vec::new(),
            subject: Vec::new(),
            payload: Vec::new(),
            valid: Vec::new(),
            invalid_reason: Nullable::default(),
            reason: Nullable::default(),
            click_id: Nullable::default(),
            ad_id: Nullable::default(),
            ts: Nullable::default(),
            user_id: Nullable::default(),
            ip: Nullable::default(),
            country: Nullable::default(),
        }
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.seq.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.seq.is_empty()
    }

    /// Adds `message`, with its payload's `fields` (and, for clicks, the
    /// decoder's verdict).
    pub fn push(&mut self, message: &Message, fields: &Fields) {
        self.seq.push(message.seq as i64);
        self.received_at.push(message.received_ms);
        self.subject.push(ByteArray::from(message.subject.clone()));
        self.payload.push(ByteArray::from(message.payload.clone()));
        match self.dataset {
            Dataset::Clicks => {
                let verdict = verdict(message);
                self.valid.push(verdict.is_ok());
                self.invalid_reason
                    .push(verdict.err().map(|r| ByteArray::from(r.into_bytes())));
            }
            Dataset::Rejects => self.reason.push(byte_array(message.reason.as_ref())),
        }
        self.click_id.push(byte_array(fields.click_id.as_ref()));
        self.ad_id.push(byte_array(fields.ad_id.as_ref()));
        self.ts.push(fields.ts);
        self.user_id.push(byte_array(fields.user_id.as_ref()));
        self.ip.push(byte_array(fields.ip.as_ref()));
        self.country.push(byte_array(fields.country.as_ref()));
    }

    fn column(&self, col: Col) -> Column<'_> {
        fn bytes(c: &Nullable<ByteArray>) -> Column<'_> {
            Column::Bytes(&c.values, Some(&c.defined))
        }
        match col {
            Col::Seq => Column::I64(&self.seq, None),
            Col::ReceivedAt => Column::I64(&self.received_at, None),
            Col::Subject => Column::Bytes(&self.subject, None),
            Col::Payload => Column::Bytes(&self.payload, None),
            Col::Valid => Column::Bool(&self.valid),
            Col::InvalidReason => bytes(&self.invalid_reason),
            Col::Reason => bytes(&self.reason),
            Col::ClickId => bytes(&self.click_id),
            Col::AdId => bytes(&self.ad_id),
            Col::Ts => Column::I64(&self.ts.values, Some(&self.ts.defined)),
            Col::UserId => bytes(&self.user_id),
            Col::Ip => bytes(&self.ip),
            Col::Country => bytes(&self.country),
        }
    }
}

/// One column's data for a row group.
enum Column<'a> {
    I64(&'a [i64], Option<&'a [i16]>),
    I32(&'a [i32]),
    Bool(&'a [bool]),
    Bytes(&'a [ByteArray], Option<&'a [i16]>),
}

fn properties() -> Arc<WriterProperties> {
    Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_size(ROW_GROUP_ROWS)
            .set_created_by(format!("adclick {}", env!("CARGO_PKG_VERSION")))
            .build(),
    )
}

/// Writes one row group of `columns`, in schema order.
fn write_row_group<W: Write + Send>(
    writer: &mut SerializedFileWriter<W>,
    columns: &[Column<'_>],
) -> Result<(), ParquetError> {
    let mut group = writer.next_row_group()?;
    let mut index = 0;
    while let Some(mut column) = group.next_column()? {
        let data = columns.get(index).ok_or_else(|| {
            ParquetError::General(format!("no data for column {index} of the schema"))
        })?;
        match data {
            Column::I64(values, defined) => {
                column
                    .typed::<Int64Type>()
                    .write_batch(values, *defined, None)?;
            }
            Column::I32(values) => {
                column
                    .typed::<Int32Type>()
                    .write_batch(values, None, None)?;
            }
            Column::Bool(values) => {
                column.typed::<BoolType>().write_batch(values, None, None)?;
            }
            Column::Bytes(values, defined) => {
                column
                    .typed::<ByteArrayType>()
                    .write_batch(values, *defined, None)?;
            }
        }
        column.close()?;
        index += 1;
    }
    group.close()?;
    Ok(())
}

/// `rows` as the bytes of a Parquet file.
pub fn write_rows(rows: &Rows) -> Result<Vec<u8>, ParquetError> {
    let schema = Arc::new(schema(rows.dataset)?);
    let mut writer = SerializedFileWriter::new(Vec::new(), schema, properties())?;
    let columns: Vec<Column<'_>> = Col::of(rows.dataset)
        .iter()
        .map(|c| rows.column(*c))
        .collect();
    write_row_group(&mut writer, &columns)?;
    writer.into_inner()
}

/// Finds the column `name` of a file: its index and descriptor.
fn find_column(reader: &dyn FileReader, name: &str) -> Option<(usize, ColumnDescPtr)> {
    let schema = reader.metadata().file_metadata().schema_descr();
    (0..schema.num_columns())
        .map(|i| (i, schema.column(i)))
        .find(|(_, c)| c.path().parts().len() == 1 && c.name() == name)
}

/// A column `name` that must exist with `physical` type, flat.
fn required_column(
    reader: &dyn FileReader,
    file: &str,
    name: &str,
    physical: PhysicalType,
) -> Result<(usize, ColumnDescPtr), ArchiveError> {
    let format = |problem: String| ArchiveError::Format {
        path: file.to_string(),
        problem,
    };
    let (index, descr) =
        find_column(reader, name).ok_or_else(|| format(format!("no column `{name}`")))?;
    check_column(file, &descr, physical)?;
    Ok((index, descr))
}

fn check_column(
    file: &str,
    descr: &ColumnDescPtr,
    physical: PhysicalType,
) -> Result<(), ArchiveError> {
    let format = |problem: String| ArchiveError::Format {
        path: file.to_string(),
        problem,
    };
    if descr.physical_type() != physical {
        return Err(format(format!(
            "column `{}` is {}, expected {physical}",
            descr.name(),
            descr.physical_type()
        )));
    }
    if descr.max_rep_level() > 0 {
        return Err(format(format!(
            "column `{}` is repeated; only flat columns are read",
            descr.name()
        )));
    }
    Ok(())
}

/// Reads the whole column `index` of a row group of `rows` rows: the
/// present values and the definition levels (empty for a required column).
fn read_column<T: DataType>(
    group: &dyn RowGroupReader,
    index: usize,
    rows: usize,
) -> Result<(Vec<T::T>, Vec<i16>), ParquetError> {
    let reader: ColumnReaderImpl<T> = T::get_column_reader(group.get_column_reader(index)?)
        .ok_or_else(|| ParquetError::General(format!("column {index} has another type")))?;
    let mut reader = reader;
    // `rows` comes from the file's footer: a hostile file may claim any
    // number, so the vectors grow as records come instead.
    let mut values = Vec::with_capacity(rows.min(1 << 16));
    let mut defined = Vec::with_capacity(rows.min(1 << 16));
    let (read, _, _) = reader.read_records(rows, Some(&mut defined), None, &mut values)?;
    if read != rows {
        return Err(ParquetError::General(format!(
            "column {index}: {read} rows of {rows}"
        )));
    }
    Ok((values, defined))
}

/// A column read as a [`Nullable`] (a required column: every row defined).
fn nullable<T>(values: Vec<T>, defined: Vec<i16>, max_def: i16) -> Nullable<T> {
    let defined = if max_def == 0 {
        vec![1; values.len()]
    } else {
        defined.iter().map(|d| i16::from(*d == max_def)).collect()
    };
    Nullable { values, defined }
}

fn parquet_error(file: &str) -> impl Fn(ParquetError) -> ArchiveError + '_ {
    move |source| ArchiveError::Parquet {
        path: file.to_string(),
        source,
    }
}

/// Every row of an archive file of `dataset` (`file` names it in errors).
pub fn read_rows(bytes: Bytes, file: &str, dataset: Dataset) -> Result<Rows, ArchiveError> {
    let reader = SerializedFileReader::new(bytes).map_err(parquet_error(file))?;
    let mut rows = Rows::new(dataset);
    let mut found = Vec::new();
    for col in Col::of(dataset) {
        let physical = match col {
            Col::Seq | Col::ReceivedAt | Col::Ts => PhysicalType::INT64,
            Col::Valid => PhysicalType::BOOLEAN,
            _ => PhysicalType::BYTE_ARRAY,
        };
        found.push((*col, required_column(&reader, file, col.name(), physical)?));
    }
    for g in 0..reader.num_row_groups() {
        let group = reader.get_row_group(g).map_err(parquet_error(file))?;
        let n = usize::try_from(group.metadata().num_rows()).unwrap_or(0);
        for (col, (index, descr)) in &found {
            let max_def = descr.max_def_level();
            let bytes = |target: &mut Nullable<ByteArray>| -> Result<(), ArchiveError> {
                let (v, d) = read_column::<ByteArrayType>(group.as_ref(), *index, n)
                    .map_err(parquet_error(file))?;
                let more = nullable(v, d, max_def);
                target.values.extend(more.values);
                target.defined.extend(more.defined);
                Ok(())
            };
            match col {
                Col::Seq | Col::ReceivedAt => {
                    let (v, _) = read_column::<Int64Type>(group.as_ref(), *index, n)
                        .map_err(parquet_error(file))?;
                    let target = if *col == Col::Seq {
                        &mut rows.seq
                    } else {
                        &mut rows.received_at
                    };
                    target.extend(v);
                }
                Col::Subject | Col::Payload => {
                    let (v, _) = read_column::<ByteArrayType>(group.as_ref(), *index, n)
                        .map_err(parquet_error(file))?;
                    let target = if *col == Col::Subject {
                        &mut rows.subject
                    } else {
                        &mut rows.payload
                    };
                    target.extend(v);
                }
                Col::Valid => {
                    let (v, _) = read_column::<BoolType>(group.as_ref(), *index, n)
                        .map_err(parquet_error(file))?;
                    rows.valid.extend(v);
                }
                Col::Ts => {
                    let (v, d) = read_column::<Int64Type>(group.as_ref(), *index, n)
                        .map_err(parquet_error(file))?;
                    let more = nullable(v, d, max_def);
                    rows.ts.values.extend(more.values);
                    rows.ts.defined.extend(more.defined);
                }
                Col::InvalidReason => bytes(&mut rows.invalid_reason)?,
                Col::Reason => bytes(&mut rows.reason)?,
                Col::ClickId => bytes(&mut rows.click_id)?,
                Col::AdId => bytes(&mut rows.ad_id)?,
                Col::UserId => bytes(&mut rows.user_id)?,
                Col::Ip => bytes(&mut rows.ip)?,
                Col::Country => bytes(&mut rows.country)?,
            }
        }
    }
    Ok(rows)
}

/// Calls `each` with every message of an archive file of `dataset`, in row
/// (sequence) order; returns how many.
pub fn read_messages(
    bytes: Bytes,
    file: &str,
    dataset: Dataset,
    each: &mut impl FnMut(super::ArchivedMessage<'_>),
) -> Result<u64, ArchiveError> {
    let reader = SerializedFileReader::new(bytes).map_err(parquet_error(file))?;
    let (seq_at, _) = required_column(&reader, file, "seq", PhysicalType::INT64)?;
    let (received_at, _) = required_column(&reader, file, "received_at", PhysicalType::INT64)?;
    let (subject_at, _) = required_column(&reader, file, "subject", PhysicalType::BYTE_ARRAY)?;
    let (payload_at, _) = required_column(&reader, file, "payload", PhysicalType::BYTE_ARRAY)?;
    let reason = match dataset {
        Dataset::Clicks => None,
        Dataset::Rejects => Some(required_column(
            &reader,
            file,
            "reason",
            PhysicalType::BYTE_ARRAY,
        )?),
    };
    let bad_text = |what: &str| ArchiveError::Format {
        path: file.to_string(),
        problem: format!("a {what} is not UTF-8"),
    };
    let mut count = 0u64;
    for g in 0..reader.num_row_groups() {
        let group = reader.get_row_group(g).map_err(parquet_error(file))?;
        let n = usize::try_from(group.metadata().num_rows()).unwrap_or(0);
        let read_i64 = |index| {
            read_column::<Int64Type>(group.as_ref(), index, n)
                .map(|(v, _)| v)
                .map_err(parquet_error(file))
        };
        let read_bytes = |index| {
            read_column::<ByteArrayType>(group.as_ref(), index, n).map_err(parquet_error(file))
        };
        let seqs = read_i64(seq_at)?;
        let received = read_i64(received_at)?;
        let (subjects, _) = read_bytes(subject_at)?;
        let (payloads, _) = read_bytes(payload_at)?;
        let reasons = match &reason {
            Some((index, descr)) => {
                let (v, d) = read_bytes(*index)?;
                Some(nullable(v, d, descr.max_def_level()))
            }
            None => None,
        };
        let mut reason_rows = reasons.as_ref().map(|r| r.rows());
        if seqs.len() != n || received.len() != n || subjects.len() != n || payloads.len() != n {
            return Err(ArchiveError::Format {
                path: file.to_string(),
                problem: "a required column has nulls".into(),
            });
        }
        for i in 0..n {
            let reason = match reason_rows.as_mut().and_then(|r| r.next()).flatten() {
                Some(r) => Some(std::str::from_utf8(r.data()).map_err(|_| bad_text("reason"))?),
                None => None,
            };
            each(super::ArchivedMessage {
                seq: seqs[i] as u64,
                received_ms: received[i],
                subject: std::str::from_utf8(subjects[i].data())
                    .map_err(|_| bad_text("subject"))?,
                payload: payloads[i].data(),
                reason,
            });
            count += 1;
        }
    }
    Ok(count)
}

/// Epoch ms of a timestamp or plain INT64 column's value.
fn to_ms(descr: &ColumnDescPtr) -> Result<fn(i64) -> i64, String> {
    use parquet::basic::TimeUnit;
    match descr.logical_type_ref() {
        None => Ok(|v| v),
        Some(LogicalType::Integer { .. }) => Ok(|v| v),
        Some(LogicalType::Timestamp { unit, .. }) => Ok(match unit {
            TimeUnit::MILLIS => |v| v,
            TimeUnit::MICROS => |v: i64| v.div_euclid(1_000),
            TimeUnit::NANOS => |v: i64| v.div_euclid(1_000_000),
        }),
        Some(other) => Err(format!(
            "column `ts` is {other:?}; expected INT64 epoch milliseconds or a TIMESTAMP"
        )),
    }
}

/// Opens the JSON field `name`: `{` before the first, `,` before the others.
fn json_name(out: &mut Vec<u8>, separator: &mut u8, name: &str) {
    out.push(*separator);
    *separator = b',';
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// A JSON string of `value` (not UTF-8: replaced characters, as a decoder
/// would refuse the original anyway).
fn json_text(out: &mut Vec<u8>, value: &[u8]) {
    let text = String::from_utf8_lossy(value);
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text.as_ref());
}

fn json_ts(out: &mut Vec<u8>, separator: &mut u8, ts: Option<i64>) {
    if let Some(ts) = ts {
        json_name(out, separator, "ts");
        out.extend_from_slice(ts.to_string().as_bytes());
    }
}

/// Each row's payload: from a `payload` column when the file has one (our
/// archive), else a SPEC §1 JSON object rendered from columns `click_id`,
/// `ad_id`, `ts` (INT64 ms or TIMESTAMP) and optional `user_id`, `ip`,
/// `country` (a null leaves the field out, so a row without a required
/// field reads as the invalid payload it is). `each(row_number, payload)`,
/// rows numbered from 1 in file order. Returns the number of rows.
pub fn for_each_payload(
    path: &Path,
    mut each: impl FnMut(u64, &[u8]),
) -> Result<u64, ArchiveError> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = SerializedFileReader::new(file).map_err(parquet_error(&name))?;
    let format = |problem: String| ArchiveError::Format {
        path: name.clone(),
        problem,
    };
    let mut row = 0u64;
    if let Some((index, descr)) = find_column(&reader, "payload") {
        check_column(&name, &descr, PhysicalType::BYTE_ARRAY)?;
        for g in 0..reader.num_row_groups() {
            let group = reader.get_row_group(g).map_err(parquet_error(&name))?;
            let n = usize::try_from(group.metadata().num_rows()).unwrap_or(0);
            let (v, d) = read_column::<ByteArrayType>(group.as_ref(), index, n)
                .map_err(parquet_error(&name))?;
            for payload in nullable(v, d, descr.max_def_level()).rows() {
                row += 1;
                each(row, payload.map_or(&[][..], |p| p.data()));
            }
        }
        return Ok(row);
    }
    let text_columns = ["click_id", "ad_id", "user_id", "ip", "country"];
    let mut texts = Vec::new();
    for (i, name_) in text_columns.iter().enumerate() {
        match find_column(&reader, name_) {
            Some((index, descr)) => {
                check_column(&name, &descr, PhysicalType::BYTE_ARRAY)?;
                texts.push((*name_, index, descr));
            }
            None if i < 2 => {
                return Err(format(format!(
                    "neither a `payload` column nor `{name_}` (a file of clicks needs payload, or click_id, ad_id and ts)"
                )))
            }
            None => {}
        }
    }
    let (ts_index, ts_descr) = find_column(&reader, "ts").ok_or_else(|| {
        format("no `ts` column (a file of clicks needs payload, or click_id, ad_id and ts)".into())
    })?;
    check_column(&name, &ts_descr, PhysicalType::INT64)?;
    let ts_ms = to_ms(&ts_descr).map_err(format)?;
    let mut out = Vec::with_capacity(256);
    for g in 0..reader.num_row_groups() {
        let group = reader.get_row_group(g).map_err(parquet_error(&name))?;
        let n = usize::try_from(group.metadata().num_rows()).unwrap_or(0);
        let mut columns = Vec::with_capacity(texts.len());
        for (field, index, descr) in &texts {
            let (v, d) = read_column::<ByteArrayType>(group.as_ref(), *index, n)
                .map_err(parquet_error(&name))?;
            columns.push((*field, nullable(v, d, descr.max_def_level())));
        }
        let (v, d) =
            read_column::<Int64Type>(group.as_ref(), ts_index, n).map_err(parquet_error(&name))?;
        let ts = nullable(v, d, ts_descr.max_def_level());
        let mut text_rows: Vec<_> = columns.iter().map(|(f, c)| (*f, c.rows())).collect();
        let mut ts_rows = ts.rows();
        for _ in 0..n {
            out.clear();
            let mut separator = b'{';
            let ts = ts_rows.next().flatten().map(|v| ts_ms(*v));
            for (i, (field, rows)) in text_rows.iter_mut().enumerate() {
                // `ts` after `ad_id` (the first two), as SPEC §1 lists them.
                if i == 2 {
                    json_ts(&mut out, &mut separator, ts);
                }
                if let Some(value) = rows.next().flatten() {
                    json_name(&mut out, &mut separator, field);
                    json_text(&mut out, value.data());
                }
            }
            if text_rows.len() == 2 {
                json_ts(&mut out, &mut separator, ts);
            }
            if separator == b'{' {
                out.push(b'{');
            }
            out.push(b'}');
            row += 1;
            each(row, &out);
        }
    }
    Ok(row)
}

/// The schema of the counts output.
const COUNTS_SCHEMA: &str = "message adclick_counts { required int64 minute (TIMESTAMP(MILLIS,true)); required binary ad_id (STRING); required int64 count; }";
/// The schema of the top-N output.
const TOP_SCHEMA: &str = "message adclick_top { required int64 minute (TIMESTAMP(MILLIS,true)); required int32 rank (INTEGER(32,false)); required binary ad_id (STRING); required int64 count; }";

fn create_file(path: &Path) -> Result<std::io::BufWriter<std::fs::File>, ArchiveError> {
    std::fs::File::create(path)
        .map(std::io::BufWriter::new)
        .map_err(|source| ArchiveError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Writes rows in row groups of [`ROW_GROUP_ROWS`]: `push` adds a row to the
/// buffers, `group` writes the buffered ones.
fn write_grouped<R, B: Default>(
    path: &Path,
    schema: &str,
    rows: impl Iterator<Item = R>,
    mut push: impl FnMut(&mut B, R),
    mut group: impl FnMut(&B) -> Vec<Column<'_>>,
    mut clear: impl FnMut(&mut B),
    len: impl Fn(&B) -> usize,
) -> Result<(), ArchiveError> {
    let name = path.display().to_string();
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(schema).map_err(parquet_error(&name))?,
    );
    let mut writer = SerializedFileWriter::new(create_file(path)?, schema, properties())
        .map_err(parquet_error(&name))?;
    let mut buffers = B::default();
    for row in rows {
        push(&mut buffers, row);
        if len(&buffers) >= ROW_GROUP_ROWS {
            write_row_group(&mut writer, &group(&buffers)).map_err(parquet_error(&name))?;
            clear(&mut buffers);
        }
    }
    if len(&buffers) > 0 {
        write_row_group(&mut writer, &group(&buffers)).map_err(parquet_error(&name))?;
    }
    let mut sink = writer.into_inner().map_err(parquet_error(&name))?;
    sink.flush().map_err(|source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes rows (minute ms as TIMESTAMP(MILLIS), ad_id, count) to a Parquet file.
pub fn write_counts(
    path: &Path,
    rows: impl Iterator<Item = (i64, String, u64)>,
) -> Result<(), ArchiveError> {
    type Buffers = (Vec<i64>, Vec<ByteArray>, Vec<i64>);
    write_grouped(
        path,
        COUNTS_SCHEMA,
        rows,
        |b: &mut Buffers, (minute, ad, count)| {
            b.0.push(minute);
            b.1.push(ByteArray::from(ad.into_bytes()));
            b.2.push(count as i64);
        },
        |b: &Buffers| {
            vec![
                Column::I64(&b.0, None),
                Column::Bytes(&b.1, None),
                Column::I64(&b.2, None),
            ]
        },
        |b: &mut Buffers| {
            b.0.clear();
            b.1.clear();
            b.2.clear();
        },
        |b: &Buffers| b.0.len(),
    )
}

/// Writes rows (minute, rank, ad_id, count).
pub fn write_top(
    path: &Path,
    rows: impl Iterator<Item = (i64, u32, String, u64)>,
) -> Result<(), ArchiveError> {
    type Buffers = (Vec<i64>, Vec<i32>, Vec<ByteArray>, Vec<i64>);
    write_grouped(
        path,
        TOP_SCHEMA,
        rows,
        |b: &mut Buffers, (minute, rank, ad, count)| {
            b.0.push(minute);
            b.1.push(rank as i32);
            b.2.push(ByteArray::from(ad.into_bytes()));
            b.3.push(count as i64);
        },
        |b: &Buffers| {
            vec![
                Column::I64(&b.0, None),
                Column::I32(&b.1),
                Column::Bytes(&b.2, None),
                Column::I64(&b.3, None),
            ]
        },
        |b: &mut Buffers| {
            b.0.clear();
            b.1.clear();
            b.2.clear();
            b.3.clear();
        },
        |b: &Buffers| b.0.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64, subject: &str, payload: &str, reason: Option<&str>) -> Message {
        Message {
            seq,
            received_ms: 1_765_000_000_000 + seq as i64,
            subject: Bytes::copy_from_slice(subject.as_bytes()),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            reason: reason.map(|r| Bytes::copy_from_slice(r.as_bytes())),
        }
    }

    fn rows_of(dataset: Dataset, messages: &[Message]) -> Rows {
        let mut rows = Rows::new(dataset);
        for m in messages {
            rows.push(m, &Fields::of(&m.payload));
        }
        rows
    }

    #[test]
    fn fields_are_read_loosely_and_borrowed() {
        let payload = Bytes::from_static(
            br#"{"click_id":"c\u0031","ad_id":"ad-1","ts":1765000000000,"country":7,"ip":"1.2.3.4","x":{"y":[1]}}"#,
        );
        let f = Fields::of(&payload);
        assert_eq!(f.click_id.as_deref(), Some(&b"c1"[..]));
        assert_eq!(f.ad_id.as_deref(), Some(&b"ad-1"[..]));
        assert_eq!(f.ts, Some(1_765_000_000_000));
        assert_eq!(f.country, None);
        assert_eq!(f.ip.as_deref(), Some(&b"1.2.3.4"[..]));
        assert_eq!(f.user_id, None);
        assert_eq!(
            Fields::of(&Bytes::from_static(b"not json")),
            Fields::default()
        );
        let negative = Fields::of(&Bytes::from_static(br#"{"ts":-5}"#));
        assert_eq!(negative.ts, None);
    }

    #[test]
    fn rows_round_trip_with_nulls() {
        let clicks = [
            message(
                7,
                "clicks.p.3.ad-1",
                r#"{"click_id":"c1","ad_id":"ad-1","ts":1765000000000,"country":"us","user_id":"u"}"#,
                None,
            ),
            message(8, "clicks.p.3.ad-1", "not json", None),
            message(
                9,
                "clicks.p.3.ad-1",
                r#"{"click_id":"c2","ad_id":"other","ts":1}"#,
                None,
            ),
            message(10, "odd", r#"{"click_id":"c3","ad_id":"odd","ts":2}"#, None),
        ];
        let rows = rows_of(Dataset::Clicks, &clicks);
        assert_eq!(rows.valid, vec![true, false, false, false]);
        assert_eq!(rows.invalid_reason.defined, vec![0, 1, 1, 1]);
        assert_eq!(rows.ts.defined, vec![1, 0, 1, 1]);
        let bytes = write_rows(&rows).unwrap();
        let back = read_rows(Bytes::from(bytes.clone()), "test", Dataset::Clicks).unwrap();
        assert_eq!(back, rows);
        let mut seen = Vec::new();
        let n = read_messages(Bytes::from(bytes), "test", Dataset::Clicks, &mut |m| {
            seen.push((
                m.seq,
                m.received_ms,
                m.subject.to_string(),
                m.payload.to_vec(),
                m.reason.map(str::to_string),
            ));
        })
        .unwrap();
        assert_eq!(n, 4);
        let want: Vec<_> = clicks
            .iter()
            .map(|m| {
                (
                    m.seq,
                    m.received_ms,
                    String::from_utf8(m.subject.to_vec()).unwrap(),
                    m.payload.to_vec(),
                    None,
                )
            })
            .collect();
        assert_eq!(seen, want);

        let rejects = [
            message(1, "rejected.invalid", "{", Some("payload is not JSON")),
            message(
                2,
                "rejected.too_late",
                r#"{"click_id":"c","ad_id":"a","ts":5}"#,
                None,
            ),
        ];
        let rows = rows_of(Dataset::Rejects, &rejects);
        let bytes = write_rows(&rows).unwrap();
        let back = read_rows(Bytes::from(bytes.clone()), "test", Dataset::Rejects).unwrap();
        assert_eq!(back, rows);
        let mut reasons = Vec::new();
        read_messages(Bytes::from(bytes), "test", Dataset::Rejects, &mut |m| {
            reasons.push(m.reason.map(str::to_string));
        })
        .unwrap();
        assert_eq!(reasons, vec![Some("payload is not JSON".to_string()), None]);
    }

    #[test]
    fn payloads_of_an_archive_file_and_of_a_columns_file() {
        let dir = tempfile::tempdir().unwrap();
        let archive_file = dir.path().join("archive.parquet");
        let rows = rows_of(
            Dataset::Clicks,
            &[message(
                1,
                "clicks.p.0.a",
                r#"{"click_id":"c","ad_id":"a","ts":5}"#,
                None,
            )],
        );
        std::fs::write(&archive_file, write_rows(&rows).unwrap()).unwrap();
        let mut got = Vec::new();
        let n = for_each_payload(&archive_file, |row, p| got.push((row, p.to_vec()))).unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            got,
            vec![(1, br#"{"click_id":"c","ad_id":"a","ts":5}"#.to_vec())]
        );

        // A file of columns: written by hand with the low-level API.
        let columns_file = dir.path().join("columns.parquet");
        let schema = Arc::new(
            parquet::schema::parser::parse_message_type(
                "message m { required binary click_id (STRING); required binary ad_id (STRING); \
                 optional int64 ts (TIMESTAMP(MICROS,true)); optional binary country (STRING); }",
            )
            .unwrap(),
        );
        let mut writer =
            SerializedFileWriter::new(create_file(&columns_file).unwrap(), schema, properties())
                .unwrap();
        let ids = [ByteArray::from("c\"1"), ByteArray::from("c2")];
        let ads = [ByteArray::from("a"), ByteArray::from("b")];
        write_row_group(
            &mut writer,
            &[
                Column::Bytes(&ids, None),
                Column::Bytes(&ads, None),
                Column::I64(&[60_000_000], Some(&[1, 0])),
                Column::Bytes(&[ByteArray::from("US")], Some(&[0, 1])),
            ],
        )
        .unwrap();
        writer.into_inner().unwrap().flush().unwrap();
        let mut got = Vec::new();
        let n = for_each_payload(&columns_file, |row, p| {
            got.push((row, String::from_utf8(p.to_vec()).unwrap()))
        })
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            got,
            vec![
                (
                    1,
                    r#"{"click_id":"c\"1","ad_id":"a","ts":60000}"#.to_string()
                ),
                (
                    2,
                    r#"{"click_id":"c2","ad_id":"b","country":"US"}"#.to_string()
                ),
            ]
        );
    }

    #[test]
    fn counts_and_top_files_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let counts = dir.path().join("counts.parquet");
        write_counts(
            &counts,
            [(60_000, "a".to_string(), 3u64), (60_000, "b".into(), 1)].into_iter(),
        )
        .unwrap();
        let reader = SerializedFileReader::new(std::fs::File::open(&counts).unwrap()).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 2);
        let top = dir.path().join("top.parquet");
        write_top(&top, [(60_000, 1u32, "a".to_string(), 3u64)].into_iter()).unwrap();
        let reader = SerializedFileReader::new(std::fs::File::open(&top).unwrap()).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 1);
    }
}
