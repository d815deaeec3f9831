from clipcli.cli import main

main()
