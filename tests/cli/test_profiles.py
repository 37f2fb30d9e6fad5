"""Profiles (``yunnao login``, ``logout``, ``profiles``) and how client commands find
their node and token: option, then environment, then profile, then the default URL; a
profile's token only ever goes to the profile's URL. Plus the author commands' argument
errors. The ``login`` tests check tokens against a real ``yunnao serve`` node."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tests.end_to_end.test_upload import node, token_for  # noqa: F401
from tests.registry.test_packages import index  # noqa: F401
from yunnao.cli import main
from yunnao.cli.common import (
    DEFAULT_URL,
    Profile,
    profiles_path,
    read_profiles,
    resolve_remote,
    write_profiles,
)

NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing answers there
ELSEWHERE = "http://127.0.0.1:7"


@pytest.fixture(autouse=True)
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("YUNNAO_URL", "YUNNAO_TOKEN", "YUNNAO_PROFILE", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    folder = tmp_path / "config" / "yunnao"
    monkeypatch.setenv("YUNNAO_CONFIG_DIR", str(folder))
    return folder


def cli(*args: str, input: str | None = None) -> click.testing.Result:
    return CliRunner().invoke(main, list(args), input=input)


def test_profiles_are_written_private_and_read_back(config: Path) -> None:
    saved = {
        "default": Profile(NOWHERE, 'tok-"quoted"\\-令牌', "sd.qd.env"),
        "work": Profile(ELSEWHERE, "other-token-0123456789"),
    }
    path = write_profiles(saved)
    assert path == config / "profiles.toml" == profiles_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.stat().st_mode) == 0o700
    assert read_profiles() == saved
    write_profiles({})
    assert not path.exists() and read_profiles() == {}


def test_profiles_are_listed_with_their_tokens_masked() -> None:
    write_profiles({"default": Profile(NOWHERE, "secret-token-ABCD", "sd.qd.env")})
    listed = cli("profiles", "--json")
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == [
        {"profile": "default", "url": NOWHERE, "namespace": "sd.qd.env", "token": "…ABCD"}
    ]
    table = cli("profiles")
    assert "default" in table.stdout and "secret-token" not in table.stdout


def test_logout_forgets_a_profile() -> None:
    write_profiles({"default": Profile(NOWHERE, "t" * 20), "work": Profile(ELSEWHERE, "u" * 20)})
    assert cli("logout", "--profile", "work").exit_code == 0
    assert set(read_profiles()) == {"default"}
    again = cli("logout", "--profile", "work")
    assert again.exit_code == 1 and "no profile 'work'" in again.output
    assert cli("logout").exit_code == 0 and not profiles_path().exists()


def test_option_then_environment_then_profile_then_default_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert resolve_remote(None, None, None).url == DEFAULT_URL
    assert resolve_remote(None, None, None).token is None
    write_profiles({"default": Profile(NOWHERE, "saved-token", "sd.qd.env")})
    remote = resolve_remote(None, None, None)
    assert (remote.url, remote.token, remote.namespace) == (NOWHERE, "saved-token", "sd.qd.env")
    # The same node given by option or environment still gets the profile's token
    # (the option's token wins over it) ...
    assert resolve_remote(NOWHERE + "/", None, None).token == "saved-token"
    assert resolve_remote(NOWHERE, "given", None).token == "given"
    # ... another node never does.
    other = resolve_remote(ELSEWHERE, None, None)
    assert (other.url, other.token, other.namespace) == (ELSEWHERE, None, None)

    # Through the command line: each level shows in the node the command tried to reach.
    assert f"cannot reach node at {NOWHERE}" in cli("search").output
    monkeypatch.setenv("YUNNAO_URL", ELSEWHERE)
    assert f"cannot reach node at {ELSEWHERE}" in cli("search").output
    assert (
        "cannot reach node at http://127.0.0.1:1"
        in cli("search", "--url", "http://127.0.0.1:1").output
    )


def test_a_named_profile_must_exist_and_match_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    write_profiles({"work": Profile(NOWHERE, "work-token")})
    missing = cli("search", "--profile", "home")
    assert missing.exit_code == 2 and "no profile 'home' (saved: work)" in missing.output
    mismatch = cli("versions", "a.b/c", "--profile", "work", "--url", ELSEWHERE)
    assert mismatch.exit_code == 2 and f"profile 'work' is for {NOWHERE}" in mismatch.output
    monkeypatch.setenv("YUNNAO_PROFILE", "work")
    assert f"cannot reach node at {NOWHERE}" in cli("show", "a.b/c").output
    assert resolve_remote(None, None, "work").token == "work-token"


def test_admin_commands_keep_the_local_node_key_fallback(tmp_path: Path) -> None:
    """No token anywhere: the local key signs one (here: none in an empty data dir). A
    default profile of another node changes nothing; one of this node lends its token."""
    empty = str(tmp_path / "no-node")
    write_profiles({"default": Profile(ELSEWHERE, "elsewhere-token")})
    refused = cli("key", "list", "--url", NOWHERE, "--data-dir", empty)
    assert refused.exit_code == 2 and "no --token given and no node key" in refused.output
    write_profiles({"default": Profile(NOWHERE, "here-token")})
    tried = cli("key", "list", "--data-dir", empty)
    assert tried.exit_code == 1 and f"cannot reach node at {NOWHERE}" in tried.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("publish", ".", "--url", NOWHERE), "needs the namespace to publish into"),
        (("publish", "no-such-thing", "--url", NOWHERE, "--namespace", "a.b"),
         "give a project folder"),
        (("publish", ".", "--local", "--url", NOWHERE), "drop --url and --profile"),
        (("publish", ".", "--url", NOWHERE, "--namespace", "a.b", "--capability", "x",
          "--status", "draft"), "--capability, --status: only for publishing into this"),
        (("deprecate", "a.b/c", "--url", NOWHERE), "name the version"),
        (("retire", "a.b", "--url", NOWHERE, "--yes"), "expected NAMESPACE/NAME"),
        (("versions", "a.b/c@1.0.0", "--url", NOWHERE), "without @VERSION"),
        (("edit", "a.b/c", "--url", NOWHERE), "nothing to change"),
        (("publish-jobs", "list", "--url", NOWHERE), "name the NAMESPACE"),
        (("login", "--url", NOWHERE, "--token", "t", "--profile", "a.b"), "letters, digits"),
        (("login", "--url", NOWHERE), "no token given"),
    ],
)  # fmt: skip
def test_argument_errors_are_usage_errors(args: tuple[str, ...], message: str) -> None:
    result = cli(*args, input="")
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_saved_default_profile_makes_publish_remote_and_local_keeps_it_local(
    tmp_path: Path,
) -> None:
    target = tmp_path / "plugin.py"
    target.write_text("")
    write_profiles({"default": Profile(NOWHERE, "t" * 20)})
    remote = cli("publish", str(target), "--namespace", "a.b")
    assert remote.exit_code == 2 and "give a project folder" in remote.output
    local = cli("publish", str(target), "--local", "--data-dir", str(tmp_path / "var"))
    assert local.exit_code == 1 and "contributes no capabilities" in local.output


# ---------------------------------------------------------------- against a real node


@pytest.mark.slow
def test_login_checks_the_token_and_saves_the_profile_for_later_commands(
    node,  # noqa: F811
) -> None:
    proc, cwd = node
    namespace = "sd.qd.login"
    token = token_for(cwd, namespace)

    wrong = cli("login", "--url", proc.url, input="not-a-token\n")
    assert wrong.exit_code == 1 and "401" in wrong.output
    elsewhere = cli("login", "--url", proc.url, "--namespace", "sd.qd.other", input=token)
    assert elsewhere.exit_code == 1 and "403" in elsewhere.output
    assert not profiles_path().exists()

    saved = cli("login", "--url", proc.url + "/", "--namespace", namespace, input=token + "\n")
    assert saved.exit_code == 0, saved.output
    assert read_profiles() == {"default": Profile(proc.url, token, namespace)}
    assert stat.S_IMODE(profiles_path().stat().st_mode) == 0o600

    jobs = cli("publish-jobs", "list", "--json")  # url, token and namespace: the profile's
    assert jobs.exit_code == 0, jobs.output
    assert json.loads(jobs.stdout) == {"jobs": []}
    # The environment's token beats the profile's (and this one is refused) ...
    bad_env = CliRunner(env={"YUNNAO_TOKEN": "garbage"}).invoke(main, ["publish-jobs", "list"])
    assert bad_env.exit_code == 1 and "401" in bad_env.output
    # ... and the option's beats the environment's.
    fixed = CliRunner(env={"YUNNAO_TOKEN": "garbage"}).invoke(
        main, ["publish-jobs", "list", "--token", token]
    )
    assert fixed.exit_code == 0, fixed.output
