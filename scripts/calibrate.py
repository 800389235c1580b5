import json
from pathlib import Path

from optin.runtime import report_start_up, select_device, start_job

start_job(snakemake.log[0], snakemake.threads)
device = select_device(snakemake.params.device)

import torch  # noqa: E402

from optin.arch import adapter_for  # noqa: E402
from optin.models import load_checkpoint  # noqa: E402
from optin.scoring import run_teacher  # noqa: E402


def to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value

params = snakemake.params
adapter = adapter_for(load_checkpoint(params.family, snakemake.input.checkpoint).to(device), params.family)
report_start_up("model loaded")
split_file = next(p for p in snakemake.input.data if p.endswith("split.json"))
split = json.loads(Path(split_file).read_text())
if not split["calib_pool"]:
    raise ValueError(f"{split_file}: the calibration pool is empty")
# Labels of each draw: Kwon et al.'s Fisher scores (optin.kwon) need the task loss.
teachers, labels = [], []
if params.family == "bert":
    from transformers import AutoTokenizer

    from optin.data.text import draw_calibration, load_split, tokenize_rows

    pool = load_split(Path(split_file).parent, "calib_pool")
    tokenizer = AutoTokenizer.from_pretrained(snakemake.input.checkpoint)
    draws = draw_calibration(pool, params.n, params.seed, params.draws)
    for positions in draws:
        batch = {k: v.to(device) for k, v in tokenize_rows(tokenizer, pool.iloc[positions], params.max_length).items()}
        # Teachers with padding positions as MD rows (the authors' code) and without; each method
        # picks the one its md_include_padding asks for.
        teachers.append({padding: run_teacher(adapter, batch, include_padding=padding).to_dict() for padding in (True, False)})
        labels.append(torch.as_tensor(pool["label"].iloc[positions].to_numpy()))
        print(f"calibration batch of {len(positions)} sentences: {int(batch['attention_mask'].sum())} tokens, padded to {batch['input_ids'].numel()}")
else:
    from optin.data import disjoint_draws
    from optin.data.images import open_split
    from optin.data.segmentation import open_segmentation_split

    if params.family == "mask2former_swin":
        pool = open_segmentation_split(split_file, snakemake.input.data[1], "calib_pool", snakemake.input.checkpoint)
    else:
        pool = open_split(split_file, snakemake.input.data[1], "calib_pool", params.image_size, snakemake.input.checkpoint,
                          pixels=params.pixels)
    draws = disjoint_draws(len(pool), params.n, params.seed, params.draws)
    for positions in draws:
        teacher = run_teacher(adapter, {"pixel_values": pool.pixels(positions).to(device)}).to_dict()
        teachers.append({True: teacher, False: teacher})  # images have no padding
        if params.family != "mask2former_swin":
            labels.append(torch.as_tensor(pool.labels[positions]))
        print(f"calibration batch of {len(positions)} images of {tuple(pool.pixels(positions[:1]).shape[-2:])} px")
# Saved from the CPU, so that any job (GPU or not) can read the cache.
teachers = [{padding: {k: to_cpu(v) for k, v in t.items()} for padding, t in draw.items()} for draw in teachers]
torch.save({"teachers": teachers, "labels": labels}, snakemake.output.teacher)
Path(snakemake.output.indices).write_text(json.dumps(
    {"dataset_rows": [[split["calib_pool"][p] for p in positions] for positions in draws],
     "seed": params.seed, "n": params.n}, indent=1) + "\n")
