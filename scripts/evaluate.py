import json
import platform
from pathlib import Path

from optin.workflow.runtime import report_start_up, select_device, start_job

start_job(snakemake.log[0], snakemake.threads, family=snakemake.params.family)
device = select_device(snakemake.params.device)

import torch  # noqa: E402

from optin.engine import flops, latency  # noqa: E402
from optin.arch import family  # noqa: E402
from optin.engine.latency_table import LatencyTable  # noqa: E402
from optin.engine.masks import Kept  # noqa: E402
from optin.models import EvaluationJob, load_checkpoint  # noqa: E402
from optin.workflow.runtime import write_json  # noqa: E402

params = snakemake.params
info = json.loads(Path(snakemake.input.info).read_text())
masks = json.loads(Path(snakemake.input.masks).read_text())
dense = load_checkpoint(params.family, snakemake.input.checkpoint).to(device)
report_start_up("dense model loaded")
job = EvaluationJob(family=params.family, checkpoint=snakemake.input.checkpoint, data=list(snakemake.input.data), masks=masks,
                    slim_dir=snakemake.output.slim, device=device, max_length=params.max_length, image_size=params.image_size,
                    pixels=params.pixels, latency=params.latency)
pruned = family(params.family).models().evaluation(dense, job)


def logits_of(model, batch):
    out = model(**batch)
    return out if isinstance(out, torch.Tensor) else out.logits


# 1. The slim model (with its token-merge schedule) is the masked model.
with torch.no_grad():
    slim_logits = logits_of(pruned.slim, pruned.probe)
slim_vs_masked = float((slim_logits - pruned.masked_logits).abs().max())
if slim_vs_masked > params.verify_atol:
    raise RuntimeError(f"slim model differs from the masked model by {slim_vs_masked:.2e} > {params.verify_atol}")

# 2. It reloads through the usual API.
reloaded = pruned.reload().to(device)
with torch.no_grad():
    reload_diff = float((logits_of(reloaded, pruned.probe) - slim_logits).abs().max())
if reload_diff > 1e-6:
    raise RuntimeError(f"reloaded slim model differs from the saved one by {reload_diff:.2e}")

# 3. Its MACs, counted from its weight shapes (and tokens per layer), are what the search accounted for.
counted = pruned.recount(reloaded)
if abs(counted - masks["achieved_macs"]) > 1e-6 * masks["base_macs"]:
    raise RuntimeError(f"slim model has {counted:.6g} MACs; the search accounted {masks['achieved_macs']:.6g}")

def predicted_speedup(masks: dict) -> dict:
    """The latency table's prediction for this mask (heads and neurons; a token schedule is not in
    the table, so merged models get none)."""
    if not snakemake.input.latency_table:
        return {}
    table = LatencyTable.read(snakemake.input.latency_table[0])
    if masks.get("token_merges") and any(masks["token_merges"]):
        return {"predicted_latency_s": None, "predicted_speedup": None, "table_dense_latency_s": table.dense_s}
    kept = Kept.from_json(masks["kept"])
    predicted = table.predict(kept.counts("head"), kept.counts("neuron"))
    return {"predicted_latency_s": predicted, "predicted_speedup": table.dense_s / predicted, "table_dense_latency_s": table.dense_s}


# 4. Accuracy, size, latency.
acc = pruned.accuracy(reloaded)
lat = params.latency
times = latency.compare({"dense": dense, "slim": reloaded}, pruned.latency_batch, lat["repeats"], lat["warmup"])
result = {
    "budget": masks["budget"],
    "relative_macs": counted / masks["base_macs"],
    "macs": counted,
    "base_macs": masks["base_macs"],
    "accuracy": acc,
    # Hub checkpoints are not trained here: their unpruned accuracy is measured on this test split.
    "unpruned_accuracy": info["test_accuracy"] if "test_accuracy" in info else pruned.accuracy(dense),
    "params": flops.count_module_params(reloaded),
    "dense_params": flops.count_module_params(dense),
    "slim_vs_masked_max_abs": slim_vs_masked,
    "latency_dense_s": times["dense"],
    "latency_slim_s": times["slim"],
    "latency_speedup": times["dense"] / times["slim"],
    "latency_batch_size": lat["batch_size"],
    "latency_repeats": lat["repeats"],
    "latency_threads": torch.get_num_threads(),
    "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu:{platform.machine()}",
    "budget_metric": masks.get("budget_metric", "macs"),
    **predicted_speedup(masks),
    **{k: v for k, v in pruned.extra.items() if v is not None},
}
write_json(Path(snakemake.output.metrics), result)
print(json.dumps(result, indent=1))
if not params.keep_slim:
    from optin.models import discard_slim_checkpoint

    print(f"slim checkpoint not kept (evaluation.keep_slim): {discard_slim_checkpoint(snakemake.output.slim) / 1e6:.1f} MB freed")
