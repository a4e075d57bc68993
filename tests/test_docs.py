"""README and docs/ stay true: their links lead somewhere, every recipe command they show takes the flags it is
shown with, and the README's code is the code the tests run."""

import re
import shlex
from pathlib import Path

import pytest
import yaml
from conftest import QWEN2_VISION, load_recipe, photo

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)


def blocks(page: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(page.read_text()) if lang == language]


def test_the_readme_is_short_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, page.name


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_leads_to_a_file(page):
    prose = FENCE.sub("", page.read_text())
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", prose):
        if not target.startswith(("http://", "https://")):
            assert (page.parent / target).exists(), (page.name, target)


def recipe_commands(page: Path) -> list[tuple[str, list[str]]]:
    """(recipe name, the flags after it) of every `python recipes/...py` / `accelerate launch ... recipes/...py` line
    of the page's shell blocks (continuation lines joined)."""
    commands = []
    for body in blocks(page, "bash"):
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split("#")[0]) if "recipes/" in line else []
            scripts = [i for i, word in enumerate(words) if re.fullmatch(r"recipes/(\w+/)?\w+\.py", word)]
            if scripts and words[0] in ("python", "accelerate"):
                name = Path(words[scripts[0]]).stem
                commands.append((name, [w.split("=")[0] for w in words[scripts[0] + 1:] if w.startswith("--")]))
    return commands


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_recipe_command_shown_takes_its_flags(page, capsys):
    helps = {}
    for name, flags in recipe_commands(page):
        if name not in helps:
            with pytest.raises(SystemExit):
                load_recipe(name).main(["--help"])
            helps[name] = set(re.findall(r"--\w+", capsys.readouterr().out))
        assert set(flags) <= helps[name], (page.name, name, set(flags) - helps[name])


def test_the_readme_finds_the_commands_it_shows():
    """The check above sees the README's commands (a parser that found none would pass anything)."""
    names = [name for name, _ in recipe_commands(ROOT / "README.md")]
    assert {"multitask", "swap_vision_tower", "push_to_hub"} <= set(names)


def test_the_readme_curriculum_is_the_shipped_one():
    (shown,) = [yaml.safe_load(body) for body in blocks(ROOT / "README.md", "yaml")]
    shipped = yaml.safe_load((ROOT / "recipes" / "configs" / "default_curriculum.yaml").read_text())
    assert shown["stages"] == shipped["stages"]


def test_the_readme_objective_is_the_one_the_curriculum_tests_train():
    """Every code line of the README's objective (comments aside) is a line of tests/toy_objective.py."""
    (shown,) = [body for body in blocks(ROOT / "README.md", "python") if "register_objective" in body]
    toy = {line.split("  #")[0].strip() for line in (ROOT / "tests" / "toy_objective.py").read_text().splitlines()}
    code = [line.split("  #")[0].strip() for line in shown.splitlines()]
    assert [line for line in code if line and line not in toy] == []


def test_the_readme_load_a_tower_code_runs(tmp_path, monkeypatch):
    from modeling_versavit import VersaViTConfig, VersaViTImageProcessor, VersaViTModel

    folder = tmp_path / "outputs" / "demo" / "backbone"
    VersaViTModel(VersaViTConfig(vision_config=QWEN2_VISION)).save_pretrained(folder)
    VersaViTImageProcessor(max_pixels=112 * 112).save_pretrained(folder)
    import PIL.Image

    PIL.Image.fromarray(photo("coffee")).save(tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    (code,) = [body for body in blocks(ROOT / "README.md", "python") if "get_dense_features" in body]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["grid"].shape[:2] == (1, QWEN2_VISION["embed_dim"]) and scope["grid"].ndim == 4
