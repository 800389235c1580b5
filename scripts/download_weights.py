import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from optin.workflow.runtime import start_job

start_job(snakemake.log[0], threads=1, offline=False)
params, model = snakemake.params, snakemake.wildcards.model
out = Path(snakemake.output[0])
partial = out.with_suffix(".part")
print(f"fetching {params.url}")
try:
    with urllib.request.urlopen(params.url, timeout=120) as response, partial.open("wb") as handle:
        while chunk := response.read(1 << 20):
            handle.write(chunk)
except (urllib.error.URLError, OSError) as err:
    partial.unlink(missing_ok=True)
    raise SystemExit(f"models.{model}.source.url: cannot fetch {params.url}: {getattr(err, 'reason', err)}") from None
digest = hashlib.sha256(partial.read_bytes()).hexdigest()
if not digest.startswith(params.sha256):
    partial.unlink()
    raise SystemExit(f"models.{model}.source.sha256: {params.url} has sha256 {digest}, which does not start with the "
                     f"configured {params.sha256}; fix the url or the checksum (chenyaofo's file names end in it)")
partial.rename(out)
print(f"sha256 {digest}")
