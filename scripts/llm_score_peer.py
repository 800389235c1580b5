import json
import time
from pathlib import Path

from optin.workflow.runtime import select_device, start_job

start_job(snakemake.log[0], snakemake.threads, family="llama")
device = select_device(snakemake.params.device)

import torch  # noqa: E402

from optin.arch import adapter_for  # noqa: E402
from optin.engine.flops import llm_forward_macs, llm_scoring_macs  # noqa: E402
from optin.methods.registry import Calibration, entry_of  # noqa: E402
from optin.models import llm  # noqa: E402

params = snakemake.params
entry = entry_of(params.method)
adapter = adapter_for(llm.load_checkpoint(snakemake.input.checkpoint).to(device), "llama")
# The first calibration draw: the windows OPTIN scores heads on.
batch = {"input_ids": torch.load(snakemake.input.teacher, weights_only=False)["teachers"][0][True]["batch"]["input_ids"].to(device)}
start = time.perf_counter()
scores = entry.function()(adapter, Calibration(batch=batch), params.method, params.seed)
seconds = time.perf_counter() - start
scores.to_parquet(snakemake.output.scores, index=False)
info = llm.read_json(snakemake.input.info)
windows, context = batch["input_ids"].shape
Path(snakemake.output.cost).write_text(json.dumps({
    "method": entry.name, "seconds": seconds, "units": len(scores), "macs": llm_scoring_macs(entry.scoring_passes, info, windows, context),
    "dense_forward_macs": llm_forward_macs(info, windows, context)}, indent=1) + "\n")
print(f"{entry.name}: {len(scores)} units in {seconds:.2f} s")
