from optin.runtime import select_device, start_job

start_job(snakemake.log[0], snakemake.threads, family=snakemake.params.family)
device = select_device(snakemake.params.device)

import time  # noqa: E402

import torch  # noqa: E402

from optin.arch import adapter_for  # noqa: E402
from optin.latency_table import LatencyTable  # noqa: E402
from optin.methods import write_scores  # noqa: E402
from optin.models import load_checkpoint  # noqa: E402
from optin.nvit import nvit_scores  # noqa: E402
from optin.scoring import Teacher  # noqa: E402

settings = snakemake.params.method
# The model's own forward (not the scoring adapter's, which fuses detached Q/K/V weights): NViT's
# gradients are the weights'.
adapter = adapter_for(load_checkpoint(snakemake.params.family, snakemake.input.checkpoint).to(device), snakemake.params.family)
calibration = torch.load(snakemake.input.teacher, weights_only=False, map_location=device)
if not calibration.get("labels"):
    raise ValueError(f"{snakemake.input.teacher} holds no labels; NViT's saliency needs the task loss")
batch = Teacher.from_dict(calibration["teachers"][0][False]).batch
labels = calibration["labels"][0]
table = LatencyTable.read(snakemake.input.latency_table[0]) if snakemake.input.latency_table else None
start = time.perf_counter()
scores = nvit_scores(adapter, batch, labels, settings["fisher_batch_size"], settings["latency_eta"], table)
print(f"{len(labels)} samples in mini-batches of {settings['fisher_batch_size']}: {time.perf_counter() - start:.1f} s")
w = snakemake.wildcards
write_scores(scores, snakemake.output[0], model=w.model, dataset=w.dataset, method=w.method, seed=w.seed)
print(scores.groupby(["kind", "layer"])["importance"].describe())
