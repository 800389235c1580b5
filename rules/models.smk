rule download_model:
    # The only rule that reaches a model hub; the revision is pinned in the config.
    output:
        directory("results/hub/{model}"),
    params:
        repo_id=lambda w: config["models"][w.model]["source"]["id"],
        revision=lambda w: config["models"][w.model]["source"]["revision"],
    conda:
        "../envs/optin.yaml"
    log:
        "logs/download_model/{model}.log",
    benchmark:
        "benchmarks/download_model/{model}.tsv"
    localrule: True
    script:
        "../scripts/download_model.py"


rule download_weights:
    # A plain state-dict file (the paper's CIFAR CNNs), checked against the configured sha256.
    output:
        "results/downloads/weights/{model}.pt",
    params:
        url=lambda w: config["models"][w.model]["source"]["url"],
        sha256=lambda w: config["models"][w.model]["source"]["sha256"],
    conda:
        "../envs/optin.yaml"
    log:
        "logs/download_weights/{model}.log",
    benchmark:
        "benchmarks/download_weights/{model}.tsv"
    localrule: True
    script:
        "../scripts/download_weights.py"


rule prepare_model:
    input:
        unpack(prepare_inputs),
    output:
        checkpoint=directory("results/models/{model}/checkpoint"),
        info="results/models/{model}/model_info.json",
    params:
        family=lambda w: config["models"][w.model]["family"],
        source=lambda w: config["models"][w.model]["source"],
        # the family's training key (finetune, vit_training, linear_probe, segmentation_training or
        # cnn_training) and its settings
        training_key=lambda w: training_of(config["models"][w.model])[0],
        training=lambda w: training_of(config["models"][w.model])[1],
        image_size=lambda w: config["datasets"][prepared_on(w.model)].get("image_size") if prepared_on(w.model) else None,
        pixels=lambda w: config["datasets"][prepared_on(w.model)].get("pixels") if prepared_on(w.model) else None,
        num_layers=lambda w: config["models"][w.model]["num_layers"],
        num_labels=lambda w: config["models"][w.model]["num_labels"],
        max_length=lambda w: config["datasets"][prepared_on(w.model)].get("max_length") if prepared_on(w.model) else None,
        seed=config["seed"],
    threads: config["threads"]
    resources:
        mem_mb=memory(6000),
        runtime=60,
    conda:
        "../envs/optin.yaml"
    log:
        "logs/prepare_model/{model}.log",
    benchmark:
        "benchmarks/prepare_model/{model}.tsv"
    script:
        "../scripts/prepare_model.py"
