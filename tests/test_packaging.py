"""A normal, non-editable install works: the wheel holds the board files and every data file
the commands need, and `gen boards` / `gen check` run from it in a fresh virtual environment."""

import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import setuptools

REPO = Path(__file__).resolve().parent.parent


def test_the_package_list_holds_every_package_of_the_tree():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set(setuptools.find_packages(str(REPO), include=["gen*", "flows*", "verif*"]))
    assert found | {"gen.board_files"} == set(config["packages"])


def test_a_wheel_installed_on_its_own_runs_boards_and_check(tmp_path):
    wheels = tmp_path / "wheels"
    leftover = not (REPO / "build").exists()     # setuptools builds in the source tree
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                        "--no-build-isolation", "-q", "-w", str(wheels), str(REPO)],
                       check=True, timeout=600)
    finally:
        if leftover:
            shutil.rmtree(REPO / "build", ignore_errors=True)
    (wheel,) = wheels.glob("accelgen-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for board in (REPO / "boards").glob("*.yaml"):
        assert f"gen/board_files/{board.name}" in names
    for needed in ("gen/configs/default.yaml", "gen/host/PROTOCOL.md", "flows/ecp5.py",
                   "verif/golden.py"):
        assert needed in names, needed
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    # The dependencies come from this environment (a fresh install would download them);
    # the package itself only from the wheel, unpacked into the fresh environment.
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                                "get_paths()['purelib'])"], check=True, capture_output=True,
                               text=True).stdout.strip())
    zipfile.ZipFile(wheel).extractall(site)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([str(python), "-c", "import gen, gen.boards; "
                            "print(gen.__file__); print(gen.boards.BOARDS_DIR)"],
                           cwd=work, check=True, capture_output=True, text=True).stdout
    assert str(site) in where and str(REPO) not in where, where
    boards = subprocess.run([str(python), "-m", "gen", "boards"], cwd=work, capture_output=True,
                            text=True, timeout=120)
    assert boards.returncode == 0 and "ulx3s-85f" in boards.stdout, boards.stderr
    check = subprocess.run([str(python), "-m", "gen", "check"], cwd=work, capture_output=True,
                           text=True, timeout=300)
    assert check.returncode == 0 and "fits: yes" in check.stdout, check.stderr
