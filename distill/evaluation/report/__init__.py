"""The evaluation report, one module per job: `model` (the typed report and report.json's
contract), `build` (paired tests, breakdowns, building the report from every model's
results), `bars` (the product's quality bars; finishing a report), `render` (markdown for
report.md, the Prefect artifact and the terminal; the run folder's report writers), `plots`."""
