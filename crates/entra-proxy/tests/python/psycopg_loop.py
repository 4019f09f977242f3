"""A Python service with no Entra code: plain psycopg, pointed at entra-pg proxy by libpq's variables.

Opens a new connection every few hundred milliseconds for SECONDS seconds, each time checking
current_user and that the session has the settings libpq asked for at startup (PGAPPNAME, PGDATESTYLE,
PGTZ, when set), and prints `connections=N errors=E` (the errors themselves on stderr).
"""
import os
import sys
import time

import psycopg

seconds = float(sys.argv[1])
expected_user = os.environ["PGUSER"]
# What libpq sends as startup parameters from these variables, and the setting each must become.
expected_settings = {
    setting: os.environ[var]
    for var, setting in [("PGAPPNAME", "application_name"), ("PGDATESTYLE", "DateStyle"), ("PGTZ", "TimeZone")]
    if var in os.environ
}
deadline = time.monotonic() + seconds
connections = errors = 0
while time.monotonic() < deadline:
    try:
        # Only libpq's environment (PGHOST, PGPORT, PGUSER, PGDATABASE): no token, no Azure code.
        with psycopg.connect() as conn:
            user = conn.execute("SELECT current_user").fetchone()[0]
            if user != expected_user:
                raise RuntimeError(f"signed in as {user!r}, expected {expected_user!r}")
            for setting, expected in expected_settings.items():
                value = conn.execute("SELECT current_setting(%s)", (setting,)).fetchone()[0]
                if value != expected:
                    raise RuntimeError(f"{setting} is {value!r}, expected {expected!r}")
                # What the client was told at startup (ParameterStatus) agrees.
                reported = conn.info.parameter_status(setting)
                if reported is not None and reported != expected:
                    raise RuntimeError(f"{setting} was reported as {reported!r}, expected {expected!r}")
        connections += 1
    except Exception as e:  # noqa: BLE001 - every failure counts
        errors += 1
        print(f"error: {e}", file=sys.stderr)
    time.sleep(0.2)
print(f"connections={connections} errors={errors}")
