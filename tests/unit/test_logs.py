"""Off a terminal, a log line is one JSON object with its fields; libraries stay quiet."""

from __future__ import annotations

import json
import subprocess
import sys


def test_logs_are_json_lines_with_their_fields_when_not_on_a_terminal() -> None:
    script = (
        "import logging; from base import logs; logs.configure(); "
        "logging.getLogger('ingest.gateway').info('refused 1 of 3 events', "
        "extra={'tenant': 'acme', 'accepted': 2}); "
        "logging.getLogger('aiokafka').info('chatter')"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)  # fmt: skip
    [line] = done.stderr.strip().splitlines()
    record = json.loads(line)
    assert record["message"] == "refused 1 of 3 events"
    assert (record["level"], record["logger"]) == ("INFO", "ingest.gateway")
    assert (record["tenant"], record["accepted"]) == ("acme", 2)
    assert "time" in record
