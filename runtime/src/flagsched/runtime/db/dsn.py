"""The one DSN redactor: what a log line, an exception or a status may show of a libpq DSN.

libpq accepts a DSN as a URL (``postgresql://user:secret@host/db``), as
``key=value`` pairs (``host=db password=secret``) and as a URL with the secret
in its query (``postgresql://user@host/db?password=secret``). Parsing it with
libpq's own parser (``psycopg.conninfo``) finds the secret in every form, where
matching text would miss one; what libpq does not read as a secret is not one.
"""

from __future__ import annotations

import re

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

#: libpq connection parameters that hold a secret (the password, the client key's password).
SECRET_PARAMS = frozenset({"password", "sslpassword"})
MASK = "***"
#: Shown instead of a DSN libpq cannot parse: any piece of it might be the password.
UNPARSABLE = "<unparsable DSN>"

_FIRST = ("host", "hostaddr", "port", "dbname", "user")
_QUOTED = re.compile(r'"[^"]*"')


def redact_dsn(dsn: str) -> str:
    """``dsn`` with every secret parameter shown as ``***``, in any of libpq's forms.

    A DSN without a secret is returned unchanged; one with a secret comes back in
    ``key=value`` form (``host=db user=app password=*** dbname=flags``); one libpq
    cannot parse comes back as :data:`UNPARSABLE`.
    """
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return UNPARSABLE
    if SECRET_PARAMS.isdisjoint(params):
        return dsn
    # Where it points first, as a reader looks for it.
    ordered = sorted(params, key=lambda k: _FIRST.index(k) if k in _FIRST else len(_FIRST))
    shown = {k: MASK if k in SECRET_PARAMS else str(params[k]) for k in ordered}
    return make_conninfo(**shown)


def dsn_problem(dsn: str) -> str | None:
    """Why libpq cannot parse ``dsn`` (with the pieces it quotes hidden), or None if it can.

    libpq's parse errors quote the offending piece of the DSN (``unexpected spaces
    found in "<password>"``), so every quoted piece is replaced by ``"..."``.
    """
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        return _QUOTED.sub('"..."', str(exc).strip())
    return None
