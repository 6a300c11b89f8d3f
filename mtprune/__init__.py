"""mtprune: find which neurons of a multi-task language model each task needs, and prune the rest."""

__version__ = "0.1.0"

from mtprune.errors import MtpruneError  # noqa: E402

__all__ = ["MtpruneError", "__version__"]
