"""Entry points: ``seqtag serve`` calls :func:`run`; ``uvicorn seqtag.service.main:app`` builds the app from the
environment (``app`` is made on first access, so importing :func:`run` reads no settings)."""

from __future__ import annotations

import logging
import sys
from typing import Any

from pydantic import ValidationError

from seqtag.service.app import create_app
from seqtag.service.settings import Settings


def __getattr__(name: str) -> Any:
    if name == "app":
        app = create_app()
        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(models: str | None = None, host: str | None = None, port: int | None = None,
        device: str | None = None, workers: int | None = None, int8: bool | None = None) -> int:
    """Start uvicorn with Settings from the environment, the arguments given overriding it.

    With ``workers`` > 1, uvicorn starts that many processes, each building its own app
    (models, batchers, metrics) from the environment: stateless replicas behind one port.
    """
    import os

    import uvicorn

    from seqtag.models.runtime import pick_device

    overrides = {"models_dir": models, "host": host, "port": port, "device": device, "workers": workers, "int8": int8}
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
        pick_device(settings.device)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"seqtag: error: invalid service settings: {problems}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"seqtag: error: {exc}", file=sys.stderr)
        return 2
    level = "DEBUG" if settings.log_level == "trace" else settings.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.workers > 1:
        # each worker re-reads the environment, so pass the command-line overrides through it
        for key, value in overrides.items():
            if value is not None:
                os.environ[f"SEQTAG_{key.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
        uvicorn.run("seqtag.service.main:app", host=settings.host, port=settings.port, workers=settings.workers,
                    log_level=settings.log_level, timeout_graceful_shutdown=10,
                    timeout_keep_alive=settings.keep_alive_s)
        return 0
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=10, timeout_keep_alive=settings.keep_alive_s)
    return 0
