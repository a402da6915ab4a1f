"""Sweep variants, their names, and seed ranges."""

import re

import pytest

from optbench import grid

SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def test_no_sweep_is_the_base_variant_alone():
    [base] = grid.expand_sweep({"lr": 0.1}, {})
    assert (base.name, base.kwargs, base.swept) == ("base", {"lr": 0.1}, {})


def test_sweep_is_the_cartesian_product_over_the_base_kwargs():
    variants = grid.expand_sweep(
        {"lr": 0.1, "momentum": 0.0, "nesterov": False},
        {"momentum": [0.5, 0.9], "lr": [0.01, 1]},
    )
    assert [v.name for v in variants] == [
        "base",
        "lr0.01-momentum0.5",
        "lr0.01-momentum0.9",
        "lr1-momentum0.5",
        "lr1-momentum0.9",
    ]
    assert variants[2].kwargs == {"lr": 0.01, "momentum": 0.9, "nesterov": False}
    assert variants[3].swept == {"lr": 1, "momentum": 0.5}
    assert all(SAFE.match(v.name) for v in variants)


def test_adding_a_value_renames_no_existing_variant():
    before = {v.name: v.kwargs for v in grid.expand_sweep({}, {"lr": [0.001, 0.01, 0.1]})}
    after = {v.name: v.kwargs for v in grid.expand_sweep({}, {"lr": [0.001, 0.01, 0.1, 1.0]})}
    assert {name: after[name] for name in before} == before
    assert set(after) - set(before) == {"lr1.0"}


@pytest.mark.parametrize(
    ("value", "token"),
    [
        (0.1, "0.1"),
        (1e-05, "1e-05"),
        (1e20, "1e20"),
        (3, "3"),
        (3.0, "3.0"),
        (-0.5, "-0.5"),
        (True, "true"),
        (False, "false"),
        ([0.9, 0.999], "0.9_0.999"),
    ],
)
def test_value_tokens_read_back_to_their_value(value, token):
    assert grid.value_token(value) == token


def test_distinct_floats_get_distinct_names():
    values = [10.0**exponent for exponent in range(-8, 3)] + [0.3, 0.1 + 0.2]
    names = {grid.variant_name({"lr": value}) for value in values}
    assert len(names) == len(values)


def test_seed_ranges_follow_values_not_positions():
    ranges = grid.seed_ranges([7, 0, 1, 2, 10], 4)
    assert [(b.label, b.seeds) for b in ranges] == [
        ("0-3", (0, 1, 2)),
        ("4-7", (7,)),
        ("8-11", (10,)),
    ]
    # adding seed 5 changes only the range 4-7
    after = {b.label: b.seeds for b in grid.seed_ranges([7, 0, 1, 2, 10, 5], 4)}
    assert after == {"0-3": (0, 1, 2), "4-7": (5, 7), "8-11": (10,)}


@pytest.mark.parametrize(("value", "kind"), [({"a": 1}, "dict"), (None, "NoneType")])
def test_value_token_refuses_other_types_naming_the_type(value, kind):
    with pytest.raises(TypeError, match=f"^cannot name a variant after a {kind} value$"):
        grid.value_token(value)


def test_a_cell_has_one_definition_of_its_fields():
    """settings.Cell, job keys, summaries and tables all follow grid.CELL_FIELDS."""
    import dataclasses

    from optbench.planning import settings
    from optbench.reporting import analysis, selection, summary

    assert tuple(f.name for f in dataclasses.fields(settings.Cell)) == grid.CELL_FIELDS
    assert tuple(summary.IDENTITY) == grid.CELL_FIELDS
    assert tuple(analysis.ENTRY) == tuple(selection.ENTRY) == grid.ENTRY_FIELDS
    assert grid.CELL_FIELDS[:3] == grid.ENTRY_FIELDS
