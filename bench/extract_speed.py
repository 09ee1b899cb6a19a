"""Extraction speed against what this machine can do, the net alone, and a naive loader.

Why: a patches/s figure means little without the machine behind it, so every path is given
as a fraction of a measured limit, and the two runtimes side by side show what ONNX Runtime
buys. Each measurement runs in its own process (its peak RSS is its own), on the same real
VOC images of one split, and prints patches/s, its fraction of the machine limit and its
peak RSS (the measuring process; DataLoader workers are apart):

1. machine limit: the measured rate of a dense matmul (torch.mm of 2048x2048 float32 on
   all of this process's cores, ~2 s after warm-up; GFLOP/s = 2 n^3 / t) over the backbone's
   GFLOP per patch, counted on the torch net at its input size by
   torch.utils.flop_counter.FlopCounterMode. It counts convolutions and matmuls only, a
   multiply-add as 2 FLOPs; depthwise convolutions are counted right (their weight
   [C, 1, k, k] gives 2 k^2 C per output pixel); BN, activations, pooling and adds are not
   counted. Depthwise convolutions and small maps do few FLOPs per byte moved, so a net
   like EfficientNet cannot run at the matmul rate: the limit is an upper bound, and a
   net's fraction of it says how far its kernels are from dense-matmul efficiency;
2. forward torch, forward onnxruntime: FrozenBackbone's forward alone on ready uint8
   batches, at the backbone's default batch for each runtime or --batch-size (what each
   runtime can do);
3. crop, shared: the full extract path (decode, grid, the net's graphs, HDF5 write) under
   --runtime (auto: ONNX Runtime on a CPU, where one graph cuts the crops and runs the net,
   and shared mode's trunk and pooling + head are two: pipeline/features/graph_path.py;
   torch cuts with roi_align and pools around the net), and crop torch, shared torch
   under torch, so that the runtime's gain on the whole path shows; the net's setup (build,
   ONNX export) is left out, as extract's own rate does, but not its first calls (a few
   images are dominated by them). Shared mode's patches/s counts the patches as if cropped
   (the same patches), so it compares with crop's; crop int8 and shared int8: the same at
   --precision int8 (ONNX Runtime's static quantization; its calibration on the training
   split is setup, left out like the export); crop train, shared train: the two paths on
   the same number of images of --train-split, which keeps only the object patches and a
   label-blind tenth of the rest (the rows above keep every patch, as an evaluation split
   does): crop mode cuts only those, shared mode still runs its trunk over the whole image
   at every scale (docs/benchmarks.md#shared-mode-on-a-training-split);
4. naive: what a user would write: a DataLoader over patches, each opened with PIL,
   cropped, resized and normalised by torchvision transforms, a float32 torch forward per
   batch.

Then the ratios and their targets (ok / BELOW TARGET): crop / machine >= 0.8, crop / forward
>= 0.95 (cutting costs little beside the net), shared / crop >= 3.3 at the same runtime, crop / naive and shared / naive >= 5, onnxruntime forward /
torch forward >= 1 (auto's choice of ONNX Runtime pays), crop int8 / crop and shared int8 /
shared >= 1.8, shared / crop on a training split >= 1 (images/s). And what bounds them,
measured on the same patches under the runtime used: the forward's own fraction of the
machine (bounds crop / machine), the share of crop cutting in a forward (bounds crop /
forward), the trunk / head split of a forward and the grid's sharing factor (bound shared /
crop: sharing divides only the trunk's work), shared mode's own split, and naive / forward.

--repeats N measures every row N times, in rounds of all rows one after the other (a VM
that slows for a minute slows every row of a round alike), and prints each row's median
round with the spread of its rounds; the ratios divide medians.

With a CUDA device the same runs again there under torch with fp16 autocast (as
FrozenBackbone does; the limit is then an 8192x8192 fp16 matmul): ONNX Runtime's CUDA
provider is not used. --weights random gives speed figures only (labelled as such).

    .venv/bin/python bench/extract_speed.py --images 8
    .venv/bin/python bench/extract_speed.py --images 4 --repeats 3    # steadier ratios
    .venv/bin/python bench/extract_speed.py --backbone alexnet --weights random
    .venv/bin/python bench/extract_speed.py --images 2 --scales 2     # a quick look
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import click
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

from pipeline.config import PRECISIONS, RUNTIMES, BackboneConfig, ExtractConfig, GridConfig
from pipeline.cores import cpu_threads
from pipeline.datasets.voc import load_records, read_split, resolve_year_dir
from pipeline.errors import BackboneUnavailable
from pipeline.features.backbone import FrozenBackbone, build_net
from pipeline.features.engine import extract_split
from pipeline.features.images import decode_rgb
from pipeline.features.patches import patch_grid
from pipeline.features.registry import default_batch, get_spec
from pipeline.heads.device import resolve_device
from pipeline.store.cache import SplitCache

DEFAULT_VOC = Path(__file__).resolve().parents[2] / "shared" / "voc2007-subset" / "VOC2007"
METHODS = ("machine", "forward", "crop", "shared", "crop-train", "shared-train", "naive", "bounds")
SECONDS = 2.0  # timed seconds of each rate measured in a loop (machine, forward)
# the matmul of the limit: what the net computes in on each device (fp16 autocast on CUDA)
MATMUL = {"cpu": (2048, torch.float32), "cuda": (8192, torch.float16)}
TARGETS = {  # ratio -> the least it should be
    "crop / machine": 0.8,
    "crop / forward": 0.95,
    "shared / crop": 3.3,
    "crop / naive": 5.0,
    "shared / naive": 5.0,
    "onnxruntime forward / torch forward": 1.0,
    "crop int8 / crop": 1.8,
    "shared int8 / shared": 1.8,
    "shared / crop, training split": 1.0,
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_rate(step, per_step: int, seconds: float, device: torch.device) -> float:
    """Items/s of step() (per_step items a call), repeated for at least `seconds` after one
    warm-up call: first-call allocations and ONNX Runtime's shape planning are not
    throughput."""
    step()
    _sync(device)
    done, started = 0, time.perf_counter()
    while True:
        step()
        _sync(device)
        done += per_step
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return done / elapsed


def forward_rate(backbone: FrozenBackbone, batch_size: int, seconds: float) -> float:
    """patches/s of the backbone's forward alone on a uint8 batch already on its device."""
    size = backbone.input_size
    batch = torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8)
    batch = batch.to(backbone.device)
    return timed_rate(lambda: backbone(batch), batch_size, seconds, backbone.device)


def machine(options: dict) -> dict:
    """The matmul rate of this device and the backbone's FLOPs per patch."""
    device = resolve_device(options["device"])
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads())  # all the cores this process may use
    side, dtype = MATMUL[device.type]
    a, b = (torch.randn(side, side, device=device, dtype=dtype) for _ in range(2))
    gflops = timed_rate(lambda: torch.mm(a, b), 1, SECONDS, device) * 2 * side**3 / 1e9
    spec = get_spec(options["backbone"])
    net = build_net(spec, options["weights"]).eval()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net(torch.zeros(1, 3, spec.input_size, spec.input_size))
    return {
        "gflops": gflops,
        "side": side,
        "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "gflop_per_patch": counter.get_total_flops() / 1e9,
        "input_size": spec.input_size,
    }


class NaivePatches(torch.utils.data.Dataset):
    """One item per patch, the way tutorials do it: open the JPEG, crop, resize, normalise."""

    def __init__(self, year_dir: Path, ids: list[str], grid: GridConfig, spec, size: int):
        self.items = [
            (r.image_path, box)
            for r in load_records(year_dir, ids)
            for box in patch_grid(r.width, r.height, grid).tolist()
        ]
        self.transform = transforms.Compose(
            [
                transforms.Resize((size, size)),
                transforms.ToTensor(),
                transforms.Normalize(spec.mean, spec.std),
            ]
        )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        path, box = self.items[index]
        with Image.open(path) as image:
            return self.transform(image.convert("RGB").crop(box))


def _image_ids(options: dict) -> tuple[Path, list[str]]:
    year_dir = resolve_year_dir(options["voc_root"])
    return year_dir, read_split(year_dir, options["split"])[: options["images"]]


def naive(options: dict, grid: GridConfig) -> dict:
    spec = get_spec(options["backbone"])
    device = resolve_device(options["device"])
    model = build_net(spec, options["weights"]).eval().to(device)
    dataset = NaivePatches(*_image_ids(options), grid, spec, spec.input_size)
    batch_size = options["batch_size"] or default_batch(options["backbone"], "torch")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=options["workers"]
    )
    started = time.perf_counter()
    with torch.no_grad():
        for batch in loader:
            model(batch.to(device)).cpu()
    rate = len(dataset) / (time.perf_counter() - started)
    return {"rate": rate, "patches": len(dataset), "runtime": "torch", "batch": batch_size}


def extract(method: str, options: dict, grid: GridConfig) -> dict:
    """The full extract path in `method` mode into a scratch cache, as `pipeline extract`."""
    with tempfile.TemporaryDirectory() as cache:
        config = ExtractConfig(
            data=f"voc:{options['voc_root']}",
            split=options["split"],
            cache_dir=cache,
            backbone=BackboneConfig(
                options["backbone"], options["weights"], None, method, options["precision"]
            ),
            grid=grid,
            device=options["device"],
            runtime=options["runtime"],
            batch_size=options["batch_size"],
            workers=options["workers"],
            limit=options["images"],
        )
        summary = extract_split(config)
        # the runtime that made the shards ("onnxruntime 1.x"): a net that does not export
        # runs torch
        runtime = SplitCache.load(Path(summary.cache_dir)).attrs()["runtime"].split()[0]
    working = summary.seconds - summary.stages["setup"]
    batch = options["batch_size"] or default_batch(options["backbone"], runtime)
    return {
        "rate": summary.patches / working,
        "images_per_s": summary.images / working,
        "patches": summary.patches,
        "runtime": runtime,
        "batch": batch if method == "crop" else None,  # shared: one trunk pass per scale
    }


class _Timed:
    """A part of the net (a torch module or an ONNX Runtime graph) that adds the seconds of
    its calls to `seconds`."""

    def __init__(self, part, device: torch.device):
        self.part, self.device, self.seconds = part, device, 0.0

    def __call__(self, *args, **kwargs):
        _sync(self.device)
        started = time.perf_counter()
        out = self.part(*args, **kwargs)
        _sync(self.device)
        self.seconds += time.perf_counter() - started
        return out


def _timed(device: torch.device, call, *args) -> tuple[object, float]:
    """call(*args) and the seconds it took."""
    _sync(device)
    started = time.perf_counter()
    result = call(*args)
    _sync(device)
    return result, time.perf_counter() - started


def bounds(options: dict, grid: GridConfig) -> dict:
    """Seconds, on the same real patches under the runtime used: crop mode's cutting (the
    crop graph's RoiAlign alone, or torch's roi_align) and the net's forward on the cut
    patches; shared mode's whole pass, its trunk and its pooling + head (timed inside
    shared_features); and the grid's sharing factor: trunk pixels of crop mode over those
    of shared mode. The head's seconds on shared mode's cells stand for its share of a crop
    forward (the cells have a crop's shapes): under ONNX Runtime the crop net is one graph."""
    device = resolve_device(options["device"])
    nets = {
        mode: FrozenBackbone(
            BackboneConfig(options["backbone"], options["weights"], None, mode),
            device,
            runtime=options["runtime"],
            batch_size=options["batch_size"],
        )
        for mode in ("crop", "shared")
    }
    crop, shared = nets["crop"], nets["shared"]
    graphs = shared.graph_path
    if graphs is not None:
        trunk, head = _Timed(graphs.trunk, device), _Timed(graphs.pooled, device)
        graphs.trunk, graphs.pooled = trunk, head
    else:
        trunk, head = _Timed(shared.parts.trunk, device), _Timed(shared.parts.head, device)
        shared.parts = replace(shared.parts, trunk=trunk, head=head)
    size, step = crop.input_size, crop.batch_size
    seconds = dict.fromkeys(("cut", "forward", "shared"), 0.0)
    crop_pixels = shared_pixels = 0.0
    for index, record in enumerate(load_records(*_image_ids(options))):
        image = decode_rgb(record.image_path)
        boxes = torch.from_numpy(patch_grid(record.width, record.height, grid))
        if index == 0:  # warm-up: first calls (and ONNX Runtime's first shapes) are slow
            crop(_cut(crop, image, boxes[:step]))
            shared.shared_features(image, boxes)
            trunk.seconds = head.seconds = 0.0
        sides = (boxes[:, 2] - boxes[:, 0]).round(decimals=3).unique()  # as shared mode groups
        crop_pixels += len(boxes) * size**2
        shared_pixels += sum(record.width * record.height * (size / s) ** 2 for s in sides.tolist())
        for start in range(0, len(boxes), step):
            crops, cut = _timed(device, _cut, crop, image, boxes[start : start + step])
            seconds["cut"] += cut
            seconds["forward"] += _timed(device, crop._run, crop.net, crops)[1]
        seconds["shared"] += _timed(device, shared.shared_features, image, boxes)[1]
    return {
        **seconds,
        "trunk": trunk.seconds,
        "head": head.seconds,
        "sharing": crop_pixels / shared_pixels,
        "runtime": shared.runtime,
    }


def _cut(crop: FrozenBackbone, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Normalised crops of the boxes, as extract cuts them: the crop graph's RoiAlign, or
    torch's roi_align and normalisation."""
    if crop.graph_path is None:
        return crop._normalise(crop.crop(image, boxes))
    pixels = image[None].numpy().astype("float32")
    return torch.from_numpy(crop.graph_path.cut(image=pixels, boxes=boxes.numpy()))


def measure(method: str, options: dict) -> dict:
    """One measurement, in this process."""
    grid = GridConfig(scales=options["scales"], min_scale=options["min_scale"])
    if method == "machine":
        return machine(options)
    if method == "bounds":
        return bounds(options, grid)
    if method == "naive":
        result = naive(options, grid)
    elif method == "forward":
        net = FrozenBackbone(
            BackboneConfig(options["backbone"], options["weights"]),
            resolve_device(options["device"]),
            runtime=options["runtime"],
            batch_size=options["batch_size"],
        )
        rate = forward_rate(net, net.batch_size, SECONDS)
        result = {"rate": rate, "patches": None, "runtime": net.runtime, "batch": net.batch_size}
    elif method.endswith("-train"):  # the kept patches of the training split
        training = {**options, "split": options["train_split"]}
        result = extract(method.removesuffix("-train"), training, grid)
    else:
        result = extract(method, options, grid)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    return {**result, "rss_mib": rss}


def child(argv: list[str], method: str, device: str, runtime: str, precision="fp32") -> dict:
    """One measurement in its own process (the last of repeated options wins in click)."""
    command = [sys.executable, __file__, *argv, "--method", method, "--device", device,
               "--runtime", runtime, "--precision", precision]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{method} on {device} under {runtime}: failed\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rows_for(device: str, runtime: str) -> list[tuple[str, str, str, str]]:
    """(label, method, runtime, precision) of each row on `device`: torch only on CUDA; on a
    CPU both forwards, the extract paths under `runtime` and, unless that is torch, at int8
    (ONNX Runtime's static quantization) and under torch."""
    if device == "cuda":
        return [("forward torch", "forward", "torch", "fp32")] + [
            (name.replace("-", " "), name, "torch", "fp32")
            for name in ("crop", "shared", "crop-train", "shared-train", "naive")
        ]
    rows = [
        ("forward torch", "forward", "torch", "fp32"),
        ("forward onnxruntime", "forward", "onnxruntime", "fp32"),
    ]
    rows += [("crop", "crop", runtime, "fp32"), ("shared", "shared", runtime, "fp32")]
    rows += [("crop train", "crop-train", runtime, "fp32"),
             ("shared train", "shared-train", runtime, "fp32")]  # fmt: skip
    if runtime != "torch":
        rows += [("crop int8", "crop", runtime, "int8"), ("shared int8", "shared", runtime, "int8")]
        rows += [
            ("crop torch", "crop", "torch", "fp32"),
            ("shared torch", "shared", "torch", "fp32"),
        ]
    return rows + [("naive", "naive", "torch", "fp32")]


def median_run(runs: list[dict]) -> dict:
    """The run of median rate (the lower of the middle two for an even count) with the
    rates of all runs as its `spread`: on a shared VM one row moves by 10-50% from minute to
    minute, so rounds of every row in turn, and their medians, steady the ratios."""
    key = "gflops" if "gflops" in runs[0] else "rate"
    ordered = sorted(runs, key=lambda run: run[key])
    return {**ordered[(len(runs) - 1) // 2], "spread": [run[key] for run in runs]}


def ratio_line(name: str, value: float, note: str = "") -> str:
    target = TARGETS[name.removesuffix(" (torch)")]
    verdict = "ok" if value >= target else "BELOW TARGET"
    return f"  {name:<38}{value:>7.2f}  target >= {target:<4g} {verdict}{note}"


def print_device(results: dict) -> None:
    """The limit, the table of paths, the ratios and what bounds them, for one device."""
    m = results["machine"]
    limit = m["gflops"] / m["gflop_per_patch"]
    print(f"machine limit: torch.mm {m['side']}x{m['side']} {m['dtype']} {m['gflops']:.1f} GFLOP/s "
          f"({m['threads']} threads); {m['gflop_per_patch']:.3f} GFLOP a patch at {m['input_size']} px "
          f"(FlopCounterMode) -> {limit:.1f} patches/s{_rounds(m)}")  # fmt: skip
    print(
        f"{'path':<22}{'patches/s':>10}{'of machine':>12}{'peak RSS MiB':>14}  runtime      batch"
    )
    rows = {name: value for name, value in results.items() if "rate" in value}
    for name, value in rows.items():
        batch = value["batch"] or "-"
        print(f"{name:<22}{value['rate']:>10.1f}{value['rate'] / limit:>12.2f}"
              f"{value['rss_mib']:>14.0f}  {value['runtime']:<12} {batch:<5}{_rounds(value)}")  # fmt: skip
    rate = {name: value["rate"] for name, value in rows.items()}
    used = results["crop"]["runtime"]
    print("ratios:")
    print(ratio_line("crop / machine", rate["crop"] / limit, f"  ({used})"))
    print(ratio_line("crop / forward", rate["crop"] / rate[f"forward {used}"], f"  ({used})"))
    print(ratio_line("shared / crop", rate["shared"] / rate["crop"], f"  ({used})"))
    if "crop torch" in rate:
        print(ratio_line("shared / crop (torch)", rate["shared torch"] / rate["crop torch"]))
    print(ratio_line("crop / naive", rate["crop"] / rate["naive"]))
    print(ratio_line("shared / naive", rate["shared"] / rate["naive"]))
    if "forward onnxruntime" in rate:
        speedup = rate["forward onnxruntime"] / rate["forward torch"]
        print(ratio_line("onnxruntime forward / torch forward", speedup))
    if "shared train" in rate:
        training = results["shared train"]["images_per_s"] / results["crop train"]["images_per_s"]
        print(ratio_line("shared / crop, training split", training, f"  (images/s, {used})"))
    for mode in ("crop", "shared"):
        if f"{mode} int8" in rate:
            print(ratio_line(f"{mode} int8 / {mode}", rate[f"{mode} int8"] / rate[mode]))
    if "crop torch" in rate:
        print(f"  (the whole path: crop {rate['crop'] / rate['crop torch']:.2f}x and shared "
              f"{rate['shared'] / rate['shared torch']:.2f}x their torch rows)")  # fmt: skip
    print_bounds(results, limit, rate[f"forward {used}"], rate)


def _rounds(value: dict) -> str:
    """The spread of a row measured in several rounds ("" for one)."""
    spread = value.get("spread", [])
    return f"  rounds {min(spread):.1f}-{max(spread):.1f}" if len(spread) > 1 else ""


def print_bounds(results: dict, limit: float, forward: float, rate: dict) -> None:
    b = results["bounds"]
    cut = b["cut"] / b["forward"]
    head = min(b["head"] / b["forward"], 1.0)  # the head's cells are a crop's: same shapes
    trunk = 1 - head
    equal_speed = (1 + cut) / (trunk / b["sharing"] + head)
    per_pixel = trunk * b["forward"] / (b["trunk"] * b["sharing"])
    rest = b["shared"] - b["trunk"] - b["head"]
    print(f"what bounds them (same patches, {b['runtime']}):")
    print(f"  the forward alone runs at {forward / limit:.2f} of the machine limit "
          f"-> crop/machine below that")  # fmt: skip
    print(f"  crop cutting = {cut:.1%} of a forward -> crop/forward about {1 / (1 + cut):.2f} "
          f"(measured {rate['crop'] / forward:.2f}, with decode and write)")  # fmt: skip
    print(f"  a forward: trunk {trunk:.1%} + head {head:.1%}, grid sharing {b['sharing']:.2f}x "
          f"-> shared/crop about {equal_speed:.2f} at equal speed per pixel")  # fmt: skip
    print(f"  shared mode: trunk {b['trunk'] / b['shared']:.1%}, pooling + head "
          f"{b['head'] / b['shared']:.1%}, resize {rest / b['shared']:.1%}; its trunk runs {per_pixel:.2f}x a crop "
          f"forward's speed per pixel -> shared/crop of the compute "
          f"{(b['cut'] + b['forward']) / b['shared']:.2f}")  # fmt: skip
    print(f"  naive = {rate['naive'] / rate['forward torch']:.2f} of torch's forward alone "
          f"-> crop/naive at most about {forward / rate['naive']:.2f} (crop at its forward's speed)")  # fmt: skip


@click.command()
@click.option("--voc-root", default=str(DEFAULT_VOC), show_default=True, help="VOC year dir.")
@click.option("--split", default="test", show_default=True, help="Split (test keeps every patch).")
@click.option(
    "--train-split",
    default="trainval",
    show_default=True,
    help="Training split of the train rows (keeps a sample of its patches).",
)
@click.option("--images", type=int, default=8, show_default=True, help="Images to extract.")
@click.option("--backbone", default="efficientnet_lite0", show_default=True)
@click.option(
    "--weights",
    default=None,
    help="'random' for speed-only figures of nets whose weights are not here.",
)
@click.option("--scales", type=int, default=GridConfig.scales, show_default=True)
@click.option("--min-scale", type=float, default=GridConfig.min_scale, show_default=True)
@click.option(
    "--batch-size", type=int, default=None, help="Patches a forward [default: the net's]."
)
@click.option("--workers", type=int, default=ExtractConfig.workers, show_default=True)
@click.option(
    "--device",
    type=click.Choice(("auto", "cpu", "cuda")),
    default="auto",
    show_default=True,
    help="auto: the CPU, and CUDA too where there is one.",
)
@click.option(
    "--runtime",
    type=click.Choice(RUNTIMES),
    default=ExtractConfig.runtime,
    show_default=True,
    help="The crop and shared rows' runtime on a CPU.",
)
@click.option(
    "--repeats",
    type=click.IntRange(1, 9),
    default=1,
    show_default=True,
    help="Rounds of every row, one row after the other; each row's median round is printed.",
)
@click.option("--method", type=click.Choice(METHODS), default=None, hidden=True)
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", hidden=True)
def main(method, **options) -> None:
    if method:  # a child: one measurement, as JSON
        print(json.dumps(measure(method, options)))
        return
    if options["device"] == "cuda":
        try:
            resolve_device("cuda")
        except BackboneUnavailable as exc:
            sys.exit(str(exc))
    devices = ["cuda"] if options["device"] == "cuda" else ["cpu"]
    if options["device"] == "auto" and torch.cuda.is_available():
        devices.append("cuda")
    label = options["backbone"] + (
        " (untrained weights: speed only)" if options["weights"] == "random" else ""
    )
    argv = sys.argv[1:]
    for device in devices:
        runtime = options["runtime"] if device == "cpu" else "torch"
        rows = [("machine", "machine", runtime, "fp32"), *rows_for(device, runtime)]
        rounds = [
            {name: child(argv, method_name, device, row_runtime, precision)
             for name, method_name, row_runtime, precision in rows}
            for _ in range(options["repeats"])
        ]  # fmt: skip
        results = {name: median_run([runs[name] for runs in rounds]) for name, *_ in rows}
        results["bounds"] = child(argv, "bounds", device, runtime)
        where = (
            f"cpu: torch {torch.get_num_threads()} threads, ONNX Runtime {cpu_threads()}"
            if device == "cpu"
            else f"cuda ({torch.cuda.get_device_name()}): torch, fp16 autocast; ONNX Runtime's "
            "CUDA provider is not used"
        )
        print(f"\n{where}; {label}, {options['images']} images of {options['split']} "
              f"({results['crop']['patches']} patches; the train rows: as many of "
              f"{options['train_split']}, {results['crop train']['patches']} patches kept), "
              f"{options['scales']} scales min {options['min_scale']}")  # fmt: skip
        print_device(results)
    if devices == ["cpu"] and not torch.cuda.is_available():
        print("\nno CUDA device here: CPU figures only")


if __name__ == "__main__":
    main()
