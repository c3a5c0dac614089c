"""DuckDB over the Parquet files tracelake reads: the baseline of the SQL
suite of `tracelake-bench run` and `tracelake-bench sql --duckdb`.

Input: a JSON file (the first argument) with `files` (absolute paths) and
`threads`. Once the files are open it writes `{"ready": true}` (or
`{"error": ...}` and ends). Then one query a line on stdin, as JSON
`{"sql": ...}`; for each, one line on stdout: `{"ms": ..., "rows": ...}`
(the time to run it and fetch every row), or `{"error": ...}`, after which
it goes on. It ends at the end of its input. The runner interleaves
DuckDB's runs with tracelake's this way, query by query, in the same
sitting. By hand:

    echo '{"sql": "SELECT count(*) FROM spans"}' | python3 duckdb_suite.py input.json
"""

import io
import json
import os
import sys
import time

import duckdb


def main() -> None:
    # The answers go to the original stdout, and anything else printed
    # (by DuckDB or Python) to stderr, so that a stray line cannot shift
    # the answers.
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    queries = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")

    def answer(out: dict) -> None:
        answers.write(json.dumps(out) + "\n")
        answers.flush()

    try:
        with open(sys.argv[1]) as f:
            spec = json.load(f)
        con = duckdb.connect()
        con.execute(f"SET threads TO {int(spec['threads'])}")
        con.execute("SET enable_progress_bar = false")
        files = ", ".join("'" + p.replace("'", "''") + "'" for p in spec["files"])
        # date=/hour= directories become columns, as in the Delta table;
        # `start_time` is computed from `start_time_unix_nano`, as tracelake
        # does.
        con.execute(
            "CREATE VIEW spans AS SELECT *, make_timestamp(start_time_unix_nano // 1000) AS start_time "
            f"FROM read_parquet([{files}], hive_partitioning = true)"
        )
    except Exception as e:
        answer({"error": f"{type(e).__name__}: {e}"})
        return
    answer({"ready": True})
    for line in queries:
        if not line.strip():
            continue
        try:
            sql = json.loads(line)["sql"]
            started = time.perf_counter()
            rows = con.execute(sql).fetchall()
            out = {"ms": (time.perf_counter() - started) * 1000.0, "rows": len(rows)}
        except Exception as e:
            out = {"error": f"{type(e).__name__}: {e}"}
        answer(out)


if __name__ == "__main__":
    main()
