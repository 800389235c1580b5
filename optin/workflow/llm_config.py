"""Checks of the config's ``llm:`` section (the decoder-LLM arm) that the schema cannot express,
run when the DAG is built: a GGUF is read for its header only (architecture and sizes), so an
unsupported model, a channel group that does not divide the MLP width or a context longer than the
model's stops the run before any job, with one line naming the key. No torch here."""

from __future__ import annotations

import json
from pathlib import Path

from optin.arch.registry import family
from optin.models.gguf import gguf_file, gguf_metadata
from optin.methods.registry import entry_of, resolved_settings

SUPPORTED_ARCHITECTURES = ("llama",)   # optin.arch.llama.SUPPORTED_MODEL_TYPES (no torch here)


def model_shape(source: dict, base_dir: Path) -> dict:
    """{architecture, intermediate_size, context_length} of an llm.models.<id>.source."""
    if source["kind"] == "gguf":
        path = gguf_file({**source, **({"path": str(_resolved(source["path"], base_dir))} if "path" in source else {})})
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist")
        meta = gguf_metadata(path)
        return {"architecture": meta["architecture"], "intermediate_size": meta["feed_forward_length"],
                "context_length": meta["context_length"], "num_layers": meta["block_count"]}
    config_file = _resolved(source["path"], base_dir) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} does not exist (expected an HF checkpoint directory)")
    config = json.loads(config_file.read_text())
    return {"architecture": config.get("model_type"), "intermediate_size": config.get("intermediate_size"),
            "context_length": config.get("max_position_embeddings"), "num_layers": config.get("num_hidden_layers")}


def model_layers(source: dict, base_dir: Path) -> int:
    return int(model_shape(source, base_dir)["num_layers"])


def _resolved(path: str, base_dir: Path) -> Path:
    return Path(path) if Path(path).is_absolute() else Path(base_dir) / path


def experiment_contexts(llm: dict, experiment: dict) -> dict[str, int]:
    """Every context length an experiment runs at, by the key that sets it."""
    contexts = {"calibration.context": experiment["calibration"]["context"], "mac_context": experiment["mac_context"],
                "llm.evaluation.latency.prefill_tokens": llm["evaluation"]["latency"]["prefill_tokens"]}
    for i, point in enumerate(llm["evaluation"]["perplexity"]):
        contexts[f"llm.evaluation.perplexity[{i}].context"] = point["context"]
    return contexts


def llm_errors(config: dict, base_dir: Path = Path(".")) -> list[str]:
    llm = config.get("llm")
    if not llm:
        return []
    errors = []
    for name in llm["run"]["experiments"]:
        if name not in llm["experiments"]:
            errors.append(f"llm.run.experiments: unknown experiment {name!r}; defined: {sorted(llm['experiments'])}")
    for name, method in llm["methods"].items():
        try:
            settings = resolved_settings(method)
            fit = entry_of(method).fit_error(family("llama"))
            if settings.get("budget_metric", "macs") != "macs":
                fit = "decoder LLMs are searched under MACs (budget_metric: macs)"
        except (TypeError, ValueError) as err:
            errors.append(f"llm.methods.{name}: {err}")
            continue
        if fit:
            errors.append(f"llm.methods.{name}: {fit}")
    for method in llm["evaluation"].get("keep_slim", []):
        if method not in llm["methods"]:
            errors.append(f"llm.evaluation.keep_slim: unknown method {method!r}; defined: {sorted(llm['methods'])}")
    zero_shot = llm["evaluation"]["zero_shot"]["dataset"]
    kind = config["datasets"].get(zero_shot, {}).get("source", {}).get("kind")
    if kind not in ("rt_polarity", "csv"):
        errors.append(f"llm.evaluation.zero_shot.dataset: {zero_shot!r} must be a datasets.<id> of kind rt_polarity "
                      f"or csv (two-label sentences), got {kind!r}")
    shapes = {}
    for name, model in llm["models"].items():
        try:
            shapes[name] = model_shape(model["source"], base_dir)
        except (FileNotFoundError, KeyError, ValueError) as err:
            errors.append(f"llm.models.{name}.source: {err}")
            continue
        shape = shapes[name]
        if shape["architecture"] not in SUPPORTED_ARCHITECTURES:
            errors.append(f"llm.models.{name}.source: architecture {shape['architecture']!r} is not supported by the llama "
                          f"family (supported: {list(SUPPORTED_ARCHITECTURES)})")
        width, group = shape["intermediate_size"], model["channel_group"]
        if width and width % group:
            errors.append(f"llm.models.{name}.channel_group: {group} does not divide the MLP width {width}")
    for name, exp in llm["experiments"].items():
        for key, known in (("model", llm["models"]), ("corpus", llm["corpora"])):
            if exp[key] not in known:
                errors.append(f"llm.experiments.{name}.{key}: unknown {key} {exp[key]!r}; defined: {sorted(known)}")
        for method in exp["methods"]:
            if method not in llm["methods"]:
                errors.append(f"llm.experiments.{name}.methods: unknown method {method!r}; defined: {sorted(llm['methods'])}")
        limit = shapes.get(exp["model"], {}).get("context_length")
        for key, context in experiment_contexts(llm, exp).items():
            if limit and context > limit:
                errors.append(f"llm.experiments.{name}: {key} {context} is longer than the model's context of {limit} tokens")
    return errors
