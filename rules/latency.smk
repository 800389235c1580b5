rule latency_table:
    # Latency lookup table of one model on the run's device, on the batch evaluate times
    # (evaluation.latency: batch size, sequence length, threads, repeats, warm-up): a slim model per
    # head count and per point of a neuron grid, interleaved with the dense model (optin.engine.latency).
    # The latency-budgeted search and every evaluation's predicted speed-up read it.
    wildcard_constraints:
        dataset=datasets_of_kind(TEXT_SOURCES + IMAGE_SOURCES),
    input:
        checkpoint=lambda w: checkpoint_dir(w.model),
        data=lambda w: dataset_files(w.dataset),
    output:
        "results/latency/{model}/{dataset}/{device}.json",
    params:
        device=DEVICE,
        family=lambda w: config["models"][w.model]["family"],
        max_length=lambda w: config["datasets"][w.dataset].get("max_length"),
        image_size=lambda w: config["datasets"][w.dataset].get("image_size"),
        pixels=lambda w: config["datasets"][w.dataset].get("pixels"),
        latency=config["evaluation"]["latency"],
    # Timed on evaluation.latency.threads cores, as evaluate times.
    threads: config["evaluation"]["latency"].get("threads", config["threads"])
    resources:
        gpu=gpus,
        mem_mb=memory(6000),
        runtime=20,
    conda:
        "../envs/optin.yaml"
    log:
        "logs/latency_table/{model}/{dataset}/{device}.log",
    benchmark:
        "benchmarks/latency_table/{model}/{dataset}/{device}.tsv"
    script:
        "../scripts/latency_table.py"
