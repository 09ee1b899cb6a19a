"""An exported model without torch: numpy, Pillow and ONNX Runtime load the folder `pipeline
export` wrote and give a photo's class scores and score maps, as `pipeline predict` does
(the same patches, resizes and pooling; docs/deploy.md). `Model.load(folder).predict(photo)`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image

from pipeline.config import GridConfig
from pipeline.cores import cpu_threads
from pipeline.datasets.pixels import array_rgb, decode_rgb_bytes, read_rgb, shown_rgb
from pipeline.deploy.bundle import FIX, check_columns, read_manifest
from pipeline.deploy.pooling import image_log_scores, log_link, score_power
from pipeline.errors import CacheError
from pipeline.evaluation.score_maps import score_map
from pipeline.features.patches import patch_grid
from pipeline.features.resize import resized
from pipeline.features.work import check_photo_work

# Each graph's inputs and output, as this module feeds and reads them (docs/deploy.md)
PORTS = {
    "crop.onnx": (("image", "boxes"), "margins"),
    "trunk.onnx": (("image",), "fmap"),
    "head.onnx": (("fmap", "rois"), "margins"),
}


@dataclass(frozen=True)
class Prediction:
    """One photo's result: scores [C] on p's scale (power means), log_scores [C] as score's
    ap-scores.csv has them, each patch's box [N, 4] and p(class | patch) [N, C]."""

    name: str
    classes: tuple[str, ...]
    scores: np.ndarray
    log_scores: np.ndarray
    boxes: np.ndarray
    probs: np.ndarray
    width: int
    height: int
    pixels: np.ndarray  # [H, W, 3] uint8, the photo as shown (EXIF orientation applied)
    milliseconds: float

    def top(self, n: int = 5) -> list[tuple[str, float]]:
        """The n best classes and their scores, best first (ties in class order)."""
        order = np.argsort(-self.scores, kind="stable")[:n]
        return [(self.classes[i], float(self.scores[i])) for i in order]


class Model:
    """An exported head with its frozen net: `predict` a photo, `score_maps` of the result.
    One ONNX Runtime session per graph, shared by every thread that calls predict."""

    def __init__(self, folder: Path, info: dict, threads: int | None = None):
        self.folder, self.info = Path(folder), info
        self.classes = tuple(info["classes"])
        self.fingerprint = info["fingerprint"]
        self.grid = GridConfig(**info["grid"])
        self.mode, self.input_size = info["mode"], info["input_size"]
        self.threads = threads or cpu_threads()
        self.sessions = {name: self._session(name) for name in info["files"]}
        graph = "crop.onnx" if self.mode == "crop" else "head.onnx"
        check_columns(folder, info, graph, self.sessions[graph].get_outputs()[0].shape[-1])

    @classmethod
    def load(cls, folder: str | Path, *, threads: int | None = None) -> Model:
        """The model in `folder`, its files checked against model.json's SHA-256 first;
        `threads`: ONNX Runtime's threads per run (default: every core this process has)."""
        return cls(Path(folder), read_manifest(Path(folder)), threads)

    def _session(self, name: str):
        """The graph under ONNX Runtime, its inputs and output those this class feeds and
        reads; CacheError naming the graph otherwise (its SHA-256 says only who wrote it)."""
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # Shared mode's graphs run on a whole photo resized per scale and on its maps:
        # ONNX Runtime's memory arena kept about twice what a run needs, and held it after
        # (a 4:3 photo: 0.91 GiB peak with it, 0.48 without; the widest photo the work limit
        # admits, twice in a row: 2.69 / 2.25), for 15-30% of the trunk's speed and none of
        # the head's (docs/serve.md#memory). Crop mode's batches of patches keep it.
        # The two graphs take turns with each other and with the resize: their idle threads
        # sleep rather than spin on the cores the other needs (a photo at 3 scales: 0.067 s
        # with spinning, 0.041 without; int8 0.055 / 0.030). Crop's one graph spins.
        options.enable_cpu_mem_arena = name == "crop.onnx"
        spinning = "1" if name == "crop.onnx" else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        path = self.folder / name
        try:
            session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT's own errors: no graph it runs
            problem = f"ONNX Runtime cannot load it ({type(exc).__name__})"
            raise CacheError(f"{path}: {problem}; {FIX}") from None
        inputs, output = PORTS[name]
        found = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
        if found != (list(inputs), [output]):
            raise CacheError(
                f"{path}: inputs {found[0]} and outputs {found[1]}, not those of the {name} "
                f"pipeline export writes; {FIX}"
            )
        return session

    def predict(self, image, *, name: str | None = None, k: float | None = None) -> Prediction:
        """The prediction of one photo: a path, the bytes of a file, a PIL image or an
        [H, W, 3] uint8 array; `k` another pooling power than the head's."""
        started = time.perf_counter()
        name, pixels = _pixels(image, name)
        height, width = pixels.shape[:2]
        check_photo_work(width, height, self.grid, self.input_size, self.mode, name)
        boxes = patch_grid(width, height, self.grid)
        run = self._crop_margins if self.mode == "crop" else self._shared_margins
        margins = run(pixels, boxes)
        pooling = dict(self.info["pooling"])
        if k is not None:
            pooling["k"] = k
        link, n = self.info["link"], len(self.classes)
        log_scores = image_log_scores(margins, pooling, link, n)
        probs = np.exp(log_link(margins, link)[:, :n])
        return Prediction(
            name, self.classes, np.exp(log_scores / score_power(pooling)), log_scores, boxes,
            probs, width, height, pixels, (time.perf_counter() - started) * 1000,
        )  # fmt: skip

    def _crop_margins(self, pixels: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Every patch cropped and run through net and head, a batch of patches a run."""
        session, batch = self.sessions["crop.onnx"], int(self.info["batch"])
        image = np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32)
        parts = [
            session.run(["margins"], {"image": image, "boxes": boxes[i : i + batch]})[0]
            for i in range(0, len(boxes), batch)
        ]
        return np.concatenate(parts)

    def _shared_margins(self, pixels: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Per scale, the trunk once on the photo resized so that the patch side becomes the
        net's input size, then each patch pooled from the map and run through the head."""
        trunk, head = self.sessions["trunk.onnx"], self.sessions["head.onnx"]
        size = self.input_size
        height, width = pixels.shape[:2]
        sides = np.round(boxes[:, 2] - boxes[:, 0], 3)
        out = None
        for side in np.unique(sides):
            rows = np.flatnonzero(sides == side)
            factor = size / float(side)
            shape = (max(1, round(height * factor)), max(1, round(width * factor)))
            fmap = trunk.run(["fmap"], {"image": resized(pixels, shape)})[0]
            scale = np.array([shape[1] / width, shape[0] / height] * 2, np.float32)
            margins = head.run(["margins"], {"fmap": fmap, "rois": boxes[rows] * scale})[0]
            if out is None:
                out = np.empty((len(boxes), margins.shape[1]), np.float32)
            out[rows] = margins
        return out

    def score_maps(self, prediction: Prediction, *, reduce: str = "mean") -> np.ndarray:
        """[C, h, w] maps of a prediction: per 4-pixel cell, the mean (or max) of p(class |
        patch) over the patches covering it, as pipeline localize draws them."""
        if self.grid.kind != "patches":
            raise CacheError(f"{self.folder}: a whole-image head has no patches to map")
        p = prediction
        return score_map(p.boxes, p.probs, p.width, p.height, reduce=reduce)


def _pixels(image, name: str | None) -> tuple[str, np.ndarray]:
    """(name, [H, W, 3] uint8) of what the photo shows, read as extract reads files."""
    if isinstance(image, bytes | bytearray | memoryview):
        name = name or "upload"
        return name, decode_rgb_bytes(bytes(image), name)
    if isinstance(image, str | Path):
        return name or str(image), read_rgb(Path(image))
    if isinstance(image, Image.Image):
        return name or "image", shown_rgb(image)
    return name or "array", array_rgb(image)
