"""The latent explorer: a local web app that decodes points of a run's latent space live.

``vaelab explore RUN`` loads the model once and serves ``vaelab/web`` plus a small JSON API
(see ``server``); ``session`` holds the models and checks every latent a client sends.
"""

from vaelab.viz.explorer.server import Explorer, make_server, serve_in_thread
from vaelab.viz.explorer.session import BadRequest, LoadedModel

__all__ = ["BadRequest", "Explorer", "LoadedModel", "make_server", "serve_in_thread"]
