from pathlib import Path

from optin.workflow.runtime import start_job

start_job(snakemake.log[0], threads=1, offline=False)

from torchvision.datasets import CIFAR10  # noqa: E402

root = Path(snakemake.output[0]).parent
for train in (True, False):
    CIFAR10(root=str(root), train=train, download=True)
print(f"CIFAR-10 in {snakemake.output[0]}")
