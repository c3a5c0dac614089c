"""Bytes a span of stored columns against alternatives a layout could take.

Reads one data file (a compacted hour, rows in trace order) and prints its
bytes per span per column, then what the parent span id and the start time
would cost stored another way, each written alone with the compacted
files' settings (zstd 3, 128k-row groups):

- the parent as its row's backward distance to the parent's row within the
  trace (a trace's rows are adjacent in every data file), null for roots;
- the start as an offset from its trace's first start, or as the delta
  from the row before within the trace, plain and DELTA_BINARY_PACKED.

    python bench/layout_alternatives.py FILE.parquet

Needs pyarrow. BENCHMARKS.md, "Issue 13's targets", records its figures.
"""

import io
import sys

import pyarrow as pa
import pyarrow.parquet as pq


def stored(array, **options):
    """Bytes a span of `array` written as the one column of a file."""
    out = io.BytesIO()
    pq.write_table(
        pa.table({"c": array}),
        out,
        compression="zstd",
        compression_level=3,
        row_group_size=128 * 1024,
        **options,
    )
    meta = pq.ParquetFile(io.BytesIO(out.getvalue())).metadata
    size = sum(
        meta.row_group(g).column(0).total_compressed_size
        for g in range(meta.num_row_groups)
    )
    return size / len(array)


def main(path):
    file = pq.ParquetFile(path)
    meta = file.metadata
    rows = meta.num_rows
    columns = {}
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            root = chunk.path_in_schema.split(".")[0]
            columns[root] = columns.get(root, 0) + chunk.total_compressed_size
    print(f"{rows} rows, column chunks {sum(columns.values()) / rows:.2f} B/span")
    for name, size in sorted(columns.items(), key=lambda c: -c[1])[:12]:
        print(f"  {name:28} {size / rows:.2f}")

    table = file.read(columns=["trace_id", "span_id", "parent_span_id", "start_time_unix_nano"])
    traces = table["trace_id"].to_pylist()
    spans = table["span_id"].to_pylist()
    parents = table["parent_span_id"].to_pylist()
    starts = table["start_time_unix_nano"].to_pylist()
    distance = [None] * rows
    offset = [0] * rows
    delta = [0] * rows
    elsewhere = 0
    first_start = min(starts)
    i = 0
    while i < rows:
        j = i
        while j < rows and traces[j] == traces[i]:
            j += 1
        at = {spans[k]: k for k in range(i, j)}
        trace_start = min(starts[i:j])
        for k in range(i, j):
            offset[k] = starts[k] - trace_start
            delta[k] = starts[k] - (starts[k - 1] if k > i else first_start)
            if parents[k]:
                if parents[k] in at:
                    distance[k] = k - at[parents[k]]
                else:
                    elsewhere += 1
        i = j
    print(f"parents not in the file: {elsewhere}")
    plain = {"use_dictionary": False}
    packed = {"use_dictionary": False, "column_encoding": {"c": "DELTA_BINARY_PACKED"}}
    print(f"parent_span_id as stored      {stored(table['parent_span_id'], **plain):.2f}")
    print(f"parent as a distance in rows  {stored(pa.array(distance, pa.int32())):.2f}")
    print(f"start as stored               {stored(table['start_time_unix_nano'], **plain):.2f}")
    print(f"start, offset in its trace    {stored(pa.array(offset, pa.int64()), **plain):.2f}")
    print(f"  the same, delta-packed      {stored(pa.array(offset, pa.int64()), **packed):.2f}")
    print(f"start, delta within its trace {stored(pa.array(delta, pa.int64()), **plain):.2f}")
    print(f"  the same, delta-packed      {stored(pa.array(delta, pa.int64()), **packed):.2f}")


if __name__ == "__main__":
    main(sys.argv[1])
