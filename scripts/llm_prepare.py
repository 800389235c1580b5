import time
from pathlib import Path

from optin.workflow.runtime import start_job, write_json

start_job(snakemake.log[0], snakemake.threads, family="llama")

from optin.models import llm  # noqa: E402

params = snakemake.params
start = time.perf_counter()
model, tokenizer, info = llm.prepare(llm.LlmPreparation(name=snakemake.wildcards.model, source=params.source,
                                                        channel_group=params.channel_group))
info["load_seconds"] = time.perf_counter() - start
llm.save_checkpoint(model, snakemake.output.checkpoint, tokenizer)
# The dense model's quality, once: every evaluation of a slim model reads it from here.
data = llm.EvaluationData.load(tokenizer, snakemake.input.documents, snakemake.input.split, snakemake.input.zero_shot,
                               params.evaluation)
info["dense"] = data.quality(model, tokenizer)
info["dense"]["answer"] = llm.generate_text(model, tokenizer)
write_json(Path(snakemake.output.info), info)
print(info)
