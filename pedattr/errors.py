"""The error a command's run raises when it fails after its input was accepted.

Kept apart from the modules that raise it so that the command line can catch it without
importing torch.
"""


class RunFailed(RuntimeError):
    """A run that cannot go on (training diverged, an export disagrees with PyTorch); the
    message says why and what is left on disk. ``pedattr`` prints it and exits with status 1."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, raised where the command stops; ``signum`` is the signal received, so
    that ``pedattr`` can end by it (a plain KeyboardInterrupt counts as SIGINT)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
