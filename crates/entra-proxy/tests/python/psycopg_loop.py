"""A Python service with no Entra code: plain psycopg, pointed at entra-pg proxy by libpq's variables.

Opens a new connection every few hundred milliseconds for SECONDS seconds, each time checking
current_user, and prints `connections=N errors=E` (the errors themselves on stderr).
"""
import os
import sys
import time

import psycopg

seconds = float(sys.argv[1])
expected_user = os.environ["PGUSER"]
deadline = time.monotonic() + seconds
connections = errors = 0
while time.monotonic() < deadline:
    try:
        # Only libpq's environment (PGHOST, PGPORT, PGUSER, PGDATABASE): no token, no Azure code.
        with psycopg.connect() as conn:
            user = conn.execute("SELECT current_user").fetchone()[0]
            if user != expected_user:
                raise RuntimeError(f"signed in as {user!r}, expected {expected_user!r}")
        connections += 1
    except Exception as e:  # noqa: BLE001 - every failure counts
        errors += 1
        print(f"error: {e}", file=sys.stderr)
    time.sleep(0.2)
print(f"connections={connections} errors={errors}")
