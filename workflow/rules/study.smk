# The study's record (optbench.planning.studies): which configuration made the
# results in its folder. Made from every table and figure, so it is the last
# job and is written only when they all are; its params make it follow the
# config. snakemake --report compares it with the config it is given.


localrules:
    record_study,


rule record_study:
    input:
        study_outputs(),
    output:
        STUDY_RECORD,
    log:
        f"{RESULTS}/logs/record_study.log",
    conda:
        ANALYSIS_ENV
    params:
        study=STUDY,
        config_files=CONFIG_FILES,
        digest=CONFIG_DIGEST,
    script:
        "../scripts/record_study.py"
