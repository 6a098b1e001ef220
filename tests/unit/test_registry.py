"""The stage registry is the one list of stages: the CLI, the workers and the supervisor all read it.

Each entry builds its runner through :func:`mediavec.workers.build`, the code ``mediavec run``
calls, with the default settings (only the data folder moved to a temporary one); nothing is
started, so no broker, model or store is needed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from consumers.registry import STAGE_NAMES, STAGES, sink_names, stage
from mediavec import cli, supervisor, workers
from mediavec.localworkers import LocalWorkers
from mediavec.settings import Settings
from schemas.spaces import ALL_SPACES
from streams.kafka import group_id
from streams.pipelined import PipelinedRunner
from streams.runner import TransactionalRunner
from streams.sink_runner import StoreSinkRunner
from streams.topics import Topics

RUNNER_OF_KIND = {"pipelined": PipelinedRunner, "transactional": TransactionalRunner, "sink": StoreSinkRunner}


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_every_stage_builds_its_runner_through_workers_build(name: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    spec = stage(name)
    runner = workers.build(name, settings, instance="registry-test")
    assert isinstance(runner, RUNNER_OF_KIND[spec.kind])
    assert isinstance(runner, PipelinedRunner | TransactionalRunner | StoreSinkRunner)  # for the type checker
    assert runner.group == group_id(settings, name)  # the stage class's name is the registry's
    assert runner.input.key == spec.input  # and so is the topic it reads


def test_names_are_unique_and_inputs_are_declared_topics() -> None:
    assert len(set(STAGE_NAMES)) == len(STAGES)
    assert {s.input for s in STAGES} <= set(Topics.__dataclass_fields__)
    assert all(s.description for s in STAGES)


def test_sinks_are_the_stages_of_kind_sink_and_read_the_vectors() -> None:
    assert sink_names() == ("sink-qdrant", "sink-postgres", "sink-encrypted")
    assert {stage(n).input for n in sink_names()} == {"vectors"}


def test_an_unknown_stage_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown stage 'nope'; choose one of fetch, embed, sink-qdrant"):
        stage("nope")
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        workers.build("nope", Settings())


def _subcommand(name: str) -> argparse.ArgumentParser:
    subparsers = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser: argparse.ArgumentParser = subparsers.choices[name]
    return parser


def _choices(sub: str, dest: str) -> list[str]:
    action = next(a for a in _subcommand(sub)._actions if a.dest == dest)
    return list(action.choices or [])


def test_cli_run_choices_are_the_registry_and_its_help_lists_every_stage() -> None:
    assert _choices("run", "stage") == list(STAGE_NAMES)
    epilog = _subcommand("run").epilog or ""
    for spec in STAGES:
        assert f"{spec.name}  " in epilog and spec.description in epilog


def test_cli_space_choices_are_the_declared_spaces_and_all() -> None:
    assert _choices("search", "space") == [*ALL_SPACES, "all"]


def test_supervisor_and_local_workers_refuse_an_unknown_stage_before_starting_anything(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        supervisor.supervise("nope", 1, stagger_s=0)
    local = LocalWorkers(Settings(data_dir=tmp_path), tmp_path / "logs", "registry-test")
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        local.start(["fetch", "nope"])
    assert local.procs == {} and not (tmp_path / "logs").exists()


def test_the_architecture_stage_table_is_the_registry() -> None:
    """ARCHITECTURE.md's table of stages names every stage of the registry, with its input topic."""
    from streams.topics import topics

    text = (Path(__file__).resolve().parents[2] / "ARCHITECTURE.md").read_text()
    table = text[text.index("| stage | input |") :].split("\n\n", 1)[0]
    rows = [line.split("|")[1:3] for line in table.splitlines()[2:]]
    documented = {name.strip(): inp.strip() for name, inp in rows if name.strip() != "every stage"}
    declared = topics(Settings())
    assert documented.keys() == set(STAGE_NAMES)
    for spec in STAGES:
        assert documented[spec.name].startswith(f"`{getattr(declared, spec.input).name}`"), spec.name
