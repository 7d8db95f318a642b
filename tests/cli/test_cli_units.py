"""The CLI's own logic, without a server: ignore rules, durations, exit codes, git facts."""

from __future__ import annotations

import argparse
import io
import random
import subprocess
import zipfile

import pytest

from controlplane_cli import archive, exits, gitinfo
from controlplane_cli.main import parse_duration


def test_controlplaneignore_leaves_out_what_it_names_and_git(tmp_path):
    (tmp_path / ".controlplaneignore").write_text(
        "# build leftovers\n*.pyc\n/tests/\nnode_modules/\n!keep.pyc\n"
    )
    for rel in ["app.py", "lib/util.py", "lib/util.pyc", "keep.pyc", "tests/test_app.py",
                "lib/tests/inner.py", "node_modules/x/index.js", ".git/HEAD"]:  # fmt: skip
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
    names = sorted(zipfile.ZipFile(io.BytesIO(archive.zip_directory(tmp_path))).namelist())
    # /tests/ is anchored to the root: lib/tests stays; .git and the ignore file never ship.
    assert names == ["app.py", "keep.pyc", "lib/tests/inner.py", "lib/util.py"]


def test_the_same_files_zip_to_the_same_bytes(tmp_path):
    (tmp_path / "app.py").write_text("x = 1\n")
    first = archive.zip_directory(tmp_path)
    (tmp_path / "app.py").touch()  # a newer mtime must not change the upload
    assert archive.zip_directory(tmp_path) == first


def test_compressed_files_are_stored_and_the_rest_deflated_and_every_byte_comes_back(tmp_path):
    text = b"def handler(event, context):\n    return {'statusCode': 200}\n" * 4000
    noise = random.Random(7).randbytes(300_000)  # incompressible, whatever its name
    (tmp_path / "app.py").write_bytes(text)
    (tmp_path / "model.bin").write_bytes(noise)
    (tmp_path / "vendor.whl").write_bytes(text)  # compressed by its kind, whatever its bytes
    zf = zipfile.ZipFile(io.BytesIO(archive.zip_directory(tmp_path)))
    kinds = {i.filename: i.compress_type for i in zf.infolist()}
    assert kinds == {"app.py": zipfile.ZIP_DEFLATED, "model.bin": zipfile.ZIP_STORED,
                     "vendor.whl": zipfile.ZIP_STORED}  # fmt: skip
    assert zf.getinfo("app.py").compress_size < len(text) / 10
    assert zf.read("app.py") == text and zf.read("model.bin") == noise and zf.read("vendor.whl") == text
    assert zf.testzip() is None


def test_a_missing_path_is_a_usage_error_and_an_oversized_zip_is_refused(tmp_path, monkeypatch):
    with pytest.raises(exits.CliError) as missing:
        archive.load(str(tmp_path / "nope"))
    assert missing.value.exit_code == exits.USAGE and "no such file or directory" in missing.value.message
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(exits.CliError) as not_zip:
        archive.load(str(tmp_path / "notes.txt"))
    assert not_zip.value.exit_code == exits.USAGE
    (tmp_path / "app.py").write_text("x" * 5000)
    monkeypatch.setattr(archive, "MAX_ZIPPED_BYTES", 100)
    with pytest.raises(exits.CliError) as big:
        archive.load(str(tmp_path))
    assert big.value.exit_code == exits.REFUSED and "over Lambda's limit" in big.value.message


@pytest.mark.parametrize(("text", "seconds"), [("15m", 900), ("90s", 90), ("1h30m", 5400), ("300", 300),
                                               ("0.5s", 0.5)])  # fmt: skip
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "15x", "m"])
def test_bad_durations_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("status", "regions", "code"),
    [
        ("succeeded", ["succeeded"], 0),
        ("failed", ["failed"], 1),
        ("partially_failed", ["succeeded", "failed"], 1),
        ("rolled_back", ["failed", "rolled_back"], 3),
        ("partially_failed", ["succeeded", "rolled_back"], 3),  # a canary withdrawn in one region
        ("cancelled", ["cancelled"], 1),
        ("superseded", ["cancelled"], 1),
    ],
)
def test_exit_code_of_a_finished_deployment(status, regions, code):
    deployment = {"status": status, "regions": [{"status": s} for s in regions]}
    assert exits.for_deployment(deployment) == code


def test_git_facts_of_a_working_tree_and_its_remote(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("remote", "add", "origin", "git@github.com:acme/shop.git")
    (tmp_path / "app.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=Ada", "-c", "user.email=ada@example.com", "commit", "-q", "-m", "Ship it\n\nbody")
    facts = gitinfo.commit_facts(tmp_path, env={})
    sha = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert facts == {
        "sha": sha.stdout.strip(),
        "branch": "main",
        "message": "Ship it\n\nbody",
        "author": "Ada <ada@example.com>",
        "url": f"https://github.com/acme/shop/commit/{sha.stdout.strip()}",
    }


def test_git_facts_come_from_github_actions_when_there_is_no_working_tree(tmp_path):
    env = {
        "GITHUB_ACTIONS": "true", "GITHUB_SHA": "a" * 40, "GITHUB_REF_NAME": "main",
        "GITHUB_REPOSITORY": "acme/shop", "GITHUB_SERVER_URL": "https://github.com", "GITHUB_ACTOR": "ada",
    }  # fmt: skip
    assert gitinfo.commit_facts(tmp_path, env=env) == {
        "sha": "a" * 40, "branch": "main", "author": "ada",
        "url": f"https://github.com/acme/shop/commit/{'a' * 40}",
    }  # fmt: skip


def test_on_a_terminal_log_lines_scroll_above_a_redrawn_table_of_regions():
    import io as _io

    from controlplane_cli.follow import TerminalRenderer

    out = _io.StringIO()
    r = TerminalRenderer(out)
    deployment = {"id": 7, "status": "running", "regions": [
        {"region": "us-east-1", "status": "running", "step": "alias", "version": "3"},
        {"region": "eu-west-1", "status": "queued", "step": "", "version": ""},
    ]}  # fmt: skip
    r.regions(deployment)
    r.event(
        {"created_at": "t1", "region": "us-east-1", "step": "alias", "message": "moved", "duration_ms": 5}
    )
    deployment["regions"][0].update(status="succeeded", step="verify")
    deployment["status"] = "succeeded"
    r.finish(deployment, "http://cp")
    text = out.getvalue()
    # The table (2 lines) is erased before the log line is printed, then drawn again below it.
    assert text.count("\x1b[2F\x1b[J") == 2
    final = text.rsplit("\x1b[J", 1)[1].splitlines()
    assert final[0].split() == ["✓", "us-east-1", "succeeded", "verify", "v3"]
    assert final[-1] == "deployment 7 succeeded"
    assert "t1 [us-east-1] alias: moved (5 ms)" in text
