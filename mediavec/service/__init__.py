"""``mediavec serve``: the HTTP search service (search while ingesting).

- :mod:`mediavec.service.settings`: the ``serve`` settings section (``MEDIAVEC_SERVE__*``).
- :mod:`mediavec.service.api`: the request and response models and the endpoint table, the one
  source of both the routes and the OpenAPI document (:mod:`mediavec.service.openapi`).
- :mod:`mediavec.service.middleware`: errors as JSON, the API key, the size limit, CORS, metrics.
- :mod:`mediavec.service.app`: :func:`~mediavec.service.app.make_app` and the handlers.

This module imports nothing, so that :mod:`mediavec.settings` can compose the section without a cycle.
"""
