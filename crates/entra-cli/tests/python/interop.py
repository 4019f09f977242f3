"""Microsoft's Python clients against `entra-pg emulate`: azure-identity's ManagedIdentityCredential fetches a
token from the emulator's IMDS (AZURE_POD_IDENTITY_AUTHORITY_HOST), and azure-postgresql-auth's psycopg
EntraConnection signs in with it, the user name read from the token. Prints `current_user` on success."""

import os
import sys

from azure.identity import ManagedIdentityCredential
from azure_postgresql_auth.psycopg3 import EntraConnection

SCOPE = "https://ossrdbms-aad.database.windows.net/.default"

credential = ManagedIdentityCredential()
token = credential.get_token(SCOPE)
if token.token.count(".") != 2:
    sys.exit("the credential returned something that is not a JWT")

with EntraConnection.connect(
    host=os.environ["PGHOST"],
    port=os.environ["PGPORT"],
    dbname=os.environ["PGDATABASE"],
    sslmode="verify-full",
    sslrootcert=os.environ["PGSSLROOTCERT"],
    credential=credential,
) as conn:
    row = conn.execute("SELECT current_user").fetchone()
    print(f"current_user={row[0]}")
