import json
from pathlib import Path

from optin.runtime import start_job

start_job(snakemake.log[0], snakemake.threads)

import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertForSequenceClassification  # noqa: E402

from optin import flops, latency  # noqa: E402
from optin.arch import Kept, adapter_for  # noqa: E402
from optin.data.text import load_split, tokenize  # noqa: E402
from optin.models.text import accuracy, write_json  # noqa: E402

params = snakemake.params
info = json.loads(Path(snakemake.input.info).read_text())
masks = json.loads(Path(snakemake.input.masks).read_text())
kept = Kept.from_json(masks["kept"])
dense = BertForSequenceClassification.from_pretrained(snakemake.input.checkpoint).eval()
tokenizer = AutoTokenizer.from_pretrained(snakemake.input.checkpoint)
adapter = adapter_for(dense)
test = load_split(Path(snakemake.input.data[0]).parent, "test")

# 1. The slim model must be the masked model.
probe = tokenize(tokenizer, test["text"].iloc[:64].tolist(), params.max_length)
head_masks, neuron_masks = adapter.kept_masks(kept)
_, _, masked_logits = adapter.forward(probe, head_masks, neuron_masks)
slim = adapter.slim(kept)
with torch.no_grad():
    slim_logits = slim(**probe).logits
slim_vs_masked = float((slim_logits - masked_logits).abs().max())
if slim_vs_masked > params.verify_atol:
    raise RuntimeError(f"slim model differs from the masked model by {slim_vs_masked:.2e} > {params.verify_atol}")

# 2. It reloads through the usual transformers API.
adapter.save_slim(slim, tokenizer, snakemake.output.slim)
reloaded = AutoModelForSequenceClassification.from_pretrained(snakemake.output.slim, trust_remote_code=True).eval()
with torch.no_grad():
    reload_diff = float((reloaded(**probe).logits - slim_logits).abs().max())
if reload_diff > 1e-6:
    raise RuntimeError(f"reloaded slim model differs from the saved one by {reload_diff:.2e}")

# 3. Its MACs, counted from its weight shapes, are what the search accounted for.
seq_len = masks["mac_seq_len"]
counted = flops.count_linear_attention_macs(adapter_for(reloaded).layer_linear_shapes(), seq_len)
if abs(counted - masks["achieved_macs"]) > 1e-6 * masks["base_macs"]:
    raise RuntimeError(f"slim model has {counted:.6g} MACs; the search accounted {masks['achieved_macs']:.6g}")

# 4. Accuracy, size, latency.
acc = accuracy(reloaded, tokenizer, test["text"], test["label"], params.max_length)
lat_cfg = params.latency
lat_batch = tokenize(tokenizer, test["text"].iloc[: lat_cfg["batch_size"]].tolist(), lat_cfg["seq_len"], pad_to_max=True)
times = latency.compare({"dense": dense, "slim": reloaded}, lat_batch, lat_cfg["repeats"], lat_cfg["warmup"])
heads, neurons = kept.counts()
result = {
    "budget": masks["budget"],
    "relative_macs": counted / masks["base_macs"],
    "macs": counted,
    "base_macs": masks["base_macs"],
    "accuracy": acc,
    "unpruned_accuracy": info["test_accuracy"],
    "params": flops.count_module_params(reloaded),
    "dense_params": flops.count_module_params(dense),
    "heads_kept": sum(heads),
    "neurons_kept": sum(neurons),
    "layers_without_heads": sum(h == 0 for h in heads),
    "layers_without_neurons": sum(n == 0 for n in neurons),
    "slim_vs_masked_max_abs": slim_vs_masked,
    "latency_dense_s": times["dense"],
    "latency_slim_s": times["slim"],
    "latency_speedup": times["dense"] / times["slim"],
    "latency_batch_size": lat_cfg["batch_size"],
    "latency_seq_len": lat_cfg["seq_len"],
    "latency_repeats": lat_cfg["repeats"],
    "latency_threads": torch.get_num_threads(),
}
write_json(Path(snakemake.output.metrics), result)
print(json.dumps(result, indent=1))
