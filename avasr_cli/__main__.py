from avasr_cli.cli import main

main()
