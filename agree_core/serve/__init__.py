"""One process serves an index to many: ``agree serve`` and the client behind ``http://`` indexes.

- :mod:`agree_core.serve.client`: :class:`RemoteIndex`, what ``PageIndex.open("http://...")``
  returns. It needs only httpx: no torch, no model (the server encodes queries).
- :mod:`agree_core.serve.host`: :class:`IndexHost`, the open index, its writer thread (jobs)
  and its reader thread (searches answered while a job indexes).
- :mod:`agree_core.serve.app`: the FastAPI application (JSON API, page images, heatmaps,
  the web page); :mod:`agree_core.serve.command`: ``agree serve``.

Nothing here is imported by ``agree_core`` at import time; the server's dependencies are
the ``serve`` extra (``pip install 'agree[serve]'``).
"""
