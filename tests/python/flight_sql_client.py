"""Queries tracelake's Arrow Flight SQL port with the ADBC Flight SQL driver.

Usage: flight_sql_client.py <grpc://host:port>
Prints one JSON object with what the test checks; exits non-zero on failure.
"""

import json
import sys
import time

import adbc_driver_flightsql.dbapi as flight_sql

uri = sys.argv[1]
out = {}
with flight_sql.connect(uri) as conn:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT service_name, count(*) AS spans, sum(duration_ns) AS total_ns "
            "FROM spans GROUP BY service_name ORDER BY service_name"
        )
        table = cur.fetch_arrow_table()
        out["schema"] = [f"{f.name}:{f.type}" for f in table.schema]
        out["rows"] = table.to_pylist()

        # Parameterless prepared statement path (adbc_prepare then execute).
        cur.adbc_prepare("SELECT count(*) AS n FROM spans WHERE status_code = 'ERROR'")
        cur.execute("SELECT count(*) AS n FROM spans WHERE status_code = 'ERROR'")
        out["errors"] = cur.fetchone()[0]

        # A query whose operators never yield, through ADBC (which prepares
        # every statement): stopped at the server's time limit.
        started = time.monotonic()
        try:
            cur.execute(
                "SELECT count(*) FROM generate_series(1, 100000000) a, "
                "generate_series(1, 100000000) b"
            )
            cur.fetchall()
            out["runaway"] = None
        except Exception as e:
            out["runaway"] = {"error": str(e), "seconds": time.monotonic() - started}

        try:
            cur.execute("DROP TABLE spans")
            cur.fetchall()
            out["refused"] = None
        except Exception as e:  # the driver raises its own error classes
            out["refused"] = str(e)

    objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    out["tables"] = [
        (c["catalog_name"], s["db_schema_name"], t["table_name"])
        for c in objects
        for s in c["catalog_db_schemas"] or []
        for t in s["db_schema_tables"] or []
    ]
    out["table_schema"] = [f.name for f in conn.adbc_get_table_schema("spans")][:3]

print(json.dumps(out))
