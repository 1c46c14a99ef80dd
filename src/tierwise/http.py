"""One pooled aiohttp client session, shared by every adapter of a Router.

Created lazily inside the running event loop (aiohttp sessions belong to one loop), so building a
Router does no I/O and needs no loop.
"""

from __future__ import annotations

import aiohttp


class HttpPool:
    """Holds the shared ``aiohttp.ClientSession`` and its connection pool."""

    def __init__(self, *, limit: int = 1000, keepalive_s: float = 30.0) -> None:
        self._limit = limit
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limit, limit_per_host=0, keepalive_timeout=self._keepalive_s, ttl_dns_cache=300
            )
            # No default timeout: every request passes its own from the provider's config.
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
                headers={"User-Agent": "tierwise"},
            )
            self._session = session
        return session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
