import json
from pathlib import Path

from optin.workflow.runtime import report_start_up, select_device, start_job

start_job(snakemake.log[0], snakemake.threads, family=snakemake.params.family)
device = select_device(snakemake.params.device)

import torch  # noqa: E402

from optin.arch import adapter_for, family  # noqa: E402
from optin.models import CalibrationJob, load_checkpoint  # noqa: E402
from optin.engine.scoring import to_cpu  # noqa: E402


params = snakemake.params
adapter = adapter_for(load_checkpoint(params.family, snakemake.input.checkpoint).to(device), params.family)
report_start_up("model loaded")
split_file = next(p for p in snakemake.input.data if p.endswith("split.json"))
split = json.loads(Path(split_file).read_text())
if not split["calib_pool"]:
    raise ValueError(f"{split_file}: the calibration pool is empty")
job = CalibrationJob(checkpoint=snakemake.input.checkpoint, data=list(snakemake.input.data), n=params.n, seed=params.seed,
                     draws=params.draws, device=device, max_length=params.max_length, image_size=params.image_size,
                     pixels=params.pixels)
calibration = family(params.family).models().calibration(adapter, job)
# Saved from the CPU, so that any job (GPU or not) can read the cache.
teachers = [{padding: {k: to_cpu(v) for k, v in t.items()} for padding, t in draw.items()} for draw in calibration.teachers]
torch.save({"teachers": teachers, "labels": calibration.labels}, snakemake.output.teacher)
Path(snakemake.output.indices).write_text(json.dumps(
    {"dataset_rows": [[split["calib_pool"][p] for p in positions] for positions in calibration.positions],
     "seed": params.seed, "n": params.n}, indent=1) + "\n")
