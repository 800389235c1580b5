"""The LLM overlay's DAG and its bad-input checks: each stops before any job with one line naming
the key (optin.workflow.llm_config, run by optin.workflow.config.check when the DAG is built)."""

import copy
import json

import pytest
import yaml
from gguf import GGUFWriter

from optin.workflow.config import ConfigError, check, validate_schema
from test_workflow import DEFAULT, ROOT, job_counts, merged, snakemake

LLM = yaml.safe_load((ROOT / "workflow/configs/llm.yaml").read_text())
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


def llm_config(**changes) -> dict:
    """The default config with the LLM overlay and ``changes`` (dotted keys under llm.)."""
    config = copy.deepcopy(merged(DEFAULT, LLM))  # merged() shares the overlay's nested values
    for path, value in changes.items():
        node = config["llm"]
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    return config


def error_of(config) -> str:
    validate_schema(config, SCHEMA)
    with pytest.raises(ConfigError) as raised:
        check(config, base_dir=ROOT)
    return str(raised.value)


def write_gguf(path, architecture: str, ffn: int = 1536, context: int = 8192):
    writer = GGUFWriter(str(path), architecture)
    writer.add_block_count(2)
    writer.add_feed_forward_length(ffn)
    writer.add_context_length(context)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_the_overlay_config_passes_its_checks():
    config = llm_config()
    validate_schema(config, SCHEMA)
    check(config, base_dir=ROOT)


def test_a_gguf_of_another_architecture_is_refused(tmp_path):
    gguf = write_gguf(tmp_path / "gpt2.gguf", "gpt2")
    message = error_of(llm_config(**{"models.smollm2_135m.source": {"kind": "gguf", "path": str(gguf)}}))
    assert "llm.models.smollm2_135m.source: architecture 'gpt2' is not supported by the llama family" in message


def test_a_channel_group_must_divide_the_mlp_width():
    message = error_of(llm_config(**{"models.smollm2_135m.channel_group": 100}))
    assert "llm.models.smollm2_135m.channel_group: 100 does not divide the MLP width 1536" in message


def test_a_context_longer_than_the_models_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "intermediate_size": 128,
                                                      "max_position_embeddings": 256, "num_hidden_layers": 2}))
    message = error_of(llm_config(**{"models.smollm2_135m.source": {"kind": "local", "path": str(tmp_path)},
                                     "models.smollm2_135m.channel_group": 8}))
    assert "llm.experiments.smollm2_135m: llm.evaluation.perplexity[1].context 512 is longer than the model's context of 256 tokens" in message


def test_unknown_names_and_settings_are_named():
    message = error_of(llm_config(**{"experiments.smollm2_135m.methods": ["optin", "sparsegpt"],
                                     "methods.wanda_sp": {"kind": "wanda_sp", "structure": "adaptive"}}))
    assert "llm.experiments.smollm2_135m.methods: unknown method 'sparsegpt'" in message
    assert "llm.methods.wanda_sp: a wanda_sp method takes no settings ['structure']" in message


@pytest.mark.workflow
def test_the_llm_overlay_dry_run_builds_only_the_llm_arm(tmp_path):
    overlay = tmp_path / "llm.yaml"
    overlay.write_text(yaml.safe_dump(LLM))
    result = snakemake(tmp_path, DEFAULT, "-n", "--configfile", str(tmp_path / "config.yaml"), str(overlay))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    counts = job_counts(result.stdout)
    exp = LLM["llm"]["experiments"]["smollm2_135m"]
    one_pass = len(exp["methods"]) - 2   # optin and magnitude have their own seed counts
    flap_alike = sum(LLM["llm"]["methods"][m]["kind"] == "flap" for m in exp["methods"])
    runs = (len(exp["optin_seeds"]) + 1 + one_pass * len(exp["seeds"])) * len(exp["budgets"])
    assert counts == {"download_dataset": 1, "llm_corpus": 1, "llm_prepare": 1, "llm_calibrate": len(exp["seeds"]),
                      "llm_score_shard": 30 * len(exp["optin_seeds"]), "llm_merge_scores": len(exp["optin_seeds"]),
                      # FLAP's variants share one scoring run per seed
                      "llm_score_peer": (one_pass - flap_alike + 1) * len(exp["seeds"]) + 1, "llm_solve": runs, "llm_evaluate": runs,
                      "llm_report": 1, "all": 1}


def test_the_gpu_resolution_overlay_passes_its_checks():
    config = merged(merged(DEFAULT, LLM), yaml.safe_load((ROOT / "workflow/configs/llm_gpu.yaml").read_text()))
    validate_schema(config, SCHEMA)
    check(config, base_dir=ROOT)
    assert config["llm"]["models"]["smollm2_135m"]["channel_group"] == 1


def test_a_llama_model_under_models_points_to_the_llm_section():
    config = copy.deepcopy(DEFAULT)
    config["models"]["minilm_rt"]["family"] = "llama"
    assert "models.minilm_rt.family: decoder LMs (llama) are configured under llm.models" in error_of(config)
