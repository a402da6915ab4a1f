"""What makes a snakemake start cheap without changing what it computes: the
disk cache (optbench.planning.disk_cache) of the code digests' import scans
(planning.commands) and of torch's class catalogue (planning.torch_catalog),
and libyaml's parser for the schema and config files (planning.config_files).

Each is checked against an independent reference: the digest against hashlib
over the files a full walk of the import statements finds, the catalogue
against a fresh reading of torch's source, the fast YAML loader against
PyYAML's pure-Python loader. A cached entry must never be stale: the tests
edit files while keeping their size and modification time, which a cache keyed
by (path, size, mtime) would miss."""

import ast
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SCHEMA
from optbench.planning import commands, config_files, disk_cache, torch_catalog

SCRIPTS = REPO / "workflow" / "scripts"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty disk cache of this test's own, and this process's memory of the
    import scans forgotten, so that each test starts cold."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("OPTBENCH_CACHE", str(folder))
    monkeypatch.setattr(commands, "_IMPORTS", {})
    monkeypatch.setattr(commands, "_IMPORTS_READ", False)
    torch_catalog.load.cache_clear()
    yield folder
    torch_catalog.load.cache_clear()


def forget_imports(monkeypatch):
    """A new process's memory: nothing parsed yet, the disk cache not yet read."""
    monkeypatch.setattr(commands, "_IMPORTS", {})
    monkeypatch.setattr(commands, "_IMPORTS_READ", False)


def edit_keeping_size_and_time(path: Path, old: str, new: str):
    """Replaces ``old`` with ``new`` (as long) in ``path`` and puts its size and
    modification time back as they were."""
    assert len(old) == len(new)
    info = path.stat()
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (info.st_size, info.st_mtime_ns)


# --- disk_cache -------------------------------------------------------------


def test_the_disk_cache_keeps_entries_across_writers_and_trims_the_oldest(cache, monkeypatch):
    assert disk_cache.read("x.json") == {}
    disk_cache.add("x.json", {"a": [1], "b": [2]})
    disk_cache.add("x.json", {"c": [3]})
    assert disk_cache.read("x.json") == {"a": [1], "b": [2], "c": [3]}
    monkeypatch.setattr(disk_cache, "MAX_ENTRIES", 2)
    disk_cache.add("x.json", {"a": [4]})  # a again: now the newest
    assert disk_cache.read("x.json") == {"c": [3], "a": [4]}
    assert [p.name for p in cache.iterdir()] == ["x.json"]  # no temporary file left


def test_a_corrupt_or_unwritable_cache_is_only_a_slower_start(cache, monkeypatch):
    cache.mkdir()
    (cache / "x.json").write_text('{"a": [1], "b"')  # cut off mid-write by hand
    assert disk_cache.read("x.json") == {}
    (cache / "y.json").write_text("[1, 2]")  # not a mapping
    assert disk_cache.read("y.json") == {}
    blocked = cache / "file"
    blocked.write_text("")
    monkeypatch.setenv("OPTBENCH_CACHE", str(blocked / "below a file"))
    disk_cache.add("x.json", {"a": [1]})  # cannot be written: no error
    assert disk_cache.read("x.json") == {}


def test_an_empty_cache_variable_turns_the_cache_off(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTBENCH_CACHE", "")
    assert disk_cache.folder() is None
    disk_cache.add("x.json", {"a": [1]})
    assert disk_cache.read("x.json") == {}
    monkeypatch.delenv("OPTBENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert disk_cache.folder() == tmp_path / "optbench"


# --- code digests ---------------------------------------------------------


def reference_digest(scripts: Path, *starts: str) -> str:
    """code_digest worked out independently: every import statement (ast.walk over
    every node), followed transitively through optbench's files, hashed with hashlib."""
    found, pending = set(), list(starts)
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found.add(name)
        for node in ast.walk(ast.parse((scripts / name).read_text())):
            modules = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            for module in modules:
                if module.split(".")[0] != "optbench":
                    continue
                path = Path(*module.split("."))
                for candidate in (path.with_suffix(".py"), path / "__init__.py"):
                    if (scripts / candidate).is_file():
                        pending.append(str(candidate))
    digest = hashlib.sha256()
    for name in sorted(found):
        digest.update(name.encode() + b"\0" + (scripts / name).read_bytes())
    return digest.hexdigest()[:12]


def test_digests_from_a_cold_and_a_warm_cache_equal_hashlib_over_the_files(cache, monkeypatch):
    scripts = ("summarize_cell.py", "summarize.py", "plot.py", "explore.py", "write_columnar.py")
    expected = {s: reference_digest(SCRIPTS, s) for s in scripts}
    cold = {s: commands.code_digest(SCRIPTS, s) for s in scripts}
    assert cold == expected
    assert (cache / commands._IMPORTS_CACHE).is_file()
    forget_imports(monkeypatch)
    monkeypatch.setattr(commands, "_parsed_imports", lambda source: pytest.fail("parsed again"))
    warm = {s: commands.code_digest(SCRIPTS, s) for s in scripts}
    assert warm == expected


def test_a_cached_import_scan_is_never_stale(cache, tmp_path, monkeypatch):
    """An edit that keeps the file's size and time (a checkout, a copy with its
    times kept, an edit within the clock's resolution) still changes what the
    digest covers: the cache is keyed by the file's bytes."""
    scripts = tmp_path / "scripts"
    (scripts / "optbench").mkdir(parents=True)
    (scripts / "optbench" / "__init__.py").write_text("")
    (scripts / "optbench" / "aa.py").write_text("x = 1\n")
    (scripts / "optbench" / "bb.py").write_text("y = 2\n")
    (scripts / "job.py").write_text("import optbench.aa\n")
    before = commands.code_digest(scripts, "job.py")
    assert before == reference_digest(scripts, "job.py")
    assert commands.optbench_imports(scripts, "job.py") == ["job.py", "optbench/aa.py"]
    edit_keeping_size_and_time(scripts / "job.py", "optbench.aa", "optbench.bb")
    for process in ("this process", "a new process"):
        after = commands.code_digest(scripts, "job.py")
        assert after == reference_digest(scripts, "job.py") != before, process
        assert commands.optbench_imports(scripts, "job.py") == ["job.py", "optbench/bb.py"]
        forget_imports(monkeypatch)


def test_a_training_job_reads_the_import_scans_another_process_wrote(cache, tmp_path):
    """The cache is shared through the disk: a second process finds every scan the
    first wrote and parses nothing; both give the reference digest."""
    program = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from pathlib import Path; from optbench.planning import commands;"
        "parsed = []; real = commands._parsed_imports;"
        "commands._parsed_imports = lambda s: parsed.append(1) or real(s);"
        "print(commands.training_code_digest(Path(sys.argv[1])), len(parsed))"
    )
    environment = {**os.environ, "OPTBENCH_CACHE": str(cache)}
    runs = [
        subprocess.run(
            [sys.executable, "-c", program, str(SCRIPTS)],
            env=environment,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        for _ in range(2)
    ]
    builtin = sorted(
        p.relative_to(SCRIPTS) for p in (SCRIPTS / "optbench/problems/builtin").glob("*.py")
    )
    expected = reference_digest(SCRIPTS, "train.py", *map(str, builtin))
    assert runs[0][0] == runs[1][0] == expected
    assert int(runs[0][1]) > 20 and runs[1][1] == "0"


# --- torch's catalogue ---------------------------------------------------


def typed(value):
    """A value with the type of every part spelt out: 1 == 1.0 == True and
    (1,) != [1] only in type, which an exact round trip must keep."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return (type(value).__name__, [typed(item) for item in value])
    if hasattr(value, "__dataclass_fields__"):
        return (type(value).__name__, typed(vars(value)))
    return (type(value).__name__, value)


def copied_torch(tmp_path) -> Path:
    """The files of the installed torch that the catalogue reads, copied with
    their times, as a torch folder of its own."""
    real = torch_catalog._torch_dir()
    consulted = {}
    torch_catalog._read(real, consulted)
    copy = tmp_path / "site" / "torch"
    for entry in consulted.values():
        if entry is not None:
            relative = entry.rsplit(":", 1)[0]
            target = copy.parent / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(real.parent / relative, target)
    return copy


def test_the_cached_catalogue_is_the_catalogue_read_from_source(cache, monkeypatch):
    fresh = torch_catalog._read(torch_catalog._torch_dir(), {})
    assert torch_catalog.load() is not None  # cold: read and written
    assert (cache / torch_catalog._CATALOG_CACHE).is_file()
    torch_catalog.load.cache_clear()
    monkeypatch.setattr(torch_catalog, "_read", lambda *a: pytest.fail("read again"))
    warm = torch_catalog.load()
    assert typed(warm) == typed(fresh)
    assert warm == fresh
    # Defaults of every kind the catalogue holds survive the round trip.
    kinds = {e.kind for s in warm.optimizers.values() for e in s.expected.values()}
    assert {"bool", "number", "integer", "sequence"} <= kinds


def test_a_cached_catalogue_is_never_stale(cache, tmp_path, monkeypatch):
    """An edit to torch's source that keeps the file's size and time, or a file
    that now shadows another, is seen: the entry is checked against the bytes."""
    torch_dir = copied_torch(tmp_path)
    monkeypatch.setattr(torch_catalog, "_torch_dir", lambda: torch_dir)
    first = torch_catalog.load()
    assert first.optimizers["SGD"].expected["lr"].default == 0.001
    # SGD's default learning rate, as long as before.
    sgd = torch_dir / "optim" / "sgd.py"
    old = "lr: float | Tensor = 1e-3,"
    assert old in sgd.read_text(), "torch's SGD source changed: update this test's edit"
    edit_keeping_size_and_time(sgd, old, old.replace("1e-3", "2e-3"))
    torch_catalog.load.cache_clear()
    edited = torch_catalog.load()
    assert edited.optimizers["SGD"].expected["lr"].default == 0.002
    assert typed(edited) == typed(torch_catalog._read(torch_dir, {}))
    # A module file that now comes first (optim.py before optim/__init__.py).
    (torch_dir / "optim.py").write_text("")
    torch_catalog.load.cache_clear()
    assert torch_catalog.load() is None  # as a fresh reading finds: no optimizers
    assert torch_catalog._read(torch_dir, {}) is None


# --- YAML -----------------------------------------------------------------


def yaml_texts() -> dict[str, str]:
    """Every YAML file of the repository and every YAML block of its docs."""
    texts = {}
    for path in sorted(REPO.rglob("*.y*ml")):
        parts = set(path.relative_to(REPO).parts)
        if path.suffix in (".yaml", ".yml") and not parts & {
            ".venv",
            "results",
            "mutants",
            ".snakemake",
        }:
            texts[str(path.relative_to(REPO))] = path.read_text()
    for doc in sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")]):
        blocks = re.findall(r"```ya?ml\n(.*?)```", doc.read_text(), re.S)
        for number, block in enumerate(blocks):
            texts[f"{doc.name} block {number}"] = block
    return texts


def pure_reading(text: str, loader):
    try:
        return typed(yaml.load(text, Loader=loader))  # noqa: S506 (safe loaders)
    except yaml.YAMLError as error:
        return f"refused: {error}"


def test_every_config_file_and_the_schema_read_alike_on_both_parsers(tmp_path):
    """The fast loaders give exactly the pure-Python loaders' values, types included;
    where the pure loader refuses a text, the same error comes back."""
    texts = yaml_texts()
    assert len(texts) > 25 and any("config.schema.yaml" in name for name in texts)
    for number, (name, text) in enumerate(texts.items()):
        path = tmp_path / f"{number}.yaml"
        path.write_text(text)
        for fast, pure in (
            (config_files.FastConfigLoader, config_files.ConfigLoader),
            (config_files.FastSafeLoader, yaml.SafeLoader),
        ):
            try:
                got = typed(config_files.read_yaml_file(path, fast, pure))
            except yaml.YAMLError as error:
                got = f"refused: {error}"
            assert got == pure_reading(text, pure), name
    assert config_files.load_schema(SCHEMA) == yaml.load(SCHEMA.read_text(), Loader=yaml.SafeLoader)  # noqa: S506


def test_the_fast_config_loader_reads_yaml_1_2_exponent_floats(tmp_path):
    """ConfigLoader's resolver for 1e-4 and friends holds on libyaml's parser too;
    the plain safe loaders keep YAML 1.1's reading (text)."""
    path = tmp_path / "exponents.yaml"
    path.write_text("a: 1e-4\nb: 1E5\nc: -2e-3\nd: .5e-3\ne: 1.0e+4\nf: '1e-4'\ng: 1.5\nh: 7\n")
    expected = {
        "a": 1e-4,
        "b": 1e5,
        "c": -2e-3,
        "d": 0.5e-3,
        "e": 1e4,
        "f": "1e-4",
        "g": 1.5,
        "h": 7,
    }
    assert yaml.__with_libyaml__, "PyYAML without libyaml: the fast loaders are the pure ones"
    assert config_files.FastConfigLoader is not config_files.ConfigLoader
    assert typed(config_files.read_yaml_file(path)) == typed(expected)
    assert typed(config_files.load_config_files([path])) == typed(expected)
    assert (
        config_files.read_yaml_file(path, config_files.FastSafeLoader, yaml.SafeLoader)["a"]
        == "1e-4"
    )


def test_a_refused_file_gets_the_pure_loaders_message(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("steps: 40\noptimizers: {sgd: [\n")
    with pytest.raises(yaml.YAMLError) as pure:
        yaml.load(path.read_text(), Loader=config_files.ConfigLoader)  # noqa: S506
    with pytest.raises(config_files.ConfigError) as refused:
        config_files.load_config_files([path])
    assert " ".join(str(pure.value).split()) in str(refused.value)


# --- the schema check's verdict ---------------------------------------------


def schema_and_tiny_config():
    from optbench.planning import settings

    schema = config_files.load_schema(SCHEMA)
    config = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    return settings, schema, config_files._fill_defaults(config, schema)


def jsonschema_verdict(schema, config) -> list:
    """The reference: jsonschema itself, every time."""
    import jsonschema

    return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(config)]


def test_a_kept_schema_verdict_is_used_only_for_the_same_schema_config_and_version(
    cache, monkeypatch
):
    """Passed once, the same config is passed again without jsonschema; a value of
    another type (5 -> 5.0 -> true), another schema or another jsonschema version
    is checked again, with the reference's verdict."""
    settings, schema, config = schema_and_tiny_config()
    assert settings._schema_errors(schema, config) == [] == jsonschema_verdict(schema, config)
    assert len(disk_cache.read(settings._PASSED_CACHE)) == 1

    # Kept: passed again with jsonschema made unimportable.
    importable = sys.modules["jsonschema"]
    monkeypatch.setitem(sys.modules, "jsonschema", None)
    assert settings._schema_errors(schema, config) == []
    monkeypatch.setitem(sys.modules, "jsonschema", importable)
    for steps in (5.0, True, "5", 0):
        changed = {**config, "steps": steps}
        found = [e.message for e in settings._schema_errors(schema, changed)]
        assert found == jsonschema_verdict(schema, changed), steps
    assert [e.message for e in settings._schema_errors(schema, {**config, "steps": True})]
    stricter = {**schema, "properties": {**schema["properties"]}}
    stricter["properties"]["steps"] = {**schema["properties"]["steps"], "maximum": 4}
    found = [e.message for e in settings._schema_errors(stricter, config)]
    assert found == jsonschema_verdict(stricter, config) != []
    # Another jsonschema version: checked again (here it cannot be imported).
    monkeypatch.setattr(settings.importlib.metadata, "version", lambda name: "0.0-other")
    monkeypatch.setitem(sys.modules, "jsonschema", None)
    with pytest.raises(ImportError):
        settings._schema_errors(schema, config)


def test_a_config_json_cannot_hold_exactly_is_always_checked(cache):
    settings, schema, config = schema_and_tiny_config()
    assert settings._passed_key(schema, config) is not None
    assert settings._passed_key(schema, {**config, "seeds": (0, 1)}) is None  # a tuple
    assert settings._passed_key(schema, {**config, "thresholds": {1: 0.5}}) is None  # int key
    assert settings._passed_key(schema, {**config, "steps": 5}) != settings._passed_key(
        schema, {**config, "steps": 5.0}
    )
    settings._schema_errors(schema, {**config, "seeds": (0, 1)})
    assert disk_cache.read(settings._PASSED_CACHE) == {}  # nothing kept


def test_a_config_the_schema_refuses_is_never_kept(cache):
    settings, schema, config = schema_and_tiny_config()
    bad = {**config, "steps": -1}
    for _ in range(2):
        assert (
            [e.message for e in settings._schema_errors(schema, bad)]
            == jsonschema_verdict(schema, bad)
            != []
        )
    assert disk_cache.read(settings._PASSED_CACHE) == {}
