import json
from pathlib import Path

from optin.workflow.runtime import select_device, start_job

start_job(snakemake.log[0], snakemake.threads)
device = select_device(snakemake.params.device)

import torch  # noqa: E402

from optin.engine import flops, latency  # noqa: E402
from optin.arch import Kept, adapter_for  # noqa: E402
from optin.arch.swin import Mask2FormerSwinAdapter  # noqa: E402
from optin.data.segmentation import open_segmentation_split  # noqa: E402
from optin.models import segmentation  # noqa: E402
from optin.workflow.runtime import write_json  # noqa: E402

params = snakemake.params
info = json.loads(Path(snakemake.input.info).read_text())
masks = json.loads(Path(snakemake.input.masks).read_text())
kept = Kept.from_json(masks["kept"])
dense = segmentation.load_segmenter(snakemake.input.checkpoint).to(device)
adapter = adapter_for(dense, "mask2former_swin")
split_file, source_file = snakemake.input.data
test = open_segmentation_split(split_file, source_file, "test", snakemake.input.checkpoint)
probe = {"pixel_values": test.pixels(range(min(16, len(test)))).to(device)}
num_classes = len(test.class_names)


def scores(model):
    """Semantic scores [N, C, h, w] through the model's own forward."""
    with torch.no_grad():
        out = model(**probe)
    return segmentation.semantic_scores(out.class_queries_logits, out.masks_queries_logits)


# 1. The slim model is the masked model (per-pixel class scores).
masked = adapter.masked_logits(probe, kept).exp()
slim = adapter.slim(kept)
Mask2FormerSwinAdapter.save_slim(slim, snakemake.output.slim)
slim_scores = scores(slim)
slim_vs_masked = float((slim_scores.permute(0, 2, 3, 1).reshape(masked.shape) - masked).abs().max())
if slim_vs_masked > params.verify_atol:
    raise RuntimeError(f"slim model differs from the masked model by {slim_vs_masked:.2e} > {params.verify_atol}")

# 2. It reloads through AutoModelForUniversalSegmentation.
reloaded = Mask2FormerSwinAdapter.load_slim(snakemake.output.slim).to(device)
reload_diff = float((scores(reloaded) - slim_scores).abs().max())
if reload_diff > 1e-6:
    raise RuntimeError(f"reloaded slim model differs from the saved one by {reload_diff:.2e}")

# 3. Backbone MACs from its weight shapes are what the search accounted for; the whole network
#    (patch embedding, merging, pixel and transformer decoders as fixed cost) by FlopCounterMode.
slim_adapter = adapter_for(reloaded, "mask2former_swin")
grid = tuple(info["patch_grid"])
counted = flops.count_window_attention_macs(slim_adapter.layer_linear_shapes(), slim_adapter.block_geometry(grid))
if abs(counted - masks["achieved_macs"]) > 1e-6 * masks["base_macs"]:
    raise RuntimeError(f"slim backbone has {counted:.6g} MACs; the search accounted {masks['achieved_macs']:.6g}")
one = {"pixel_values": probe["pixel_values"][:1]}
whole_dense, _ = flops.measured_macs(dense, **one)
whole_slim, _ = flops.measured_macs(reloaded, **one)

# 4. mIoU, pixel accuracy, size, latency.
metrics = segmentation.segmentation_metrics(segmentation.predict(reloaded, test), test.masks, num_classes)
unpruned = ({"miou": info["test_miou"], "pixel_accuracy": info["test_pixel_accuracy"]} if "test_miou" in info else
            segmentation.segmentation_metrics(segmentation.predict(dense, test), test.masks, num_classes))
lat_cfg = params.latency
lat_batch = {"pixel_values": test.pixels(range(min(lat_cfg["batch_size"], len(test)))).to(device)}
times = latency.compare({"dense": dense, "slim": reloaded}, lat_batch, lat_cfg["repeats"], lat_cfg["warmup"])
heads, neurons = kept.counts("head"), kept.counts("neuron")
result = {
    "budget": masks["budget"],
    "relative_macs": counted / masks["base_macs"],
    "macs": counted,
    "base_macs": masks["base_macs"],
    "whole_network_macs": whole_slim,
    "whole_network_dense_macs": whole_dense,
    "whole_network_relative_macs": whole_slim / whole_dense,
    "miou": metrics["miou"],
    "pixel_accuracy": metrics["pixel_accuracy"],
    "unpruned_miou": unpruned["miou"],
    "unpruned_pixel_accuracy": unpruned["pixel_accuracy"],
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
    "latency_batch_size": len(lat_batch["pixel_values"]),
    "latency_repeats": lat_cfg["repeats"],
    "latency_threads": torch.get_num_threads(),
}
write_json(Path(snakemake.output.metrics), result)
print(json.dumps(result, indent=1))
if not params.keep_slim:
    from optin.models import discard_slim_checkpoint

    print(f"slim checkpoint not kept (evaluation.keep_slim): {discard_slim_checkpoint(snakemake.output.slim) / 1e6:.1f} MB freed")
