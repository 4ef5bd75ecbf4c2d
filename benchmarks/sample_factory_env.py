"""Sample Factory 2's own venv, ``.venv-sf``: the benchmark suite runs it there.

Sample Factory 2.1.1 needs gymnasium < 1.0 and numpy < 2; turnwise's ``.venv`` has
gymnasium 1.2 and numpy 2, so Sample Factory gets a venv of its own, every package
pinned by ``sample_factory-constraints.txt`` (torch is the CPU build of the main
venv's version: built against numpy 2's ABI, it also runs on numpy 1.26).

    python -m benchmarks.sample_factory_env     # makes it (idempotent), prints its python

Making it takes a few minutes; once made, with the same pins, it costs a file read.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-sf"
CONSTRAINTS = Path(__file__).with_name("sample_factory-constraints.txt")
PACKAGES = ["sample-factory", "gymnasium", "numpy", "torch"]  # versions: CONSTRAINTS
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"  # where torch's +cpu builds are
INSTALL_TIMEOUT_S = 1800
CHECK = "import gymnasium, numpy, sample_factory, torch; torch.from_numpy(numpy.zeros(1))"


def _pins() -> str:
    return hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()


def _run(command: list[str], timeout: float) -> str | None:
    """None if ``command`` succeeded, else why not (its last output lines)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{' '.join(command[:4])}...: {error}"
    if done.returncode == 0:
        return None
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
    return f"{' '.join(command[:4])}... exited {done.returncode}:\n{tail}"


def _install_torch(pip: list[str]) -> str | None:
    """The pinned CPU torch: from the package sources pip is set up with (a local wheel
    or PyPI), else from PyTorch's CPU index. That index is only a fallback: given to
    every look-up with ``--extra-index-url``, a machine that cannot reach it retries
    each of the ~70 packages for ~12 s."""
    error = _run([*pip, "--no-deps", "torch"], INSTALL_TIMEOUT_S)
    if error is None:
        return None
    fallback = _run([*pip, "--no-deps", "--index-url", TORCH_CPU_INDEX, "torch"], INSTALL_TIMEOUT_S)
    return None if fallback is None else f"{error}\nand from {TORCH_CPU_INDEX}: {fallback}"


def sample_factory_python(venv: Path = VENV) -> tuple[Path | None, str | None]:
    """The venv's interpreter, made first if missing or made with other pins: (path,
    None), or (None, the exact reason it could not be made)."""
    python, stamp = venv / "bin" / "python", venv / ".turnwise-install"
    pins = _pins()

    def made() -> bool:
        return python.exists() and stamp.exists() and stamp.read_text() == pins

    if made():
        return python, None
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.with_name(f"{venv.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be making it now
        if made():
            return python, None
        log.info("making %s for Sample Factory (a few minutes)", venv)
        stamp.unlink(missing_ok=True)
        pip = [str(python), "-m", "pip", "install", "-q", "-c", str(CONSTRAINTS)]
        if (error := _run([sys.executable, "-m", "venv", str(venv)], 300)) is None:
            error = _install_torch(pip)
        for command, timeout in [
            ([*pip, *PACKAGES], INSTALL_TIMEOUT_S),
            ([str(python), "-c", CHECK], 300),
        ]:
            if error is None:
                error = _run(command, timeout)
        if error is not None:
            return None, f"could not make Sample Factory's venv {venv}: {error}"
        stamp.write_text(pins)
    return python, None


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    python, error = sample_factory_python()
    if python is None:
        print(error, file=sys.stderr)
        return 1
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
