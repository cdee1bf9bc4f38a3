"""The README's promises: its first lines are the two commands, its Python runs."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_opens_with_demo_and_test_commands():
    first_block = README.read_text().split("```")[1]
    assert "make demo" in first_block and "make test" in first_block
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci
    makefile = (README.parent / "Makefile").read_text()
    assert "torch==2.13.0" in makefile and "torchvision" not in makefile.replace("No torchvision", "")


def test_readme_python_snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
    assert (tmp_path / "runs" / "api-demo" / "manifest.json").is_file()


def test_variant_table_names_are_top_level_api():
    """The Python column of the variants table calls these as `vaekit.NAME`; each must exist."""
    import vaekit

    table = README.read_text().split("## Variants")[1].split("\n## ")[0]
    python = [row.split("|")[3] for row in table.splitlines() if row.startswith("| ") and row.count("|") >= 4]
    names = {m for cell in python for m in re.findall(r"`([A-Za-z_]+)\(", cell)}
    assert {"elbo", "iwae", "wae_mmd", "Config", "fit"} <= names
    missing = [n for n in sorted(names) if not hasattr(vaekit, n)]
    assert not missing, missing
