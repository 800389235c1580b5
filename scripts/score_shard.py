from optin.runtime import start_job

start_job(snakemake.log[0], snakemake.threads)

import time  # noqa: E402

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from transformers import BertForSequenceClassification  # noqa: E402

from optin.arch import adapter_for  # noqa: E402
from optin.methods import OptinMethod  # noqa: E402
from optin.scoring import Teacher, score_layer  # noqa: E402

params = snakemake.params
method = OptinMethod.from_config(params.method)
model = BertForSequenceClassification.from_pretrained(snakemake.input.checkpoint).eval()
adapter = adapter_for(model)
draws = torch.load(snakemake.input.teacher, weights_only=False)["teachers"]
teachers = [Teacher.from_dict(draw[method.md_include_padding]) for draw in draws]
parts = []
for kind in ("head", "neuron"):
    # §4.7: the authors score neurons on a second calibration batch.
    teacher = teachers[0] if (method.same_batch or kind == "head") else teachers[1]
    start = time.perf_counter()
    part = score_layer(adapter, teacher, params.layer, kind, method, params.seed, chunk=params.chunk, progress=True)
    elapsed = time.perf_counter() - start
    print(f"layer {params.layer}: {len(part)} {kind}s in {elapsed:.1f} s ({1000 * elapsed / max(len(part), 1):.1f} ms/unit)")
    parts.append(part)
pd.concat(parts, ignore_index=True).to_parquet(snakemake.output[0], index=False)
