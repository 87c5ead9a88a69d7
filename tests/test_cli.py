from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["data"],
        ["data", "ingest"],
        ["data", "show"],
        ["baselines"],
        ["run"],
        ["quality"],
        ["nightly"],
        ["backfill"],
        ["teacher"],
        ["teacher", "run"],
        ["teacher", "status"],
        ["teacher", "repair"],
        ["models"],
        ["models", "list"],
        ["models", "show"],
        ["models", "rollback"],
        ["models", "extend"],
        ["serve"],
        ["monitor"],
        ["recommend"],
    ],
)
def test_every_command_has_help(args):
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_ingest_and_baselines_on_files(tiny_files, work):
    args = [
        "data",
        "ingest",
        "files",
        "--name",
        "tiny",
        "--work-dir",
        str(work),
        "--interactions",
        str(tiny_files["interactions"]),
        "--items",
        str(tiny_files["items"]),
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "wrote tiny@" in first.output
    assert "unchanged" in runner.invoke(app, args).output
    config = work.parent / "tiny.yaml"
    files = {k: str(v) for k, v in tiny_files.items()}
    config.write_text(yaml.safe_dump({"dataset": {"name": "tiny", "source": "files", **files}}))
    baselines = runner.invoke(app, ["baselines", "--config", str(config), "--work-dir", str(work)])
    assert baselines.exit_code == 0, baselines.output
    for model in ("Popularity", "ItemKNN", "EASE"):
        assert model in baselines.output
    assert "ndcg@10" in baselines.output
