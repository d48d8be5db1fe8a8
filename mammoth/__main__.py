"""``python -m mammoth``: the command line of :mod:`mammoth.app.cli`."""

from mammoth.app.cli import hydra_main, main

__all__ = ["hydra_main", "main"]

if __name__ == "__main__":
    main()
