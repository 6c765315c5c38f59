"""The API's handle on the central store: the store's own reader (gateway/stores/reads.py).

The API reads only through the query methods of
:class:`~gateway.stores.reads.StoreReader`; the SQL, the table names and the
connections live with each store backend in :mod:`gateway.stores`.
"""

from __future__ import annotations

from gateway.stores import open_reader
from gateway.stores.reads import StoreReader as Reader

__all__ = ["Reader", "open_reader"]
