"""The web process (gunicorn workers, one per core or more) serves pages and the API; the model,
datasets and training run in Celery workers. Loading torch, transformers and pyarrow in every
web worker cost about 230 MB of memory each and two seconds of start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "pyarrow", "crowdkit", "sklearn")  # the last two: Dawid–Skene's

PROBE = """
import json, sys
from django.core.wsgi import get_wsgi_application
get_wsgi_application()
from django.urls import get_resolver
get_resolver().url_patterns  # every view module, the admin included
from trainer.services import requests
requests.hyperparameters_split("pretrain", dict(steps=10))  # how queueing a job checks them
from groundwork.celery import app
app.signature("trainer.tasks.training_run_task")._apply_async  # how it is queued: by name, not by import
print(json.dumps(sorted(name for name in {heavy!r} if name in sys.modules)))
"""


def test_the_web_application_loads_without_the_training_libraries() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "groundwork.settings"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
