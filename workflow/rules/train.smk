# One training job per grid point. The job runs as a plain command rather
# than through script:, so it imports torch and the standard library only
# (Snakemake's script preamble would import Snakemake itself into every job).


rule train:
    output:
        tsv=RUN_TSV,
        sidecar=RUN_SIDECAR,
    log:
        "results/logs/train/{loss}/{optimizer}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{loss}/{optimizer}/seed{seed}.tsv"
    threads: 1
    params:
        spec=lambda wildcards: RUN_SPECS[wildcards.loss, wildcards.optimizer],
        python=PYTHON,
        script=str(SCRIPTS / "train.py"),
    shell:
        "{params.python:q} {params.script:q} --spec {params.spec:q} --threads {threads}"
        " --run {wildcards.seed:q} {output.tsv:q} {output.sidecar:q} > {log:q} 2>&1"
