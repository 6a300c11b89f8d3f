"""Attribution methods: one module each, registered with :func:`register_method`.

    ap            gradient x activation (the default)
    ig            integrated gradients
    fisher        the diagonal Fisher information of each unit's mask (Kwon et al.)
    activation    mean |activation| (a baseline)
    random-label  ap towards a random target (the paper's control)
    random        seeded noise (a baseline)
    magnitude     weight norms, no data
    svd           truncated SVDs of the pruned size (a stand-in baseline, no scores)

A new built-in method is one more module here (imported automatically); your own can live in a
module listed in ``MTPRUNE_PLUGINS`` (see :mod:`mtprune.methods.base` and docs/ARCHITECTURE.md).
"""

from mtprune.methods.base import Method, all_methods, get_method, method_names, register_method
from mtprune.registry import import_members

# every module of this package registers its method when imported: the built-in ones in this order
# (the CLI's and the dashboard's lists keep it), then any other module here, by name
import_members(__name__, __path__, first=("ap", "ig", "random_label", "activation", "random", "magnitude", "fisher",
                                          "svd"), helpers=("base", "engine"))

__all__ = ["Method", "all_methods", "get_method", "method_names", "register_method"]
