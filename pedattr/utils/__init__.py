"""Small helpers every layer may use, importing no other pedattr module: atomic file writes
(:mod:`~pedattr.utils.io`), standard JSON (:mod:`~pedattr.utils.json`), arrays from tensors
(:mod:`~pedattr.utils.arrays`) and the ``--device`` option (:mod:`~pedattr.utils.device`)."""
