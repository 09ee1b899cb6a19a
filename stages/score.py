"""`pipeline score`: a fitted head's pooled image scores over a split, AP where it is labelled,
the run's files, and the VOC evaluation server's files on request."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.config import ScoreConfig
from pipeline.evaluation.scoring import ScoreResult, score_split
from pipeline.reporting.provenance import sidecar_path
from pipeline.reporting.runs import scores_csv, write_run

MISSING_FILE = "missing-images.txt"


@dataclass(frozen=True)
class ScoreSummary:
    result: ScoreResult

    def notes(self) -> list[tuple[str, str | None]]:
        """(line, colour) said before the table: None for plain output, else a warning."""
        config, left_out = self.result.config, len(self.result.left_out)
        notes = []
        if left_out:
            notes.append((
                f"warning: {left_out} images that extract skipped (--on-error skip) are not "
                f"scored and not in the AP; listed in {sidecar_path(config.output)}", "yellow",
            ))  # fmt: skip
        if config.export:
            notes.append(
                (
                    f"export: {len(self.result.classes)} comp1 files -> {config.export}/results/",
                    None,
                )
            )
            if left_out:
                notes.append((
                    f"warning: the export is INCOMPLETE: {left_out} images of split "
                    f"{config.split} have no score in any file (listed in {config.export}/"
                    f"{MISSING_FILE}); the evaluation server refuses it: fix the images, extract "
                    "again without --on-error skip, and score again", "red",
                ))  # fmt: skip
        return notes

    def line(self) -> str:
        """The AP table and a summary line (or the one line of a split without labels)."""
        result, config = self.result, self.result.config
        images, scores = (
            len(result.images.image_ids),
            scores_csv(config.output, config.scores_output),
        )
        if not result.labelled:
            return (
                f"score {config.split}: {images} images, no labels in this split (no AP) in "
                f"{result.seconds:.1f} s -> {scores}"
            )
        rows = result.table()
        lines = [f"{'class':<14}{'AP voc07':>10}{'AP area':>10}{'pos':>7}{'images':>8}"]
        lines += [
            f"{r['class']:<14}{r['ap_voc07']:>10.2f}{r['ap_area']:>10.2f}{r['positives']:>7}{r['images']:>8}"
            for r in rows
        ]
        left_out = len(result.left_out)
        skipped = f" ({left_out} skipped at extract, not scored)" if left_out else ""
        lines.append(
            f"score {config.split}: {images} images{skipped}, {len(result.classes)} classes, "
            f"{result.pooling}, mAP {rows[-1]['ap_voc07']:.2f} (VOC07 11-point), "
            f"{rows[-1]['ap_area']:.2f} (area) in {result.seconds:.1f} s -> {config.output}, {scores}"
        )
        return "\n".join(lines)


def run(config: ScoreConfig) -> ScoreSummary:
    result = score_split(config)
    write_run(result)
    if config.export:
        export_submission(Path(config.export), result)
    return ScoreSummary(result)


def export_submission(directory: Path, result: ScoreResult) -> Path:
    """The server's files under results/<VOC year>/<Main|Action>/, ready to tar: per class
    `comp1_cls_<split>_<class>.txt` (image id, score), or for actions
    `comp10_action_<split>_<action>.txt` (image id, person, score). Images extract skipped
    are in no file (the server refuses that): they are listed in DIR/missing-images.txt,
    outside results/ so a tar of results/ never carries it."""
    attrs, split = result.cache.attrs(), result.config.split
    action = attrs.get("task", "object") == "action"
    folder = directory / "results" / str(attrs.get("voc_year", "VOC2012"))
    folder /= "Action" if action else "Main"
    folder.mkdir(parents=True, exist_ok=True)
    ids = [i.replace("/", " ") for i in result.images.image_ids]  # action: "<image> <person>"
    name = "comp10_action_{}_{}.txt" if action else "comp1_cls_{}_{}.txt"
    for c, cls in enumerate(result.classes):
        column = result.images.scores[:, c]
        lines = (f"{i} {score:.6f}\n" for i, score in zip(ids, column, strict=True))
        (folder / name.format(split, cls)).write_text("".join(lines))
    missing = directory / MISSING_FILE
    if result.left_out:
        missing.write_text("".join(f"{s['id']}\t{s['reason']}\n" for s in result.left_out))
    else:
        missing.unlink(missing_ok=True)
    return folder
