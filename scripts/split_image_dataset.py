import json
from pathlib import Path

from optin.data.images import describe_source, find_fashion_mnist, make_split, read_fashion_mnist
from optin.runtime import start_job

start_job(snakemake.log[0], threads=1)
source, split = snakemake.params.source, snakemake.params.split
directory = find_fashion_mnist(source.get("dir", "auto"), Path.cwd())
n_train, n_test = len(read_fashion_mnist(directory, "train")[1]), len(read_fashion_mnist(directory, "t10k")[1])
indices = make_split(n_train, n_test, split["train"], split["test"], split["calib_pool"], split["seed"])
Path(snakemake.output.split).write_text(json.dumps(indices) + "\n")
Path(snakemake.output.source).write_text(json.dumps(describe_source(directory), indent=1) + "\n")
print(f"{directory}: {n_train} train / {n_test} test images; train {split['train']}, test {split['test']}, calibration pool {split['calib_pool']}")
