"""The SQL suite of `tracelake-bench run`, in DuckDB over the same Parquet
files tracelake reads. Input: a JSON file with `files` (absolute paths),
`queries` ([{name, sql}]), `repeat` and `threads`. Output (stdout): JSON,
name -> {runs, median_ms, p99_ms, rows}. Each query runs once to warm up
(as in tracelake's runs), then `repeat` times."""

import json
import sys
import time

import duckdb


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    con = duckdb.connect()
    con.execute(f"SET threads TO {int(spec['threads'])}")
    files = ", ".join("'" + p.replace("'", "''") + "'" for p in spec["files"])
    # date=/hour= directories become columns, as in the Delta table;
    # `start_time` is computed from `start_time_unix_nano`, as tracelake does.
    con.execute(
        "CREATE VIEW spans AS SELECT *, make_timestamp(start_time_unix_nano // 1000) AS start_time "
        f"FROM read_parquet([{files}], hive_partitioning = true)"
    )
    out = {}
    for q in spec["queries"]:
        rows = con.execute(q["sql"]).fetchall()
        times = []
        for _ in range(int(spec["repeat"])):
            started = time.perf_counter()
            con.execute(q["sql"]).fetchall()
            times.append((time.perf_counter() - started) * 1000.0)
        times.sort()
        at = lambda p: times[round((len(times) - 1) * p)]
        out[q["name"]] = {
            "runs": len(times),
            "median_ms": at(0.5),
            "p99_ms": at(0.99),
            "rows": len(rows),
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
