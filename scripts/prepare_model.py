from pathlib import Path

from optin.runtime import start_job

start_job(snakemake.log[0], snakemake.threads)

from optin.arch import adapter_for  # noqa: E402
from optin.models.text import write_json  # noqa: E402

params = snakemake.params
name = snakemake.wildcards.model
hub_dir = Path(snakemake.input.hub) if params.source["kind"] == "hub" else None


def structure(adapter) -> dict:
    heads = adapter.unit_counts("head")
    if adapter.num_layers != params.num_layers:
        raise ValueError(f"models.{name}.num_layers is {params.num_layers} but the checkpoint has {adapter.num_layers} layers")
    if sum(heads) == 0:
        raise ValueError(f"models.{name}: the checkpoint has no attention heads to prune")
    return {"family": adapter.family, "num_layers": adapter.num_layers, "hidden_size": adapter.hidden_size,
            "head_dim": adapter.head_dim, "heads_per_layer": heads, "neurons_per_layer": adapter.unit_counts("neuron")}


if params.family == "bert":
    from optin.data.text import load_split
    from optin.models.text import finetune, load_base, mean_token_length, task_metric

    model, tokenizer = load_base(params.source, params.num_labels, hub_dir, params.seed)
    info = structure(adapter_for(model, params.family))
    if params.finetune:
        data_dir = Path(snakemake.input.data[0]).parent
        train, test = load_split(data_dir, "train"), load_split(data_dir, "test")
        ft = params.finetune
        model = finetune(model, tokenizer, train, epochs=ft["epochs"],
                         lr=ft["lr"], batch_size=ft["batch_size"], max_length=params.max_length, seed=params.seed)
        info["finetune_dataset"] = ft["dataset"]
        info["test_accuracy"] = task_metric(model, tokenizer, test, params.max_length)
        info["mean_test_tokens"] = mean_token_length(tokenizer, test, params.max_length)
    tokenizer.save_pretrained(snakemake.output.checkpoint)
elif params.family == "mask2former_swin":
    from optin.data.segmentation import open_segmentation_split
    from optin.models import segmentation

    if params.source["kind"] == "hub":
        from transformers import AutoImageProcessor

        model = segmentation.load_segmenter(hub_dir)
        AutoImageProcessor.from_pretrained(hub_dir).save_pretrained(snakemake.output.checkpoint)
    else:
        model = segmentation.mask2former_from_config(params.num_labels, params.source["swin_config"],
                                                     params.source["decoder_config"], params.seed)
    adapter = adapter_for(model, params.family)
    info = structure(adapter)
    split_file, source_file = snakemake.input.data
    processor_dir = hub_dir
    test = open_segmentation_split(split_file, source_file, "test", processor_dir)
    if params.segmentation_training:
        cfg = params.segmentation_training
        train = open_segmentation_split(split_file, source_file, "train", processor_dir)
        model = segmentation.train_segmenter(model, train, steps=cfg["steps"], lr=cfg["lr"], batch_size=cfg["batch_size"],
                                             seed=params.seed)
        adapter = adapter_for(model, params.family)
        scores = segmentation.segmentation_metrics(segmentation.predict(model, test), test.masks, len(test.class_names))
        info.update({"training_dataset": cfg["dataset"], "test_miou": scores["miou"],
                     "test_pixel_accuracy": scores["pixel_accuracy"], "test_iou_per_class": scores["iou_per_class"]})
        print(f"test mIoU: {scores['miou']:.4f}, pixel accuracy {scores['pixel_accuracy']:.4f}")
    # Unit MACs depend on the input size the model sees (after the checkpoint's own preprocessing).
    input_size = list(test.pixels([0]).shape[-2:])
    grid = adapter.patch_grid(input_size)
    head_macs, neuron_macs = adapter.unit_macs(grid)
    info.update({"input_size": input_size, "patch_grid": list(grid), "layer_widths": adapter.layer_widths(),
                 "head_macs_per_layer": head_macs, "neuron_macs_per_layer": neuron_macs,
                 "class_names": test.class_names})
elif params.family in ("cifar_resnet", "vgg"):
    import torch

    from optin.arch.cnn import count_conv_linear_macs, network_macs
    from optin.data.images import open_split
    from optin.models import cnn

    kind = params.source["kind"]
    if kind == "ccexam":
        model = cnn.ccexam_mnist()
    else:
        torch.manual_seed(params.seed)
        model = cnn.build_convnet({**params.source["convnet_config"], "num_labels": params.num_labels})
        if kind == "url":
            model = cnn.load_state_dict_file(model, snakemake.input.weights)
    split_file, source_file = snakemake.input.data
    test = open_split(split_file, source_file, "test", params.image_size, pixels=params.pixels)
    if params.cnn_training:
        cfg = params.cnn_training
        train = open_split(split_file, source_file, "train", params.image_size, pixels=params.pixels)
        model = cnn.train_convnet(model, train, epochs=cfg["epochs"], lr=cfg["lr"], batch_size=cfg["batch_size"],
                                  weight_decay=cfg["weight_decay"], seed=params.seed)
    adapter = adapter_for(model, params.family)
    if adapter.num_layers != params.num_layers:
        raise ValueError(f"models.{name}.num_layers is {params.num_layers} but the network has {adapter.num_layers} prunable layers")
    ops = adapter.mac_ops(params.image_size)
    probe = test.pixels([0])
    # The MAC model must be the network's real cost before anything relies on it.
    counted = count_conv_linear_macs(model, probe)
    if abs(network_macs(ops, adapter.unit_counts()) - counted) > 1e-6 * counted:
        raise RuntimeError(f"MAC model {network_macs(ops, adapter.unit_counts()):.6g} != direct count {counted:.6g}")
    info = {"family": adapter.family, "num_layers": adapter.num_layers, "channels_per_layer": adapter.unit_counts(),
            "min_channels_per_layer": adapter.min_channels(), "mac_ops": [op.to_json() for op in ops],
            "base_macs": counted, "input_size": params.image_size, "params": sum(p.numel() for p in model.parameters()),
            "test_accuracy": cnn.accuracy(model, test)}
    if params.cnn_training:
        info["training_dataset"] = params.cnn_training["dataset"]
else:
    import torch

    from optin.data.images import open_split
    from optin.models import dinov2_onnx, vision

    if params.source["kind"] == "dinov2_onnx":
        model = vision.dinov2_classifier(params.num_labels, params.seed)
        # Fail the rule unless the conversion reproduces onnxruntime on real images.
        atol = params.source.get("verify_atol", 1e-4)
        split_file, source_file = snakemake.input.data
        probe = open_split(split_file, source_file, "train", dinov2_onnx.ONNX_INPUT_SIZE)
        diff = dinov2_onnx.verify(model.dinov2, dinov2_onnx.onnx_path(), probe.pixels(range(4)), atol)
        print(f"DINOv2 conversion vs onnxruntime on 4 images: max |diff| = {diff:.2e} (tolerance {atol:.0e})")
    elif params.source["kind"] == "hub":
        from transformers import AutoImageProcessor

        model = vision.load_classifier(hub_dir)
        # The checkpoint's own preprocessing (resize, crop, mean/std) travels with it.
        AutoImageProcessor.from_pretrained(hub_dir).save_pretrained(snakemake.output.checkpoint)
    else:
        from transformers import ViTConfig, ViTForImageClassification

        torch.manual_seed(params.seed)
        model = ViTForImageClassification(ViTConfig(num_labels=params.num_labels, **params.source["vit_config"])).eval()
    adapter = adapter_for(model, params.family)
    info = structure(adapter)
    info["patch_size"], info["prefix_tokens"], info["num_channels"] = (
        model.config.patch_size, adapter.prefix_tokens, model.config.num_channels)
    info["verify_max_abs_diff"] = diff if params.source["kind"] == "dinov2_onnx" else None
    if params.linear_probe:
        probe_cfg = params.linear_probe
        split_file, source_file = snakemake.input.data
        vision.patch_grid(model, params.image_size)
        train = open_split(split_file, source_file, "train", params.image_size, hub_dir)
        test = open_split(split_file, source_file, "test", params.image_size, hub_dir)
        model = vision.train_linear_head(model, train, epochs=probe_cfg["epochs"], lr=probe_cfg["lr"],
                                         weight_decay=probe_cfg["weight_decay"], seed=params.seed)
        info["linear_probe_dataset"] = probe_cfg["dataset"]
        info["test_accuracy"] = vision.accuracy(model, test)
        info["image_size"] = params.image_size
if params.family in ("cifar_resnet", "vgg"):
    cnn.save_convnet(model, snakemake.output.checkpoint)
else:
    model.save_pretrained(snakemake.output.checkpoint)
if "test_accuracy" in info:
    print(f"test accuracy: {info['test_accuracy']:.4f}")
write_json(Path(snakemake.output.info), info)
