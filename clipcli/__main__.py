from clipcli.cli.app import main

main()
