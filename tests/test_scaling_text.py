"""tools/scaling_text.py: the scaling study's section is made from its tables only.

The study is not run by the suite; planted tables in the study's formats
stand in, and every number the text states is checked against them.
"""

import importlib.util

import pandas as pd

from conftest import REPO

_spec = importlib.util.spec_from_file_location("scaling_text", REPO / "tools/scaling_text.py")
scaling_text = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scaling_text)


def write(folder, name, rows):
    pd.DataFrame(rows).to_csv(folder / name, sep="\t", index=False)


def planted(folder):
    write(
        folder,
        "scaling.tsv",
        [
            {
                "family": "digits",
                "loss": "ce",
                "size": size,
                "parameters": count,
                "optimizer": "muon",
                "baseline": "adamw",
                "budget": 100,
                "metric": "heldout_loss",
                "n_seeds": 10,
                "speedup_text": text,
            }
            for size, count, text in (
                ("xs", 610, "1.8x [1.4, 2.2]"),
                ("m", 9610, "> 2x [1.5, > 2]"),
            )
        ],
    )
    write(
        folder,
        "rank_flips.tsv",
        [
            {
                "family": "digits",
                "loss": "ce",
                "size": "xs",
                "budget": 50,
                "longest_budget": 200,
                "kendall_tau": 0.0,
                "n_flipped": 2,
                "flipped_pairs": "adamw/muon; lion/soap",
            },
            {
                "family": "digits",
                "loss": "ce",
                "size": "m",
                "budget": 50,
                "longest_budget": 200,
                "kendall_tau": 1.0,
                "n_flipped": 0,
                "flipped_pairs": "",
            },
        ],
    )
    write(
        folder,
        "claims.tsv",
        [
            {
                "claim": "the speed-up of matrix-based optimizers (Muon, SOAP) over tuned AdamW "
                "decreases with model size (Wen et al. 2025)",
                "verdict": "contradicted",
                "numbers": "n1",
            },
            {
                "claim": "rankings at intermediate checkpoints can differ from rankings at the end "
                "of "
                "training (Wen et al. 2025)",
                "verdict": "supported",
                "numbers": "n2",
            },
        ],
    )


def test_the_section_states_what_the_tables_say(tmp_path):
    planted(tmp_path)
    text = scaling_text.render(tmp_path)
    assert "xs (610 parameters) 1.8x [1.4, 2.2]; m (9,610 parameters) > 2x [1.5, > 2]" in text
    assert "2 comparisons): 1 with a flipped pair: xs at 50 of 200 steps" in text
    assert "(adamw/muon; lion/soap; tau 0)" in text
    assert "**contradicted**. n1" in text and "**supported**. n2" in text
    assert text.endswith(
        "speed-up shrinks with size: not reproduced (contradicted); rank flips: reproduced "
        "(supported)."
    )
    assert "10 evaluation seeds" in text


def test_a_finding_held_for_one_optimizer_only_says_which(tmp_path):
    planted(tmp_path)
    claims = pd.read_csv(tmp_path / "claims.tsv", sep="\t")
    claims.loc[0, "verdict"] = "not shown: supported for muon, not shown for soap"
    claims.to_csv(tmp_path / "claims.tsv", sep="\t", index=False)
    assert scaling_text.render(tmp_path).endswith(
        "speed-up shrinks with size: reproduced for muon only (not shown: supported for muon, "
        "not shown for soap); rank flips: reproduced (supported)."
    )


def test_without_the_study_the_section_says_it_has_not_run(tmp_path):
    assert scaling_text.render(tmp_path) == scaling_text.NOT_RUN
    document = scaling_text.DOC.read_text(encoding="utf-8")
    section = document.split(scaling_text.SECTION.begin, 1)[1].split(scaling_text.SECTION.end)[0]
    assert section.strip() == scaling_text.render(scaling_text.SNAPSHOT).strip()
