import hashlib
import urllib.request
from pathlib import Path

from optin.runtime import start_job

start_job(snakemake.log[0], threads=1, offline=False)
params = snakemake.params
out = Path(snakemake.output[0])
partial = out.with_suffix(".part")
print(f"fetching {params.url}")
with urllib.request.urlopen(params.url, timeout=120) as response, partial.open("wb") as handle:
    while chunk := response.read(1 << 20):
        handle.write(chunk)
digest = hashlib.sha256(partial.read_bytes()).hexdigest()
if not digest.startswith(params.sha256):
    partial.unlink()
    raise ValueError(f"{params.url}: sha256 {digest} does not start with the configured {params.sha256}")
partial.rename(out)
print(f"sha256 {digest}")
