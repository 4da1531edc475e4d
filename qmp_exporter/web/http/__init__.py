"""A small bounded asyncio HTTP/1.1 server, generic: it knows no route, metric or web config.

- ``server``: requests and responses, exact routes, keep-alive, ``Accept-Encoding``, TLS
  ports, and the guard and header hooks the web config plugs into.
- ``connection``: the cap on connections with eviction, TLS start, idle waits, bounded writes.
- ``http_limits``: the deadlines and caps (:class:`~.http_limits.HTTPLimits`) and the
  process-wide TLS memory bounds.
"""
