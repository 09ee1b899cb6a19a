"""Settings out of their range (issue 26, items 7-9): a head setting that would save a NaN,
untrained or unfitted head, an extract setting that would hang, crash or delete finished
shards, a serve limit that would crash the server later: each is one line naming its flag,
exit code 2, before any work, and nothing already computed is touched."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from cli_helpers import error_lines, extract_args, invoke

from pipeline.errors import MidlevelError


def refused(args: list[str], flag: str) -> str:
    code, out = invoke(*args)
    assert code == 2 and "Traceback" not in out, out
    (line,) = error_lines(out)
    assert line.startswith(f"error: {flag} "), line
    return line


def head_files(cache) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.glob("trainval-*/heads/*"))


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--lr", "nan"),  # saved a NaN head, printed a finite "final loss"
        ("--background-weight", "nan"),  # score then wrote mAP nan with exit 0
        ("--epochs", "0"),  # saved an untrained MLP
        ("--hidden", "0"),  # saved a constant head
        ("--svm-c", "0"),  # ZeroDivisionError traceback
        ("--svm-epochs", "0"),  # saved an unfitted SVM: score died with NotFittedError
        ("--lr", "inf"),
        ("--momentum", "1"),
        ("--dropout", "1"),
        ("--k", "nan"),
        ("--seed", "-1"),
    ],
)
def test_a_head_setting_out_of_range_is_refused_and_saves_nothing(
    shapes_cache, tmp_path, flag, value
):
    cache, common = shapes_cache
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    common = [a if a != str(cache) else str(copy) for a in common]
    before = head_files(copy)
    head = "svm" if flag.startswith("--svm") else "mlp"
    line = refused(["fit", "--head", head, *common, flag, value], flag)
    assert value in line
    assert head_files(copy) == before


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--limit", "0"),  # deleted the finished shards and said "nothing to do"
        ("--limit", "-1"),  # silently dropped the last image
        ("--images-per-shard", "0"),  # ZeroDivisionError
        ("--input-size", "0"),  # hung
        ("--scales", "0"),
        ("--overlap", "1"),
        ("--min-scale", "nan"),
        ("--background-ratio", "inf"),
        ("--workers", "-1"),
        ("--batch-size", "0"),
    ],
)
def test_an_extract_setting_out_of_range_is_refused_and_keeps_every_shard(
    shapes_voc, finished_split, tmp_path, flag, value
):
    cache = tmp_path / "cache"
    shutil.copytree(finished_split.parent, cache)
    shards = {p: p.read_bytes() for p in cache.glob("test-*/shard-*.h5")}
    assert len(shards) == 4
    args = extract_args(shapes_voc, cache, "--workers", "0")
    args = [*args[: args.index(flag)], *args[args.index(flag) + 2 :]] if flag in args else args
    refused([*args, flag, value], flag)
    assert {p: p.read_bytes() for p in cache.glob("test-*/shard-*.h5")} == shards


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--max-upload-mb", "inf"), ("--max-upload-mb", "nan"), ("--max-upload-mb", "0"),
     ("--port", "70000"), ("--max-pending", "0"), ("--workers-threads", "0")],
)  # fmt: skip
def test_a_serve_limit_out_of_range_is_refused_before_serving(tmp_path, flag, value):
    """`--max-upload-mb inf` started the server, whose /health then answered 500."""
    refused(["serve", str(tmp_path), flag, value], flag)


def test_a_head_that_learnt_nan_is_never_saved(tmp_path):
    """A setting in range can still diverge: its head is refused at save, not written."""
    from pipeline.heads.mlp import MLPHead
    from pipeline.store.head_files import HeadRecord, save_head

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 8)).astype(np.float32), np.arange(40) % 3
    head = MLPHead(hidden=4, epochs=1).fit(X, y)
    head.model_[0].weight.data[0, 0] = float("nan")
    path = tmp_path / "heads" / "mlp.safetensors"
    with pytest.raises(MidlevelError, match="NaN or Inf .*not saved"):
        save_head(path, head, HeadRecord(head="mlp", classes=("a", "b")))
    assert not path.exists() and not path.with_suffix(".json").exists()
