//! Our bounds-checked thrift reader, binary and compact, and the Jaeger
//! structs it reads: `Batch` (with its process and spans) and the
//! `Agent.emitBatch` envelope of UDP datagrams.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};

/// A thrift decoding error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Jaeger thrift: {0}")]
pub struct ThriftError(String);

type Result<T> = std::result::Result<T, ThriftError>;

impl ThriftError {
    pub(super) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

fn err<T>(m: impl Into<String>) -> Result<T> {
    Err(ThriftError(m.into()))
}

// Thrift types (binary protocol numbering).
pub(super) const T_STOP: u8 = 0;
pub(super) const T_BOOL: u8 = 2;
pub(super) const T_BYTE: u8 = 3;
pub(super) const T_DOUBLE: u8 = 4;
pub(super) const T_I16: u8 = 6;
pub(super) const T_I32: u8 = 8;
pub(super) const T_I64: u8 = 10;
pub(super) const T_STRING: u8 = 11;
pub(super) const T_STRUCT: u8 = 12;
pub(super) const T_MAP: u8 = 13;
pub(super) const T_SET: u8 = 14;
pub(super) const T_LIST: u8 = 15;

const MAX_DEPTH: usize = 32;

/// Which encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Binary,
    Compact,
}

pub(super) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    protocol: Protocol,
    /// Compact: last field id per open struct.
    last_ids: Vec<i16>,
    /// Compact: the value of a bool field, carried in its header.
    pending_bool: Option<bool>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(data: &'a [u8], protocol: Protocol) -> Self {
        Self {
            data,
            pos: 0,
            protocol,
            last_ids: Vec::new(),
            pending_bool: None,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.data.len() - self.pos {
            return err(format!(
                "needs {n} bytes at offset {}, {} left",
                self.pos,
                self.data.len() - self.pos
            ));
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64> {
        let mut out = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return err("varint overflows 64 bits");
            }
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        err("varint too long")
    }

    fn zigzag(&mut self) -> Result<i64> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn i16(&mut self) -> Result<i16> {
        match self.protocol {
            Protocol::Binary => Ok(i16::from_be_bytes(
                self.take(2)?.try_into().expect("2 bytes"),
            )),
            Protocol::Compact => i16::try_from(self.zigzag()?).or_else(|_| err("i16 out of range")),
        }
    }

    fn i32(&mut self) -> Result<i32> {
        match self.protocol {
            Protocol::Binary => Ok(i32::from_be_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            )),
            Protocol::Compact => i32::try_from(self.zigzag()?).or_else(|_| err("i32 out of range")),
        }
    }

    fn i64(&mut self) -> Result<i64> {
        match self.protocol {
            Protocol::Binary => Ok(i64::from_be_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            )),
            Protocol::Compact => self.zigzag(),
        }
    }

    fn double(&mut self) -> Result<f64> {
        let b: [u8; 8] = self.take(8)?.try_into().expect("8 bytes");
        Ok(match self.protocol {
            Protocol::Binary => f64::from_be_bytes(b),
            Protocol::Compact => f64::from_le_bytes(b),
        })
    }

    fn bool(&mut self) -> Result<bool> {
        if let Some(b) = self.pending_bool.take() {
            return Ok(b);
        }
        Ok(self.byte()? == 1)
    }

    fn len(&mut self) -> Result<usize> {
        let n = match self.protocol {
            Protocol::Binary => {
                let n = self.i32()?;
                usize::try_from(n).or_else(|_| err(format!("negative length {n}")))?
            }
            Protocol::Compact => {
                usize::try_from(self.varint()?).or_else(|_| err("length too large"))?
            }
        };
        Ok(n)
    }

    fn binary(&mut self) -> Result<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String> {
        String::from_utf8(self.binary()?.to_vec()).or_else(|_| err("string is not UTF-8"))
    }

    fn compact_type(t: u8) -> Result<u8> {
        Ok(match t {
            1 | 2 => T_BOOL,
            3 => T_BYTE,
            4 => T_I16,
            5 => T_I32,
            6 => T_I64,
            7 => T_DOUBLE,
            8 => T_STRING,
            9 => T_LIST,
            10 => T_SET,
            11 => T_MAP,
            12 => T_STRUCT,
            other => return err(format!("unknown compact type {other}")),
        })
    }

    fn struct_begin(&mut self) {
        self.last_ids.push(0);
    }

    fn struct_end(&mut self) {
        self.last_ids.pop();
    }

    /// The next field's (id, type), or `None` at the end of the struct.
    fn field(&mut self) -> Result<Option<(i16, u8)>> {
        match self.protocol {
            Protocol::Binary => {
                let t = self.byte()?;
                if t == T_STOP {
                    return Ok(None);
                }
                Ok(Some((self.i16()?, t)))
            }
            Protocol::Compact => {
                let header = self.byte()?;
                if header == 0 {
                    return Ok(None);
                }
                let raw = header & 0x0f;
                let delta = header >> 4;
                let last = *self.last_ids.last().unwrap_or(&0);
                let id = if delta == 0 {
                    self.i16()?
                } else {
                    last.checked_add(i16::from(delta))
                        .ok_or_else(|| ThriftError("field id overflow".into()))?
                };
                if let Some(l) = self.last_ids.last_mut() {
                    *l = id;
                }
                let t = Self::compact_type(raw)?;
                if t == T_BOOL {
                    self.pending_bool = Some(raw == 1);
                }
                Ok(Some((id, t)))
            }
        }
    }

    /// (element type, count) of a list or set; the count is checked against
    /// the bytes left (every element takes at least one byte).
    fn list(&mut self) -> Result<(u8, usize)> {
        let (t, n) = match self.protocol {
            Protocol::Binary => {
                let t = self.byte()?;
                (t, self.len()?)
            }
            Protocol::Compact => {
                let header = self.byte()?;
                let t = Self::compact_type(header & 0x0f)?;
                let n = if header >> 4 == 15 {
                    self.len()?
                } else {
                    usize::from(header >> 4)
                };
                (t, n)
            }
        };
        if n > self.data.len() - self.pos {
            return err(format!(
                "list of {n} elements in {} bytes",
                self.data.len() - self.pos
            ));
        }
        Ok((t, n))
    }

    fn expect(&self, got: u8, want: u8, what: &str) -> Result<()> {
        if got == want {
            Ok(())
        } else {
            err(format!("{what} has thrift type {got}, expected {want}"))
        }
    }

    fn skip(&mut self, t: u8, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return err("nesting too deep");
        }
        match t {
            T_BOOL => {
                self.bool()?;
            }
            T_BYTE => {
                self.byte()?;
            }
            T_I16 => {
                self.i16()?;
            }
            T_I32 => {
                self.i32()?;
            }
            T_I64 => {
                self.i64()?;
            }
            T_DOUBLE => {
                self.double()?;
            }
            T_STRING => {
                self.binary()?;
            }
            T_STRUCT => {
                self.struct_begin();
                while let Some((_, ft)) = self.field()? {
                    self.skip(ft, depth + 1)?;
                }
                self.struct_end();
            }
            T_LIST | T_SET => {
                let (et, n) = self.list()?;
                for _ in 0..n {
                    self.skip(et, depth + 1)?;
                }
            }
            T_MAP => {
                let (kt, vt, n) = match self.protocol {
                    Protocol::Binary => (self.byte()?, self.byte()?, self.len()?),
                    Protocol::Compact => {
                        let n = self.len()?;
                        if n == 0 {
                            (0, 0, 0)
                        } else {
                            let kv = self.byte()?;
                            (
                                Self::compact_type(kv >> 4)?,
                                Self::compact_type(kv & 0x0f)?,
                                n,
                            )
                        }
                    }
                };
                if n > self.data.len() - self.pos {
                    return err("map larger than the input");
                }
                for _ in 0..n {
                    self.skip(kt, depth + 1)?;
                    self.skip(vt, depth + 1)?;
                }
            }
            other => return err(format!("unknown thrift type {other}")),
        }
        Ok(())
    }

    /// A list of structs, each read by `item`.
    fn struct_list<T>(
        &mut self,
        t: u8,
        what: &str,
        mut item: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.expect(t, T_LIST, what)?;
        let (et, n) = self.list()?;
        self.expect(et, T_STRUCT, what)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(item(self)?);
        }
        Ok(out)
    }
}

/// A Jaeger tag as an OTLP key-value.
fn tag(r: &mut Reader<'_>) -> Result<KeyValue> {
    let mut key = String::new();
    let mut v_type = 0;
    let (mut s, mut d, mut b, mut l, mut bin) = (None, None, None, None, None);
    r.struct_begin();
    while let Some((id, t)) = r.field()? {
        match (id, t) {
            (1, T_STRING) => key = r.string()?,
            (2, T_I32) => v_type = r.i32()?,
            (3, T_STRING) => s = Some(r.string()?),
            (4, T_DOUBLE) => d = Some(r.double()?),
            (5, T_BOOL) => b = Some(r.bool()?),
            (6, T_I64) => l = Some(r.i64()?),
            (7, T_STRING) => bin = Some(r.binary()?.to_vec()),
            _ => r.skip(t, 1)?,
        }
    }
    r.struct_end();
    let value = match v_type {
        0 => Any::StringValue(s.unwrap_or_default()),
        1 => Any::DoubleValue(d.unwrap_or_default()),
        2 => Any::BoolValue(b.unwrap_or_default()),
        3 => Any::IntValue(l.unwrap_or_default()),
        4 => Any::StringValue(BASE64.encode(bin.unwrap_or_default())),
        other => return err(format!("tag {key:?} has unknown type {other}")),
    };
    Ok(KeyValue {
        key,
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    })
}

fn tags(r: &mut Reader<'_>, t: u8, what: &str) -> Result<Vec<KeyValue>> {
    r.struct_list(t, what, tag)
}

pub(super) struct JaegerSpan {
    pub(super) trace_low: i64,
    pub(super) trace_high: i64,
    pub(super) span_id: i64,
    pub(super) parent_id: i64,
    pub(super) name: String,
    pub(super) references: Vec<(i32, i64, i64, i64)>,
    pub(super) start: i64,
    pub(super) duration: i64,
    pub(super) tags: Vec<KeyValue>,
    pub(super) logs: Vec<(i64, Vec<KeyValue>)>,
}

fn span(r: &mut Reader<'_>) -> Result<JaegerSpan> {
    let mut s = JaegerSpan {
        trace_low: 0,
        trace_high: 0,
        span_id: 0,
        parent_id: 0,
        name: String::new(),
        references: Vec::new(),
        start: 0,
        duration: 0,
        tags: Vec::new(),
        logs: Vec::new(),
    };
    r.struct_begin();
    while let Some((id, t)) = r.field()? {
        match (id, t) {
            (1, T_I64) => s.trace_low = r.i64()?,
            (2, T_I64) => s.trace_high = r.i64()?,
            (3, T_I64) => s.span_id = r.i64()?,
            (4, T_I64) => s.parent_id = r.i64()?,
            (5, T_STRING) => s.name = r.string()?,
            (6, _) => {
                s.references = r.struct_list(t, "references", |r| {
                    let mut reference = (0, 0, 0, 0);
                    r.struct_begin();
                    while let Some((id, t)) = r.field()? {
                        match (id, t) {
                            (1, T_I32) => reference.0 = r.i32()?,
                            (2, T_I64) => reference.1 = r.i64()?,
                            (3, T_I64) => reference.2 = r.i64()?,
                            (4, T_I64) => reference.3 = r.i64()?,
                            _ => r.skip(t, 2)?,
                        }
                    }
                    r.struct_end();
                    Ok(reference)
                })?;
            }
            (8, T_I64) => s.start = r.i64()?,
            (9, T_I64) => s.duration = r.i64()?,
            (10, _) => s.tags = tags(r, t, "span tags")?,
            (11, _) => {
                s.logs = r.struct_list(t, "logs", |r| {
                    let mut log = (0, Vec::new());
                    r.struct_begin();
                    while let Some((id, t)) = r.field()? {
                        match (id, t) {
                            (1, T_I64) => log.0 = r.i64()?,
                            (2, _) => log.1 = tags(r, t, "log fields")?,
                            _ => r.skip(t, 2)?,
                        }
                    }
                    r.struct_end();
                    Ok(log)
                })?;
            }
            _ => r.skip(t, 1)?,
        }
    }
    r.struct_end();
    Ok(s)
}

/// A decoded `Batch`: process service name, process tags, spans.
pub(super) struct Batch {
    pub(super) service: String,
    pub(super) process_tags: Vec<KeyValue>,
    pub(super) spans: Vec<JaegerSpan>,
}

/// A bare `Batch` struct.
pub(super) fn batch(r: &mut Reader<'_>) -> Result<Batch> {
    let mut b = Batch {
        service: String::new(),
        process_tags: Vec::new(),
        spans: Vec::new(),
    };
    let mut has_process = false;
    r.struct_begin();
    while let Some((id, t)) = r.field()? {
        match (id, t) {
            (1, T_STRUCT) => {
                has_process = true;
                r.struct_begin();
                while let Some((id, t)) = r.field()? {
                    match (id, t) {
                        (1, T_STRING) => b.service = r.string()?,
                        (2, _) => b.process_tags = tags(r, t, "process tags")?,
                        _ => r.skip(t, 2)?,
                    }
                }
                r.struct_end();
            }
            (2, _) => b.spans = r.struct_list(t, "spans", span)?,
            _ => r.skip(t, 1)?,
        }
    }
    r.struct_end();
    if !has_process {
        return err("Batch has no process");
    }
    Ok(b)
}

/// The `Batch` of an `Agent.emitBatch` message (UDP datagrams).
pub(super) fn agent_batch(datagram: &[u8], protocol: Protocol) -> Result<Batch> {
    let mut r = Reader::new(datagram, protocol);
    let name = match protocol {
        Protocol::Binary => {
            let first = r.i32()?;
            if first < 0 {
                // Strict: version | type, name, seqid.
                let name = r.string()?;
                r.i32()?;
                name
            } else {
                // Old style: name (length already read), type, seqid.
                let len = usize::try_from(first).or_else(|_| err("bad name length"))?;
                let name = String::from_utf8(r.take(len)?.to_vec())
                    .or_else(|_| err("name is not UTF-8"))?;
                r.byte()?;
                r.i32()?;
                name
            }
        }
        Protocol::Compact => {
            if r.byte()? != 0x82 {
                return err("not a compact protocol message");
            }
            r.byte()?;
            r.varint()?;
            r.string()?
        }
    };
    if name != "emitBatch" {
        return err(format!("unsupported agent call {name:?} (only emitBatch)"));
    }
    let mut found = None;
    r.struct_begin();
    while let Some((id, t)) = r.field()? {
        if (id, t) == (1, T_STRUCT) {
            found = Some(batch(&mut r)?);
        } else {
            r.skip(t, 1)?;
        }
    }
    r.struct_end();
    found.ok_or_else(|| ThriftError("emitBatch without a batch".into()))
}
