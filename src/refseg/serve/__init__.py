"""``refseg serve``: an HTTP API and a web page over the segmentation pipeline.

``create_app(grounder=..., segmenter=...)`` builds the FastAPI app (see :mod:`refseg.serve.app`);
:class:`~refseg.serve.server.BackgroundServer` runs it on real uvicorn in a thread.
"""

from __future__ import annotations

from refseg.serve.app import create_app

__all__ = ["create_app"]
