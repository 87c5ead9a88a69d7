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


def test_main_exits_2_on_user_errors_and_lets_bugs_show_their_traceback(monkeypatch, capsys):
    """Only kdrec's own error types are the user's to fix; a KeyError is a bug, not bad input."""
    import signal

    from pipelines.cli import entry as cli
    from storage.errors import ConfigError

    monkeypatch.setattr(signal, "signal", lambda *a: None)  # main() installs handlers
    monkeypatch.setattr(cli, "app", lambda: (_ for _ in ()).throw(ConfigError("bad key 'x'")))
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 2 and "error: bad key 'x'" in capsys.readouterr().out
    monkeypatch.setattr(cli, "app", lambda: {}["ndcg@10"])
    with pytest.raises(KeyError, match="ndcg@10"):  # the interpreter prints it and exits 1
        cli.main()


def test_a_bad_config_names_the_file_and_is_a_user_error(tmp_path):
    from pipelines.config import load_config
    from storage.errors import KdrecError

    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {max_epochs: -1}\n")
    with pytest.raises(KdrecError, match=f"(?s)config file {bad}: .*train.max_epochs"):
        load_config(bad)
    bad.write_text("train: [unclosed\n")
    with pytest.raises(KdrecError, match="is not valid YAML"):
        load_config(bad)


def test_flows_leave_the_clis_sigterm_handler_in_charge(prefect_harness):
    """On the main thread Prefect swaps SIGTERM for its own handler during a flow, and that one
    waits for the training threads before the command can stop; the CLI runs flows off it."""
    import signal

    from prefect import flow

    from pipelines.cli import entry as cli
    from pipelines.cli.common import off_main_thread

    @flow
    def handler_during_flow() -> object:
        return signal.getsignal(signal.SIGTERM)

    ours = signal.signal(signal.SIGTERM, cli._interrupt)
    try:
        assert handler_during_flow() is not cli._interrupt  # what the guard is for
        assert off_main_thread(handler_during_flow) is cli._interrupt
        with pytest.raises(ZeroDivisionError):  # a flow's exception still reaches the caller
            off_main_thread(lambda: 1 / 0)
    finally:
        signal.signal(signal.SIGTERM, ours)


def test_kdrec_sets_what_it_needs_itself_and_keeps_what_is_set(tmp_path):
    from pipelines.cli import own_settings

    env = own_settings(["run", "--work-dir", "/tmp/somewhere"], {})
    assert env["PREFECT_HOME"] == "/tmp/somewhere/.prefect"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert own_settings(["run"], {"KDREC_WORK_DIR": "/w"})["PREFECT_HOME"] == "/w/.prefect"
    assert own_settings(["run", "--work-dir=/x"], {})["PREFECT_HOME"] == "/x/.prefect"
    assert "PREFECT_HOME" not in own_settings(["run"], {"PREFECT_HOME": "/mine"})
    # the run's work dir as the config resolves it: a config file's work_dir, from its folder
    config = tmp_path / "run.yaml"
    config.write_text("work_dir: w\n")
    home = own_settings(["run", "-c", str(config)], {"KDREC_WORK_DIR": "/w"})["PREFECT_HOME"]
    assert home == str(tmp_path / "w" / ".prefect")
    with_flag = own_settings(["run", "-c", str(config), "--work-dir", "/x"], {})
    assert with_flag["PREFECT_HOME"] == "/x/.prefect"
