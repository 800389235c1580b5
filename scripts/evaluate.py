import json
import platform
from pathlib import Path

from optin.runtime import report_start_up, select_device, start_job

start_job(snakemake.log[0], snakemake.threads)
device = select_device(snakemake.params.device)

import torch  # noqa: E402

from optin import flops, latency  # noqa: E402
from optin.arch import Kept, adapter_for  # noqa: E402
from optin.models import load_checkpoint  # noqa: E402
from optin.models.text import write_json  # noqa: E402

params = snakemake.params
info = json.loads(Path(snakemake.input.info).read_text())
masks = json.loads(Path(snakemake.input.masks).read_text())
merges = masks.get("token_merges")
dense = load_checkpoint(params.family, snakemake.input.checkpoint).to(device)
adapter = adapter_for(dense, params.family)
report_start_up("dense model loaded")
lat_cfg = params.latency
extra = {}
convnet = params.family in ("cifar_resnet", "vgg")
if not convnet:
    kept = Kept.from_json(masks["kept"])
    if "unit_scales" in masks:
        # Kwon et al.'s tuned mask values, folded into a copy's weights: the slim model carries them,
        # and latency still compares against the untouched dense model.
        import copy

        from optin.kwon import apply_unit_scales

        adapter = adapter_for(copy.deepcopy(dense), params.family)
        apply_unit_scales(adapter, kept, masks["unit_scales"]["head"], masks["unit_scales"]["neuron"])
    head_masks, neuron_masks = adapter.kept_masks(kept)


def on_device(batch: dict) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def logits_of(model, batch):
    out = model(**batch)
    return out if isinstance(out, torch.Tensor) else out.logits


def recount(model) -> float:
    """The slim model's MACs, counted from its weight shapes (and tokens per layer)."""
    if convnet:
        from optin.arch.cnn import count_conv_linear_macs

        return count_conv_linear_macs(model, probe["pixel_values"])
    tokens = masks.get("tokens_per_layer") or masks["mac_seq_len"]
    return flops.count_linear_attention_macs(adapter_for(model, params.family).layer_linear_shapes(), tokens)


if convnet:
    from optin.data.images import open_split
    from optin.models import cnn

    channels = masks["kept"]["channel"]
    split_file, source_file = snakemake.input.data
    test = open_split(split_file, source_file, "test", params.image_size, pixels=params.pixels)
    probe = on_device({"pixel_values": test.pixels(range(64))})
    masked_logits = adapter.forward(probe, adapter.kept_masks(channels))[2]
    slim = adapter.slim(channels)
    adapter.save_slim(slim, snakemake.output.slim)

    def reload():
        return cnn.load_convnet(snakemake.output.slim)

    def test_accuracy(model):
        return cnn.accuracy(model, test)

    lat_batch = on_device({"pixel_values": test.pixels(range(lat_cfg["batch_size"]))})
    kept_counts = [len(c) for c in channels]
    extra.update({"image_size": params.image_size, "channels_kept": sum(kept_counts),
                  "dense_channels": sum(adapter.unit_counts()),
                  "layers_with_at_most_one_channel": sum(k <= 1 for k in kept_counts)})
elif params.family == "bert":
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from optin.data.text import load_split, tokenize_rows
    from optin.models.text import metric_name, task_metric

    tokenizer = AutoTokenizer.from_pretrained(snakemake.input.checkpoint)
    test = load_split(Path(snakemake.input.data[0]).parent, "test")
    probe = on_device(tokenize_rows(tokenizer, test.iloc[:64], params.max_length))
    masked_logits = adapter.forward(probe, head_masks, neuron_masks)[2]
    slim = adapter.slim(kept)
    adapter.save_slim(slim, tokenizer, snakemake.output.slim)

    def reload():
        return AutoModelForSequenceClassification.from_pretrained(snakemake.output.slim, trust_remote_code=True).eval()

    def test_accuracy(model):
        return task_metric(model, tokenizer, test, params.max_length)

    extra["metric"] = metric_name(dense.config.num_labels)  # the "accuracy" fields hold this metric
    lat_batch = on_device(tokenize_rows(tokenizer, test.iloc[: lat_cfg["batch_size"]], lat_cfg["seq_len"], pad_to_max=True))
    extra["latency_seq_len"] = lat_cfg["seq_len"]
else:
    from optin.data.images import open_split
    from optin.models import vision

    split_file, source_file = snakemake.input.data
    test = open_split(split_file, source_file, "test", params.image_size, snakemake.input.checkpoint)
    probe = on_device({"pixel_values": test.pixels(range(64))})
    if merges:
        counts = []
        masked_logits = adapter.forward_merged(probe, merges, head_masks, neuron_masks, token_counts=counts)
        # The merge schedule must remove exactly the tokens the search accounted for.
        ran = [counts[0] - c for c in counts]
        if ran != masks["tokens_removed_per_layer"]:
            raise RuntimeError(f"token merging removed {ran} tokens per layer; the search accounted {masks['tokens_removed_per_layer']}")
    else:
        masked_logits = adapter.forward(probe, head_masks, neuron_masks)[2]
    slim = adapter.slim(kept, token_merges=merges)
    adapter.save_slim(slim, snakemake.output.slim)

    def reload():
        return adapter.load_slim(snakemake.output.slim)

    def test_accuracy(model):
        return vision.accuracy(model, test)

    lat_batch = on_device({"pixel_values": test.pixels(range(lat_cfg["batch_size"]))})
    pe = vision.patch_embedding_macs(dense, params.image_size)
    extra.update({"image_size": params.image_size, "patch_embedding_macs": pe,
                  "relative_macs_with_patch_embedding": (masks["achieved_macs"] + pe) / (masks["base_macs"] + pe),
                  "tokens_merged": sum(merges) if merges else 0,
                  "head_neuron_share": masks.get("head_neuron_share")})

# 1. The slim model (with its token-merge schedule) is the masked model.
with torch.no_grad():
    slim_logits = logits_of(slim, probe)
slim_vs_masked = float((slim_logits - masked_logits).abs().max())
if slim_vs_masked > params.verify_atol:
    raise RuntimeError(f"slim model differs from the masked model by {slim_vs_masked:.2e} > {params.verify_atol}")

# 2. It reloads through the usual API.
reloaded = reload().to(device)
with torch.no_grad():
    reload_diff = float((logits_of(reloaded, probe) - slim_logits).abs().max())
if reload_diff > 1e-6:
    raise RuntimeError(f"reloaded slim model differs from the saved one by {reload_diff:.2e}")

# 3. Its MACs, counted from its weight shapes (and tokens per layer), are what the search accounted for.
counted = recount(reloaded)
if abs(counted - masks["achieved_macs"]) > 1e-6 * masks["base_macs"]:
    raise RuntimeError(f"slim model has {counted:.6g} MACs; the search accounted {masks['achieved_macs']:.6g}")

# 4. Accuracy, size, latency.
acc = test_accuracy(reloaded)
times = latency.compare({"dense": dense, "slim": reloaded}, lat_batch, lat_cfg["repeats"], lat_cfg["warmup"])
if not convnet:
    heads, neurons = kept.counts()
    extra.update({"heads_kept": sum(heads), "neurons_kept": sum(neurons), "layers_without_heads": sum(h == 0 for h in heads),
                  "layers_without_neurons": sum(n == 0 for n in neurons)})
result = {
    "budget": masks["budget"],
    "relative_macs": counted / masks["base_macs"],
    "macs": counted,
    "base_macs": masks["base_macs"],
    "accuracy": acc,
    # Hub checkpoints are not trained here: their unpruned accuracy is measured on this test split.
    "unpruned_accuracy": info["test_accuracy"] if "test_accuracy" in info else test_accuracy(dense),
    "params": flops.count_module_params(reloaded),
    "dense_params": flops.count_module_params(dense),
    "slim_vs_masked_max_abs": slim_vs_masked,
    "latency_dense_s": times["dense"],
    "latency_slim_s": times["slim"],
    "latency_speedup": times["dense"] / times["slim"],
    "latency_batch_size": lat_cfg["batch_size"],
    "latency_repeats": lat_cfg["repeats"],
    "latency_threads": torch.get_num_threads(),
    "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu:{platform.machine()}",
    **{k: v for k, v in extra.items() if v is not None},
}
write_json(Path(snakemake.output.metrics), result)
print(json.dumps(result, indent=1))
