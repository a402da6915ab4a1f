"""One run's settings, typed: from planning through the training job to its sidecar.

``Experiment.run_settings`` makes them for a cell, ``jobs.argument`` packs them
into a job's command line and ``jobs.expand`` unpacks them, the job adds where
it runs from (``located``), ``reuse.settings_digest`` hashes ``digested()``
and the sidecar records ``sidecar_fields()``. Each of those reads these fields
instead of copying a dict's keys by hand.

The settings also read as the mapping they replace (``settings["optimizer"]``,
``settings.get("eval_every", 0)``, ``{**settings}``), with the keys that mapping
had: the cell's and the device always, every later key (``eval_every``, the
two folders) only where it differs from its default. So the JSON a sidecar
holds and the text a ``settings_sha256`` hashes stay byte for byte what they
were, and the runs users have finished stay reusable (tests/test_run_settings.py
rebuilds both by hand); a key added later keeps them so while it has its default.

A per-run config key (docs/development.md, "How to add ..."): a field here with
its default, the Experiment field of the same name (read from the config by
settings.validate), and the engine code that uses it; a job's argument carries
every field outside ``PER_CELL`` and ``LOCATION_KEYS`` (``JOB_WIDE``) by itself.
Standard library only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

# Where the job runs from, not what it computes: never part of the digest.
LOCATION_KEYS = ("problems_dir", "optimizers_dir")
# What a job's argument gives per cell (jobs.argument); the other fields but the
# folders are the same for every run of a study (JOB_WIDE, below the class).
PER_CELL = ("problem", "steps", "loss", "optimizer", "variant")
# In the mapping whatever their value: the keys the first runs were digested with.
ALWAYS = (*PER_CELL, "device")


def digested(settings: Mapping) -> dict:
    """What determines a run's numbers (its seed and the job's context aside): its
    settings without the folders it was run from."""
    return {key: value for key, value in settings.items() if key not in LOCATION_KEYS}


@dataclasses.dataclass(frozen=True, eq=False)  # compared as a mapping
class RunSettings(Mapping):
    """What one cell's runs are trained with (a seed makes it one run)."""

    problem: dict  # Problem.as_dict(): name, problem (registered name), kwargs, kind, ...
    steps: int
    loss: dict | None  # Loss.as_dict(); None for an objective problem
    optimizer: dict  # Optimizer.as_dict(variant): name, class, kwargs, schedule, ...
    variant: str
    device: str  # as configured (auto, cpu, cuda, ...): the job resolves it
    eval_every: int = 0  # 0: no held-out curve (then absent from the mapping)
    # Given on the job's command line, so that moving the repository changes no
    # settings; None until the job sets them (then absent from the mapping).
    problems_dir: str | None = None
    optimizers_dir: str | None = None

    __hash__ = None  # a mapping of dicts: equal by value, never a key

    @classmethod
    def from_mapping(cls, spec: Mapping) -> RunSettings:
        """Settings from their mapping form (a ``--spec`` argument, a test's dict);
        a key that is not a field is a programming error and raises."""
        unknown = set(spec) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"run settings have no key {', '.join(sorted(unknown))}")
        return cls(**spec)

    def located(self, problems_dir: str, optimizers_dir: str) -> RunSettings:
        """These settings, told where the user's problem and optimizer files are."""
        return dataclasses.replace(self, problems_dir=problems_dir, optimizers_dir=optimizers_dir)

    def digested(self) -> dict:
        return digested(self)

    def sidecar_fields(self) -> dict:
        """The settings as a run's sidecar records them: the configured device as
        ``device_requested`` (``device`` is the one the job resolved it to)."""
        fields = {key: value for key, value in self.items() if key != "device"}
        return {**fields, "device_requested": self.device}

    def as_dict(self) -> dict:
        return dict(self.items())

    # ----------------------------------------------------- the mapping view

    def _present(self) -> Iterator[str]:
        for field in dataclasses.fields(self):
            if field.name in ALWAYS or getattr(self, field.name) != field.default:
                yield field.name

    def __getitem__(self, key: str) -> Any:
        if key not in self._present():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return self._present()

    def __len__(self) -> int:
        return sum(1 for _ in self._present())


# Settings every run of a study shares (config keys), given once per job argument.
JOB_WIDE = tuple(
    field.name
    for field in dataclasses.fields(RunSettings)
    if field.name not in PER_CELL + LOCATION_KEYS
)
