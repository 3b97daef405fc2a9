"""Writing (or checking) the exported JSON Schema files checked in under schemas/jsonschema/."""

from __future__ import annotations

from pathlib import Path

from flagsched.schemas.jsonschema import documents, render

OUT_DIR = Path(__file__).resolve().parents[1] / "schemas" / "jsonschema"


def export(*, check: bool = False, out_dir: Path = OUT_DIR) -> list[str]:
    """Write every schema file, or with ``check`` list the files that differ."""
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
    return drift
