"""Sphinx configuration of the dsketch documentation (built by tests/test_docs.py)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "dsketch"
author = "the dsketch developers"
copyright = "the dsketch developers"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Markdown: $...$ maths, heading anchors for links such as theory.md#softmax-regression.
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

napoleon_google_docstring = False
napoleon_numpy_docstring = True
autodoc_member_order = "bysource"
autodoc_typehints = "none"

html_theme = "alabaster"


def _skip_sklearn_request_methods(app, what, name, obj, skip, options):
    """Leave out the ``set_*_request`` methods scikit-learn generates on every estimator."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_sklearn_request_methods)
# The tables under reproductions/ are written by the pipelines as they are (no title, headings
# from H3): the two heading checks are off so that the recorded files stay byte for byte.
suppress_warnings = ["toc.no_title", "myst.header"]
