//! The wire format in which an ingest node hands its buffered rows (not yet
//! in the table) to a query node: one Arrow IPC stream of batches in the
//! spans schema, and beside it, in the `x-tracelake-groups` header, how the
//! batches fall into groups: `upto:count` per group, comma-separated, in
//! stream order. Every row of a group is in the table once the node's WAL
//! watermark there reaches `upto`; the node's application id comes in the
//! `x-tracelake-writer` header. A group of another writer of the node (a
//! Kafka partition, committing under its own application id) is
//! `upto:count@writer`. A query node leaves out the groups the table
//! version it reads has reached (see `query::table`).

use arrow_array::{BinaryArray, RecordBatch, Scalar};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{ArrowError, SchemaRef};

use crate::layout::Layout;
use crate::spans::{TRACE_ID, spans_schema};

/// Header naming the writer's Delta application id.
pub const WRITER_HEADER: &str = "x-tracelake-writer";
/// Header with the groups: `upto:count,...`.
pub const GROUPS_HEADER: &str = "x-tracelake-groups";

/// Batches in groups, each with the highest WAL sequence number among its
/// rows.
pub type Groups = Vec<(u64, Vec<RecordBatch>)>;

/// The groups of each writer of a node: `None` for the node's own (the
/// writer header's), else the writer's application id.
pub type WriterGroups = Vec<(Option<String>, Groups)>;

/// `groups` (rows in the layout whose stored schema is `schema`) as the
/// groups header and the IPC stream; with `trace_id`, only that trace's rows
/// (groups left without rows are left out).
pub fn encode(
    groups: &WriterGroups,
    trace_id: Option<&[u8; 16]>,
    schema: &SchemaRef,
) -> Result<(String, Vec<u8>), ArrowError> {
    let mut writer = StreamWriter::try_new(Vec::new(), schema)?;
    let wanted = trace_id.map(|id| Scalar::new(BinaryArray::from(vec![id.as_slice()])));
    let mut header = Vec::new();
    for (source, (upto, batches)) in groups
        .iter()
        .flat_map(|(source, groups)| groups.iter().map(move |g| (source, g)))
    {
        if let Some(source) = source
            && source.contains([',', '@'])
        {
            return Err(ArrowError::InvalidArgumentError(format!(
                "writer {source:?} cannot be named in {GROUPS_HEADER}"
            )));
        }
        let mut count = 0;
        for batch in batches {
            let batch = match &wanted {
                None => batch.clone(),
                Some(wanted) => {
                    let ids = batch.column_by_name(TRACE_ID).ok_or_else(|| {
                        ArrowError::SchemaError("buffered rows without trace_id".into())
                    })?;
                    let mask = arrow_ord::cmp::eq(ids, wanted)?;
                    if mask.true_count() == 0 {
                        continue;
                    }
                    arrow_select::filter::filter_record_batch(batch, &mask)?
                }
            };
            // Rows of a receiver that started in an older layout of the
            // table (Kafka's) in the stream's.
            writer.write(&Layout::conform(&batch, schema)?)?;
            count += 1;
        }
        if count > 0 {
            header.push(match source {
                None => format!("{upto}:{count}"),
                Some(source) => format!("{upto}:{count}@{source}"),
            });
        }
    }
    writer.finish()?;
    Ok((header.join(","), writer.into_inner()?))
}

/// The groups of a groups header and its IPC stream; an error names what
/// does not fit (a peer of another version, a cut body).
pub fn decode(header: &str, body: &[u8]) -> Result<WriterGroups, ArrowError> {
    let mut sizes = Vec::new();
    for part in header.split(',').filter(|p| !p.is_empty()) {
        let (group, source) = match part.split_once('@') {
            Some((group, source)) => (group, Some(source.to_string())),
            None => (part, None),
        };
        let parsed = group
            .split_once(':')
            .and_then(|(u, c)| Some((source, u.parse::<u64>().ok()?, c.parse::<usize>().ok()?)));
        match parsed {
            Some(size) => sizes.push(size),
            None => {
                return Err(ArrowError::ParseError(format!(
                    "{GROUPS_HEADER}: {part:?} is not upto:count"
                )));
            }
        }
    }
    let mut batches = StreamReader::try_new(body, None)?;
    // Every standard column, as this version stores it; configured
    // dedicated columns may follow (the sender's table layout).
    let sent = batches.schema();
    let standard = spans_schema();
    let same = standard.fields().iter().all(|f| {
        sent.field_with_name(f.name())
            .is_ok_and(|s| s.data_type() == f.data_type())
    });
    if !same {
        return Err(ArrowError::SchemaError(
            "buffered rows in another spans schema (a node of another version)".into(),
        ));
    }
    let mut groups: WriterGroups = Vec::new();
    for (source, upto, count) in sizes {
        // `count` comes from another process: no allocation on its word.
        let mut group = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            match batches.next() {
                Some(batch) => group.push(batch?),
                None => {
                    return Err(ArrowError::ParseError(format!(
                        "{GROUPS_HEADER} names more batches than the stream holds"
                    )));
                }
            }
        }
        match groups.iter_mut().find(|(s, _)| *s == source) {
            Some((_, of_source)) => of_source.push((upto, group)),
            None => groups.push((source, vec![(upto, group)])),
        }
    }
    if batches.next().is_some() {
        return Err(ArrowError::ParseError(format!(
            "the stream holds more batches than {GROUPS_HEADER} names"
        )));
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;
    use crate::otlp::{Acceptance, SpansBuilder};

    fn batch(traces: &[u8]) -> RecordBatch {
        let spans = traces
            .iter()
            .enumerate()
            .map(|(i, t)| Span {
                trace_id: vec![*t; 16],
                span_id: vec![i as u8 + 1; 8],
                name: "op".into(),
                start_time_unix_nano: 1_700_000_000_000_000_000,
                end_time_unix_nano: 1_700_000_000_000_000_001,
                ..Default::default()
            })
            .collect();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mut b = SpansBuilder::default();
        b.append_request(&request, &Acceptance::ANY_TIME);
        b.finish()
    }

    fn rows(groups: &WriterGroups) -> Vec<(Option<&str>, u64, usize)> {
        groups
            .iter()
            .flat_map(|(s, g)| {
                g.iter().map(move |(u, b)| {
                    (s.as_deref(), *u, b.iter().map(RecordBatch::num_rows).sum())
                })
            })
            .collect()
    }

    #[test]
    fn groups_survive_the_wire_and_a_trace_id_keeps_its_rows_only() {
        let groups: WriterGroups = vec![
            (
                None,
                vec![
                    (7, vec![batch(&[1, 2]), batch(&[2])]),
                    (9, vec![batch(&[3])]),
                ],
            ),
            (
                Some("kafka:spans:3".into()),
                vec![(41, vec![batch(&[2, 4])])],
            ),
        ];
        let (header, body) = encode(&groups, None, &spans_schema()).unwrap();
        assert_eq!(header, "7:2,9:1,41:1@kafka:spans:3");
        let back = decode(&header, &body).unwrap();
        assert_eq!(
            rows(&back),
            [(None, 7, 3), (None, 9, 1), (Some("kafka:spans:3"), 41, 2)]
        );
        assert_eq!(back[0].1[0].1[0], groups[0].1[0].1[0]);
        let (header, body) = encode(&groups, Some(&[2; 16]), &spans_schema()).unwrap();
        assert_eq!(header, "7:2,41:1@kafka:spans:3");
        assert_eq!(
            rows(&decode(&header, &body).unwrap()),
            [(None, 7, 2), (Some("kafka:spans:3"), 41, 1)]
        );
        let (header, body) = encode(&groups, Some(&[5; 16]), &spans_schema()).unwrap();
        assert!(header.is_empty());
        assert!(decode(&header, &body).unwrap().is_empty());
    }

    #[test]
    fn a_header_that_does_not_fit_the_stream_is_an_error() {
        let (header, body) = encode(
            &vec![(None, vec![(7, vec![batch(&[1])])])],
            None,
            &spans_schema(),
        )
        .unwrap();
        for bad in ["7:2", "", "7", "x:1", "7@w", "x:1@w"] {
            let err = decode(bad, &body).unwrap_err().to_string();
            assert!(err.contains("x-tracelake-groups"), "{bad}: {err}");
        }
        assert!(decode(&header, &body[..body.len() / 2]).is_err());
    }
}
