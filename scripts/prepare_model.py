from pathlib import Path

from optin.runtime import start_job

start_job(snakemake.log[0], snakemake.threads)

from optin.arch import adapter_for  # noqa: E402
from optin.data.text import load_split  # noqa: E402
from optin.models.text import accuracy, finetune, load_base, mean_token_length, write_json  # noqa: E402

params = snakemake.params
hub_dir = Path(snakemake.input.hub) if params.source["kind"] == "hub" else None
model, tokenizer = load_base(params.source, params.num_labels, hub_dir, params.seed)
adapter = adapter_for(model)
if adapter.num_layers != params.num_layers:
    raise ValueError(
        f"models.{snakemake.wildcards.model}.num_layers is {params.num_layers} but the checkpoint has {adapter.num_layers} layers"
    )
info = {"family": adapter.family, "num_layers": adapter.num_layers, "hidden_size": adapter.hidden_size,
        "head_dim": adapter.head_dim, "heads_per_layer": adapter.unit_counts("head"),
        "neurons_per_layer": adapter.unit_counts("neuron")}
if params.finetune:
    data_dir = Path(snakemake.input.data[0]).parent
    train, test = load_split(data_dir, "train"), load_split(data_dir, "test")
    ft = params.finetune
    model = finetune(model, tokenizer, train["text"].tolist(), train["label"].tolist(), epochs=ft["epochs"],
                     lr=ft["lr"], batch_size=ft["batch_size"], max_length=params.max_length, seed=params.seed)
    info["finetune_dataset"] = ft["dataset"]
    info["test_accuracy"] = accuracy(model, tokenizer, test["text"], test["label"], params.max_length)
    info["mean_test_tokens"] = mean_token_length(tokenizer, test["text"], params.max_length)
    print(f"test accuracy after fine-tuning: {info['test_accuracy']:.4f}")
model.save_pretrained(snakemake.output.checkpoint)
tokenizer.save_pretrained(snakemake.output.checkpoint)
write_json(Path(snakemake.output.info), info)
