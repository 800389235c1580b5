from optin.workflow.runtime import autocast, report_start_up, select_device, start_job

start_job(snakemake.log[0], snakemake.threads, family=snakemake.params.family)
device = select_device(snakemake.params.device)

import time  # noqa: E402

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from optin.arch import adapter_for, family  # noqa: E402
from optin.engine.settings import OptinMethod  # noqa: E402
from optin.engine.scoring import Teacher, auto_chunk, run_teacher, score_layer  # noqa: E402

params = snakemake.params
method = OptinMethod.from_config(params.method)
adapter = adapter_for(family(params.family).load_for_scoring(snakemake.input.checkpoint).to(device), params.family)
draws = torch.load(snakemake.input.teacher, weights_only=False, map_location=device)["teachers"]
teachers = [Teacher.from_dict(draw[method.md_include_padding]) for draw in draws]
report_start_up("model and teacher loaded")
if method.tap != "default":
    # The cached teacher holds the default taps; the unpruned forward with the ablation's taps is one pass.
    adapter.tap_position = method.tap
    teachers = [run_teacher(adapter, t.batch, include_padding=method.md_include_padding) for t in teachers]
parts = []
chunk = params.chunk
# Vision models also score tokens (layer 0 never loses one): cheap, and OPTIN-beta and OPTIN-tau
# then share one scoring run.
for kind in family(params.family).scored_kinds(params.layer):
    # §4.7: the authors score neurons on a second calibration batch.
    teacher = teachers[0] if (method.same_batch or kind != "neuron") else teachers[1]

    def score(chunk, units=None, progress=False):
        with autocast(device, params.precision):
            return score_layer(adapter, teacher, params.layer, kind, method, params.seed, chunk=chunk, units=units,
                               progress=progress)

    if chunk == "auto":
        # Measured on the layer's first unit kind (heads or channels: every copy re-runs the rest of
        # the network either way) and kept for the rest; a token variant is a smaller copy.
        chunk = auto_chunk(score, device, adapter.unit_counts(kind)[params.layer], params.jobs_per_gpu)
        print(f"chunks of {chunk} masked copies (scoring.chunk: auto on {device})")
    start = time.perf_counter()
    part = score(chunk, progress=True)
    elapsed = time.perf_counter() - start
    print(f"layer {params.layer}: {len(part)} {kind}s in {elapsed:.1f} s ({1000 * elapsed / max(len(part), 1):.1f} ms/unit)")
    parts.append(part)
print(f"device {device}, precision {params.precision}")
pd.concat(parts, ignore_index=True).to_parquet(snakemake.output[0], index=False)
