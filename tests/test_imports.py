"""A job imports the code of its own model family only (optin.arch's registry is lazy)."""

import json
import subprocess
import sys

import pytest

OTHER_FAMILIES = {
    "bert": ("optin.arch.vit", "optin.arch.swin", "optin.arch.cnn", "timm"),
    "cifar_resnet": ("optin.arch.bert", "optin.arch.vit", "optin.arch.swin", "timm"),
}
BUILD = {
    "bert": "from transformers import BertConfig, BertForSequenceClassification\n"
            "model = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8))",
    "cifar_resnet": "from optin.models.cnn import CifarResNet\nmodel = CifarResNet(depth=1, stage_widths=(4, 8, 8), in_channels=1, num_labels=10)",
}


@pytest.mark.parametrize("family", sorted(OTHER_FAMILIES))
def test_a_job_imports_only_its_own_family(family):
    code = (f"import json, sys\n{BUILD[family]}\nfrom optin.arch import adapter_for\nfrom optin import scoring, kwon\n"
            f"adapter = adapter_for(model, {family!r})\nprint(json.dumps(sorted(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = set(json.loads(result.stdout.splitlines()[-1]))
    assert f"optin.arch.{'cnn' if family == 'cifar_resnet' else family}" in loaded
    assert not loaded & set(OTHER_FAMILIES[family])


def test_an_unknown_family_is_named():
    from optin.arch import adapter_for

    with pytest.raises(ValueError, match="unknown model family 'llama'"):
        adapter_for(object(), "llama")
