"""Image paths named by dataset files stay inside the dataset: one check for every reader.

A COCO `file_name`, a CSV's `image`, a VOC `<filename>` may name any file: `../`, an
absolute path. Each reader passes the image path it built through `contained`, which
refuses a name that leads out of the dataset's root (or --image-dir). The links the tree
holds are the user's own (a subset or a custom split made by linking, without copying):
a path named inside the root without `..` is followed wherever its links lead; a name with
`..` must stay inside the root with every link followed, so that `..` never leaves
through a link either (docs/datasets.md#what-each-format-gives).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pipeline.errors import DataError


def real(path: Path) -> Path:
    """`path` absolute, every symlink followed, `..` gone (the file need not exist)."""
    return Path(os.path.realpath(path))


def _named_inside(path: Path, root: Path) -> bool:
    """Whether `path` lies under `root` by its name alone: no `..`, links not followed."""
    if ".." in Path(path).parts:
        return False
    return Path(os.path.abspath(path)).is_relative_to(Path(os.path.abspath(root)))


def contained(path: Path, roots: Path | Iterable[Path], listed_in: Path | str, fix: str) -> Path:
    """`path` itself when it is named under one of `roots`, or lies under one with every link
    followed; else DataError `<listed_in>: image <path> is outside the dataset (<root>)
    ...; <fix>`."""
    roots = [roots] if isinstance(roots, Path) else list(roots)
    try:
        target = real(path)
    except ValueError:  # a NUL byte: no file system has such a name
        raise DataError(f"{listed_in}: image {str(path)!r} is not a file name; {fix}") from None
    if any(_named_inside(path, root) or target.is_relative_to(real(root)) for root in roots):
        return path
    where = " or ".join(str(root) for root in roots)
    resolved = "" if str(target) == str(path) else f", it leads to {target}"
    raise DataError(f"{listed_in}: image {path} is outside the dataset ({where}{resolved}); {fix}")
