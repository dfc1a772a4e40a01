"""A small Python client for the seqtag HTTP API (``httpx``, synchronous).

    from seqtag.service.client import SeqtagClient
    with SeqtagClient("http://127.0.0.1:8000") as client:
        words = client.segment("我爱北京天安门")[0]["tokens"]
        people = client.ner(["张三在北京工作。"], scores=True)
"""

from __future__ import annotations

from typing import Any, Sequence

import httpx


class SeqtagError(Exception):
    """An error answer from the service, with its HTTP status and JSON error code."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class SeqtagClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, token: str | None = None,
                 timeout: float = 30.0, client: httpx.Client | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = client or httpx.Client(base_url=base_url, timeout=timeout)
        self._client.headers.update(headers)

    def __enter__(self) -> "SeqtagClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._client.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                raise SeqtagError(response.status_code, error["code"], error["message"])
            except (ValueError, KeyError, TypeError):
                raise SeqtagError(response.status_code, "http_error", response.text) from None
        return response.json() if response.content else None

    def _tag(self, endpoint: str, texts: str | Sequence[str], **options: Any) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"text": texts} if isinstance(texts, str) else {"texts": list(texts)}
        body.update({k: v for k, v in options.items() if v is not None})
        return self._call("POST", f"/v1/{endpoint}", json=body)["results"]

    def segment(self, texts: str | Sequence[str], **options: Any) -> list[dict[str, Any]]:
        """Options: model, dictionary, scores, offsets ("codepoints" or "utf16")."""
        return self._tag("segment", texts, **options)

    def pos(self, texts: str | Sequence[str], **options: Any) -> list[dict[str, Any]]:
        return self._tag("pos", texts, **options)

    def ner(self, texts: str | Sequence[str], **options: Any) -> list[dict[str, Any]]:
        return self._tag("ner", texts, **options)

    def analyze(self, texts: str | Sequence[str], **options: Any) -> list[dict[str, Any]]:
        return self._tag("analyze", texts, **options)

    def models(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/models")["models"]

    def reload(self) -> dict[str, Any]:
        return self._call("POST", "/v1/models/reload")

    def put_dictionary(self, name: str, entries: Sequence[str | dict[str, str]]) -> dict[str, Any]:
        return self._call("PUT", f"/v1/dictionaries/{name}", json={"entries": list(entries)})

    def get_dictionary(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/dictionaries/{name}")

    def delete_dictionary(self, name: str) -> None:
        self._call("DELETE", f"/v1/dictionaries/{name}")
