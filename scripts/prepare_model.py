from pathlib import Path

from optin.workflow.runtime import start_job, write_json

start_job(snakemake.log[0], snakemake.threads, family=snakemake.params.family)

from optin.arch import family  # noqa: E402
from optin.models import PreparationJob  # noqa: E402

params = snakemake.params
# source kind local: the user's own checkpoint, a directory (HF families) or a state-dict file (CNNs)
local = getattr(snakemake.input, "local", None)
local_dir, local_file = (local, None) if local and Path(local).is_dir() else (None, local)
job = PreparationJob(
    name=snakemake.wildcards.model, family=params.family, source=params.source, num_labels=params.num_labels,
    num_layers=params.num_layers, seed=params.seed, checkpoint=snakemake.output.checkpoint, training=params.training,
    training_key=params.training_key, data=list(getattr(snakemake.input, "data", [])), pretrained_dir=getattr(snakemake.input, "hub", None) or local_dir,
    weights=getattr(snakemake.input, "weights", None) or local_file, max_length=params.max_length, image_size=params.image_size, pixels=params.pixels)
models = family(params.family).models()
model, info = models.prepare(job)
models.save_checkpoint(model, job.checkpoint)
if "test_accuracy" in info:
    print(f"test accuracy: {info['test_accuracy']:.4f}")
write_json(Path(snakemake.output.info), info)
