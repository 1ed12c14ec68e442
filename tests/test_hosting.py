"""Hosting: Space detection, ZeroGPU wrapping and its duration estimate, sign-in, storage note,
public URLs, launch options, and the Space files (README front matter, requirements.txt)."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version
from starlette.requests import Request

from pipelines.request import GenerationRequest
from studio import hosting

ROOT = Path(__file__).resolve().parent.parent
SPACE = {"SPACE_ID": "someone/wan-studio", "SPACE_HOST": "someone-wan-studio.hf.space"}


def make_request(variant: str = "t2v-a14b", width: int = 832, height: int = 480, frames: int = 81,
                 steps: int = 40) -> GenerationRequest:
    return GenerationRequest(variant=variant, prompt="a boat", negative_prompt="", width=width,
                             height=height, frames=frames, fps=16, steps=steps, seed=1,
                             guidance=4.0, guidance_low=3.0, flow_shift=12.0)


def starlette_request(host: str = "127.0.0.1:7860", scheme: str = "http") -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "root_path": "", "query_string": b"",
                    "scheme": scheme, "server": (host.split(":")[0], 7860),
                    "headers": [(b"host", host.encode())]})


# --- where we run -------------------------------------------------------------------------------

def test_space_and_zero_gpu_detection_read_the_environment() -> None:
    assert not hosting.on_space({})
    assert hosting.on_space(SPACE)
    assert not hosting.on_zero_gpu(SPACE)
    assert hosting.on_zero_gpu({"SPACES_ZERO_GPU": "true"})
    assert hosting.on_zero_gpu({"SPACES_ZERO_GPU": "1"})
    assert not hosting.on_zero_gpu({"SPACES_ZERO_GPU": "false"})


def test_sign_in_only_on_a_space_with_oauth() -> None:
    assert not hosting.sign_in_enabled({})
    assert not hosting.sign_in_enabled({"OAUTH_CLIENT_ID": "abc"}), "off a Space the button cannot work"
    assert not hosting.sign_in_enabled(SPACE), "a Space without hf_oauth has no client id"
    assert hosting.sign_in_enabled({**SPACE, "OAUTH_CLIENT_ID": "abc"})


def test_owner_key_follows_the_account_when_signed_in() -> None:
    from storage.validation import check_owner
    from studio.owners import ACCOUNT_PREFIX, is_owner_key

    class Profile:
        def __init__(self, username: str) -> None:
            self.username = username

    secret = "s" * 40
    alice = hosting.owner_key(Profile("alice"), "browser-key-1", secret)
    assert alice == hosting.owner_key(Profile("alice"), "browser-key-2", secret), "same on every browser"
    assert check_owner(alice) == alice, "storage takes it like any owner key"
    assert alice.startswith(ACCOUNT_PREFIX) and not is_owner_key(alice), "no client may name it"
    assert "alice" not in alice, "not guessable from the username"
    assert alice != hosting.owner_key(Profile("alice"), "k", "t" * 40), "depends on the server secret"
    assert alice != hosting.owner_key(Profile("bob"), "k", secret)
    assert hosting.owner_key(None, "browser-key-1", secret) == "browser-key-1"
    with pytest.raises(ValueError, match="browser key"):
        hosting.owner_key(None, "", secret)
    with pytest.raises(ValueError, match="32 characters"):
        hosting.owner_key(Profile("alice"), "k", "short")


def test_history_note_only_without_persistent_storage(tmp_path: Path) -> None:
    mounted = tmp_path / "data"
    mounted.mkdir()
    assert hosting.history_note(tmp_path / "local", root=mounted, env={}) is None, "not on a Space"
    assert hosting.has_persistent_storage(mounted, SPACE)
    assert hosting.history_note(mounted, root=mounted, env=SPACE) is None
    note = hosting.history_note(tmp_path / "local", root=tmp_path / "absent", env=SPACE)
    assert note is not None and "not permanent" in note
    assert not hosting.has_persistent_storage(tmp_path / "absent", SPACE)


# --- ZeroGPU ------------------------------------------------------------------------------------

def test_estimate_matches_published_timings_with_margin() -> None:
    # H100, T2V-A14B, 480p, 81 frames, 40 steps took 326.9 s (WAN22.md).
    estimate = hosting.estimate_gpu_seconds(make_request())
    assert 326.9 < estimate < 2 * 326.9
    big = hosting.estimate_gpu_seconds(make_request(width=1280, height=720))
    assert 1041.5 < big < 2 * 1041.5


def test_estimate_grows_with_size_frames_and_steps_and_has_a_floor() -> None:
    base = make_request(width=480, height=272, frames=33, steps=20)
    seconds = hosting.estimate_gpu_seconds(base)
    assert hosting.estimate_gpu_seconds(make_request(width=832, height=480, frames=33, steps=20)) > seconds
    assert hosting.estimate_gpu_seconds(make_request(width=480, height=272, frames=81, steps=20)) > seconds
    assert hosting.estimate_gpu_seconds(make_request(width=480, height=272, frames=33, steps=40)) > seconds
    assert hosting.estimate_gpu_seconds(make_request(width=64, height=64, frames=5, steps=1)) == hosting.MIN_GPU_SECONDS
    five_b = make_request("ti2v-5b", width=1280, height=704, frames=121, steps=50)
    assert hosting.estimate_gpu_seconds(five_b) > 534.7, "RTX 4090 published time, plus margin"


def test_duration_callable_finds_the_request_among_arguments() -> None:
    request = make_request()
    expected = hosting.estimate_gpu_seconds(request)
    assert hosting.request_gpu_seconds(request) == expected
    assert hosting.request_gpu_seconds("engine", request, None) == expected
    assert hosting.request_gpu_seconds(request=request) == expected
    with pytest.raises(TypeError, match="GenerationRequest"):
        hosting.request_gpu_seconds("no request here")


def test_gpu_task_is_the_function_itself_off_zero_gpu() -> None:
    def generate(request: GenerationRequest) -> str:
        return request.prompt

    def stream(request: GenerationRequest):
        yield request.prompt

    assert hosting.gpu_task(generate, env={}) is generate
    assert hosting.gpu_task(stream, env=SPACE) is stream, "a Space on ordinary hardware"
    assert hosting.gpu_task(generate, env={"SPACES_ZERO_GPU": "false"}) is generate


@pytest.mark.skipif(importlib.util.find_spec("spaces") is not None, reason="the `spaces` package is installed")
def test_gpu_task_on_zero_gpu_without_spaces_says_what_to_install() -> None:
    with pytest.raises(RuntimeError, match="spaces"):
        hosting.gpu_task(lambda request: None, env={"SPACES_ZERO_GPU": "true"})


# --- public URLs ---------------------------------------------------------------

def test_public_url_prefers_setting_then_space_host_then_request() -> None:
    request = starlette_request("127.0.0.1:7860")
    env = {**SPACE, "WAN_STUDIO_PUBLIC_URL": "https://studio.example.org/"}
    assert hosting.public_base_url(request, env) == "https://studio.example.org"
    assert hosting.public_base_url(request, SPACE) == "https://someone-wan-studio.hf.space"
    assert hosting.public_base_url(request, {}) == "http://127.0.0.1:7860"
    assert hosting.public_base_url(None, {"WAN_STUDIO_PUBLIC_URL": "http://host:8080/sub/"}) == "http://host:8080/sub"


def test_public_url_refuses_what_is_not_an_absolute_http_url() -> None:
    for bad in ("studio.example.org", "javascript:alert(1)", "ftp://x.org", "https://"):
        with pytest.raises(ValueError, match="WAN_STUDIO_PUBLIC_URL"):
            hosting.public_base_url(None, {"WAN_STUDIO_PUBLIC_URL": bad})
    with pytest.raises(ValueError, match="WAN_STUDIO_PUBLIC_URL"):
        hosting.public_base_url(None, {})


def test_public_url_reads_through_a_gradio_request() -> None:
    import gradio as gr

    wrapped = gr.Request(request=starlette_request("10.0.0.5:7861"))
    assert hosting.public_base_url(wrapped, {}) == "http://10.0.0.5:7861"


# --- Space files --------------------------------------------------------------------------------

def front_matter() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md must start with Space front matter between --- lines"
    return yaml.safe_load(match.group(1))


def test_readme_front_matter_configures_a_gradio_space() -> None:
    meta = front_matter()
    assert meta["sdk"] == "gradio"
    assert meta["app_file"] == "app.py"
    assert meta["python_version"] == "3.11"
    assert isinstance(meta["hf_oauth"], bool)
    assert len(meta["short_description"]) <= 60
    version = Version(str(meta["sdk_version"]))
    assert str(version) == str(meta["sdk_version"]), "sdk_version must be pinned to one release"
    gradio_pin = next(r for r in project_requirements() if r.name == "gradio")
    assert version in gradio_pin.specifier, "the Space's Gradio must satisfy pyproject.toml"


def test_readme_first_code_block_follows_the_front_matter() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.index("\n---\n") < text.index("```")


def project_requirements() -> list[Requirement]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return [Requirement(line) for line in data["project"]["dependencies"]]


def space_requirements() -> list[Requirement]:
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [Requirement(line) for line in (l.split("#")[0].strip() for l in lines) if line]


def test_requirements_txt_matches_pyproject_dependencies() -> None:
    project = {r.name.lower(): r for r in project_requirements()}
    space = {r.name.lower(): r for r in space_requirements()}
    assert set(space) == set(project), "requirements.txt and pyproject.toml must name the same packages"
    for name, requirement in project.items():
        assert space[name].specifier == requirement.specifier, f"{name}: versions differ"
        assert requirement.extras <= space[name].extras
