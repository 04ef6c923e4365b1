"""A real ``mlflow server`` on loopback for the outage tests: started, SIGKILLed and restarted on one port.

Tests get the class (:class:`scaffold.MlflowServer`) through the ``mlflow_server`` fixture.
"""

from __future__ import annotations

import pytest

from scaffold import MlflowServer


@pytest.fixture(scope="session")
def mlflow_server() -> type[MlflowServer]:
    """The :class:`MlflowServer` class (construct it with a directory; nothing starts until ``start()``)."""
    return MlflowServer
