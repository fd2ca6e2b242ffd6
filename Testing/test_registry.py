"""Tests of AttentionMambaSegLib.registry: the registry, downloads from a local HTTP server, import safety."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path

import pytest

from _inference_helpers import TinyConvNet, make_config
from AttentionMambaSegLib import model_store, package as pkg, registry as reg

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    cache = tmp_path / "user-cache" / "models"
    monkeypatch.setenv("ATTENTION_MAMBA_SEG_MODELS_DIR", str(cache))
    return cache


@pytest.fixture
def archive(tmp_path):
    """A small real model package (TinyConvNet) as a release archive, and its registry entry."""
    folder = pkg.save_model_package(TinyConvNet(1, 4, seed=1), make_config("tiny-net"), tmp_path / "src" / "tiny-net")
    entry = reg.build_archive(folder, tmp_path / "tiny-net-0.0.1.zip")
    return tmp_path / "tiny-net-0.0.1.zip", entry


class _Server:
    """http.server on 127.0.0.1 in a thread; ``mode`` picks how it answers."""

    def __init__(self, body: bytes):
        self.body, self.mode, self.requests = body, "ok", 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests += 1
                if server.mode == "404":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                if server.mode == "truncated":
                    self.wfile.write(server.body[: len(server.body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if server.mode == "stall":
                    self.wfile.write(server.body[:1000])
                    self.wfile.flush()
                    time.sleep(3)
                    return
                body = server.body if server.mode == "ok" else server.body[:-1] + bytes([server.body[-1] ^ 1])
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/tiny-net-0.0.1.zip"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(archive):
    s = _Server(archive[0].read_bytes())
    yield s
    s.close()


def _registry(entry, url):
    return {entry.id: reg.RegistryEntry(**{**entry.to_dict(), "classes": entry.classes, "urls": (url,)})}


def _cache_listing(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) if cache.exists() else []


def test_good_download_installs_verifies_reports_progress_and_a_second_one_is_a_no_op(archive, server, user_cache):
    path, entry = archive
    progress = []
    package = reg.download_model(
        "tiny-net", progress=lambda d, t: progress.append((d, t)), registry=_registry(entry, server.url)
    )
    assert package.path == user_cache / "tiny-net" and package.card.sha256 == entry.weights_sha256
    package.verify()
    assert progress and progress[-1] == (entry.size, entry.size)
    assert _cache_listing(user_cache) == ["tiny-net", "tiny-net/model.json", "tiny-net/model.safetensors"]
    again = reg.download_model("tiny-net", registry=_registry(entry, server.url))
    assert again.path == package.path and server.requests == 1


@pytest.mark.parametrize(
    "mode, reason",
    [
        ("hash", "SHA-256 differs from the registry's"),
        ("404", r"HTTP 404 \(not found\)"),
        ("truncated", "closed before the whole file arrived"),
        ("stall", r"no data for 1 s \(timed out\)"),
    ],
)
def test_failed_downloads_say_why_and_leave_the_cache_as_it_was(archive, server, user_cache, mode, reason):
    path, entry = archive
    reg.download_model("tiny-net", registry=_registry(entry, server.url))  # an earlier good version
    weights = (user_cache / "tiny-net" / "model.safetensors").read_bytes()
    before = _cache_listing(user_cache)
    newer = {
        **entry.to_dict(),
        "version": "0.0.2",
        "weights_sha256": "0" * 64,
        "urls": (server.url,),
        "classes": entry.classes,
    }
    server.mode = mode
    with pytest.raises(reg.DownloadError) as info:
        reg.download_model("tiny-net", timeout=1, registry={"tiny-net": reg.RegistryEntry(**newer)})
    message = str(info.value)
    assert server.url in message and re.search(reason, message), message
    assert "models import tiny-net-0.0.2.zip" in message  # the offline alternative
    assert _cache_listing(user_cache) == before
    assert (user_cache / "tiny-net" / "model.safetensors").read_bytes() == weights


def test_refused_connection_is_named(archive, user_cache):
    path, entry = archive
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}/tiny-net-0.0.1.zip"
    with pytest.raises(reg.DownloadError, match="refused or the server could not be reached"):
        reg.download_model("tiny-net", timeout=2, registry=_registry(entry, url))
    assert _cache_listing(user_cache) == [".downloads"] or _cache_listing(user_cache) == []


def test_the_registry_matches_the_bundled_development_copies(tmp_path):
    """Each entry's archive is what tools/publish_model.py makes of the bundled folder (size, SHA-256)."""
    entries = reg.load_registry()
    assert sorted(entries) == ["cardiac-acdc", "hippocampus-msd", "skin-lesion-isic", "skin-lesion-ph2"]
    for model_id, entry in entries.items():
        rebuilt = reg.build_archive(pkg.bundled_models_dir() / model_id, tmp_path / f"{model_id}.zip")
        assert rebuilt.to_dict() == {**entry.to_dict(), "urls": []}, model_id
        assert entry.urls[0].endswith(f"/{model_id}-{entry.version}.zip")
        assert ("non-commercial" in entry.licence or "may not be used commercially" in entry.licence) == (
            model_id in ("cardiac-acdc", "skin-lesion-isic")
        ), model_id


def test_extension_cmakelists_installs_no_weights():
    text = (REPO / "AttentionMambaSeg" / "CMakeLists.txt").read_text()
    assert ".safetensors" not in text and "Resources/Models/registry.json" in text


# ------------------------------------------------------------------------------------------ import
def test_import_refuses_unreadable_weights_even_with_a_matching_sha256(archive, tmp_path, user_cache):
    path, entry = archive
    good = model_store.import_model_package(path)
    bad = tmp_path / "bad" / "tiny-net"
    shutil.copytree(tmp_path / "src" / "tiny-net", bad)
    (bad / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{ not a header")
    config = json.loads((bad / "model.json").read_text())
    config["sha256"] = pkg.sha256_of_file(bad / "model.safetensors")
    (bad / "model.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        model_store.import_model_package(bad)
    wrong_shape = tmp_path / "wrong" / "tiny-net"
    pkg.save_model_package(TinyConvNet(1, 4, seed=1, width=6), make_config("tiny-net"), wrong_shape)
    with pytest.raises(
        ValueError, match=r"conv1.weight: F16 \[6, 1, 3, 3\] where the network needs F16 \[4, 1, 3, 3\]"
    ):
        model_store.import_model_package(wrong_shape)
    pkg.load_model_package("tiny-net").build_network("cpu")  # the earlier import still works
    assert pkg.sha256_of_file(good.weights_path) == entry.weights_sha256


def test_import_refuses_an_id_with_a_trailing_newline(archive, tmp_path):
    path, _ = archive
    model_store.import_model_package(path)
    folder = tmp_path / "nl" / "tiny-net"
    shutil.copytree(tmp_path / "src" / "tiny-net", folder)
    config = json.loads((folder / "model.json").read_text())
    config["id"] = "tiny-net\n"
    (folder / "model.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="field 'id'"):
        model_store.import_model_package(folder)
    pkg.load_model_package("tiny-net").build_network("cpu")


@pytest.mark.skipif(os.name == "nt", reason="symbolic links need privileges on Windows")
def test_import_never_follows_symbolic_links(archive, tmp_path, user_cache, caplog):
    path, _ = archive
    model_store.import_model_package(path)
    folder = tmp_path / "links" / "tiny-net"
    shutil.copytree(tmp_path / "src" / "tiny-net", folder)
    (folder / "NOTES.txt").symlink_to("/etc/hostname")
    with caplog.at_level("WARNING"):
        imported = model_store.import_model_package(folder)
    assert not (imported.path / "NOTES.txt").exists() and "symbolic link" in caplog.text
    (folder / "NOTES.txt").unlink()
    os.replace(folder / "model.json", tmp_path / "model.json")
    (folder / "model.json").symlink_to(tmp_path / "model.json")
    with pytest.raises(ValueError, match="model.json is a symbolic link"):
        model_store.import_model_package(folder)
    link_zip = tmp_path / "link.zip"
    with zipfile.ZipFile(link_zip, "w") as z:
        z.writestr("tiny-net/model.json", (tmp_path / "model.json").read_text())
        info = zipfile.ZipInfo("tiny-net/model.safetensors")
        info.external_attr = 0o120777 << 16
        z.writestr(info, "/etc/passwd")
    with pytest.raises(ValueError, match="is a symbolic link"):
        model_store.import_model_package(link_zip)
    pkg.load_model_package("tiny-net").build_network("cpu")


def test_remove_one_model_frees_its_bytes_and_never_a_bundled_one(archive, user_cache):
    path, entry = archive
    model_store.import_model_package(path)
    assert model_store.imported_models_size() > 0
    freed = model_store.remove_imported_model("tiny-net")
    assert freed > entry.size * 0.9 and not (user_cache / "tiny-net").exists()
    with pytest.raises(FileNotFoundError, match="bundled models cannot be removed"):
        model_store.remove_imported_model("cardiac-acdc")
    assert (pkg.bundled_models_dir() / "cardiac-acdc" / "model.json").is_file()
