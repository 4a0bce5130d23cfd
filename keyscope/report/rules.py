"""``keyscope rules``' output: the rule file as YAML (with its comments), in a Markdown fence, or JSON."""

from __future__ import annotations


def render(doc: dict, command: str, threshold: float, rule_set: str, fmt: str) -> str:
    """``command`` is the argv that made it, written into the YAML header so the file says how to remake it."""
    from ..prometheus import rules as rulesmod
    from .format import to_json

    if fmt == "json":
        return to_json(doc) + "\n"
    text = rulesmod.to_yaml(doc, rulesmod.header(command, threshold, rule_set), rulesmod.RULE_COMMENTS)
    if fmt == "markdown":
        text = "```yaml\n" + text + "```\n"
    return text
