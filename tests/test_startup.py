"""Start-up stays lean: an ordinary run imports none of the heavy modules it used to."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

from runner.roadmap.hashing import sha256

pytestmark = pytest.mark.timeout(60)

# Each cost 2-260 ms of every start-up when it was imported on the way to running one task.
HEAVY = ["typer", "click", "pydantic", "yaml", "multiprocessing", "subprocess", "_hashlib", "psutil", "typing", "shutil"]


def test_the_builtin_sha256_is_hashlibs():
    data = os.urandom(1000)
    assert sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
    h = sha256()
    h.update(data[:10])
    h.update(data[10:])
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()


def test_running_one_task_imports_none_of_the_heavy_modules(tmp_path):
    (tmp_path / "one.yaml").write_text('tasks:\n  - id: a\n    command: ["true"]\n')
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.argv = ["wvo-batch", "one.yaml", "--agents", "1", "--quiet", "--state-dir", "state"]
        import runner.cli.command
        runner.cli.command._exit = sys.exit  # main() ends in os._exit: let this script report first
        try:
            runner.cli.command.main()
        except SystemExit as exc:
            code = exc.code
        print(json.dumps([code, sorted(m for m in {HEAVY!r} if m in sys.modules)]))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WVO_")}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=50)
    code, imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert code == 0, out.stderr
    assert imported == [], f"imported on the way to one task: {imported}"
