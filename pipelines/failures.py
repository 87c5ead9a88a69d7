"""Say in a flow run's own logs why it stopped, so its page in the Prefect UI shows the cause (the
state message alone is visible only through the API)."""

from __future__ import annotations

from typing import Any

from prefect import Flow
from prefect.client.schemas.objects import FlowRun, State
from prefect.logging.loggers import flow_run_logger


def log_why(flow: Flow[..., Any], flow_run: FlowRun, state: State) -> None:
    """Prefect on_failure / on_crashed hook: one error line with the state's message."""
    flow_run_logger(flow_run, flow).error(
        "%s run %s: %s", flow.name, str(state.name).lower(), state.message or "(no message)"
    )


# @flow(..., **STOP_HOOKS): failures (exceptions) and crashes (signals, lost processes) alike
STOP_HOOKS: dict[str, Any] = {"on_failure": [log_why], "on_crashed": [log_why]}
