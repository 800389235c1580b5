# One job scores every unit of a one-pass method (optin.methods.registry): weight statistics, or
# gradients / activations on the labelled first calibration draw (the batch OPTIN scores heads on).
from optin.workflow.runtime import select_device, start_job

start_job(snakemake.log[0], snakemake.threads, family=snakemake.params.family)
device = select_device(snakemake.params.device)

import time  # noqa: E402

from optin.arch import adapter_for, family  # noqa: E402
from optin.methods.optin import write_scores  # noqa: E402
from optin.methods.registry import Calibration, entry_of  # noqa: E402

params, inputs = snakemake.params, snakemake.input
entry = entry_of(params.method)
family_entry = family(params.family)
# "scoring": weights and the adapter's own forward suffice; "model": the model's own class, whose
# weights the gradients are taken of
load = family_entry.load_for_scoring if entry.loader == "scoring" else family_entry.models().load_checkpoint
adapter = adapter_for(load(inputs.checkpoint).to(device), params.family)
calibration = None
if entry.needs_calibration:
    import torch

    from optin.engine.latency_table import LatencyTable
    from optin.engine.scoring import Teacher

    saved = torch.load(inputs.teacher, weights_only=False, map_location=device)
    if entry.needs_labels and not saved.get("labels"):
        raise ValueError(f"{inputs.teacher} holds no labels; method kind {entry.name!r} needs the task loss")
    calibration = Calibration(batch=Teacher.from_dict(saved["teachers"][0][False]).batch,
                              labels=saved["labels"][0] if saved.get("labels") else None,
                              latency_table=LatencyTable.read(inputs.latency_table[0]) if inputs.latency_table else None)
start = time.perf_counter()
scores = entry.function()(adapter, calibration, params.method, params.seed)
print(f"{entry.name}: {len(scores)} units scored in {time.perf_counter() - start:.1f} s")
w = snakemake.wildcards
write_scores(scores, snakemake.output[0], model=w.model, dataset=w.dataset, method=w.method, seed=w.seed)
print(scores.groupby(["kind", "layer"])["importance"].describe())
