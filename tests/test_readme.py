"""The README's configuration table stays complete."""

from dataclasses import fields

from newsletter.config import ROOT, Config


def test_every_setting_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [f.name for f in fields(Config) if f"| `{f.name}` |" not in readme]
    assert missing == []
