"""The exporter-toolkit web config file (``--web.config.file``): TLS and basic auth.

Reads the same YAML as Go exporters built on prometheus/exporter-toolkit::

    tls_server_config:
      cert_file: server.crt          # or inline PEM: cert: ...
      key_file: server.key           # or inline PEM: key: ...
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: ca.crt         # or inline PEM: client_ca: ...
      client_allowed_sans: [prometheus.example.org]
      min_version: TLS12
      max_version: TLS13
      cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
      prefer_server_cipher_suites: true
      curve_preferences: [X25519]
    http_server_config:
      http2: false                   # accepted; this server speaks HTTP/1.1 only
      headers: {X-Frame-Options: deny}
    basic_auth_users:
      prometheus: $2y$10$...         # bcrypt hashes

Relative file names are relative to the web config file's directory, as in the toolkit.
Unknown keys are errors, and every error is reported at once with its path.

What Python's ``ssl`` module cannot do is refused with a message rather than approximated:
``RequireAnyClientCert`` (accept any certificate without verifying it), TLS 1.0/1.1,
``rate_limit``, and more than one entry in ``curve_preferences``.

bcrypt is an optional dependency (``pip install qmp-exporter[tls]``), imported only when
``basic_auth_users`` is configured.

One module per job, as exporter-toolkit keeps them in separate files:

- ``settings``: read and validate the file into a :class:`~.settings.WebConfig`.
- ``tls_settings``: the ``tls_server_config`` section and the Go name tables it uses.
- ``tls``: build the server's SSL context; swap in a new one per connection (SNI callback).
- ``basic_auth``: parse ``Authorization`` headers; bcrypt hashes, their cache and the decoy.
- ``checker``: check credentials on the event loop, bcrypt in one worker, rate-limited
  (the token buckets are :mod:`qmp_exporter.web.ratelimit`'s).
- ``watcher``: keep the config in force, re-reading it when its files change.
- ``guard``: the HTTP server's guard and extra headers, from the config in force.
"""
