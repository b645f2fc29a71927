"""JSON Lines, read one way everywhere: a bad line is one UserError naming the file and line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from exo2ego_edge.errors import UserError


def read_jsonl(path: str | os.PathLike, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The JSON objects of ``path``, one per non-blank line, each holding the ``required`` keys."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}: line {n}: invalid JSON at column {e.colno}: {e.msg}") from None
                if not isinstance(row, dict):
                    raise UserError(f"{path}: line {n}: expected a JSON object")
                missing = [k for k in required if k not in row]
                if missing:
                    raise UserError(f"{path}: line {n}: row lacks {', '.join(missing)}")
                rows.append(row)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a JSONL file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text at byte {e.start}") from None
    return rows
