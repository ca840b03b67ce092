"""``python -m pedattr``: the ``pedattr`` program, for when its script is not on the PATH."""

from pedattr.cli import console_main

console_main()
