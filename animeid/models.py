"""Old name of :mod:`animeid.heads` (the classification heads and their cheap features), kept so that
``from animeid.models import LogisticHead`` goes on working."""
from .heads import *  # noqa: F401,F403
from .heads import __all__  # noqa: F401
