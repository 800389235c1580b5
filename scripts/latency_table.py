import json
import platform
from pathlib import Path

from optin.workflow.runtime import select_device, start_job

start_job(snakemake.log[0], snakemake.threads, family=snakemake.params.family)
device = select_device(snakemake.params.device)

import torch  # noqa: E402

from optin.arch import adapter_for, family  # noqa: E402
from optin.engine.latency import measure_table  # noqa: E402
from optin.models import CheckpointOnData, load_checkpoint  # noqa: E402
from optin.workflow.runtime import write_json  # noqa: E402

params = snakemake.params
lat = params.latency
dense = load_checkpoint(params.family, snakemake.input.checkpoint).to(device).eval()
job = CheckpointOnData(checkpoint=snakemake.input.checkpoint, data=list(snakemake.input.data), device=device,
                       max_length=params.max_length, image_size=params.image_size, pixels=params.pixels)
inputs = family(params.family).models().latency_inputs(job, lat)
table = measure_table(
    adapter_for(dense, params.family), inputs, repeats=lat.get("table_repeats", lat["repeats"]), warmup=lat["warmup"], grid_points=lat.get("grid_points", 9),
    conditions={"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu:{platform.machine()}",
                "batch_size": lat["batch_size"], "input_shape": list(next(iter(inputs.values())).shape)})
write_json(Path(snakemake.output[0]), table.to_json())
print(json.dumps({k: v for k, v in table.to_json().items() if k != "measured"}, indent=1))
