"""The release: the extension repository the Index clones (tools/export_extension.py) and the model archives
behind the registry's URLs (tools/check_release.py, against a local HTTP server)."""

from __future__ import annotations

import http.server
import importlib
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

export_extension = importlib.import_module("export_extension")
check_release = importlib.import_module("check_release")

from AttentionMambaSegLib import package as packages  # noqa: E402
from AttentionMambaSegLib.registry import RegistryEntry, build_archive  # noqa: E402

MB = 1024 * 1024

IMPORT_MODULE_WITHOUT_TORCH = textwrap.dedent("""
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in ('torch', 'numba', 'safetensors', 'platformdirs', 'pooch'):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, Block())
    sys.path.insert(0, sys.argv[1] + '/Testing')
    import _slicer_helpers as h
    class MP:
        def setitem(self, d, k, v): d[k] = v
        def setattr(self, o, n, v, raising=True): setattr(o, n, v)
        def syspath_prepend(self, p): sys.path.insert(0, p)
    h.install_gui_shims(MP())
    import AttentionMambaSeg, AttentionMambaSegLib
    assert AttentionMambaSeg.__file__.startswith(sys.argv[1]), AttentionMambaSeg.__file__
    assert AttentionMambaSegLib.__file__.startswith(sys.argv[1]), AttentionMambaSegLib.__file__
    import os, tempfile
    os.environ['ATTENTION_MAMBA_SEG_MODELS_DIR'] = tempfile.mkdtemp()
    logic = AttentionMambaSeg.AttentionMambaSegLogic()
    print(sorted(m for m, _ in logic.availableModels()))
    assert 'torch' not in sys.modules
""")


@pytest.mark.slow
def test_the_export_is_one_small_commit_without_weights_whose_module_imports_without_torch(tmp_path):
    dest = tmp_path / "SlicerAttentionMambaSeg"
    assert export_extension.main([str(dest)]) == 0
    log = subprocess.run(["git", "log", "--format=%s"], cwd=dest, capture_output=True, text=True, check=True)
    assert log.stdout.splitlines() == ["AttentionMambaSeg Slicer extension"]
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-local", str(dest), str(clone)], check=True)
    size = sum(f.stat().st_size for f in clone.rglob("*") if f.is_file())  # as the Index measures: .git included
    assert size < 100 * MB and size == export_extension.clone_size(dest)
    assert size < 10 * MB  # code, icons, screenshots and a 30 kB sample: far below the limit
    assert not list(clone.rglob("*.safetensors")) and not (clone / "AttentionMambaSeg/Resources/Examples").exists()
    models = clone / "AttentionMambaSeg/Resources/Models"
    assert sorted(p.name for p in models.iterdir()) == ["registry.json"]
    for name in (
        "CMakeLists.txt",
        "AttentionMambaSeg.json",
        "AttentionMambaSeg.s4ext",
        "LICENSE",
        "README.md",
        "docs/RELEASE.md",
        "AttentionMambaSeg/AttentionMambaSeg.py",
        "AttentionMambaSeg/CMakeLists.txt",
        "Testing/test_slicer_files.py",
        "Resources/Screenshots/panel.png",
    ):
        assert (clone / name).is_file(), name
    assert export_extension.check(clone) == []  # every file the module's CMakeLists.txt lists is there
    readme_links = re.findall(r"\]\((docs/[^)#]+)", (clone / "README.md").read_text(encoding="utf-8"))
    assert readme_links and all((clone / link).is_file() for link in readme_links)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ATTENTION_MAMBA_SEG_MODELS_DIR")}
    env["PYTHONPATH"] = str(clone / "AttentionMambaSeg")
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_MODULE_WITHOUT_TORCH, str(clone)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        "['cardiac-acdc', 'hippocampus-msd', 'skin-lesion-isic', 'skin-lesion-ph2']" in done.stdout
    )  # from the registry alone


def test_the_export_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        export_extension.export(tmp_path)


# ----------------------------------------------------------------------------------------- release check
class _Server:
    """A local HTTP server: /good.zip the archive, /missing.zip 404, /truncated.zip half of it, then closed."""

    def __init__(self, body: bytes) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path == "/missing.zip":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path == "/truncated.zip":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The bundled hippocampus model as a release archive, its registry entry, and a server holding it."""
    folder = tmp_path_factory.mktemp("release")
    entry = build_archive(packages.bundled_models_dir() / "hippocampus-msd", folder / "archive.zip")
    server = _Server((folder / "archive.zip").read_bytes())
    yield entry, server
    server.close()


def _entry(entry: RegistryEntry, url: str, **changes) -> dict[str, RegistryEntry]:
    data = {**entry.to_dict(), "urls": [url], **changes}
    return {entry.id: RegistryEntry.from_dict(data, "test")}


def test_the_release_check_accepts_a_good_archive_and_names_each_fault(published, monkeypatch, tmp_path):
    entry, server = published
    monkeypatch.setenv("ATTENTION_MAMBA_SEG_MODELS_DIR", str(tmp_path / "user-models"))
    (good,) = check_release.check_registry(_entry(entry, f"{server.base}/good.zip"), timeout=10)
    assert good.problem is None and good.line().startswith("OK   hippocampus-msd: http://127.0.0.1:")
    (wrong,) = check_release.check_registry(_entry(entry, f"{server.base}/good.zip", sha256="0" * 64), timeout=10)
    assert f"SHA-256 {entry.sha256} where the registry says {'0' * 64}" in wrong.problem
    (missing,) = check_release.check_registry(_entry(entry, f"{server.base}/missing.zip"), timeout=10)
    assert missing.problem.startswith("the server answered HTTP 404 (not found")
    (truncated,) = check_release.check_registry(_entry(entry, f"{server.base}/truncated.zip"), timeout=10)
    assert "truncated download" in truncated.problem, truncated.problem
    assert not (tmp_path / "user-models").exists()  # only scratch folders were used


def test_the_release_check_command_exits_non_zero_on_a_failure(published, tmp_path, capsys):
    entry, server = published
    registry = tmp_path / "registry.json"
    import json

    missing = {**entry.to_dict(), "urls": [f"{server.base}/missing.zip"]}
    registry.write_text(json.dumps({"format": 1, "models": [missing]}))
    assert check_release.main(["--registry", str(registry), "--timeout", "10"]) == 1
    out = capsys.readouterr()
    assert out.out.startswith("FAIL hippocampus-msd: http://127.0.0.1:") and "0 of 1 URL(s) good" in out.err
    with pytest.raises(KeyError, match="not in the registry"):
        check_release.check_registry({entry.id: entry}, ["no-such-model"])
