"""A Python client that sends search_path as a startup parameter of its own (as JDBC's currentSchema
does), with no Entra code: pg8000, pointed at entra-pg proxy by libpq's variables.

Opens a new connection every few hundred milliseconds for SECONDS seconds with the startup parameters
application_name, DateStyle, TimeZone and search_path; checks each is in effect and was reported at
startup with that value where the server reports it; prints `connections=N errors=E`.
"""
import os
import sys
import time

import pg8000.native

seconds = float(sys.argv[1])
wanted = {
    "application_name": "entra-warm-pg8000",
    "DateStyle": "SQL, DMY",
    "TimeZone": "Pacific/Chatham",
    "search_path": "entra_warm, public",
}
deadline = time.monotonic() + seconds
connections = errors = 0
while time.monotonic() < deadline:
    try:
        conn = pg8000.native.Connection(
            user=os.environ["PGUSER"],
            host=os.environ["PGHOST"],
            port=int(os.environ["PGPORT"]),
            database=os.environ["PGDATABASE"],
            password="not-a-token",
            # pg8000 takes application_name as an argument of its own; the rest go as they are.
            application_name=wanted["application_name"],
            startup_params={k: v for k, v in wanted.items() if k != "application_name"},
        )
        try:
            reported = dict(conn.parameter_statuses)
            for setting, expected in wanted.items():
                value = conn.run("SELECT current_setting(:s)", s=setting)[0][0]
                if value != expected:
                    raise RuntimeError(f"{setting} is {value!r}, expected {expected!r}")
                if setting in reported and reported[setting] != expected:
                    raise RuntimeError(f"{setting} was reported as {reported[setting]!r}, expected {expected!r}")
            if reported.get("TimeZone") != wanted["TimeZone"]:
                raise RuntimeError(f"TimeZone not reported at startup: {reported!r}")
        finally:
            conn.close()
        connections += 1
    except Exception as e:  # noqa: BLE001 - every failure counts
        errors += 1
        print(f"error: {e}", file=sys.stderr)
    time.sleep(0.2)
print(f"connections={connections} errors={errors}")
