import platform
import time
from pathlib import Path

from optin.workflow.runtime import report_start_up, select_device, start_job, write_json

start_job(snakemake.log[0], snakemake.threads, family="llama")
device = select_device(snakemake.params.device)

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from optin.engine import flops  # noqa: E402
from optin.arch import Kept, adapter_for  # noqa: E402
from optin.arch.llama import block_macs, in_float64, lm_head_macs  # noqa: E402
from optin.methods.llm_peers import output_biases, with_output_biases  # noqa: E402
from optin.models import llm  # noqa: E402

params, evaluation = snakemake.params, snakemake.params.evaluation
info = llm.read_json(snakemake.input.info)
masks = llm.read_json(snakemake.input.masks)
dense = llm.load_checkpoint(snakemake.input.checkpoint).to(device)
tokenizer = llm.load_tokenizer(snakemake.input.checkpoint)
kept = Kept.from_json(masks["kept"])
# FLAP's bias compensation: the pruned model is the dense one with output biases, then masked.
reference = dense
if "removed_channel_means" in masks:
    reference = with_output_biases(dense, output_biases(adapter_for(dense, "llama"), masks["removed_channel_means"]))
adapter = adapter_for(reference, "llama")
data = llm.EvaluationData.load(tokenizer, snakemake.input.documents, snakemake.input.split, snakemake.input.zero_shot, evaluation)
report_start_up("dense model and data loaded")
clock = time.perf_counter()


def stage(name: str) -> None:
    global clock
    print(f"{name}: {time.perf_counter() - clock:.1f} s")
    clock = time.perf_counter()


# 1. The slim model is the masked model, compared in float64 (RMSNorm included: in_float64): in float32
# both differ from their float64 selves by ~4e-3 on SmolLM2's logits, which would hide a slicing error.
probe = next(iter(data.windows.values()))[:1].to(device)
adapter64 = adapter_for(in_float64(reference), "llama")
masked = adapter64.masked_logits({"input_ids": probe}, kept)
with torch.no_grad():
    slim_vs_masked = float((in_float64(adapter64.slim(kept))(input_ids=probe).logits.reshape(masked.shape) - masked).abs().max())
del adapter64
if slim_vs_masked > evaluation["verify_atol"]:
    raise RuntimeError(f"slim model differs from the masked model by {slim_vs_masked:.2e} > {evaluation['verify_atol']} (float64)")
stage("slim = masked in float64")
slim = adapter.slim(kept)
with torch.no_grad():
    slim_logits = slim(input_ids=probe).logits.reshape(masked.shape)

# 2. It reloads through the usual API, embeddings still tied.
adapter.save_slim(slim, snakemake.output.slim, tokenizer=tokenizer)
reloaded = AutoModelForCausalLM.from_pretrained(snakemake.output.slim, trust_remote_code=True, dtype=torch.float32).to(device).eval()
with torch.no_grad():
    reload_diff = float((reloaded(input_ids=probe).logits.reshape(masked.shape) - slim_logits).abs().max())
if reload_diff > 1e-6:
    raise RuntimeError(f"reloaded slim model differs from the saved one by {reload_diff:.2e}")
if info["tie_word_embeddings"] and reloaded.lm_head.weight.data_ptr() != reloaded.model.embed_tokens.weight.data_ptr():
    raise RuntimeError("the reloaded slim model's LM head is no longer tied to its embeddings")

stage("saved and reloaded")

# 3. Its MACs, counted from its weight shapes, are what the search accounted for.
context = masks["mac_context"]
counted = block_macs(reloaded, context)
if abs(counted - masks["achieved_macs"]) > 1e-6 * masks["base_macs"]:
    raise RuntimeError(f"slim model has {counted:.6g} MACs; the search accounted {masks['achieved_macs']:.6g}")
head = lm_head_macs(reloaded, context)

# 4. Quality, size, speed.
quality = data.quality(reloaded, tokenizer)
stage("perplexity and zero-shot accuracy")
lat = evaluation["latency"]
prompt = data.windows[min(data.windows)].reshape(1, -1)[:, : lat["prefill_tokens"]]
if prompt.shape[1] < lat["prefill_tokens"]:
    prompt = torch.cat([w for w in data.windows.values()], 1).reshape(1, -1)[:, : lat["prefill_tokens"]]
speed = llm.latency({"dense": dense, "slim": reloaded}, prompt.to(device), lat["decode_tokens"], lat["repeats"], lat["warmup"])
stage("latency")
result = {
    "budget": masks["budget"],
    "relative_macs": counted / masks["base_macs"],
    "relative_macs_with_lm_head": (counted + head) / (masks["base_macs"] + head),
    "macs": counted, "base_macs": masks["base_macs"], "mac_context": context,
    **quality,
    **{f"dense_{k}": v for k, v in info["dense"].items() if k != "answer"},
    "params": flops.count_module_params(reloaded), "dense_params": flops.count_module_params(dense),
    "heads_kept": masks["heads_kept"], "kv_heads_kept": masks["kv_heads_kept"], "channel_groups_kept": masks["neurons_kept"],
    "slim_vs_masked_max_abs": slim_vs_masked,
    **{f"{name}_{k}": v for name, values in speed.items() for k, v in values.items()},
    "prefill_speedup": speed["slim"]["prefill_tokens_per_s"] / speed["dense"]["prefill_tokens_per_s"],
    "decode_speedup": speed["slim"]["decode_tokens_per_s"] / speed["dense"]["decode_tokens_per_s"],
    "latency_threads": torch.get_num_threads(),
    "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu:{platform.machine()}",
    "answer": llm.generate_text(reloaded, tokenizer),
}
write_json(Path(snakemake.output.metrics), result)
print(result)
if not params.keep_slim:
    from optin.models import discard_slim_checkpoint

    print(f"slim checkpoint not kept (evaluation.keep_slim): {discard_slim_checkpoint(snakemake.output.slim) / 1e6:.1f} MB freed")
