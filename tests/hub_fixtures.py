"""Running code in a Python without this package, and laying out an offline Hugging Face cache: shared by the
save/load and Hub export tests."""

import hashlib
import os
import subprocess
import sys
import textwrap

REPO_ID = "org/versavit"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def run_python(code: str, cwd, env: dict) -> str:
    """Run `code` in a fresh interpreter, away from the repository, and return its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": "", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


# Runs in the subprocess: makes `import modeling_versavit` fail as in a Python without the package.
WITHOUT_PACKAGE = """
import sys
sys.modules["modeling_versavit"] = None
sys.modules["versavit_trainer"] = None
try:
    import modeling_versavit
except ImportError:
    pass
else:
    raise AssertionError("the package must not be importable here")
"""


def hub_cache_with(folder, cache, repo_id: str = REPO_ID) -> None:
    """Lay out `folder` as `huggingface_hub` caches a download of `repo_id`: blobs, a snapshot of links, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
