FIGURES = expand(
    "results/figures/{name}.{ext}", name=["accuracy_vs_flops", "speedup_vs_flops", "delta_top1_vs_flops"], ext=["png", "pdf"]
)


rule figures:
    input:
        "results/tables/metrics.csv",
    output:
        accuracy_png=report(
            "results/figures/accuracy_vs_flops.png",
            caption="../workflow/report/accuracy_vs_flops.rst",
            category="Text arm",
        ),
        accuracy_pdf="results/figures/accuracy_vs_flops.pdf",
        speedup_png=report(
            "results/figures/speedup_vs_flops.png",
            caption="../workflow/report/speedup_vs_flops.rst",
            category="Text arm",
        ),
        speedup_pdf="results/figures/speedup_vs_flops.pdf",
        delta_top1_png=report(
            "results/figures/delta_top1_vs_flops.png",
            caption="../workflow/report/delta_top1_vs_flops.rst",
            category="Vision arm",
        ),
        delta_top1_pdf="results/figures/delta_top1_vs_flops.pdf",
    params:
        vision_references=vision_references(),
    conda:
        "../envs/optin.yaml"
    log:
        "logs/figures/figures.log",
    benchmark:
        "benchmarks/figures/figures.tsv"
    localrule: True
    script:
        "../scripts/figures.py"
