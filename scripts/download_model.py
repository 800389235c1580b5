from pathlib import Path

from optin.data.hub import NotInCache
from optin.models.text import download_hub_model
from optin.workflow.runtime import start_job

start_job(snakemake.log[0], threads=1, offline=False)
params = snakemake.params
try:
    commit = download_hub_model(params.repo_id, params.revision, Path(snakemake.output[0]))
except NotInCache as err:
    raise SystemExit(f"models.{snakemake.wildcards.model}.source.id: {err}") from None
print(f"{params.repo_id}@{params.revision} (commit {commit}) in {snakemake.output[0]}")
