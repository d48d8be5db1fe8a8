"""Sphinx configuration of mammoth's documentation: MyST pages (docs/*.md) and an API reference
generated from the docstrings (autodoc). Build: ``python -m sphinx -W --keep-going -b html docs OUT``."""

project = "mammoth"
author = "mammoth's developers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
# "## A heading" gets an anchor, so that pages link to sections as [text](page.md#a-heading)
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
html_theme = "alabaster"
html_title = "mammoth"
