"""Named user dictionaries stored as ``NAME.json`` files (written atomically: temp file + ``os.replace``).

A file holds ``{"name": NAME, "entries": [ "word" | {"text": ..., "label": ...}, ... ]}``.
Entries are read back when the file changes on disk (checked by mtime and size),
and compiled :class:`~models.dictionary.Dictionary` matchers are cached per model
normaliser until then.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from seqtag.models.dictionary import Dictionary, DictionaryError, Entry, entries_to_json, to_entries
from seqtag.service.settings import NAME_PATTERN

_NAME = re.compile(NAME_PATTERN)


class DictionaryNotFound(KeyError):
    pass


def valid_name(name: str) -> bool:
    # fullmatch: with match, "$" would also accept a name ending in a newline ("brands\n")
    return bool(_NAME.fullmatch(name)) and name not in (".", "..")


class DictionaryStore:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[tuple[int, int], list[Entry]]] = {}
        self._compiled: dict[tuple[str, tuple[int, int], Any], Dictionary] = {}

    def _path(self, name: str) -> Path:
        if not valid_name(name):
            raise ValueError(f"invalid dictionary name {name!r}")
        return self.directory / f"{name}.json"

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json") if valid_name(p.stem))

    def _stamp(self, path: Path) -> tuple[int, int]:
        try:
            st = path.stat()
        except FileNotFoundError:
            raise DictionaryNotFound(path.stem) from None
        return st.st_mtime_ns, st.st_size

    def entries(self, name: str) -> list[Entry]:
        return self._load(name)[1]

    def _load(self, name: str) -> tuple[tuple[int, int], list[Entry]]:
        path = self._path(name)
        stamp = self._stamp(path)
        with self._lock:
            cached = self._entries.get(name)
            if cached is not None and cached[0] == stamp:
                return cached
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DictionaryNotFound(name) from None
        except (OSError, ValueError) as exc:
            raise DictionaryError(f"stored dictionary {name!r} is unreadable ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
            raise DictionaryError(f"stored dictionary {name!r} is not a dictionary file")
        loaded = (stamp, to_entries(data["entries"]))
        with self._lock:
            self._entries[name] = loaded
        return loaded

    def compiled(self, name: str, normalize: Callable[[str], str], key: Any,
                 normalize_many: Callable[[list[str]], list[str]] | None = None) -> Dictionary:
        """The matcher of stored dictionary ``name`` for a model whose normaliser is identified by ``key``."""
        stamp, entries = self._load(name)
        cache_key = (name, stamp, key)
        with self._lock:
            found = self._compiled.get(cache_key)
        if found is None:
            found = Dictionary(entries, normalize=normalize, normalize_many=normalize_many)
            with self._lock:
                # keep only the current version of each dictionary, and not too many
                for k in [k for k in self._compiled if k[0] == name and k[1] != stamp]:
                    del self._compiled[k]
                if len(self._compiled) >= 64:
                    self._compiled.clear()
                self._compiled[cache_key] = found
        return found

    def put(self, name: str, entries: list[Entry]) -> bool:
        """Write (replace) a dictionary; True when it is new."""
        path = self._path(name)
        self.directory.mkdir(parents=True, exist_ok=True)
        created = not path.exists()
        data = {"name": name, "entries": entries_to_json(entries)}
        try:
            body = json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: keep it as a \u escape
            body = json.dumps(data, ensure_ascii=True, indent=1).encode("ascii")
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._forget(name)
        return created

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise DictionaryNotFound(name) from None
        self._forget(name)

    def _forget(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)
            for k in [k for k in self._compiled if k[0] == name]:
                del self._compiled[k]
