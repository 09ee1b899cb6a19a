"""`pipeline extract`: stage one, the frozen backbone over every patch of a split, into shards;
a finished extract answers "nothing to do" without building a net."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import ExtractConfig
from pipeline.features.engine import ExtractResult, extract_split, rebuilt_text
from pipeline.words import plural


@dataclass(frozen=True)
class ExtractSummary:
    result: ExtractResult
    split: str

    def line(self) -> str:
        r, split = self.result, self.split
        adopted = f" (taken from {r.adopted}: the same data)" if r.adopted else ""
        left_out = f"; {r.left_out}" if r.left_out else ""
        if not r.shards_written and not r.relabelled:
            return f"extract {split}: nothing to do, all {r.shards_reused} shards already complete{adopted}{left_out} -> {r.cache_dir}"
        working = r.seconds - r.stages.get("setup", 0.0)
        rate = r.patches / working if working > 0 else 0.0
        skipped = (
            f"{r.skipped} bad images skipped (listed in their shards' 'skipped' attribute; "
            "fix them and rerun without --on-error skip to add them), "
            if r.skipped
            else ""
        )
        resized = (
            f", the split now has {r.resized[1]} images (it had {r.resized[0]})"
            if r.resized
            else ""
        )
        relabelled = (
            f", relabelled {plural(r.relabelled, 'shard')} (the labels changed, not the images)"
            if r.relabelled
            else ""
        )
        reused = (
            f", {plural(r.reused_images, 'image')} of grown shards reused (not computed again)"
            if r.reused_images
            else ""
        )
        return (
            f"extract {split}: {r.images} images, {r.patches} patches in {r.seconds:.1f} s "
            f"({rate:.1f} patches/s), {skipped}{r.bytes_written / 1e9:.3f} GB written, "
            f"{r.shards_written} shards new, {r.shards_reused} reused{adopted}"
            f"{rebuilt_text(r.rebuilt)}{relabelled}{reused}{resized}{left_out}; "
            f"setup {r.stages.get('setup', 0.0):.1f} s (the net, {r.runtime}), read {r.stages['read']:.1f} s, "
            f"compute {r.stages['compute']:.1f} s, write {r.stages['write']:.1f} s -> {r.cache_dir}"
        )


def run(config: ExtractConfig) -> ExtractSummary:
    return ExtractSummary(extract_split(config), config.split)
