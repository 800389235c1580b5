import json
from pathlib import Path

from optin.workflow.runtime import select_device, start_job

start_job(snakemake.log[0], snakemake.threads, family=snakemake.params.family)
device = select_device(snakemake.params.device)

import time  # noqa: E402

import torch  # noqa: E402

from optin.arch import Kept, adapter_for, family  # noqa: E402
from optin.engine.scoring import Teacher  # noqa: E402
from optin.methods.registry import entry_of  # noqa: E402

params = snakemake.params
entry = entry_of(params.method)
mask = json.loads(Path(snakemake.input.mask).read_text())
adapter = adapter_for(family(params.family).load_for_scoring(snakemake.input.checkpoint).to(device), params.family)
calibration = torch.load(snakemake.input.teacher, weights_only=False, map_location=device)
teacher = Teacher.from_dict(calibration["teachers"][0][False])
start = time.perf_counter()
kept, extra = entry.function(entry.mask_stages)(adapter, teacher, calibration["labels"][0], Kept.from_json(mask["kept"]),
                                                params.method)
mask.update(extra)
mask["kept"] = kept.to_json()
print(f"stages took {time.perf_counter() - start:.1f} s")
Path(snakemake.output[0]).write_text(json.dumps(mask, indent=1) + "\n")
