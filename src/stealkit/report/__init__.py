"""The experiment report: a self-contained HTML page with plots, and the same tables in Markdown.

from stealkit.report import load_results, render_markdown, write_report

results = load_results(Path("runs/default/results.json"))   # StealkitError if unreadable
write_report(results, Path("runs/default/report.html"))
Path("docs/results.md").write_text(render_markdown(results))

Modules: ``read`` (loading and tolerant access), ``format`` (values as text), ``tables`` (the
report's content as data), ``plots`` (the figures), ``html`` and ``markdown`` (the renderers).
"""

from stealkit.report.html import render_html, write_report
from stealkit.report.markdown import render_markdown
from stealkit.report.read import load_results

__all__ = ["load_results", "render_html", "render_markdown", "write_report"]
