"""``tierwise estimate``: what routing would have saved on a team's own request logs.

Logs of the requests a team already sends (OpenAI-format JSONL and batch files, LiteLLM spend logs,
tierwise's own ledger, a plain CSV of prompts) are streamed through the configured policy: each
request's features, the tier and model the policy would choose and why, today's cost against the
routed cost, grouped by task type and by clusters of similar requests. It is a *cost* projection;
``sample.py`` tries a judged sample to measure the quality side.

- ``formats.py``  detects and reads each log format, one ``LoggedRequest`` at a time
- ``clusters.py`` k-means on the router's own static embeddings, fitted on a reservoir sample
- ``project.py``  prices each request today and routed, and aggregates per group
- ``output.py``   the table, ``report.json`` and the plot
- ``sample.py``   the judged sample: cheap answers against the logged ones, blind, in both orders
- ``command.py``  the ``tierwise estimate`` command
"""
