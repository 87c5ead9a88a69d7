"""Studies built on trained students: the lightweight frontier, the champion check, the
new-item rows and the monitor. They sit above student/ and serving/; evaluation/ (the harness,
statistics, protocols, report) is the base every stage imports."""
