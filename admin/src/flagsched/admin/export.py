"""Writing (or checking) the exported contract files checked in under schemas/.

The JSON Schema files live in schemas/jsonschema/ (one per model, stale files are
removed); the AsyncAPI document lives in schemas/asyncapi/.
"""

from __future__ import annotations

from pathlib import Path

import flagsched.schemas
from flagsched.schemas import asyncapi
from flagsched.schemas.jsonschema import documents, render

#: The contract package's own folder: the exported files ship in the schemas part.
SCHEMAS_DIR = Path(flagsched.schemas.__file__).resolve().parent
OUT_DIR = SCHEMAS_DIR / "jsonschema"
ASYNCAPI_DIR = SCHEMAS_DIR / "asyncapi"
ASYNCAPI_FILE = asyncapi.FILE_NAME


def export(
    *, check: bool = False, out_dir: Path = OUT_DIR, asyncapi_dir: Path = ASYNCAPI_DIR
) -> list[str]:
    """Write every contract file, or with ``check`` list the files that differ.

    JSON Schema files are named by file name, the AsyncAPI document as
    ``asyncapi/<file name>``.
    """
    drift = []
    docs = documents()
    for name, doc in docs.items():
        path = out_dir / name
        text = render(doc)
        if check:
            if not path.exists() or path.read_text("utf-8") != text:
                drift.append(name)
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text, "utf-8")
    stale = {p.name for p in out_dir.glob("*.json")} - set(docs)
    drift.extend(sorted(stale) if check else [])
    if not check:
        for name in stale:
            (out_dir / name).unlink()
    if _export_asyncapi(asyncapi_dir / ASYNCAPI_FILE, check=check):
        drift.append(f"asyncapi/{ASYNCAPI_FILE}")
    return drift


def _export_asyncapi(path: Path, *, check: bool) -> bool:
    """Write the AsyncAPI document; with ``check``, return whether it is stale."""
    text = asyncapi.render(asyncapi.document())
    if check:
        return not path.exists() or path.read_text("utf-8") != text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    return False
