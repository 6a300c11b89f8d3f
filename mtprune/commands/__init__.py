"""One module per CLI verb; each offers ``register(subparsers)`` and sets ``func`` on its parser.
What the verbs share (arguments, progress bars, JSON, charts) is in :mod:`.common`."""
