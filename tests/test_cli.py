"""The command line through click's CliRunner, and once as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import clustered
from latentsearch.cli import main


@pytest.fixture
def emb(tmp_path, root):
    """An .npy of 300 clustered vectors and a labels file beside it."""
    x, labels = clustered(300, dim=8)
    np.save(tmp_path / "emb.npy", x)
    (tmp_path / "labels.txt").write_text("\n".join(f"c{v}" for v in labels) + "\n")
    return tmp_path / "emb.npy", tmp_path / "labels.txt", x, labels


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def test_build_query_add_remove_info_list(emb, tmp_path):
    npy, labels_file, x, labels = emb
    r = run("build", "vectors", npy, "--labels", labels_file, "--name", "emb", "-q")
    assert r.exit_code == 0, r.output
    assert "built emb: 300 items, 8-d" in r.output

    r = run("query", "emb", "--id", 5, "-k", 3, "--json")
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc["query"]["id"] == 5 and len(doc["hits"]) == 3
    assert set(doc["hits"][0]) == {"id", "distance", "label", "source", "text"}
    assert all(h["id"] != 5 for h in doc["hits"])

    r = run("query", "emb", "--id", 5, "-k", 3)
    assert r.exit_code == 0 and r.output.splitlines()[0].split()[:3] == ["rank", "id", "distance"]

    np.save(tmp_path / "q.npy", x[9])
    r = run("query", "emb", "--vector", tmp_path / "q.npy", "-k", 1, "--json")
    assert json.loads(r.stdout)["hits"][0]["id"] == 9
    np.save(tmp_path / "q3.npy", x[9][:3])
    r = run("query", "emb", "--vector", tmp_path / "q3.npy")
    assert r.exit_code == 1 and r.stderr == "error: vectors have dimension 3, the collection has 8\n"

    r = run("query", "emb", "--id", 0, "--where", f"label=c{labels[0]}", "--json", "-k", 50)
    assert {h["label"] for h in json.loads(r.stdout)["hits"]} == {f"c{labels[0]}"}

    np.save(tmp_path / "more.npy", x[:4] + 0.01)
    r = run("add", "emb", tmp_path / "more.npy")
    assert r.exit_code == 0 and "added 4 items" in r.output and "ids 300..303" in r.output

    r = run("remove", "emb", "--id", 1, "--id", 301)
    assert r.exit_code == 0 and "removed 2 items" in r.output

    r = run("info", "emb", "--json")
    info = json.loads(r.stdout)
    assert info["count"] == 302 and info["next_id"] == 304 and info["dim"] == 8

    r = run("list")
    assert "emb" in r.output and "302" in r.output
    assert json.loads(run("list", "--json").stdout)[0]["name"] == "emb"


def test_errors_are_one_line_with_status_1(emb):
    npy, *_ = emb
    r = run("query", "nope", "--id", 1)
    assert r.exit_code == 1
    assert r.stderr.startswith("error: no collection 'nope'") and r.stderr.count("\n") == 1
    run("build", "vectors", npy, "--name", "e", "-q")
    r = run("query", "e", "--id", 10_000)
    assert r.exit_code == 1 and r.stderr.strip() == "error: collection e has no item with id 10000"
    r = run("build", "vectors", npy, "--name", "e", "-q")
    assert r.exit_code == 1 and "already exists" in r.stderr
    r = run("remove", "e", "--id", 99999)
    assert r.exit_code == 1 and "Traceback" not in r.output


def test_usage_errors_are_status_2(emb):
    npy, *_ = emb
    run("build", "vectors", npy, "--name", "e", "-q")
    assert run("query", "e").exit_code == 2
    assert run("query", "e", "--id", 1, "--text", "x").exit_code == 2
    assert run("query", "e", "--id", 1, "--where", "nonsense").exit_code == 1


def test_every_command_has_help_with_an_example():
    # tests/test_rough_edges.py walks every command and group; these are the README's
    for args in ([], ["build"], ["build", "vectors"], ["build", "images"], ["build", "text"],
                 ["query"], ["add"], ["remove"], ["compact"], ["info"], ["list"], ["evaluate"],
                 ["demo"]):
        r = run(*args, "--help")
        assert r.exit_code == 0 and "Example" in r.output, args


def test_real_process_query_by_id_without_tensorflow(emb, root):
    npy, *_ = emb
    env = dict(os.environ, LATENTSEARCH_ROOT=str(root))
    subprocess.run([sys.executable, "-m", "latentsearch", "build", "vectors", str(npy),
                    "--name", "p", "-q"], check=True, env=env, capture_output=True)
    code = (
        "import sys, json\n"
        "from latentsearch.cli import main\n"
        "try:\n"
        "    main(['query', 'p', '--id', '0', '-k', '2', '--json'])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["hits"]) == 2
    bad = subprocess.run([sys.executable, "-m", "latentsearch", "query", "missing", "--id", "0"],
                         env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("error:") and bad.stdout == ""


def test_help_does_not_import_tensorflow():
    code = ("import sys\nfrom latentsearch.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'tensorflow' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
