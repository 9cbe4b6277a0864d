"""gem.access: a path typed into the app is read only inside the data roots, symlinks followed,
never a device or FIFO, and every refusal reads the same."""
import os

import pytest

from gem.access import DATA_ROOTS_ENV, REFUSED, AccessError, data_roots, resolve_data_glob, resolve_data_path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.jsonl").write_text('{"text": "x"}\n')
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "b.jsonl").write_text('{"text": "y"}\n')
    (root / "link_out").symlink_to(outside / "b.jsonl")
    (root / "dir_out").symlink_to(outside)
    (root / "link_in").symlink_to(root / "sub" / "a.jsonl")
    os.mkfifo(root / "fifo")
    return root.resolve(), outside.resolve()


def test_inside_paths_resolve(tree):
    root, _ = tree
    assert resolve_data_path(root / "sub" / "a.jsonl", [root]) == root / "sub" / "a.jsonl"
    assert resolve_data_path("sub/a.jsonl", [root]) == root / "sub" / "a.jsonl"  # relative to the first root
    assert resolve_data_path(root / "link_in", [root]) == root / "sub" / "a.jsonl"
    assert resolve_data_path(root / "sub", [root]) == root / "sub"
    with pytest.raises(AccessError):
        resolve_data_path(root / "sub", [root], kinds=("file",))


@pytest.mark.parametrize("make", [
    lambda root, out: out / "b.jsonl",              # outside
    lambda root, out: root / ".." / "secret" / "b.jsonl",  # dot-dot
    lambda root, out: root / "link_out",            # a symlink out of the root
    lambda root, out: root / "dir_out" / "b.jsonl",  # through a linked folder
    lambda root, out: root / "missing.jsonl",       # missing: same message as forbidden
    lambda root, out: root / "fifo",                # would block a reader forever
    lambda root, out: "/dev/zero",                  # a device: never hashed or read
    lambda root, out: "",
    lambda root, out: "a\0b",
])
def test_everything_else_is_refused_with_one_message(tree, make):
    root, outside = tree
    with pytest.raises(AccessError) as info:
        resolve_data_path(make(root, outside), [root])
    assert str(info.value) == REFUSED


def test_globs_are_checked_file_by_file(tree):
    root, outside = tree
    assert resolve_data_glob(str(root / "sub" / "*.jsonl"), [root]) == [root / "sub" / "a.jsonl"]
    for pattern in (str(outside / "*.jsonl"), str(root / "*"), str(root / "none*.jsonl"), str(root / "dir_out" / "*")):
        with pytest.raises(AccessError):  # outside, a FIFO and folders among the matches, nothing, a link out
            resolve_data_glob(pattern, [root])


def test_data_roots_from_the_environment(tmp_path, monkeypatch):
    from gem.store import SAMPLE_DATA_DIR

    monkeypatch.delenv(DATA_ROOTS_ENV, raising=False)
    assert data_roots(tmp_path) == [tmp_path.resolve(), SAMPLE_DATA_DIR.resolve()]
    monkeypatch.setenv(DATA_ROOTS_ENV, f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    assert data_roots(tmp_path / "ignored") == [(tmp_path / "a").resolve(), (tmp_path / "b").resolve()]


@pytest.mark.slow
def test_home_page_refuses_server_paths_outside_the_data_roots(app_test, synthetic_workspace, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "c.jsonl"
    outside.write_text('{"id": "1", "text": "secret text"}\n')
    for path in (str(outside), "/etc/passwd", "/dev/zero", str(synthetic_workspace.root.parent / "nope.jsonl")):
        at = app_test(synthetic_workspace)
        at.run()
        at.radio(key="home_source").set_value("Server-side path").run()
        at.text_input(key="home_path").set_value(path).run()
        at.button(key="home_open").click().run()
        assert not at.exception, at.exception
        assert [e.value for e in at.error] == [REFUSED], path
        assert at.session_state["gem_workspace"] == str(synthetic_workspace.root)
    made = [p.name for p in synthetic_workspace.root.parent.iterdir()]
    assert made == [synthetic_workspace.root.name]  # no workspace folder left behind
    # inside the roots it opens
    inside = synthetic_workspace.root.parent / "mine.jsonl"
    inside.write_text('{"id": "1", "text": "a document"}\n{"id": "2", "text": "another one"}\n')
    at = app_test(synthetic_workspace)
    at.run()
    at.radio(key="home_source").set_value("Server-side path").run()
    at.text_input(key="home_path").set_value(str(inside)).run()
    at.button(key="home_open").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.session_state["gem_workspace"] != str(synthetic_workspace.root)
