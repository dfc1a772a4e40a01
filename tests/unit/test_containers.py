"""Dockerfile, .dockerignore and docker-compose.yml, checked by parsing them (no Docker engine needed).

The files are read the way Docker reads them (line continuations, stage inheritance,
``${VAR:-default}`` interpolation with the defaults filled in) and compared with the
code they drive: the ``seqtag`` CLI parser, the training recipes, the service settings
and the packages ``pyproject.toml`` installs.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
SETTINGS_PY = ROOT / "service" / "settings.py"

TORCH_PIN = "torch==2.13.0"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
SERVICES_WITH_API = ("api", "api-gpu")
MODELS_USERS = ("api", "api-gpu", "train")


# ---- a small Dockerfile reader ------------------------------------------------

@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[Instruction] = field(default_factory=list)


def read_instructions(text: str) -> list[Instruction]:
    """Instructions with ``\\`` continuations joined; comment lines (also inside continuations) dropped."""
    out: list[Instruction] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buffer):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1].strip())
            continue
        buffer.append(stripped)
        logical = " ".join(part for part in buffer if part)
        buffer = []
        keyword, _, args = logical.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    assert not buffer, "Dockerfile ends inside a line continuation"
    return out


def read_stages(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for ins in read_instructions(text):
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            name = words[2].lower() if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(name=name, base=words[0], instructions=[]))
        elif stages:
            stages[-1].instructions.append(ins)
        else:
            assert ins.keyword == "ARG", f"line {ins.line}: only ARG may come before the first FROM"
    return stages


def split_flags(args: str) -> tuple[dict[str, str], str]:
    """Leading ``--name=value`` options of an instruction, and the rest."""
    flags: dict[str, str] = {}
    rest = args
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        name, _, value = word[2:].partition("=")
        flags[name] = value
        rest = rest.strip()
    return flags, rest


def command_words(args: str) -> list[str]:
    """Exec form (JSON list) or shell form of CMD / ENTRYPOINT / RUN."""
    if args.startswith("["):
        words = json.loads(args)
        assert isinstance(words, list) and all(isinstance(w, str) for w in words)
        return words
    return shlex.split(args)


def parse_env(args: str) -> dict[str, str]:
    words = shlex.split(args)
    if words and "=" not in words[0]:  # legacy ``ENV KEY value with spaces``
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) for w in words)


class Image:
    """What one build target ends up with: its stage chain within the Dockerfile, folded."""

    def __init__(self, stages: list[Stage], target: str):
        by_name = {s.name: s for s in stages if s.name}
        assert target in by_name, f"no stage named {target!r} in the Dockerfile"
        chain: list[Stage] = []
        stage: Stage | None = by_name[target]
        while stage is not None:
            chain.insert(0, stage)
            stage = by_name.get(stage.base.lower())
        self.target = target
        self.base_image = chain[0].base
        self.instructions = [ins for s in chain for ins in s.instructions]
        self.env: dict[str, str] = {}
        self.user = "root"
        self.workdir = PurePosixPath("/")
        self.expose: list[str] = []
        self.healthcheck: list[str] | None = None
        self.cmd: list[str] = []
        self.entrypoint: list[str] = []
        self.copies: list[tuple[dict[str, str], list[str], PurePosixPath]] = []
        for ins in self.instructions:
            if ins.keyword == "ENV":
                self.env.update(parse_env(ins.args))
            elif ins.keyword == "USER":
                self.user = ins.args.split(":")[0]
            elif ins.keyword == "WORKDIR":
                self.workdir = self.workdir / ins.args
            elif ins.keyword == "EXPOSE":
                self.expose = [p.split("/")[0] for p in ins.args.split()]
            elif ins.keyword == "HEALTHCHECK":
                _, rest = split_flags(ins.args)
                kind, _, command = rest.partition(" ")
                self.healthcheck = None if kind.upper() == "NONE" else command_words(command.strip())
            elif ins.keyword == "CMD":
                self.cmd = command_words(ins.args)
            elif ins.keyword == "ENTRYPOINT":
                self.entrypoint = command_words(ins.args)
                self.cmd = []  # Docker resets an inherited CMD when ENTRYPOINT is set
            elif ins.keyword in ("COPY", "ADD"):
                flags, rest = split_flags(ins.args)
                words = command_words(rest)
                dest = self.workdir / words[-1]
                self.copies.append((flags, words[:-1], dest))

    @property
    def runs(self) -> list[str]:
        return [ins.args for ins in self.instructions if ins.keyword == "RUN"]

    @property
    def command(self) -> list[str]:
        return self.entrypoint + self.cmd

    def repo_path(self, container_path: str) -> Path | None:
        """The repository file a path in the image comes from (via a build-context COPY), if any."""
        target = PurePosixPath(container_path)
        for flags, sources, dest in reversed(self.copies):
            if "from" in flags:
                continue
            for source in sources:
                src = ROOT / source.rstrip("/")
                if src.is_dir() and (target == dest or dest in target.parents):
                    return src / target.relative_to(dest)
                if src.is_file() and target in (dest, dest / src.name):
                    return src
        return None


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return read_stages(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def images(stages) -> dict[str, Image]:
    return {target: Image(stages, target) for target in ("cpu", "gpu")}


# ---- compose reading ------------------------------------------------------------

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def with_defaults(value: Any) -> Any:
    """Compose interpolation with an empty environment: ``${VAR:-default}`` -> default, ``$$`` -> ``$``."""
    if isinstance(value, dict):
        return {k: with_defaults(v) for k, v in value.items()}
    if isinstance(value, list):
        return [with_defaults(v) for v in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        op, default = match.group(2), match.group(3)
        if op in (":-", "-"):
            return default
        if op in (":?", "?"):
            raise AssertionError(f"{match.group(0)} is required: the file does not work with defaults alone")
        return ""

    return _VAR.sub(replace, value)


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def compose(raw_compose) -> dict[str, Any]:
    return with_defaults(raw_compose)


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict[str, Any]]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def image_of(service: dict[str, Any], images: dict[str, Image]) -> Image:
    build = service.get("build")
    assert isinstance(build, dict), "build each service from this repository's Dockerfile with a target"
    assert PurePosixPath(build.get("context", ".")) == PurePosixPath("."), "build context is the repository root"
    assert build.get("dockerfile", "Dockerfile") == "Dockerfile"
    return images[build["target"]]


def effective_env(service: dict[str, Any], images: dict[str, Image]) -> dict[str, str]:
    return {**image_of(service, images).env, **environment(service)}


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Container path -> (source, read_only), for short and long volume syntax."""
    out: dict[str, tuple[str, bool]] = {}
    for entry in service.get("volumes") or []:
        if isinstance(entry, str):
            parts = entry.split(":")
            if len(parts) == 1:
                source, target, mode = "", parts[0], ""
            else:
                source, target, mode = parts[0], parts[1], parts[2] if len(parts) > 2 else ""
            out[target] = (source, "ro" in mode.split(","))
        else:
            out[entry["target"]] = (entry.get("source", ""), bool(entry.get("read_only")))
    return out


def port_mappings(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host port, container port) pairs."""
    out = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            out.append((str(entry.get("published", "")), str(entry["target"])))
            continue
        spec = str(entry).split("/")[0]
        parts = spec.split(":")
        out.append((parts[-2] if len(parts) > 1 else "", parts[-1]))
    return out


def under(path: str, directory: str) -> bool:
    p, d = PurePosixPath(path), PurePosixPath(directory)
    return d in p.parents


# ---- Dockerfile -------------------------------------------------------------------

def test_dockerfile_has_cpu_and_gpu_targets_with_cpu_the_default(stages):
    names = [s.name for s in stages]
    assert "cpu" in names and "gpu" in names
    assert names.count("cpu") == 1 and names.count("gpu") == 1
    assert stages[-1].name == "cpu", "the last stage is what a plain `docker build` produces: make it cpu"


def test_final_images_run_as_a_non_root_user_that_the_image_creates(images):
    for image in images.values():
        assert image.user not in ("root", "0", ""), f"{image.target} runs as root"
        created = " ".join(image.runs)
        assert re.search(rf"\buseradd\b.*\b{re.escape(image.user)}\b", created) or image.user.isdigit(), (
            f"{image.target}: user {image.user} is never created"
        )


def test_image_settings_listen_on_all_interfaces_on_the_exposed_port(images):
    for image in images.values():
        assert image.env.get("SEQTAG_HOST") == "0.0.0.0", f"{image.target}: a container must bind 0.0.0.0"
        port = image.env.get("SEQTAG_PORT")
        assert port and port.isdigit()
        assert image.expose == [port], f"{image.target}: EXPOSE {image.expose} but SEQTAG_PORT={port}"
        assert image.workdir == PurePosixPath("/app")


def test_healthcheck_calls_healthz_on_the_service_port_without_curl(images):
    for image in images.values():
        assert image.healthcheck, f"{image.target} has no HEALTHCHECK"
        text = " ".join(image.healthcheck)
        port = image.env["SEQTAG_PORT"]
        assert re.search(rf"https?://(127\.0\.0\.1|localhost):{port}/healthz\b", text), text
        assert "python" in image.healthcheck[0] or image.healthcheck[0].endswith("python3")
        assert "curl" not in text and "wget" not in text, "slim images have neither curl nor wget"


def test_default_command_serves(images):
    for image in images.values():
        assert image.command[:2] == ["seqtag", "serve"], image.command


def test_cpu_image_installs_the_pinned_cpu_torch_and_gpu_image_a_cuda_one(images):
    def torch_installs(image: Image) -> list[list[str]]:
        return [words for run in image.runs for words in [shlex.split(run)]
                if "pip" in " ".join(words) and TORCH_PIN in words]

    cpu = torch_installs(images["cpu"])
    assert cpu, f"the cpu target never runs pip install {TORCH_PIN}"
    words = cpu[0]
    index = next((words[i + 1] for i, w in enumerate(words[:-1])
                  if w in ("--index-url", "-i", "--extra-index-url")), None)
    index = index or next((w.split("=", 1)[1] for w in words if w.startswith(("--index-url=", "--extra-index-url="))),
                          None)
    assert index == TORCH_CPU_INDEX, f"cpu torch must come from {TORCH_CPU_INDEX}, got {index}"
    gpu = torch_installs(images["gpu"])
    assert gpu or "cuda" in images["gpu"].base_image, "the gpu target installs no torch"
    assert all(TORCH_CPU_INDEX not in " ".join(w) for w in gpu), "the gpu target must not use the CPU index"
    for image in images.values():  # torch first, then the project: the project's torch>=... is then satisfied
        torch_at = next(i for i, r in enumerate(image.runs) if TORCH_PIN in r)
        project_at = [i for i, r in enumerate(image.runs) if re.search(r"pip install .*(\.whl|\s\.(\s|$)|/app)", r)]
        assert project_at and min(project_at) > torch_at, f"{image.target}: install torch before the project"


def test_build_context_copies_exist_and_are_not_dockerignored(stages):
    ignore = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
              if line.strip() and not line.strip().startswith("#")]
    assert not any(p.startswith("!") for p in ignore), "keep .dockerignore to plain exclusions"

    def ignored(rel: str) -> bool:
        parts = PurePosixPath(rel).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        for pattern in ignore:
            pattern = pattern.strip("/")
            if pattern.startswith("**/"):
                if any(fnmatch.fnmatch(part, pattern[3:]) for part in parts):
                    return True
            elif any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
                return True
        return False

    seen = 0
    for stage in stages:
        for ins in stage.instructions:
            if ins.keyword not in ("COPY", "ADD"):
                continue
            flags, rest = split_flags(ins.args)
            if "from" in flags:
                continue
            for source in command_words(rest)[:-1]:
                seen += 1
                assert not any(ch in source for ch in "*?[$"), f"line {ins.line}: keep COPY sources literal"
                assert (ROOT / source).exists(), f"line {ins.line}: COPY source {source} is not in the repository"
                assert not ignored(source.rstrip("/")), f"line {ins.line}: {source} is excluded by .dockerignore"
    assert seen


def test_the_build_copies_every_package_and_file_pyproject_needs(stages):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    # every folder a package is mapped from (models/, training/, service/, seqtag/, checkpoints/), top level
    packages = {folder.split("/")[0] for folder in project["tool"]["setuptools"]["package-dir"].values()}
    needed = {"pyproject.toml", project["project"]["readme"], *packages}
    for stage in stages:
        copied: set[str] = set()
        for ins in stage.instructions:
            if ins.keyword == "COPY" and "from" not in split_flags(ins.args)[0]:
                copied.update(s.rstrip("/") for s in command_words(split_flags(ins.args)[1])[:-1])
        builds = any(re.search(r"pip (wheel|install)\b.*\s\.(\s|$)", ins.args) for ins in stage.instructions
                     if ins.keyword == "RUN")
        if builds:
            assert needed <= copied, f"stage {stage.name} builds the project without {sorted(needed - copied)}"
            return
    pytest.fail("no stage builds the project (pip wheel . / pip install .)")


def test_shipped_checkpoints_are_baked_in_and_seed_the_models_directory(images):
    checkpoints = ROOT / "checkpoints"
    assert checkpoints.is_dir() and any(checkpoints.iterdir()), (
        "checkpoints/ must exist in a clean clone (git keeps no empty directory: add checkpoints/.gitkeep)"
    )
    for image in images.values():
        assert image.repo_path("/app/checkpoints") == checkpoints, f"{image.target}: checkpoints/ not at /app/checkpoints"
        models_dir = image.env.get("SEQTAG_MODELS_DIR")
        assert models_dir and PurePosixPath(models_dir).is_absolute()
        seeded = image.repo_path(models_dir) == checkpoints or any(
            re.search(rf"\bcp\b.*/app/checkpoints\S*\s+{re.escape(models_dir)}/?\S*", run) for run in image.runs)
        assert seeded, f"{image.target}: {models_dir} is not filled with the shipped checkpoints"
        owned = " ".join(image.runs)
        for key in ("SEQTAG_MODELS_DIR", "SEQTAG_DICTIONARIES_DIR"):
            path = image.env.get(key)
            assert path, f"{image.target}: set {key} so the volume mount point is fixed"
            assert re.search(rf"chown\b[^&;]*\s{re.escape(path)}(\s|$)", owned), (
                f"{image.target}: {path} must exist and belong to {image.user} (named volumes copy that ownership)"
            )


def test_dockerignore_keeps_local_state_out_of_the_context():
    patterns = {line.strip().strip("/") for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()}
    for must in (".git", ".venv", "runs", ".corpora", ".whl"):
        assert must in patterns, f".dockerignore does not exclude {must}"
    assert {"**/__pycache__", "__pycache__"} & patterns
    assert {".pytest_cache", ".hypothesis"} <= patterns


# ---- docker-compose.yml -------------------------------------------------------------

def test_compose_services_and_profiles(services):
    assert {"api", "api-gpu", "train"} <= set(services)
    assert not services["api"].get("profiles"), "api starts with a plain `docker compose up`"
    assert services["api-gpu"].get("profiles") == ["gpu"]
    assert services["train"].get("profiles") == ["train"]


def test_compose_builds_the_right_targets(services, images):
    assert services["api"]["build"]["target"] == "cpu"
    assert services["api-gpu"]["build"]["target"] == "gpu"
    assert services["train"]["build"]["target"] in ("cpu", "gpu")
    tags = {}
    for name, service in services.items():
        image_of(service, images)
        if "image" in service:  # one tag, one target: two services must not build different images under one tag
            assert tags.setdefault(service["image"], service["build"]["target"]) == service["build"]["target"]


def test_compose_ports_map_to_the_service_port(services, images):
    published = []
    for name in SERVICES_WITH_API:
        env = effective_env(services[name], images)
        pairs = port_mappings(services[name])
        assert pairs, f"{name} publishes no port"
        for host, container in pairs:
            assert container == env["SEQTAG_PORT"], f"{name}: container port {container} != SEQTAG_PORT"
            published.append(host)
    assert len(published) == len(set(published)), "api and api-gpu publish the same host port"


def test_compose_healthchecks_call_healthz_on_the_service_port(services, images):
    for name in SERVICES_WITH_API:
        check = services[name].get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        test = check["test"]
        words = test if isinstance(test, list) else ["CMD-SHELL", test]
        assert words[0] in ("CMD", "CMD-SHELL")
        text = " ".join(words[1:])
        port = effective_env(services[name], images)["SEQTAG_PORT"]
        assert re.search(rf"https?://(127\.0\.0\.1|localhost):{port}/healthz\b", text), text
        assert "curl" not in text and "wget" not in text


def test_models_volume_is_shared_and_mounted_where_the_service_looks(compose, services, images):
    declared = set(compose.get("volumes") or {})
    sources = set()
    for name in MODELS_USERS:
        models_dir = effective_env(services[name], images)["SEQTAG_MODELS_DIR"]
        service_mounts = mounts(services[name])
        assert models_dir in service_mounts, f"{name}: nothing mounted at SEQTAG_MODELS_DIR={models_dir}"
        source, read_only = service_mounts[models_dir]
        assert source in declared, f"{name}: {models_dir} is not a named volume"
        sources.add(source)
    assert len(sources) == 1, f"api, api-gpu and train must share one models volume, got {sources}"
    assert not mounts(services["train"])[effective_env(services["train"], images)["SEQTAG_MODELS_DIR"]][1], (
        "train exports into the models volume: it must be writable"
    )


def test_dictionaries_volume_is_mounted_where_the_service_keeps_them(compose, services, images):
    declared = set(compose.get("volumes") or {})
    for name in SERVICES_WITH_API:
        directory = effective_env(services[name], images)["SEQTAG_DICTIONARIES_DIR"]
        source, read_only = mounts(services[name]).get(directory, ("", False))
        assert source in declared and not read_only, f"{name}: no writable named volume at {directory}"


def test_gpu_service_reserves_an_nvidia_gpu_and_runs_on_cuda(services):
    devices = services["api-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert environment(services["api-gpu"]).get("SEQTAG_DEVICE") == "cuda"
    assert "deploy" not in services["api"], "the cpu service must start on machines without a GPU"


def test_admin_token_comes_from_the_environment(raw_compose):
    for name in SERVICES_WITH_API:
        token = environment(raw_compose["services"][name]).get("SEQTAG_ADMIN_TOKEN")
        assert token is not None and token.startswith("${SEQTAG_ADMIN_TOKEN"), (
            f"{name}: SEQTAG_ADMIN_TOKEN must come from the host environment, never be written here"
        )


def test_restart_policies(services):
    assert services["train"].get("restart") == "no", "train is a one-shot job (quote \"no\": bare no is false in YAML)"
    for name in SERVICES_WITH_API:
        assert services[name].get("restart") in ("unless-stopped", "always", "on-failure")


@pytest.fixture(scope="module")
def train_command(services):
    command = services["train"]["command"]
    assert isinstance(command, list), "give the train command in exec (list) form"
    assert command[:2] == ["seqtag", "train"]
    return command


def test_train_command_is_accepted_by_the_real_cli(train_command):
    from seqtag.cli import build_parser

    args = build_parser().parse_args(train_command[1:])
    assert args.command == "train" and args.config and not args.resume


def test_train_command_builds_a_valid_config_from_an_existing_recipe(train_command, services, images):
    from seqtag.cli import TASK_DEFAULTS, _layers_from_args, build_parser
    from seqtag.training.config import build_config, load_config_file

    args = build_parser().parse_args(train_command[1:])
    image = image_of(services["train"], images)
    recipe = image.repo_path(args.config)
    assert recipe is not None, f"--config {args.config} is not copied into the {image.target} image"
    assert recipe.parent == ROOT / "training" / "recipes" and recipe.is_file(), f"no recipe {recipe}"
    file_layer = load_config_file(recipe)
    flags = _layers_from_args(args)
    config = build_config(TASK_DEFAULTS[file_layer["task"]], file_layer, flags)
    assert config.export and config.out and config.dev


def test_train_paths_fall_in_the_right_mounts(train_command, compose, services, images):
    from seqtag.cli import _layers_from_args, build_parser

    flags = _layers_from_args(build_parser().parse_args(train_command[1:]))
    service = services["train"]
    env = effective_env(service, images)
    service_mounts = mounts(service)

    models_dir = env["SEQTAG_MODELS_DIR"]
    export = PurePosixPath(flags["export"])
    assert export.parent == PurePosixPath(models_dir), f"--export {export} is not a model directory in {models_dir}"
    if SETTINGS_PY.exists():
        from seqtag.service.settings import NAME_PATTERN

        assert re.match(NAME_PATTERN, export.name), f"the service would not load a model named {export.name!r}"

    out_mount = next((m for m in service_mounts if under(flags["out"], m)), None)
    assert out_mount and service_mounts[out_mount][0] in set(compose.get("volumes") or {}), (
        f"--out {flags['out']} is not on a named volume: the run would vanish with the container"
    )

    corpora = [m for m in service_mounts if under(flags["train"], m)]
    assert corpora and all(under(flags["dev"], m) for m in corpora), "--train and --dev must be under the corpora mount"
    mount = corpora[0]
    host_dir, read_only = service_mounts[mount]
    assert read_only, "mount the corpora read-only"
    host = (COMPOSE.parent / host_dir).resolve()
    if not host.is_dir():
        pytest.skip(f"default corpora directory {host} not present here")
    for key in ("train", "dev"):
        path = host / PurePosixPath(flags[key]).relative_to(mount)
        assert path.is_file(), f"default --{key} {flags[key]} does not exist in {host}"


def test_seqtag_variables_are_real_settings(stages, services):
    if not SETTINGS_PY.exists():
        pytest.skip("service/settings.py not written yet")
    from seqtag.service.settings import Settings

    fields = set(Settings.model_fields)
    names = set()
    for stage in stages:
        for ins in stage.instructions:
            if ins.keyword == "ENV":
                names.update(parse_env(ins.args))
    for service in services.values():
        names.update(environment(service))
    seqtag = {n for n in names if n.startswith("SEQTAG_")}
    assert seqtag
    unknown = sorted(n for n in seqtag if n[len("SEQTAG_"):].lower() not in fields)
    assert not unknown, f"not service settings (typo?): {unknown}"


def test_pyyaml_is_in_the_test_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extra = project["project"]["optional-dependencies"]["test"]
    assert any(re.match(r"pyyaml\b", dep, re.IGNORECASE) for dep in extra)
