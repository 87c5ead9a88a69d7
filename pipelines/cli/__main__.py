from pipelines.cli.entry import main

main()
