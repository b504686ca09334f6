"""The docs match the code: the README's config table and the example TOML are generated
from the config models, and the example is a valid config."""

from __future__ import annotations

import re
from pathlib import Path

from edge_agent.config import load_config
from sleepsafe_dev.configdoc import example_toml, markdown

REPO = Path(__file__).resolve().parents[1]


def _uncommented(example: str, out: Path, state_dir: str) -> Path:
    """The example with every key that has a value uncommented (and the state dir in tmp): it
    must load and equal the defaults."""
    lines = []
    for line in example.splitlines():
        m = re.match(r"# (\w+) = (.+)$", line)
        lines.append(f"{m.group(1)} = {m.group(2)}" if m else line)
    out.write_text("\n".join(lines).replace(f'state_dir = "{state_dir}"', f'state_dir = "{out.parent}"'))
    return out


def test_config_reference_is_current() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    block = re.search(r"<!-- config-reference -->\n(.*?)\n<!-- /config-reference -->", doc, re.S)
    assert block, "docs/configuration.md lacks the generated config reference block"
    assert block.group(1).strip() == markdown().strip(), "run: python -m sleepsafe_dev.configdoc markdown"


def test_readme_is_for_users() -> None:
    """README: what it does, the commands, the states, how good it is, links; the rest in docs/."""
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 210
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (REPO / link).is_file(), link


def test_example_toml_is_current_and_valid(tmp_path: Path) -> None:
    shipped = (REPO / "edge_agent" / "edge.example.toml").read_text()
    assert shipped == example_toml(), (
        "run: python -m sleepsafe_dev.configdoc toml > edge_agent/edge.example.toml"
    )
    cfg_file = _uncommented(shipped, tmp_path / "edge.toml", "/var/lib/sleepsafe")
    cfg = load_config(cfg_file)
    defaults = load_config(None, {"state_dir": str(tmp_path)})
    assert cfg.model_dump() == defaults.model_dump()


def test_mqtt_doc_matches_the_protocol_models() -> None:
    from sleepsafe_dev.mqttdoc import render

    assert (REPO / "docs" / "mqtt.md").read_text() == render(), (
        "run: python -m sleepsafe_dev.mqttdoc > docs/mqtt.md"
    )


def test_sink_config_docs_are_current_and_valid(tmp_path: Path) -> None:
    from cloud_sink.config import load_sink_config

    doc = (REPO / "docs" / "sink.md").read_text()
    block = re.search(r"<!-- sink-config-reference -->\n(.*?)\n<!-- /sink-config-reference -->", doc, re.S)
    assert block and block.group(1).strip() == markdown("sink").strip(), (
        "run: python -m sleepsafe_dev.configdoc markdown sink (into docs/sink.md)"
    )
    shipped = (REPO / "cloud_sink" / "sink.example.toml").read_text()
    assert shipped == example_toml("sink"), (
        "run: python -m sleepsafe_dev.configdoc toml sink > cloud_sink/sink.example.toml"
    )
    cfg_file = _uncommented(shipped, tmp_path / "sink.toml", "/var/lib/sleepsafe-sink")
    assert (
        load_sink_config(cfg_file).model_dump()
        == load_sink_config(None, {"state_dir": str(tmp_path)}).model_dump()
    )
