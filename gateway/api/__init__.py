"""Read-only query API over the central store, compatible with the vendor's v1 and v2.

Modules: ``server`` (uvicorn, :func:`serve_api`), ``app`` (the FastAPI app),
``v1``/``v2`` (the endpoints), ``auth``/``tokens``/``ratelimit`` (who may ask
and how often), ``catalog`` (the registry and scopes), ``feedback`` (feedback ids),
``metrics`` (Happy Index, buckets), ``timeutil``, ``output`` (JSON and CSV),
``rows``/``schemas`` (row shapes and their docs), ``db`` (the store's reader,
whose queries live with each store in :mod:`gateway.stores`).
"""

from __future__ import annotations

from gateway.api.server import serve_api

__all__ = ["serve_api"]
