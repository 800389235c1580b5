import json
from pathlib import Path

from optin.workflow.runtime import select_device, start_job

start_job(snakemake.log[0], snakemake.threads, family="llama")
device = select_device(snakemake.params.device)

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from optin.arch import adapter_for  # noqa: E402
from optin.models import llm  # noqa: E402
from optin.engine.scoring import to_cpu  # noqa: E402

params = snakemake.params
adapter = adapter_for(llm.load_checkpoint(snakemake.input.checkpoint).to(device), "llama")
job = llm.LlmCalibrationJob(tokenizer=llm.load_tokenizer(snakemake.input.checkpoint),
                            documents=pd.read_csv(snakemake.input.documents),
                            rows=llm.read_json(snakemake.input.split)["calibration"], n=params.calibration["windows"],
                            context=params.calibration["context"], seed=params.seed, device=device)
calibration, pool = llm.calibration(adapter, job)
teachers = [to_cpu(draw) for draw in calibration.teachers]
torch.save({"teachers": teachers, "labels": []}, snakemake.output.teacher)
Path(snakemake.output.windows).write_text(json.dumps(
    {"windows": calibration.positions, "pool_windows": pool, "context": job.context, "seed": job.seed,
     "documents": "llm.corpora split 'calibration', each document's tokens + EOS, concatenated and cut into windows"},
    indent=1) + "\n")
print(f"{len(calibration.positions)} draws of {job.n} windows of {job.context} tokens from a pool of {pool}")
