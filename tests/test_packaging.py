"""
The project installs so that C{twistd orchestrator} exists, both ways the README gives:
C{pip install .} (a wheel) and C{pip install -e .} (a developer's editable install).

Each test installs a copy of the working tree's project files into a fresh venv, with
build isolation as a user gets it, but from a local wheelhouse (C{--no-index}): the
project's dependencies and its build requirements, downloaded once through pip's
configured index and cached under C{~/.cache/orchestrator-tests/} (keyed by the packaging
files and the Python version), so a run after the first needs no network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SkipTest, TestCase

REPO = Path(__file__).resolve().parents[1]
#: What makes the project's wheel (deploy/images/build copies the same files).
PROJECT_FILES = ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in",
                 "orchestrator", "twisted/plugins")
#: What the packaging files name besides the project: the build backend.
BUILD_REQUIREMENTS = ("setuptools>=68", "wheel")
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "orchestrator-tests"


def in_ci() -> bool:
    """
    Whether C{CI} is set (to anything but an empty or false value).
    """
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def copy_project(destination: Path) -> Path:
    """
    The project's own files, copied from the working tree to C{destination}.
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "dropin.cache")
    destination.mkdir(parents=True)
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=ignore)
        elif source.exists():
            shutil.copy2(source, destination / name)
    return destination


def pip(*arguments: str, isolated: bool = False) -> subprocess.CompletedProcess:
    """
    This interpreter's pip. C{isolated}: no configuration file applies (no extra index,
    no constraints), so an install uses the wheelhouse alone.
    """
    environment = dict(os.environ)
    if isolated:
        environment = {key: value for key, value in environment.items()
                       if not key.startswith("PIP_")}
        environment["PIP_CONFIG_FILE"] = os.devnull
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *arguments],
        capture_output=True, text=True, env=environment, timeout=600)


def wheelhouse() -> Path:
    """
    A directory of wheels holding everything the project needs to build and run,
    downloaded when no cached one matches this checkout's packaging files.
    """
    key = hashlib.sha256(sys.version.encode())
    for name in ("setup.cfg", "pyproject.toml"):
        key.update((REPO / name).read_bytes())
    directory = CACHE / f"wheelhouse-{key.hexdigest()[:16]}"
    if directory.is_dir():
        return directory
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="download-") as scratch:
        project = copy_project(Path(scratch) / "project")
        wheels = Path(scratch) / "wheels"
        # "./"-less paths could be taken for a package name on the index.
        done = pip("download", "--quiet", "--dest", str(wheels), str(project.resolve()),
                   *BUILD_REQUIREMENTS)
        if done.returncode != 0:
            reason = f"cannot fill the wheelhouse from the package index: {done.stderr[-2000:]}"
            if in_ci():
                raise AssertionError(reason)
            raise SkipTest(reason)
        # Another run may have made it meanwhile; either copy is as good.
        try:
            wheels.rename(directory)
        except OSError:
            pass
    return directory


def twistd_commands(usage: str) -> list[str]:
    """
    The plugin names in C{twistd --help}'s "Commands:" list.
    """
    _, _, listed = usage.partition("\nCommands:\n")
    # Each command starts a line; its description's continuation lines are indented more.
    indent = min((len(line) - len(line.lstrip()) for line in listed.splitlines() if line.strip()),
                 default=0)
    return [line.split()[0] for line in listed.splitlines()
            if line.strip() and len(line) - len(line.lstrip()) == indent]


class InstallTests(TestCase):
    """
    A fresh venv, the project installed into it one way, and twistd asked about it.
    """

    timeout = 600

    def setUp(self) -> None:
        self.wheels = wheelhouse()
        scratch = Path(tempfile.mkdtemp(prefix="orchtest-packaging-"))
        self.addCleanup(shutil.rmtree, scratch, ignore_errors=True)
        self.project = copy_project(scratch / "project")
        self.venv = scratch / "venv"
        # No pip in the venv (ensurepip costs seconds): this interpreter's pip installs
        # into it with --python.
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(self.venv)],
                       check=True, timeout=120)

    def install(self, *how: str) -> None:
        done = pip("--python", str(self.venv / "bin" / "python"), "install", "--quiet",
                   "--no-compile", "--no-index", "--find-links", str(self.wheels),
                   *how, isolated=True)
        self.assertEqual(done.returncode, 0, done.stderr)

    def run_in_venv(self, *command: str, status: int = 0) -> str:
        done = subprocess.run([str(self.venv / "bin" / command[0]), *command[1:]],
                              capture_output=True, text=True, timeout=120, cwd=self.venv)
        self.assertEqual(done.returncode, status, f"{command} exited {done.returncode}: "
                         f"{done.stdout}{done.stderr}")
        return done.stdout + done.stderr

    def plugin_file(self) -> Path:
        """
        Where the venv's Python finds the twistd plugin module.
        """
        return Path(self.run_in_venv(
            "python", "-c",
            "import twisted.plugins.orchestrator_plugin as p; print(p.__file__)").strip())

    def assert_twistd_runs_orchestrator(self) -> None:
        self.assertIn("orchestrator", twistd_commands(self.run_in_venv("twistd", "--help")))
        usage = self.run_in_venv("twistd", "orchestrator", "--help")
        self.assertIn("Usage: twistd [options] orchestrator [options]", usage)
        self.assertIn("--config", usage)
        # The plugin reads the file with the installed package (nothing is started): a bad
        # one is refused with its problem, status 2 and no traceback.
        bad = self.venv / "bad.yaml"
        bad.write_text("agents: {web: {hosts: [web.example.com]}}\n")
        refused = self.run_in_venv("twistd", "-n", "orchestrator", "--config", str(bad),
                                   status=2)
        self.assertIn("agents.web.backend: required", refused)
        self.assertNotIn("Traceback", refused)

    def assert_ships_the_dashboard_and_the_ctl(self) -> None:
        # The dashboard's files are package data (it works offline), and the console
        # script is installed.
        self.run_in_venv("python", "-c", (
            "from importlib import resources\n"
            "static = resources.files('orchestrator.admin') / 'static'\n"
            "for name in ('index.html', 'dashboard.js', 'dashboard.css'):\n"
            "    assert (static / name).is_file(), name\n"))
        self.assertIn("usage: orchestrator-ctl", self.run_in_venv("orchestrator-ctl", "--help"))

    def test_pip_install_gives_twistd_orchestrator(self) -> None:
        self.install(str(self.project))
        self.assert_twistd_runs_orchestrator()
        self.assert_ships_the_dashboard_and_the_ctl()
        self.assertTrue(self.plugin_file().is_relative_to(self.venv), self.plugin_file())

    def test_editable_install_gives_twistd_orchestrator_from_the_working_tree(self) -> None:
        self.install("--editable", str(self.project))
        self.assert_twistd_runs_orchestrator()
        # The plugin is the working tree's own file, not a copy: edits apply at once.
        self.assertEqual(self.plugin_file(),
                         self.project / "twisted" / "plugins" / "orchestrator_plugin.py")
