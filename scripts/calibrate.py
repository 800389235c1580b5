import json
from pathlib import Path

from optin.runtime import start_job

start_job(snakemake.log[0], snakemake.threads)

import torch  # noqa: E402
from transformers import AutoTokenizer, BertForSequenceClassification  # noqa: E402

from optin.arch import adapter_for  # noqa: E402
from optin.data.text import draw_calibration, load_split, tokenize  # noqa: E402
from optin.scoring import run_teacher  # noqa: E402

params = snakemake.params
data_dir = Path(snakemake.input.data[0]).parent
pool = load_split(data_dir, "calib_pool")
split = json.loads((data_dir / "split.json").read_text())
if len(pool) == 0:
    raise ValueError(f"{data_dir}/split.json: the calibration pool is empty")
draws = draw_calibration(pool, params.n, params.seed, params.draws)
model = BertForSequenceClassification.from_pretrained(snakemake.input.checkpoint).eval()
tokenizer = AutoTokenizer.from_pretrained(snakemake.input.checkpoint)
adapter = adapter_for(model)
# Per draw, the teacher with padding positions as MD rows (the authors' code) and without (length
# buckets); each method picks the one its md_include_padding asks for.
teachers = []
for positions in draws:
    batch = tokenize(tokenizer, pool["text"].iloc[positions].tolist(), params.max_length)
    teachers.append({padding: run_teacher(adapter, batch, include_padding=padding).to_dict() for padding in (True, False)})
    real = int(batch["attention_mask"].sum())
    print(f"calibration batch of {len(positions)} sentences: {real} tokens, padded to {batch['input_ids'].numel()}")
torch.save({"teachers": teachers}, snakemake.output.teacher)
Path(snakemake.output.indices).write_text(json.dumps(
    {"dataset_rows": [[split["calib_pool"][p] for p in positions] for positions in draws],
     "seed": params.seed, "n": params.n}, indent=1) + "\n")
