"""Image paths named by dataset files stay inside the dataset: one check for every reader.

A COCO `file_name`, a CSV's `image`, a VOC `<filename>` (or a symlink among the images) may
name any file: `../`, an absolute path. Each reader passes the image path it built through
`contained`, which refuses one outside the dataset's root (or --image-dir). Symlinks are
followed, the root's too: a link inside the tree to a file outside it is refused like a
`../` (a dataset that links its images from elsewhere is copied, or given by its real
folder); a root that is itself a link is fine.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pipeline.errors import DataError


def real(path: Path) -> Path:
    """`path` absolute, every symlink followed, `..` gone (the file need not exist)."""
    return Path(os.path.realpath(path))


def contained(path: Path, roots: Path | Iterable[Path], listed_in: Path | str, fix: str) -> Path:
    """`path` itself when it lies under one of `roots` (both with symlinks followed); else
    DataError `<listed_in>: image <path> is outside the dataset (<root>) ...; <fix>`."""
    roots = [roots] if isinstance(roots, Path) else list(roots)
    try:
        target = real(path)
    except ValueError:  # a NUL byte: no file system has such a name
        raise DataError(f"{listed_in}: image {str(path)!r} is not a file name; {fix}") from None
    if any(target.is_relative_to(real(root)) for root in roots):
        return path
    where = " or ".join(str(root) for root in roots)
    resolved = "" if str(target) == str(path) else f", it leads to {target}"
    raise DataError(f"{listed_in}: image {path} is outside the dataset ({where}{resolved}); {fix}")
