from runner.cli.command import main

main()
