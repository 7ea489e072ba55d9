"""The command line every benchmark script starts from (imported from the script's own
folder, which Python puts first on the path when it runs `python benchmarks/<script>.py`)."""

from __future__ import annotations

import argparse


def int_options(doc: str, **defaults: int | None) -> argparse.ArgumentParser:
    """A parser described by the first line of `doc`, with one integer option per keyword
    in order (`image_size=128` is `--image-size`, default 128)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, default in defaults.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)
    return parser
