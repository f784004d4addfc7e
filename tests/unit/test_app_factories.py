"""What every service's app factory does alike: logging from its settings, one version,
one context object."""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path

import pytest
from fastapi import FastAPI

import fedmedclip
from services.aggregator.app import create_app as create_hub
from services.aggregator.context import AppContext
from services.aggregator.settings import AggregatorSettings
from services.common.structured_logging import JsonFormatter
from services.hospital_node.app import create_app as create_node
from services.hospital_node.context import NodeContext
from services.hospital_node.settings import NodeSettings
from services.inference_api.app import create_app as create_inference
from services.inference_api.context import InferenceContext
from services.inference_api.settings import InferenceSettings


def _hub(tmp_path: Path) -> FastAPI:
    return create_hub(AggregatorSettings(data_dir=tmp_path, log_json=True, log_level="WARNING"))


def _node(tmp_path: Path) -> FastAPI:
    return create_node(
        NodeSettings(
            node_token="n",
            admin_token="a",
            data_dir=tmp_path,
            model_store_dir=tmp_path / "store",
            log_json=True,
            log_level="WARNING",
        )
    )


def _inference(tmp_path: Path) -> FastAPI:
    return create_inference(
        InferenceSettings(
            clinician_tokens="c",
            model_store_dir=tmp_path / "store",
            audit_path=tmp_path / "audit.jsonl",
            log_json=True,
            log_level="WARNING",
        )
    )


@pytest.fixture
def root_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    root.handlers, root.level = [], logging.NOTSET
    yield root
    root.handlers, root.level = handlers, level


@pytest.mark.parametrize("factory", [_hub, _node, _inference])
def test_each_app_logs_as_its_settings_say_and_reports_the_package_version(
    factory, tmp_path: Path, root_logging: logging.Logger
) -> None:
    app = factory(tmp_path)
    assert root_logging.level == logging.WARNING
    ours = [h for h in root_logging.handlers if h.get_name() == "fedmedclip"]
    assert [type(h.formatter) for h in ours] == [JsonFormatter]
    assert app.version == fedmedclip.__version__ == importlib.metadata.version("fedmedclip")


@pytest.mark.parametrize(
    ("factory", "context_type"),
    [(_hub, AppContext), (_node, NodeContext), (_inference, InferenceContext)],
)
def test_each_app_keeps_what_it_built_in_one_context(
    factory, context_type: type, tmp_path: Path, root_logging: logging.Logger
) -> None:
    """The routers reach settings, database, metrics and auth through ``app.state.context``
    (``ContextDep``), never through loose attributes; the console keeps its own."""
    app = factory(tmp_path)
    state = vars(app.state)["_state"]
    assert isinstance(state["context"], context_type)
    assert set(state) - {"console"} == {"context"}
    assert state["context"].settings.log_level == "WARNING"
