"""Every command of README.md, docs/*.md and data_prep/README.md works as written (issue 27, item 2).

The commands are read from the documents themselves: fenced ``bash`` blocks (continuations joined, comments
dropped), fenced ``python`` blocks, and inline ``python -m ...`` / ``python benchmarks/...`` / ``make
reproduce ...`` commands. Each document's commands run in order in a fresh folder laid out like a clone
(``configs/``, ``notebooks/``, ``profiles/``, ... linked; ``.venv`` is this interpreter's environment;
``../shared`` the real data when present), so a later command reads what an earlier one wrote, as a reader
following the document would. How each is checked is in ``CHECKS`` (first match wins); a command no entry names
must run and exit 0. Commands that need data this machine lacks (CASIA, MegaFace, a user's features) must stop
with exactly one ``error:`` line and exit status 2. ``make reproduce`` lines are checked by the runner's own
validation (profile, data, every parameter against every notebook) through ``make -n``, stopped before any
notebook runs by an unknown kernel; benchmarks and study scripts by ``--help``; pytest lines by collecting them.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPHEREFACE_SHARED", PROJECT.parent / "shared"))
DOCS = ("README.md", "docs/distributed.md", "docs/recipe.md", "docs/synthetic.md", "data_prep/README.md")
#: what a clone has that the commands read (linked into the run folder)
LINKED = ("configs", "notebooks", "profiles", "examples", "benchmarks", "scripts", "tests", "Makefile",
          "requirements.txt", "pyproject.toml")
NO_KERNEL = "sphereface-docs-test-no-such-kernel"
TIMEOUT_S = 600

RUN, NEEDS_DATA, VALIDATE, HELP, COLLECT, MAKE_N, NOT_RUN = (
    "run", "needs data", "validate", "help", "collect", "make -n", "not run")


@dataclass(frozen=True)
class Check:
    pattern: str  #: a regular expression searched in the command
    how: str
    reason: str
    substitute: tuple[tuple[str, str], ...] = ()  #: documented alternatives applied to the command's text


#: How each documented command is checked; reviewed by hand. Anything not listed must run and exit 0.
CHECKS: tuple[Check, ...] = (
    Check(r"--pack PACK|DATA=<folder>", NOT_RUN, "a template: PACK / <folder> stand for the user's own pack"),
    Check(r"examples/practitioner\.py", HELP, "run (at 20 iterations) by tests/test_examples.py"),
    Check(r"^make test", MAKE_N, "the test suite itself: checked by `make -n` (it would recurse)"),
    Check(r"pip install", NOT_RUN, "installs from the network (the Makefile runs it; tests/test_install.py)"),
    Check(r"DATA=/data/sf", NEEDS_DATA, "the paper's real data is not on this machine"),
    Check(r"data_prep\.resize --src (DATA|data/real) |(PROFILE=lfw|profile lfw) (DATA=|--data )(data/real-56x48|DATA-56x48)"
          r"|evaluate lfw --images data/real-56x48", NEEDS_DATA,
          "the real-faces folder is what the CelebA -> LFW commands of data_prep/README.md write (about an hour)"),
    Check(r"make reproduce|companion\.reproduce", VALIDATE,
          "runs notebooks for minutes to hours: its arguments and parameters are validated instead"),
    Check(r"papermill notebooks/\S+ out\.ipynb", RUN, "notebook 04 runs 494 s: parameters applied, not executed",
          (("out.ipynb", "out.ipynb --prepare-only"),)),
    Check(r"data_prep\.(celeba|lfw|lfw_megaface) .*(\.\./shared/data|DATA/lfw)", HELP,
          "aligns all of CelebA / LFW (36 / 27 min at load 10-24): tests/test_data_prep_real.py runs these commands "
          "on a few identities and pairs"),
    Check(r"data_prep\.(casia|lfw|ytf|megaface) ", NEEDS_DATA,
          "CASIA-WebFace, LFW originals, YouTube Faces and MegaFace are not on this machine"),
    Check(r"data\.path=/data/casia", NEEDS_DATA, "CASIA-WebFace is not on this machine"),
    Check(r"sphereface_lib\.evaluate (lfw --features|ytf|megaface|lfw --images data/lfw_packed)", NEEDS_DATA,
          "a user's own features or model files"),
    Check(r"-m pytest", COLLECT, "the suite runs these tests itself: collected, not run twice"),
    Check(r"python3? (benchmarks|scripts)/", HELP, "benchmarks and studies run for minutes: --help only"),
    Check(r'synthetic_benchmark\("cache/synthetic", "default"\)', RUN,
          "the documented alternative size, not the 36-153 s default set",
          (('"default")', '"smoke")'),)),
)


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    text: str
    language: str  #: "bash" or "python"


def _strip_comment(line: str) -> str:
    """The line without its shell comment (a '#' at the start or after whitespace, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


INLINE = re.compile(r"`((?:\.venv/bin/)?python3? (?:-m |benchmarks/|scripts/|examples/)[^`]+|make reproduce[^`]*)`")


def documented_commands(doc: str) -> list[Command]:
    """The commands of one document, in order."""
    text = (PROJECT / doc).read_text(encoding="utf-8")
    commands: list[Command] = []
    lines = text.splitlines()
    i, prose = 0, []
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            prose.append((i + 1, lines[i]))
            i += 1
            continue
        language, start, body = fence.group(1), i + 1, []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        if language == "python":
            commands.append(Command(doc, start + 1, "\n".join(body), "python"))
        elif language == "bash":
            pending, first = "", start + 1
            for k, raw in enumerate(body):
                line = _strip_comment(raw)
                if not pending:
                    first = start + 1 + k
                if line.endswith("\\"):
                    pending += line[:-1].rstrip() + " "
                    continue
                joined = " ".join((pending + line).split())
                pending = ""
                if joined:
                    commands.append(Command(doc, first, joined, "bash"))
    seen = {c.text for c in commands}
    joined_prose = "\n".join(line for _, line in prose)
    for match in INLINE.finditer(joined_prose):
        command = " ".join(match.group(1).split())
        if command not in seen:
            seen.add(command)
            line = prose[joined_prose.count("\n", 0, match.start())][0]
            commands.append(Command(doc, line, command, "bash"))
    return _merge_background(commands)


def _merge_background(commands: list[Command]) -> list[Command]:
    """A command ending in '&' runs together with the next one (e.g. two torchrun nodes)."""
    merged: list[Command] = []
    for command in commands:
        if merged and merged[-1].text.endswith("&"):
            previous = merged.pop()
            command = Command(previous.doc, previous.line, f"{previous.text} {command.text}; wait", "bash")
        merged.append(command)
    return merged


def check_for(command: Command) -> Check:
    for check in CHECKS:
        if re.search(check.pattern, command.text):
            return check
    return Check("", RUN, "")


def _clone_like(root: Path) -> Path:
    """A run folder laid out like a fresh clone beside ``../shared``; returns the project folder."""
    project = root / "project"
    project.mkdir(parents=True)
    for name in LINKED:
        if (PROJECT / name).exists():
            (project / name).symlink_to(PROJECT / name)
    (project / "README.md").write_text((PROJECT / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    (project / ".venv").symlink_to(Path(sys.prefix))
    (project / "cache").mkdir()
    (PROJECT / "cache" / "synthetic").mkdir(parents=True, exist_ok=True)
    (project / "cache" / "synthetic").symlink_to(PROJECT / "cache" / "synthetic")  # generated sets are shared
    if SHARED.is_dir():
        (root / "shared").symlink_to(SHARED)
    return project


def _environment(project: Path) -> dict[str, str]:
    # one thread per process: tiny workloads, and idle OpenMP threads spin against the machine's other jobs
    return {**os.environ, "PYTHONPATH": str(PROJECT), "SPHEREFACE_PROJECT": str(project), "OMP_NUM_THREADS": "1",
            "PATH": f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}


def _shell(script: str, project: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], cwd=project, env=_environment(project), capture_output=True,
                          text=True, timeout=TIMEOUT_S)


def _make_expansion(text: str, project: Path) -> tuple[str, str]:
    """(leading VAR=value assignments, the command ``make`` runs for this line), through the real Makefile."""
    words = shlex.split(text)
    assignments = []
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        assignments.append(words.pop(0))
    assert words[0] == "make", text
    stamp = Path(sys.prefix) / ".installed"
    done = subprocess.run(["make", "-n", "-o", str(stamp), *words[1:], f"VENV={sys.prefix}"], cwd=project,
                          env=_environment(project), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"make -n {text}: {done.stderr}"
    recipe = done.stdout.replace("\\\n", " ")
    lines = [line for line in recipe.splitlines() if " -m " in line and not line.lstrip().startswith("#")]
    assert len(lines) == 1, f"make -n {text} printed no single python command:\n{done.stdout}"
    return " ".join(shlex.quote(a) for a in assignments), lines[0].strip()


def _error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("error:")]


def _clean_failure(done: subprocess.CompletedProcess) -> str | None:
    """None when the command stopped with exactly one `error:` line and exit 2, else what is wrong."""
    errors = _error_lines(done)
    if done.returncode != 2 or len(errors) != 1 or "Traceback" in done.stderr:
        return f"exit {done.returncode}, {len(errors)} error: lines, traceback: {'Traceback' in done.stderr}"
    return None


#: outcomes of commands that read nothing an earlier command wrote, by text: documents repeat some of them
_CHECKED: dict[str, str | None] = {}


def run_documented(command: Command, project: Path) -> str | None:
    """None when the command behaves as its check says, else a description of what went wrong."""
    check = check_for(command)
    if check.how in (HELP, COLLECT, VALIDATE, NEEDS_DATA) and not re.search(r"(^|[\s='])data/", command.text):
        if command.text not in _CHECKED:
            _CHECKED[command.text] = _run_checked(command, check, project)
        return _CHECKED[command.text]
    return _run_checked(command, check, project)


def _run_checked(command: Command, check: Check, project: Path) -> str | None:
    text = command.text
    for old, new in check.substitute:
        assert old in text, f"{command.doc}:{command.line}: stale substitution {old!r} for {text!r}"
        text = text.replace(old, new)
    if check.how == NOT_RUN:
        return None
    if command.language == "python":
        (project / "snippet.py").write_text(text, encoding="utf-8")
        done = _shell(f"{shlex.quote(sys.executable)} snippet.py", project)
        return None if done.returncode == 0 else f"exit {done.returncode}: {done.stderr[-2000:]}"
    if check.how == MAKE_N:
        _make_expansion(text, project)
        return None
    if check.how in (VALIDATE, NEEDS_DATA) and re.match(r"^([A-Z_]+=\S+ )*make ", text):
        env, text = _make_expansion(text, project)
        text = f"{env} {text}".strip()
    if check.how == VALIDATE:
        done = _shell(f"{text} --kernel {NO_KERNEL}", project)
        errors = _error_lines(done)
        if done.returncode == 2 and len(errors) == 1 and NO_KERNEL in errors[0]:
            return None  # everything before the first notebook was accepted
        return f"validation: exit {done.returncode}: {(done.stdout + done.stderr)[-2000:]}"
    if check.how == HELP:
        done = _shell(f"{text.split(' --')[0]} --help", project)
        return None if done.returncode == 0 else f"--help: exit {done.returncode}: {done.stderr[-2000:]}"
    if check.how == COLLECT:
        done = _shell(f"{text} --collect-only -q -p no:cacheprovider", project)
        if done.returncode == 0 and re.search(r"\d+(/\d+)? tests? (collected|selected)", done.stdout):
            return None
        return f"collect: exit {done.returncode}: {(done.stdout + done.stderr)[-2000:]}"
    done = _shell(text, project)
    if check.how == NEEDS_DATA:
        problem = _clean_failure(done)
        return None if problem is None else f"{problem}: {(done.stdout + done.stderr)[-2000:]}"
    return None if done.returncode == 0 else f"exit {done.returncode}: {(done.stdout + done.stderr)[-3000:]}"


def test_every_document_has_its_commands_found() -> None:
    """The extraction sees the commands (a broken extractor would make every other test pass)."""
    found = {doc: [c.text for c in documented_commands(doc)] for doc in DOCS}
    assert any("configs/tiny_cpu.yaml" in c for c in found["README.md"])
    assert any(c.startswith("make reproduce PROFILE=smoke PARAMS=") for c in found["README.md"])
    assert any("torch.distributed.run" in c and c.endswith("; wait") for c in found["docs/distributed.md"])
    assert any("data_prep.grid" in c for c in found["data_prep/README.md"])
    assert any("data_prep.openset" in c and "cache/att_real" in c for c in found["docs/recipe.md"])
    assert sum(len(v) for v in found.values()) >= 40


def test_every_check_still_names_a_documented_command() -> None:
    """A check that matches nothing any more is a stale exception: remove it."""
    commands = [c.text for doc in DOCS for c in documented_commands(doc)]
    stale = [c.pattern for c in CHECKS if not any(re.search(c.pattern, text) for text in commands)]
    assert not stale, stale


@pytest.mark.parametrize("doc", DOCS)
def test_documented_commands_work_as_written(doc: str, tmp_path: Path) -> None:
    if "../shared" in (PROJECT / doc).read_text(encoding="utf-8") and not (SHARED / "data" / "att_faces").is_dir():
        pytest.skip(f"{doc} uses ../shared/data/att_faces, absent at {SHARED}")
    project = _clone_like(tmp_path)
    failures = []
    for command in documented_commands(doc):
        problem = run_documented(command, project)
        if problem:
            failures.append(f"{command.doc}:{command.line}: {command.text}\n  ({check_for(command).how}) {problem}")
    assert not failures, "\n\n".join(failures)
