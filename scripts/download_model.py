from pathlib import Path

from optin.models.text import download_hub_model
from optin.runtime import start_job

start_job(snakemake.log[0], threads=1, offline=False)
path = download_hub_model(snakemake.params.repo_id, snakemake.params.revision, Path(snakemake.output[0]))
print(f"downloaded {snakemake.params.repo_id}@{snakemake.params.revision} to {path}")
