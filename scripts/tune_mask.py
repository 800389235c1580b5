import json
from pathlib import Path

from optin.runtime import select_device, start_job

start_job(snakemake.log[0], snakemake.threads, family=snakemake.params.family)
device = select_device(snakemake.params.device)

import time  # noqa: E402

import torch  # noqa: E402

from optin.arch import Kept, adapter_for, family  # noqa: E402
from optin.kwon import rearrange, tune_scales  # noqa: E402
from optin.scoring import Teacher  # noqa: E402

params = snakemake.params
mask = json.loads(Path(snakemake.input.mask).read_text())
adapter = adapter_for(family(params.family).load_for_scoring(snakemake.input.checkpoint).to(device), params.family)
calibration = torch.load(snakemake.input.teacher, weights_only=False, map_location=device)
teacher = Teacher.from_dict(calibration["teachers"][0][False])
kept = Kept.from_json(mask["kept"])
start = time.perf_counter()
if params.method["rearrange"]:
    rearranged = rearrange(adapter, teacher.batch, calibration["labels"][0], kept, params.method["fisher_batch_size"])
    moved = sum(len(set(a) - set(b)) for a, b in zip(rearranged["head"] + rearranged["neuron"], kept["head"] + kept["neuron"], strict=True))
    print(f"rearrangement moved {moved} units (counts per layer unchanged)")
    kept = rearranged
if params.method["tune"]:
    heads, neurons = tune_scales(adapter, teacher, kept)
    mask["unit_scales"] = {"head": heads, "neuron": neurons}
    flat = [v for layer in heads + neurons for v in layer]
    print(f"mask tuning: {len(flat)} scales in [{min(flat, default=1):.3f}, {max(flat, default=1):.3f}]")
mask["kept"] = kept.to_json()
mask["kwon_stages"] = {"rearrange": params.method["rearrange"], "tune": params.method["tune"]}
print(f"stages took {time.perf_counter() - start:.1f} s")
Path(snakemake.output[0]).write_text(json.dumps(mask, indent=1) + "\n")
