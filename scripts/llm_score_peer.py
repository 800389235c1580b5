import json
import time
from pathlib import Path

from optin.runtime import select_device, start_job

start_job(snakemake.log[0], snakemake.threads, family="llama")
device = select_device(snakemake.params.device)

import torch  # noqa: E402

from optin.arch import adapter_for  # noqa: E402
from optin.baselines import magnitude_scores, random_scores  # noqa: E402
from optin.flops import llm_forward_macs, llm_scoring_macs  # noqa: E402
from optin.llm_peers import peer_scores  # noqa: E402
from optin.models import llm  # noqa: E402

params = snakemake.params
adapter = adapter_for(llm.load_checkpoint(snakemake.input.checkpoint).to(device), "llama")
# The first calibration draw: the windows OPTIN scores heads on.
batch = {"input_ids": torch.load(snakemake.input.teacher, weights_only=False)["teachers"][0][True]["batch"]["input_ids"].to(device)}
start = time.perf_counter()
if params.kind == "magnitude":
    scores = magnitude_scores(adapter)
elif params.kind == "random":
    scores = random_scores(adapter, params.seed)
else:
    scores = peer_scores(params.kind, adapter, batch)
seconds = time.perf_counter() - start
scores.to_parquet(snakemake.output.scores, index=False)
info = llm.read_json(snakemake.input.info)
windows, context = batch["input_ids"].shape
Path(snakemake.output.cost).write_text(json.dumps({
    "method": params.kind, "seconds": seconds, "units": len(scores), "macs": llm_scoring_macs(params.kind, info, windows, context),
    "dense_forward_macs": llm_forward_macs(info, windows, context)}, indent=1) + "\n")
print(f"{params.kind}: {len(scores)} units in {seconds:.2f} s")
